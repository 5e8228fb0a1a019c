//! ephemera's host shim: the operator CLI and the services the filter calls.
//! Its modules follow its API: `identity` (`/v1/identity`), `transactions`
//! (`/v1/transactions`), `secrets` (`/v1/secrets/resolve`), with the
//! `brokers`, `ledger` and `provider` connections behind them, `serve` (the
//! listeners), `sidecar` (Envoy beside the shim), `oci` (the filter as an image),
//! `mesh` (its Kubernetes objects), `workload_api` (the SPIFFE Workload API
//! for the app) and `cmd` (the CLI).

pub mod atomic_file;
pub mod brokers;
pub mod clock;
pub mod cmd;
pub mod identity;
pub mod ledger;
pub mod mesh;
pub mod oci;
pub mod provider;
pub mod secrets;
pub mod sensitive;
pub mod serve;
pub mod sidecar;
pub mod transactions;
pub mod workload_api;
