//! DPoP proofs (RFC 9449) for sender-bound JWT-SVIDs: a token whose `cnf`
//! names a key thumbprint (`jkt`) is only honoured with a proof, signed by
//! that key, for this very request (`htm`, `htu`), this very token (`ath`)
//! and this moment (`iat`). A stolen token without its key proves nothing.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::error::InvalidToken;
use super::mint::sign_compact;
use super::verify::decode;
use crate::b64;
use crate::crypto::{CryptoError, Es256};
use crate::jwk::{ES256, Jwk, JwkError};
use crate::keys::{PrivateKey, PublicKey};

/// The `typ` of a DPoP proof.
const DPOP_TYPE: &str = "dpop+jwt";
/// Longest proof accepted, bytes.
const MAX_PROOF_BYTES: usize = 4 * 1024;

/// What a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct DpopRequest<'a> {
    /// The request's method (`htm`).
    pub method: &'a str,
    /// The request's path (the path of `htu`).
    pub path: &'a str,
    /// The access token the proof accompanies (`ath`).
    pub access_token: &'a str,
    /// Now, Unix seconds.
    pub now: u64,
    /// How far `iat` may be from now, seconds.
    pub max_skew_secs: u64,
}

/// A verified proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopProof {
    /// RFC 7638 thumbprint of the key that signed it.
    pub jkt: String,
    /// The proof's `jti`.
    pub jti: String,
}

/// Why a DPoP proof is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DpopError {
    /// Not a compact JWS of JSON parts.
    #[error("DPoP proof is malformed: {0}")]
    Malformed(#[from] InvalidToken),
    /// `typ` is not `dpop+jwt` or `alg` is not ES256.
    #[error("DPoP proof header must have typ \"dpop+jwt\" and alg \"ES256\"")]
    Header,
    /// The header's `jwk` is missing or not a public P-256 key.
    #[error("DPoP proof key: {0}")]
    Key(JwkError),
    /// The signature does not verify with the header's key.
    #[error("DPoP proof signature does not verify")]
    Signature,
    /// A required claim is missing or of the wrong type.
    #[error("DPoP proof claim {0:?} is missing or not of its type")]
    Claim(&'static str),
    /// `htm` or `htu` name another request.
    #[error("DPoP proof is for another request")]
    WrongRequest,
    /// `ath` is not the hash of the presented token.
    #[error("DPoP proof is for another token")]
    WrongToken,
    /// `iat` is too far from now.
    #[error("DPoP proof is stale or from the future")]
    Stale,
    /// The crypto backend failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The `ath` of an access token (and WIMSE's `wth`, `tth`, `oth` of their
/// tokens): base64url SHA-256 of its text.
pub(crate) fn token_hash(access_token: &str) -> String {
    b64::encode(Sha256::digest(access_token.as_bytes()))
}

/// Verifies `proof` for `request`.
pub fn verify_dpop(
    proof: &str,
    request: &DpopRequest<'_>,
    crypto: &dyn Es256,
) -> Result<DpopProof, DpopError> {
    let parts = decode(proof, MAX_PROOF_BYTES)?;
    let header = &parts.header;
    if header.get("typ").and_then(Value::as_str) != Some(DPOP_TYPE)
        || header.get("alg").and_then(Value::as_str) != Some(ES256)
    {
        return Err(DpopError::Header);
    }
    let jwk = header
        .get("jwk")
        .ok_or(DpopError::Key(JwkError::NotAnObject))?;
    let key = public_key(jwk).map_err(DpopError::Key)?;
    if !crypto.verify(&key, parts.signing_input.as_bytes(), &parts.signature)? {
        return Err(DpopError::Signature);
    }
    let claims = &parts.claims;
    let text = |name: &'static str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .ok_or(DpopError::Claim(name))
    };
    let (jti, htm, htu, ath) = (text("jti")?, text("htm")?, text("htu")?, text("ath")?);
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(DpopError::Claim("iat"))?;
    if htm != request.method || path_of(htu) != Some(request.path) {
        return Err(DpopError::WrongRequest);
    }
    if ath != token_hash(request.access_token) {
        return Err(DpopError::WrongToken);
    }
    if iat.abs_diff(request.now) > request.max_skew_secs {
        return Err(DpopError::Stale);
    }
    Ok(DpopProof {
        jkt: key.jwk().thumbprint(),
        jti: jti.to_owned(),
    })
}

/// A key carried in a token (a header's `jwk`, a `cnf.jwk`) or an issuer
/// document, from its public members and `kid` only.
pub(crate) fn public_key(jwk: &Value) -> Result<PublicKey, JwkError> {
    let map = jwk.as_object().ok_or(JwkError::NotAnObject)?;
    if map.contains_key("d") {
        return Err(JwkError::PrivatePart);
    }
    let public: Map<String, Value> = ["kty", "crv", "x", "y", "kid"]
        .into_iter()
        .filter_map(|k| map.get(k).map(|v| (k.to_owned(), v.clone())))
        .collect();
    PublicKey::from_jwk(Jwk::from_json(&Value::Object(public))?)
}

/// The path of an absolute `htu` (`scheme://authority/path`), without
/// query or fragment, which a proof must not carry.
fn path_of(htu: &str) -> Option<&str> {
    let (_, rest) = htu.split_once("://")?;
    let path = &rest[rest.find('/')?..];
    (!path.contains(['?', '#'])).then_some(path)
}

/// A DPoP proof by `key` for `method htu` accompanying `access_token`.
pub fn create_proof(
    key: &PrivateKey,
    method: &str,
    htu: &str,
    access_token: &str,
    now: u64,
    jti: &str,
    crypto: &dyn Es256,
) -> Result<String, CryptoError> {
    let jwk = key.public_key().jwk();
    let header = json!({
        "typ": DPOP_TYPE,
        "alg": ES256,
        "jwk": {"kty": jwk.kty, "crv": jwk.crv, "x": jwk.x, "y": jwk.y},
    });
    let claims = json!({
        "jti": jti, "htm": method, "htu": htu, "iat": now, "ath": token_hash(access_token),
    });
    sign_compact(&header, &claims, key, crypto)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::RustCrypto;

    const URL: &str = "http://127.0.0.1:9901/v1/secrets/resolve";
    const NOW: u64 = 1_900_000_000;

    fn request(token: &str) -> DpopRequest<'_> {
        DpopRequest {
            method: "POST",
            path: "/v1/secrets/resolve",
            access_token: token,
            now: NOW,
            max_skew_secs: 60,
        }
    }

    fn proof(key: &PrivateKey, method: &str, htu: &str, token: &str, iat: u64) -> String {
        create_proof(key, method, htu, token, iat, "p-1", &RustCrypto).unwrap()
    }

    #[test]
    fn a_proof_by_the_key_for_this_request_and_token_names_the_key() {
        let key = PrivateKey::generate().unwrap();
        let p = proof(&key, "POST", URL, "the.token", NOW);
        let verified = verify_dpop(&p, &request("the.token"), &RustCrypto).unwrap();
        assert_eq!(verified.jkt, key.public_key().jwk().thumbprint());
        assert_eq!(verified.jti, "p-1");
    }

    #[test]
    fn a_proof_for_another_request_token_or_time_is_refused() {
        let key = PrivateKey::generate().unwrap();
        let check = |p: String| verify_dpop(&p, &request("the.token"), &RustCrypto);
        assert_eq!(
            check(proof(&key, "GET", URL, "the.token", NOW)),
            Err(DpopError::WrongRequest)
        );
        assert_eq!(
            check(proof(&key, "POST", "http://h/v1/other", "the.token", NOW)),
            Err(DpopError::WrongRequest)
        );
        assert_eq!(
            check(proof(&key, "POST", &format!("{URL}?x=1"), "the.token", NOW)),
            Err(DpopError::WrongRequest)
        );
        assert_eq!(
            check(proof(&key, "POST", URL, "another.token", NOW)),
            Err(DpopError::WrongToken)
        );
        assert_eq!(
            check(proof(&key, "POST", URL, "the.token", NOW - 61)),
            Err(DpopError::Stale)
        );
    }

    #[test]
    fn a_proof_whose_signature_or_header_is_wrong_is_refused() {
        let key = PrivateKey::generate().unwrap();
        let good = proof(&key, "POST", URL, "t", NOW);
        let (head, rest) = good.split_once('.').unwrap();
        let (claims, _) = rest.split_once('.').unwrap();
        let forged = format!("{head}.{claims}.{}", b64::encode([7u8; 64]));
        assert_eq!(
            verify_dpop(&forged, &request("t"), &RustCrypto),
            Err(DpopError::Signature)
        );
        let jwt_typed = b64::encode(
            json!({"typ": "JWT", "alg": "ES256", "jwk": key.public_key().jwk()}).to_string(),
        );
        let wrong_type = format!("{jwt_typed}.{claims}.{}", b64::encode([7u8; 64]));
        assert_eq!(
            verify_dpop(&wrong_type, &request("t"), &RustCrypto),
            Err(DpopError::Header)
        );
        assert!(matches!(
            verify_dpop("not a proof", &request("t"), &RustCrypto),
            Err(DpopError::Malformed(_))
        ));
    }
}
