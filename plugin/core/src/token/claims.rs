//! The claims of a verified JWT-SVID.

use serde_json::{Map, Value};

use crate::spiffe_id::SpiffeId;

/// A token that passed verification.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The verified `sub`: who is calling.
    pub caller: SpiffeId,
    /// `exp`, in whole Unix seconds (rounded down).
    pub expires_at: u64,
    /// The `jti`, when the token has one.
    pub jti: Option<String>,
    /// Every claim, as sent.
    pub claims: Map<String, Value>,
}
