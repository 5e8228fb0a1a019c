//! Who asks for a secret with a JWT-SVID of their own (the shim's app
//! listener): the token must be for the workload's secrets audience, carry
//! a `jti`, live no longer than the replay window that remembers it, and —
//! when sender-bound (`cnf.jkt`) — come with a DPoP proof by that key for
//! this request and this token.

use serde_json::Value;

use crate::crypto::Es256;
use crate::filter::inbound::bearer_token;
use crate::filter::workload_identity::WorkloadIdentity;
use crate::secrets::grants::SenderBinding;
use crate::secrets::secrets_audience;
use crate::spiffe_id::{SpiffeId, SpiffeIdError};
use crate::token::{
    DpopError, DpopRequest, TokenVerifier, VerifyError, VerifyOptions, verify_dpop,
};

/// The path a DPoP proof for a secret read names (`htu`).
pub const RESOLVE_PATH: &str = "/v1/secrets/resolve";
/// How far a DPoP proof's `iat` may be from now, seconds.
const MAX_PROOF_SKEW_SECS: u64 = 60;

/// What a caller presented with its request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// The `authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The `dpop` header, if any.
    pub dpop: Option<&'a str>,
}

/// A caller whose token passed every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presenter {
    /// The verified `sub`.
    pub caller: SpiffeId,
    /// The token's `jti` (single use within the replay window).
    pub jti: String,
    /// The key the caller proved it holds, for a sender-bound token.
    pub sender: Option<SenderBinding>,
}

/// Why a presented token is refused (the reply is 401).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PresenterError {
    /// No `authorization` header.
    #[error("a JWT-SVID for this workload's secrets audience is required")]
    Missing,
    /// `authorization` is not `Bearer <token>`.
    #[error("authorization is not a bearer token")]
    NotBearer,
    /// The workload's own ID has no secrets audience.
    #[error("secrets audience: {0}")]
    Audience(#[from] SpiffeIdError),
    /// The token does not verify.
    #[error(transparent)]
    Token(#[from] VerifyError),
    /// The token has no `jti`, so it could be replayed.
    #[error("a JWT-SVID asking for secrets needs a jti")]
    NoJti,
    /// The token outlives the window its `jti` is remembered for.
    #[error("a JWT-SVID asking for secrets may live at most {max_secs} s")]
    TooLong {
        /// The replay window, seconds.
        max_secs: u64,
    },
    /// The token is sender-bound and no proof came with it.
    #[error("the JWT-SVID is sender-bound (cnf.jkt): send a DPoP proof")]
    NoProof,
    /// The proof does not hold.
    #[error(transparent)]
    Proof(#[from] DpopError),
    /// The proof is signed by another key than the token names.
    #[error("the DPoP proof is signed by another key than the token's cnf")]
    ProofKey,
}

/// Checks what a caller presented against `identity`'s secrets audience.
pub fn present(
    presented: Presented<'_>,
    identity: &WorkloadIdentity,
    now: u64,
    replay_window_ms: u64,
    crypto: &dyn Es256,
) -> Result<Presenter, PresenterError> {
    let header = presented.authorization.ok_or(PresenterError::Missing)?;
    let token = bearer_token(header).ok_or(PresenterError::NotBearer)?;
    let verifier = TokenVerifier::new(secrets_audience(identity.id())?, VerifyOptions::default());
    let verified = verifier.verify(token, &identity.bundle, now, crypto)?;
    let jti = verified.jti.ok_or(PresenterError::NoJti)?;
    let max_secs = replay_window_ms / 1000;
    if verified.expires_at.saturating_sub(now) > max_secs {
        return Err(PresenterError::TooLong { max_secs });
    }
    let sender = match verified
        .claims
        .get("cnf")
        .and_then(|c| c.get("jkt"))
        .and_then(Value::as_str)
    {
        None => None,
        Some(jkt) => {
            // The proof's `ath` ties it to this token, whose `jti` is
            // single-use: a proof cannot be replayed either.
            let proof = presented.dpop.ok_or(PresenterError::NoProof)?;
            let request = DpopRequest {
                method: "POST",
                path: RESOLVE_PATH,
                access_token: token,
                now,
                max_skew_secs: MAX_PROOF_SKEW_SECS,
            };
            let proven = verify_dpop(proof, &request, crypto)?;
            if proven.jkt != jkt {
                return Err(PresenterError::ProofKey);
            }
            Some(SenderBinding::JwkThumbprint(proven.jkt))
        }
    };
    Ok(Presenter {
        caller: verified.caller,
        jti,
        sender,
    })
}
