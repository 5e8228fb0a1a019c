//! The workload's identity: its files (SPIFFE ID, key, bundle), their
//! provisioning, the validated document the filter fetches, the watch that
//! reloads it, the bundle store that carries bundle changes between nodes,
//! federated domains' bundle endpoints, and the routes that serve it.

pub mod api;
pub mod endpoint;
pub mod files;
pub mod provision;
pub mod source;
pub mod store;
pub mod watch;

pub use source::IdentitySource;
