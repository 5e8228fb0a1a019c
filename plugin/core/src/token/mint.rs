//! Minting JWT-SVIDs with the workload's own key.

use serde_json::{Map, Value, json};

use super::error::MintError;
use crate::b64;
use crate::crypto::{CryptoError, Es256};
use crate::jwk::ES256;
use crate::keys::PrivateKey;
use crate::spiffe_id::SpiffeId;

/// Default token lifetime, in seconds.
pub const DEFAULT_TTL_SECS: u64 = 60;

/// Mints tokens for one workload: its ID and key, parsed once.
#[derive(Debug, Clone)]
pub struct Minter {
    id: SpiffeId,
    key: PrivateKey,
    /// The encoded header, which never changes for a key.
    header: String,
}

impl Minter {
    /// A minter signing as `id` with `key`.
    pub fn new(id: SpiffeId, key: PrivateKey) -> Self {
        let header = json!({"alg": ES256, "kid": key.public_key().kid(), "typ": "JWT"});
        Self {
            header: b64::encode(header.to_string()),
            id,
            key,
        }
    }

    /// The workload's SPIFFE ID (the tokens' `sub`).
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The signing key.
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// Mints `{sub, aud, iat, exp[, jti]}` valid from `now` for `ttl_secs`.
    pub fn mint(
        &self,
        audience: &SpiffeId,
        now: u64,
        ttl_secs: u64,
        jti: Option<&str>,
        crypto: &dyn Es256,
    ) -> Result<String, MintError> {
        if ttl_secs == 0 {
            return Err(MintError::ZeroTtl);
        }
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String(self.id.to_string()));
        claims.insert("aud".into(), Value::String(audience.to_string()));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now.saturating_add(ttl_secs)));
        if let Some(jti) = jti {
            claims.insert("jti".into(), Value::String(jti.to_owned()));
        }
        let mut token = String::with_capacity(self.header.len() + 256);
        token.push_str(&self.header);
        token.push('.');
        token.push_str(&b64::encode(Value::Object(claims).to_string()));
        let signature = crypto.sign(&self.key, token.as_bytes())?;
        token.push('.');
        token.push_str(&b64::encode(signature));
        Ok(token)
    }
}

/// A fresh `jti`: 128 bits from the CSPRNG, base64url.
pub fn random_jti() -> Result<String, MintError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| MintError::Randomness)?;
    Ok(b64::encode(bytes))
}

/// `header.claims.signature` of two JSON values, signed with `key` (DPoP
/// proofs, WIMSE tokens).
pub(crate) fn sign_compact(
    header: &Value,
    claims: &Value,
    key: &PrivateKey,
    crypto: &dyn Es256,
) -> Result<String, CryptoError> {
    let mut token = format!(
        "{}.{}",
        b64::encode(header.to_string()),
        b64::encode(claims.to_string())
    );
    let signature = crypto.sign(key, token.as_bytes())?;
    token.push('.');
    token.push_str(&b64::encode(signature));
    Ok(token)
}
