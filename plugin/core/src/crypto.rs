//! ES256 signature backends: pure Rust here, native ones supplied by hosts.

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature};

use crate::keys::{PrivateKey, PublicKey};

/// An ES256 signature as JWS carries it: `r‖s`, 32 bytes each, big-endian.
pub type RawSignature = [u8; 64];

/// A signature backend failed (not: a signature did not match).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signature backend {backend} failed: {reason}")]
pub struct CryptoError {
    /// Which backend.
    pub backend: &'static str,
    /// What went wrong.
    pub reason: String,
}

/// Computes and checks ES256 signatures.
pub trait Es256 {
    /// A short name for stats and logs (`rust`, `envoy`).
    fn name(&self) -> &'static str;
    /// True when `signature` is a valid signature of `message` under `key`.
    fn verify(
        &self,
        key: &PublicKey,
        message: &[u8],
        signature: &RawSignature,
    ) -> Result<bool, CryptoError>;
    /// Signs `message` with `key`.
    fn sign(&self, key: &PrivateKey, message: &[u8]) -> Result<RawSignature, CryptoError>;
}

/// The pure-Rust backend (RustCrypto `p256`); works on every host.
#[derive(Debug, Clone, Copy, Default)]
pub struct RustCrypto;

impl Es256 for RustCrypto {
    fn name(&self) -> &'static str {
        "rust"
    }

    fn verify(
        &self,
        key: &PublicKey,
        message: &[u8],
        signature: &RawSignature,
    ) -> Result<bool, CryptoError> {
        // Zero r or s is not a signature at all: a mismatch, not a failure.
        let Ok(signature) = Signature::from_slice(signature) else {
            return Ok(false);
        };
        Ok(key.verifying_key().verify(message, &signature).is_ok())
    }

    fn sign(&self, key: &PrivateKey, message: &[u8]) -> Result<RawSignature, CryptoError> {
        let signature: Signature = key.signing_key().sign(message);
        Ok(signature.to_bytes().into())
    }
}

/// Converts a JWS `r‖s` signature to DER `ECDSA-Sig-Value`, as native
/// libraries take it (on the stack: `as_bytes` gives the encoding).
pub fn raw_to_der(raw: &RawSignature) -> Option<DerSignature> {
    Signature::from_slice(raw).ok().map(|s| s.to_der())
}

/// Converts a DER `ECDSA-Sig-Value` to JWS `r‖s`, left-padding each half to 32 bytes.
pub fn der_to_raw(der: &[u8]) -> Option<RawSignature> {
    Signature::from_der(der).ok().map(|s| s.to_bytes().into())
}

/// The low-S form of a JWS `r‖s` signature. ECDSA is malleable (`s` and
/// `n−s` both verify), so anything that identifies a token across requests
/// must use this form.
pub fn low_s(raw: &RawSignature) -> Option<RawSignature> {
    Signature::from_slice(raw)
        .ok()
        .map(|s| s.normalize_s().to_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_conversion_round_trips_including_short_halves() {
        let key = PrivateKey::generate().unwrap();
        // Enough signatures that some have a leading zero byte in r or s.
        for i in 0..600u32 {
            let raw = RustCrypto.sign(&key, &i.to_be_bytes()).unwrap();
            let der = raw_to_der(&raw).unwrap();
            assert_eq!(der_to_raw(der.as_bytes()), Some(raw));
        }
    }

    #[test]
    fn zero_signatures_are_mismatches_not_errors() {
        let key = PrivateKey::generate().unwrap();
        assert_eq!(
            RustCrypto.verify(key.public_key(), b"m", &[0u8; 64]),
            Ok(false)
        );
    }
}
