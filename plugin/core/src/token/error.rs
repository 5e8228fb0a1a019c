//! Why a token was rejected, or could not be minted.

use crate::crypto::CryptoError;
use crate::spiffe_id::{SpiffeId, SpiffeIdError};
use crate::strict_json::JsonError;

/// Verification failed. Messages name the reason, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `sub` names an identity the trust bundle has no keys for.
    #[error("unknown identity {0}: no keys in the trust bundle")]
    UnknownIdentity(SpiffeId),
    /// The token is not a valid JWT-SVID for this receiver.
    #[error("invalid token: {0}")]
    Invalid(#[from] InvalidToken),
    /// The signature backend failed; no verdict was reached.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl VerifyError {
    /// A short stable code for counters and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownIdentity(_) => "unknown_identity",
            Self::Invalid(reason) => reason.code(),
            Self::Crypto(_) => "crypto_error",
        }
    }
}

/// The rule an invalid token broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    /// Longer than the configured limit; not parsed at all.
    #[error("token is {len} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not three dot-separated segments.
    #[error("token is not a compact JWS (three dot-separated parts)")]
    NotCompact,
    /// A segment is not unpadded base64url.
    #[error("token {0} is not unpadded base64url")]
    Encoding(&'static str),
    /// The header or claims are not an acceptable JSON object.
    #[error("token {part} is not acceptable JSON: {error}")]
    Json {
        /// `header` or `claims`.
        part: &'static str,
        /// What was wrong.
        error: JsonError,
    },
    /// The header's `alg` is not `ES256`.
    #[error("alg must be \"ES256\"")]
    Algorithm,
    /// The header's `typ` is present and not `JWT`/`JOSE`.
    #[error("typ must be \"JWT\" or \"JOSE\" when present")]
    Type,
    /// The header lists critical extensions (none are understood).
    #[error("unsupported critical header parameter(s)")]
    Critical,
    /// The header offers a key or a key's location (`jwk`, `jku`, `x5u`,
    /// `x5c`, `x5t`, `x5t#S256`): a JWT-SVID's key comes from the bundle.
    #[error("header parameter {0:?} offers a key; JWT-SVID keys come from the bundle only")]
    KeyInHeader(&'static str),
    /// The header belongs to an encrypted or compressed object (`enc`, `zip`).
    #[error("header parameter {0:?} is not one of a signed JWT")]
    NotJws(&'static str),
    /// A header parameter that must be a string is not (`kid`, `cty`).
    #[error("header parameter {0:?} must be a string")]
    HeaderType(&'static str),
    /// A required claim is absent.
    #[error("missing required claim {0:?}")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type (e.g. a NumericDate as a string).
    #[error("claim {0:?} has the wrong type")]
    ClaimType(&'static str),
    /// `aud` is an array (or another non-string), even one holding the receiver.
    #[error(
        "aud must be a single string (an array only from a standard-mode trust domain, where configured)"
    )]
    AudienceNotString,
    /// `sub` is not a SPIFFE ID.
    #[error("sub is not a SPIFFE ID: {0}")]
    Subject(SpiffeIdError),
    /// `aud` does not name this receiver.
    #[error("aud does not name this receiver")]
    AudienceMismatch,
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid (nbf)")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    /// The signature is not exactly 64 bytes `r‖s`.
    #[error("signature is {0} bytes, not 64 (r||s)")]
    SignatureLength(usize),
    /// No key bound to `sub` validates the signature.
    #[error("signature does not match any key bound to the subject")]
    SignatureMismatch,
}

impl InvalidToken {
    /// A short stable code for counters and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::NotCompact | Self::Encoding(_) | Self::Json { .. } => "malformed",
            Self::Algorithm
            | Self::Type
            | Self::Critical
            | Self::KeyInHeader(_)
            | Self::NotJws(_)
            | Self::HeaderType(_) => "bad_header",
            Self::MissingClaim(_) | Self::ClaimType(_) | Self::AudienceNotString => "bad_claims",
            Self::Subject(_) => "bad_subject",
            Self::AudienceMismatch => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid | Self::IssuedInFuture => "not_yet_valid",
            Self::SignatureLength(_) | Self::SignatureMismatch => "bad_signature",
        }
    }
}

/// Minting failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// A lifetime of zero seconds.
    #[error("token lifetime must be at least one second")]
    ZeroTtl,
    /// No randomness for the `jti`.
    #[error("no randomness available for jti")]
    Randomness,
    /// The signature backend failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}
