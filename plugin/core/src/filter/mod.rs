//! The filter, independent of any host. [`exchange`] is a request's whole
//! life — the events a host reports and the steps it takes — built on the
//! single decisions: configuration, inbound authentication and
//! authorization ([`inbound`]), transactions ([`transaction`]), outbound
//! minting ([`outbound`]), egress secrets ([`egress`]), the verified-token
//! and WIT caches and the identity document the shim serves. [`note`] says what
//! happened, for counters and logs.

pub mod authority;
pub mod caller_pattern;
pub mod config;
pub mod disposition;
pub mod edits;
pub mod egress;
pub mod exchange;
pub mod inbound;
pub mod note;
pub mod outbound;
pub mod path_rule;
pub mod token_cache;
pub mod transaction;
pub mod wit_cache;
pub mod workload_identity;

pub use caller_pattern::CallerPattern;
pub use config::{ConfigError, CryptoChoice, Direction, FilterConfig};
pub use disposition::{Disposition, LocalReply};
pub use edits::Edits;
pub use exchange::{Exchange, Filter, RequestView, ShimAnswer, ShimCall, Step, Turn, WorkerState};
pub use inbound::{Inbound, InboundRequest, InboundVerdict, Rejection};
pub use note::Note;
pub use outbound::{MintedTokens, Outbound, OutboundRequest, OutboundVerdict};
pub use path_rule::PathRule;
pub use token_cache::TokenCache;
pub use transaction::{TransactionMapping, TransactionPlan, TransactionRoutes};
pub use workload_identity::{IdentityDocError, IdentityDocument, WorkloadIdentity};
