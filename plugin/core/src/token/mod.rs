//! JWT-SVIDs: the compact JWS form, verification and minting.

mod claims;
pub(crate) mod dpop;
mod error;
mod malleability;
pub(crate) mod mint;
pub(crate) mod verify;

pub use claims::VerifiedToken;
pub use dpop::{DpopError, DpopProof, DpopRequest, create_proof, verify_dpop};
pub use error::{InvalidToken, MintError, VerifyError};
pub use malleability::malleability_free;
pub use mint::{DEFAULT_TTL_SECS, Minter, random_jti};
pub use verify::{DEFAULT_LEEWAY_SECS, DEFAULT_MAX_TOKEN_BYTES, TokenVerifier, VerifyOptions};
