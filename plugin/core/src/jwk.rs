//! Public EC P-256 JWKs and their RFC 7638 thumbprints.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::b64;

/// The JWK `use` of keys that sign JWT-SVIDs.
pub const JWT_SVID_USE: &str = "jwt-svid";
/// The only JWS algorithm of the profile.
pub const ES256: &str = "ES256";

/// Why a JWK cannot be used as a JWT-SVID verification key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    /// The JWK is not a JSON object.
    #[error("JWK is not a JSON object")]
    NotAnObject,
    /// A required member is missing or not a string.
    #[error("JWK member {0:?} is missing or not a string")]
    MissingMember(&'static str),
    /// `kty` is not `EC` or `crv` is not `P-256`.
    #[error("JWK is not an EC P-256 key (kty {kty:?}, crv {crv:?})")]
    UnsupportedKeyType {
        /// The `kty` found.
        kty: String,
        /// The `crv` found.
        crv: String,
    },
    /// The JWK carries the private scalar `d`.
    #[error("JWK carries private key material (member \"d\")")]
    PrivatePart,
    /// `use` is present and is not `jwt-svid`.
    #[error("JWK use {0:?} is not \"jwt-svid\"")]
    WrongUse(String),
    /// `alg` is present and is not `ES256`.
    #[error("JWK alg {0:?} is not \"ES256\"")]
    WrongAlgorithm(String),
    /// `x` or `y` is not 32 bytes of base64url.
    #[error("JWK coordinate {0:?} is not 32 bytes of unpadded base64url")]
    BadCoordinate(&'static str),
    /// The coordinates are not a point on P-256.
    #[error("JWK coordinates are not a point on P-256")]
    NotOnCurve,
}

/// A public EC P-256 JWK as the spiffile bundle carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `EC`.
    pub kty: String,
    /// Always `P-256`.
    pub crv: String,
    /// The x coordinate, base64url.
    pub x: String,
    /// The y coordinate, base64url.
    pub y: String,
    /// Key ID: the RFC 7638 thumbprint for keys ephemera writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Key use: `jwt-svid`.
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Algorithm: `ES256`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

impl Jwk {
    /// A full JWT-SVID JWK for P-256 coordinates, `kid` set to the thumbprint.
    pub fn for_coordinates(x: &[u8], y: &[u8]) -> Self {
        let mut jwk = Self {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: b64::encode(x),
            y: b64::encode(y),
            kid: None,
            key_use: Some(JWT_SVID_USE.into()),
            alg: Some(ES256.into()),
        };
        jwk.kid = Some(jwk.thumbprint());
        jwk
    }

    /// Reads a JWK from a JSON object, checking the members the profile fixes.
    /// Coordinates are checked by [`crate::PublicKey::from_jwk`].
    pub fn from_json(value: &Value) -> Result<Self, JwkError> {
        let map = value.as_object().ok_or(JwkError::NotAnObject)?;
        let member = |name: &'static str| -> Result<String, JwkError> {
            map.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(JwkError::MissingMember(name))
        };
        let optional = |name: &'static str| -> Result<Option<String>, JwkError> {
            match map.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(JwkError::MissingMember(name)),
            }
        };
        let kty = member("kty")?;
        let crv = optional("crv")?.unwrap_or_default();
        if kty != "EC" || crv != "P-256" {
            return Err(JwkError::UnsupportedKeyType { kty, crv });
        }
        if map.contains_key("d") {
            return Err(JwkError::PrivatePart);
        }
        let jwk = Self {
            kty,
            crv,
            x: member("x")?,
            y: member("y")?,
            kid: optional("kid")?,
            key_use: optional("use")?,
            alg: optional("alg")?,
        };
        if let Some(u) = jwk.key_use.as_deref().filter(|u| *u != JWT_SVID_USE) {
            return Err(JwkError::WrongUse(u.to_owned()));
        }
        if let Some(a) = jwk.alg.as_deref().filter(|a| *a != ES256) {
            return Err(JwkError::WrongAlgorithm(a.to_owned()));
        }
        Ok(jwk)
    }

    /// The RFC 7638 SHA-256 thumbprint, base64url.
    pub fn thumbprint(&self) -> String {
        let mut members = Map::new();
        members.insert("crv".into(), Value::String(self.crv.clone()));
        members.insert("kty".into(), Value::String(self.kty.clone()));
        members.insert("x".into(), Value::String(self.x.clone()));
        members.insert("y".into(), Value::String(self.y.clone()));
        // serde_json's Map is ordered by key and compact: exactly RFC 7638's form.
        let canonical = Value::Object(members).to_string();
        b64::encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The `kid`, or the thumbprint when the JWK has none.
    pub fn kid_or_thumbprint(&self) -> String {
        self.kid.clone().unwrap_or_else(|| self.thumbprint())
    }
}
