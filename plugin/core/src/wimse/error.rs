//! Why a Workload Identity Token or Workload Proof Token was refused.
//! Messages name the rule, never a token.

use crate::crypto::CryptoError;
use crate::jwk::JwkError;
use crate::spiffe_id::SpiffeId;
use crate::token::InvalidToken;

/// A WIT, or the WPT with it, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WimseError {
    /// The WIT is not a well-formed compact JWT of JSON parts.
    #[error("workload identity token is malformed: {0}")]
    WitMalformed(InvalidToken),
    /// The WIT's header: `typ` not `wit+jwt`, `alg` not ES256, or `crit`.
    #[error("workload identity token header must have typ \"wit+jwt\" and alg \"ES256\"")]
    WitHeader,
    /// A WIT claim is missing or of the wrong type.
    #[error("workload identity token claim {0:?} is missing or not of its type")]
    WitClaim(&'static str),
    /// `sub` is not a SPIFFE ID.
    #[error("workload identity token sub is not a SPIFFE ID")]
    WitSubject,
    /// No WIT issuer is configured for the `sub`'s trust domain.
    #[error("no workload identity token issuer for trust domain {0:?}")]
    UnknownIssuer(String),
    /// `cnf.jwk.alg` is absent, or not ES256 (the one algorithm supported).
    #[error("workload identity token cnf.jwk.alg must be \"ES256\"")]
    ProofAlgorithm,
    /// `cnf.jwk` is not a public P-256 key.
    #[error("workload identity token cnf.jwk: {0}")]
    ProofKey(JwkError),
    /// No issuer key of the trust domain validates the WIT's signature.
    #[error("workload identity token signature does not match the issuer's keys")]
    WitSignature,
    /// `exp` is past.
    #[error("workload identity token expired")]
    WitExpired,
    /// `iat` or `nbf` is in the future.
    #[error("workload identity token not yet valid")]
    WitNotYetValid,
    /// The `sub` is not (or no longer) in the trust bundle.
    #[error("workload {0} is not in the trust bundle")]
    UnknownWorkload(SpiffeId),
    /// The `cnf` key is not the proof key bound to the `sub`.
    #[error("workload {0}: cnf key is not the proof key bound to it")]
    NotBound(SpiffeId),
    /// Not exactly one `Workload-Proof-Token` field, or no
    /// `Workload-Identity-Token` with it.
    #[error("exactly one Workload-Identity-Token and one Workload-Proof-Token are required")]
    ProofCount,
    /// The WPT is not a well-formed compact JWT of JSON parts.
    #[error("workload proof token is malformed: {0}")]
    WptMalformed(InvalidToken),
    /// The WPT's `alg` is not the WIT's `cnf.jwk.alg`.
    #[error("workload proof token alg differs from the identity token's cnf.jwk.alg")]
    WptAlgorithm,
    /// The WPT's signature does not verify with the WIT's `cnf` key.
    #[error("workload proof token signature does not match the cnf key")]
    WptSignature,
    /// `typ` is not `wpt+jwt`, or `crit` is present.
    #[error("workload proof token typ must be \"wpt+jwt\"")]
    WptType,
    /// A WPT claim is missing or of the wrong type.
    #[error("workload proof token claim {0:?} is missing or not of its type")]
    WptClaim(&'static str),
    /// `aud` is not this request's target URI.
    #[error("workload proof token aud is not this request's target URI")]
    WptAudience,
    /// `exp` is past (beyond the leeway).
    #[error("workload proof token expired")]
    WptExpired,
    /// `exp` is further ahead than the longest proof lifetime accepted.
    #[error("workload proof token lives longer than {0} s")]
    WptLifetime(u64),
    /// `wth` is not the hash of the presented WIT.
    #[error("workload proof token is for another identity token (wth)")]
    WptIdentityHash,
    /// `ath`/`tth`/an `oth` entry is absent for a token the request
    /// carries, present for one it does not, or not its hash.
    #[error("workload proof token does not bind the request's {0}")]
    WptBinding(&'static str),
    /// `oth` names a header the receiver does not understand.
    #[error("workload proof token oth names a token this receiver does not understand")]
    WptUnknownOther,
    /// The `jti` was seen before, within the proof's lifetime.
    #[error("workload proof token replayed (jti seen before)")]
    Replayed,
    /// The replay cache could not answer; nothing was decided.
    #[error("replay cache unavailable: {0}")]
    ReplayUnavailable(String),
    /// The signature backend failed; nothing was decided.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl WimseError {
    /// A short stable code for counters, logs and problem details.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WitMalformed(_) | Self::WitHeader | Self::WitClaim(_) | Self::WitSubject => {
                "wit_malformed"
            }
            Self::UnknownIssuer(_) => "wit_unknown_issuer",
            Self::ProofAlgorithm | Self::ProofKey(_) => "wit_bad_cnf",
            Self::WitSignature => "wit_bad_signature",
            Self::WitExpired | Self::WitNotYetValid => "wit_expired",
            Self::UnknownWorkload(_) => "unknown_identity",
            Self::NotBound(_) => "wit_not_bound",
            Self::ProofCount => "wpt_count",
            Self::WptMalformed(_) | Self::WptType | Self::WptClaim(_) => "wpt_malformed",
            Self::WptAlgorithm => "wpt_alg_mismatch",
            Self::WptSignature => "wpt_bad_signature",
            Self::WptAudience => "wpt_wrong_audience",
            Self::WptExpired | Self::WptLifetime(_) => "wpt_expired",
            Self::WptIdentityHash => "wpt_wrong_wit",
            Self::WptBinding(_) | Self::WptUnknownOther => "wpt_unbound_token",
            Self::Replayed => "wpt_replayed",
            Self::ReplayUnavailable(_) => "replay_unavailable",
            Self::Crypto(_) => "crypto_error",
        }
    }

    /// True when no verdict was reached (a failing backend): 503.
    pub fn undecided(&self) -> bool {
        matches!(self, Self::ReplayUnavailable(_) | Self::Crypto(_))
    }
}
