//! Identity-Per-Transaction in the shim: configuration, policy, and the
//! transaction service behind `POST /v1/transactions`.

pub mod api;
pub mod config;
pub mod limit;
pub mod policy;
pub mod service;

pub use config::{IptConfig, IptConfigError};
pub use service::{SetupError, Transactions, TxError};
