//! ephemera's core: SPIFFE IDs, spiffile trust bundles, P-256 keys and
//! JWT-SVID verification and minting ([`token`]); the filter, whose
//! [`filter::exchange`] is each request's whole life; transactions
//! ([`ipt`]); secrets, their grants and canonical URIs ([`secrets`]); WIMSE
//! workload identity and proof tokens ([`wimse`]).
//!
//! Pure Rust with no I/O: hosts supply the time, the bytes of files and
//! documents, and optionally a native signature backend ([`Es256`]); the
//! Envoy filter, the component and the shim all build on it.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod b64;
pub mod bundle;
pub mod crypto;
pub mod filter;
pub mod ipt;
pub mod jwk;
pub mod keys;
pub mod secrets;
pub mod spiffe_id;
pub mod strict_json;
pub mod token;
pub mod wimse;

pub use bundle::{Bundle, BundleDocument, BundleError, BundleFormat, BundleWarning};
pub use crypto::{CryptoError, Es256, RawSignature, RustCrypto};
pub use jwk::{Jwk, JwkError};
pub use keys::{KeyError, PrivateKey, PublicKey};
pub use spiffe_id::{SpiffeId, SpiffeIdError};
pub use token::{
    InvalidToken, MintError, Minter, TokenVerifier, VerifiedToken, VerifyError, VerifyOptions,
};
