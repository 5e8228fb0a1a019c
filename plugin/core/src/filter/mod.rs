//! The filter's decisions, independent of any host: configuration, inbound
//! authentication and authorization, outbound minting, the verified-token
//! cache and the identity document the shim serves.

pub mod caller_pattern;
pub mod config;
pub mod egress;
pub mod inbound;
pub mod outbound;
pub mod outcome;
pub mod path_rule;
pub mod token_cache;
pub mod transaction;
pub mod workload_identity;

pub use caller_pattern::CallerPattern;
pub use config::{ConfigError, CryptoChoice, Direction, FilterConfig};
pub use inbound::{Inbound, InboundRequest, InboundVerdict, Rejection};
pub use outbound::{MintedTokens, Outbound, OutboundRequest, OutboundVerdict};
pub use outcome::{LocalReply, Outcome};
pub use path_rule::PathRule;
pub use token_cache::TokenCache;
pub use transaction::{TransactionMapping, TransactionPlan, TransactionRoutes};
pub use workload_identity::{IdentityDocError, IdentityDocument, WorkloadIdentity};
