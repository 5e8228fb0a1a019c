//! Identity-Per-Transaction: the one resource and one action a transaction
//! is scoped to, how a request maps onto them, and the shim's wire protocol.

pub mod action;
pub mod resource;
pub mod template;
pub mod transaction_id;
pub mod wire;

pub use action::Action;
pub use resource::{Resource, ResourceError};
pub use template::{PathTemplate, TemplateError};
pub use transaction_id::{TransactionId, TransactionIdError};
pub use wire::{CloseRequest, OpenRequest, OpenResponse, StreamEnd, WimseProof};
