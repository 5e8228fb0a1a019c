//! P-256 keys: private keys from PKCS#8 PEM, public keys from JWKs.

use std::fmt;

use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use serde_json::Value;

use crate::b64;
use crate::jwk::{Jwk, JwkError};

/// Why a private key cannot be loaded or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The PEM text is not a PKCS#8 EC P-256 private key.
    #[error("not a PKCS#8 PEM EC P-256 private key: {0}")]
    Pkcs8(String),
    /// The system random generator failed.
    #[error("no randomness available to generate a key")]
    Randomness,
}

/// A public verification key bound (in a bundle) to one identity.
#[derive(Clone)]
pub struct PublicKey {
    kid: String,
    jwk: Jwk,
    verifying: VerifyingKey,
    spki_der: Vec<u8>,
}

impl PublicKey {
    /// Builds a key from a JWK, validating coordinates and curve membership.
    pub fn from_jwk(jwk: Jwk) -> Result<Self, JwkError> {
        let x = coordinate(&jwk.x, "x")?;
        let y = coordinate(&jwk.y, "y")?;
        let mut sec1 = [0u8; 65];
        sec1[0] = 0x04;
        sec1[1..33].copy_from_slice(&x);
        sec1[33..].copy_from_slice(&y);
        let verifying = VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| JwkError::NotOnCurve)?;
        Ok(Self::from_parts(jwk, verifying))
    }

    /// Reads and validates a JWK from JSON.
    pub fn from_json(value: &Value) -> Result<Self, JwkError> {
        Self::from_jwk(Jwk::from_json(value)?)
    }

    fn from_parts(jwk: Jwk, verifying: VerifyingKey) -> Self {
        let spki_der = verifying
            .to_public_key_der()
            .map(|doc| doc.as_bytes().to_vec())
            .unwrap_or_default();
        Self {
            kid: jwk.kid_or_thumbprint(),
            jwk,
            verifying,
            spki_der,
        }
    }

    /// The key ID tokens name in their `kid` header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWK this key was read from.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// The parsed key for pure-Rust verification.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying
    }

    /// DER SubjectPublicKeyInfo (91 bytes), the form native crypto libraries take.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(kid={})", self.kid)
    }
}

fn coordinate(text: &str, name: &'static str) -> Result<[u8; 32], JwkError> {
    let bytes = b64::decode(text).map_err(|_| JwkError::BadCoordinate(name))?;
    bytes.try_into().map_err(|_| JwkError::BadCoordinate(name))
}

/// A workload's P-256 signing key, parsed once.
#[derive(Clone)]
pub struct PrivateKey {
    signing: SigningKey,
    public: PublicKey,
    pkcs8_der: p256::pkcs8::SecretDocument,
}

impl PrivateKey {
    /// Parses a PKCS#8 PEM EC P-256 private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let signing =
            SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Pkcs8(e.to_string()))?;
        Self::from_signing_key(signing)
    }

    /// Generates a fresh key from the system's CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let signing = SigningKey::try_generate().map_err(|_| KeyError::Randomness)?;
        Self::from_signing_key(signing)
    }

    fn from_signing_key(signing: SigningKey) -> Result<Self, KeyError> {
        let pkcs8_der = signing
            .to_pkcs8_der()
            .map_err(|e| KeyError::Pkcs8(e.to_string()))?;
        let verifying = *signing.verifying_key();
        let point = verifying.to_sec1_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            return Err(KeyError::Pkcs8("public point is the identity".into()));
        };
        let jwk = Jwk::for_coordinates(x, y);
        Ok(Self {
            signing,
            public: PublicKey::from_parts(jwk, verifying),
            pkcs8_der,
        })
    }

    /// The key as PKCS#8 PEM (LF line endings), for writing a key file.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        self.pkcs8_der
            .to_pem("PRIVATE KEY", LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError::Pkcs8(e.to_string()))
    }

    /// The PKCS#8 DER bytes, the form native crypto libraries take.
    pub fn pkcs8_der(&self) -> &[u8] {
        self.pkcs8_der.as_bytes()
    }

    /// The matching public key, with its JWK and `kid`.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The parsed key for pure-Rust signing.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(kid={})", self.public.kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem() {
        let key = PrivateKey::generate().unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = PrivateKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(again.public_key().jwk(), key.public_key().jwk());
        assert_eq!(key.public_key().spki_der().len(), 91);
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let key = PrivateKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("PrivateKey(kid={})", key.public_key().kid()));
    }

    #[test]
    fn garbage_pem_is_a_typed_error() {
        assert!(matches!(
            PrivateKey::from_pkcs8_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            Err(KeyError::Pkcs8(_))
        ));
        assert!(matches!(
            PrivateKey::from_pkcs8_pem(""),
            Err(KeyError::Pkcs8(_))
        ));
    }

    #[test]
    fn jwk_coordinates_off_the_curve_are_rejected() {
        let mut jwk = PrivateKey::generate().unwrap().public_key().jwk().clone();
        jwk.y = b64::encode([7u8; 32]);
        assert_eq!(PublicKey::from_jwk(jwk).err(), Some(JwkError::NotOnCurve));
    }
}
