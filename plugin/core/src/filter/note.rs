//! What happened to a request, for counters and logs: every turn of an
//! exchange reports its notes, and the host counts and logs them as they
//! are. Log lines never carry a token, a credential or a secret value.

use super::inbound::{InboundVerdict, Rejection};
use super::outbound::OutboundVerdict;
use crate::token::{InvalidToken, MintError, VerifyError};
use crate::wimse::WimseError;
use crate::{SpiffeId, ipt::Resource};

/// Every code a 401 or 400 is counted under (`rejected.<code>`).
pub const REJECTION_CODES: [&str; 30] = [
    "bad_path",
    "missing_token",
    "malformed",
    "too_large",
    "bad_header",
    "bad_claims",
    "bad_subject",
    "unknown_identity",
    "wrong_audience",
    "expired",
    "not_yet_valid",
    "bad_signature",
    "crypto_error",
    "wit_as_bearer",
    "wit_malformed",
    "wit_unknown_issuer",
    "wit_bad_cnf",
    "wit_bad_signature",
    "wit_expired",
    "wit_not_bound",
    "wpt_count",
    "wpt_malformed",
    "wpt_alg_mismatch",
    "wpt_bad_signature",
    "wpt_wrong_audience",
    "wpt_expired",
    "wpt_wrong_wit",
    "wpt_unbound_token",
    "wpt_replayed",
    "replay_unavailable",
];

/// How loud a note's log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Expected traffic: refusals.
    Info,
    /// Something the operator should look at.
    Warn,
    /// The filter could not do its job.
    Error,
}

/// Why a transaction was not opened although the caller was admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenFailure {
    /// No randomness for a transaction id.
    NoRandomness,
    /// The call to the shim could not be dispatched, or got no answer.
    ShimUnreachable,
    /// The shim answered with this status.
    ShimAnswered(u16),
    /// The shim's credential lacks a field the route delivers.
    CredentialIncomplete,
}

/// One thing that happened to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A caller was verified (`cached`: by the verified-token cache).
    Verified {
        /// True when the cache answered.
        cached: bool,
    },
    /// A token was refused (401, or 503 when nothing could be decided).
    Rejected(Rejection),
    /// Authenticated but not admitted on the route (403).
    Forbidden(SpiffeId),
    /// A path served without authentication.
    Unauthenticated,
    /// A path not in normal form (400).
    BadPath,
    /// The request waits for the first identity.
    AwaitedIdentity,
    /// No identity arrived in time (503).
    Unavailable,
    /// A transaction route covers the path but cannot map it (400); the
    /// reason names configuration, so it is logged, never sent.
    TransactionUnmappable(String),
    /// A transaction was opened and its credential handed to the app.
    TransactionOpened,
    /// The shim's policy denied the transaction (403).
    TransactionDenied(Resource),
    /// The caller has too many transactions open (429).
    TransactionLimited,
    /// The transaction could not be opened (503).
    TransactionFailed(OpenFailure),
    /// A token was attached (`reused`: one minted earlier).
    Minted {
        /// True when a token minted earlier was reused.
        reused: bool,
    },
    /// A call to a destination without a SPIFFE ID (`refused`: 403).
    Unmapped {
        /// True when the configuration refuses such calls.
        refused: bool,
    },
    /// Minting failed (500).
    MintFailed(MintError),
    /// A WIT and a fresh proof were attached.
    Proved,
    /// A WIMSE destination, but the workload has no WIT (500).
    NoWit,
    /// An egress secret was injected.
    EgressInjected,
    /// The shim refused this workload the egress secret (403).
    EgressDenied(String),
    /// The egress secret was unavailable (503): its name and the shim's
    /// status, if it answered.
    EgressFailed(String, Option<u16>),
}

impl Note {
    /// The note for an inbound verdict, if it is worth one.
    pub fn inbound(verdict: &InboundVerdict) -> Option<Self> {
        Some(match verdict {
            InboundVerdict::Allowed { cached, .. } => Self::Verified { cached: *cached },
            InboundVerdict::Rejected(r) => Self::Rejected(r.clone()),
            InboundVerdict::Forbidden { caller } => Self::Forbidden(caller.clone()),
            InboundVerdict::Unauthenticated => Self::Unauthenticated,
            InboundVerdict::BadPath => Self::BadPath,
            InboundVerdict::AwaitIdentity => return None,
        })
    }

    /// The note for an outbound verdict, if it is worth one.
    pub fn outbound(verdict: &OutboundVerdict) -> Option<Self> {
        Some(match verdict {
            OutboundVerdict::Attach { reused, .. } => Self::Minted { reused: *reused },
            OutboundVerdict::Prove { .. } => Self::Proved,
            OutboundVerdict::NoWit => Self::NoWit,
            OutboundVerdict::PassUnmapped => Self::Unmapped { refused: false },
            OutboundVerdict::RejectUnmapped => Self::Unmapped { refused: true },
            OutboundVerdict::MintFailed(e) => Self::MintFailed(e.clone()),
            OutboundVerdict::AwaitIdentity => return None,
        })
    }

    /// True when the note records a signature check the backend ran
    /// (a verification, or a signature that did not match).
    pub fn ran_crypto(&self) -> bool {
        matches!(
            self,
            Self::Verified { cached: false }
                | Self::Rejected(Rejection::Verify(VerifyError::Invalid(
                    InvalidToken::SignatureMismatch
                )))
                | Self::Rejected(Rejection::Wimse(
                    WimseError::WitSignature | WimseError::WptSignature
                ))
        )
    }

    /// The log line, if the note has one.
    pub fn log(&self) -> Option<(Level, String)> {
        let line = match self {
            Self::Rejected(Rejection::IdentityStale) => (
                Level::Warn,
                "ephemera inbound: 503: the identity in force is older than shim.max_identity_age_ms".into(),
            ),
            Self::Rejected(r) => {
                let detail = match r {
                    Rejection::Verify(e) => e.to_string(),
                    Rejection::Wimse(e) => e.to_string(),
                    other => other.code().to_owned(),
                };
                let status = r.status();
                (Level::Info, format!("ephemera inbound: {status} ({}): {detail}", r.code()))
            }
            Self::Forbidden(caller) => (
                Level::Info,
                format!("ephemera inbound: 403: {caller} is not allowed on this route"),
            ),
            Self::BadPath => (
                Level::Info,
                "ephemera inbound: 400: path is not in normal form".into(),
            ),
            Self::TransactionUnmappable(reason) => {
                (Level::Info, format!("ephemera ipt: 400: {reason}"))
            }
            Self::TransactionDenied(resource) => (
                Level::Info,
                format!("ephemera ipt: 403: the shim's policy denies {resource}"),
            ),
            Self::TransactionLimited => (
                Level::Info,
                "ephemera ipt: 429: the caller has too many transactions open".into(),
            ),
            Self::TransactionFailed(why) => match why {
                OpenFailure::NoRandomness => (
                    Level::Error,
                    "ephemera ipt: 503: no randomness for a transaction id".into(),
                ),
                OpenFailure::ShimUnreachable => (
                    Level::Warn,
                    "ephemera ipt: 503: transaction not opened (the shim did not answer)".into(),
                ),
                OpenFailure::ShimAnswered(status) => (
                    Level::Warn,
                    format!("ephemera ipt: 503: transaction not opened (the shim answered {status})"),
                ),
                OpenFailure::CredentialIncomplete => (
                    Level::Error,
                    "ephemera ipt: 503: the shim's credential lacks a configured field".into(),
                ),
            },
            Self::Unmapped { refused: true } => (
                Level::Info,
                "ephemera outbound: 403: destination has no SPIFFE ID mapping".into(),
            ),
            Self::MintFailed(e) => (Level::Error, format!("ephemera outbound: 500: cannot mint: {e}")),
            Self::NoWit => (
                Level::Error,
                "ephemera outbound: 500: a WIMSE destination, but the workload has no WIT (identity wit)".into(),
            ),
            Self::EgressDenied(secret) => (
                Level::Info,
                format!("ephemera egress: 403: this workload may not use secret {secret:?}"),
            ),
            Self::EgressFailed(secret, status) => (
                Level::Warn,
                match status {
                    Some(status) => format!(
                        "ephemera egress: 503: secret {secret:?} unavailable (the shim answered {status})"
                    ),
                    None => format!(
                        "ephemera egress: 503: secret {secret:?} unavailable (the shim did not answer)"
                    ),
                },
            ),
            Self::Verified { .. }
            | Self::Unauthenticated
            | Self::AwaitedIdentity
            | Self::Unavailable
            | Self::TransactionOpened
            | Self::Minted { .. }
            | Self::Proved
            | Self::Unmapped { refused: false }
            | Self::EgressInjected => return None,
        };
        Some(line)
    }
}
