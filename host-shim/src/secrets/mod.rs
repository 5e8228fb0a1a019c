//! Secrets in the shim: `POST /v1/secrets/resolve` (api), the gate and the
//! read behind it (service), the audit ledger (audit), resolved values kept
//! as long as their ref allows (cache), the gate's state, local or shared
//! by replicas (state), and the backends (store).

pub mod api;
pub mod audit;
pub mod cache;
pub mod service;
pub mod state;
pub mod store;

pub use api::Callers;
pub use audit::{Audit, AuditError};
pub use service::{SecretsService, ServiceSetupError, resolve_audited};
