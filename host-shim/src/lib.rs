//! ephemera's host shim: the operator CLI and the services the filter calls.

pub mod atomic_file;
pub mod broker;
pub mod clock;
pub mod cmd;
pub mod identity_files;
pub mod identity_source;
pub mod ipt;
pub mod ledger;
pub mod provider_http;
pub mod provision;
pub mod secret_store;
pub mod secrets_api;
pub mod sensitive;
pub mod serve;
pub mod sidecar;
pub mod watch;
