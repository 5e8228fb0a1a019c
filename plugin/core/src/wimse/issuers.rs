//! `wit-issuers.json`: a trust domain's WIT issuer public keys and, per
//! workload, the thumbprint of the one proof key its WITs may bind.
//!
//! ```json
//! {"trust_domain": "example.org",
//!  "keys": [{"kty": "EC", "crv": "P-256", "x": "…", "y": "…", "kid": "…", "alg": "ES256"}],
//!  "bindings": {"spiffe://example.org/orders": "<RFC 7638 thumbprint>"}}
//! ```
//!
//! Kept apart from the spiffile bundle (which its reference tooling
//! rewrites): the issuer's keys sign for every workload of the domain, so
//! they must never sit among keys bound to one identity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jwk::JwkError;
use crate::keys::PublicKey;
use crate::spiffe_id::SpiffeId;
use crate::token::dpop::public_key;

/// Why a `wit-issuers.json` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuersError {
    /// Not the document's JSON shape.
    #[error("wit-issuers document is malformed: {0}")]
    Malformed(String),
    /// `trust_domain` is not a trust domain name.
    #[error("wit-issuers trust_domain {0:?} is not a trust domain name")]
    TrustDomain(String),
    /// A key is not a public P-256 key.
    #[error("wit-issuers key {index}: {error}")]
    Key {
        /// Its position in `keys`.
        index: usize,
        /// What is wrong.
        error: JwkError,
    },
    /// No issuer key at all.
    #[error("wit-issuers has no keys")]
    NoKeys,
    /// A binding names no SPIFFE ID of this trust domain.
    #[error("wit-issuers binding {0:?} is not a SPIFFE ID of the trust domain")]
    Binding(String),
}

/// The document as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuersDocument {
    /// The trust domain the issuer speaks for.
    pub trust_domain: String,
    /// The issuer's public keys (JWKs; the newest first).
    pub keys: Vec<Value>,
    /// Workload SPIFFE ID → thumbprint of its proof key.
    #[serde(default)]
    pub bindings: BTreeMap<String, String>,
}

impl IssuersDocument {
    /// An empty document for `trust_domain`.
    pub fn new(trust_domain: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            keys: Vec::new(),
            bindings: BTreeMap::new(),
        }
    }

    /// Parses the JSON text (no validation beyond shape).
    pub fn parse(bytes: &[u8]) -> Result<Self, IssuersError> {
        serde_json::from_slice(bytes).map_err(|e| IssuersError::Malformed(e.to_string()))
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// A trust domain's WIT issuers, validated.
#[derive(Debug, Clone)]
pub struct WitIssuers {
    trust_domain: String,
    keys: Vec<PublicKey>,
    bindings: BTreeMap<SpiffeId, String>,
}

impl WitIssuers {
    /// Parses and validates `wit-issuers.json`.
    pub fn parse(bytes: &[u8]) -> Result<Self, IssuersError> {
        Self::from_document(&IssuersDocument::parse(bytes)?)
    }

    /// Validates a document.
    pub fn from_document(doc: &IssuersDocument) -> Result<Self, IssuersError> {
        let domain = SpiffeId::parse(&format!("spiffe://{}", doc.trust_domain))
            .map_err(|_| IssuersError::TrustDomain(doc.trust_domain.clone()))?;
        if doc.keys.is_empty() {
            return Err(IssuersError::NoKeys);
        }
        let keys = doc
            .keys
            .iter()
            .enumerate()
            .map(|(index, jwk)| issuer_key(jwk).map_err(|error| IssuersError::Key { index, error }))
            .collect::<Result<Vec<_>, _>>()?;
        let bindings = doc
            .bindings
            .iter()
            .map(|(id, jkt)| match SpiffeId::parse(id) {
                Ok(id) if id.trust_domain() == domain.trust_domain() && !jkt.is_empty() => {
                    Ok((id, jkt.clone()))
                }
                _ => Err(IssuersError::Binding(id.clone())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            trust_domain: domain.trust_domain().to_owned(),
            keys,
            bindings,
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The issuer's keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The proof key thumbprint bound to `workload`.
    pub fn binding(&self, workload: &SpiffeId) -> Option<&str> {
        self.bindings.get(workload).map(String::as_str)
    }
}

/// An issuer key: its public members, `kid` and an `alg` of ES256 if any.
fn issuer_key(jwk: &Value) -> Result<PublicKey, JwkError> {
    let alg = jwk.get("alg").and_then(Value::as_str);
    if let Some(alg) = alg.filter(|a| *a != crate::jwk::ES256) {
        return Err(JwkError::WrongAlgorithm(alg.to_owned()));
    }
    public_key(jwk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;

    fn doc(keys: Vec<Value>, bindings: &[(&str, &str)]) -> IssuersDocument {
        IssuersDocument {
            trust_domain: "example.org".into(),
            keys,
            bindings: bindings
                .iter()
                .map(|(a, b)| ((*a).into(), (*b).into()))
                .collect(),
        }
    }

    #[test]
    fn a_document_binds_workloads_of_its_domain_to_one_proof_key_each() {
        let key = PrivateKey::generate().unwrap();
        let jwk = serde_json::to_value(key.public_key().jwk()).unwrap();
        let orders = "spiffe://example.org/orders";
        let issuers = WitIssuers::from_document(&doc(vec![jwk], &[(orders, "jkt")])).unwrap();
        assert_eq!(issuers.trust_domain(), "example.org");
        assert_eq!(
            issuers.binding(&SpiffeId::parse(orders).unwrap()),
            Some("jkt")
        );
        assert_eq!(issuers.keys()[0].kid(), key.public_key().kid());
    }

    #[test]
    fn foreign_bindings_private_keys_and_empty_key_sets_are_refused() {
        let key = PrivateKey::generate().unwrap();
        let jwk = serde_json::to_value(key.public_key().jwk()).unwrap();
        let foreign = doc(vec![jwk.clone()], &[("spiffe://other.org/x", "jkt")]);
        assert!(matches!(
            WitIssuers::from_document(&foreign),
            Err(IssuersError::Binding(_))
        ));
        assert_eq!(
            WitIssuers::from_document(&doc(vec![], &[])).unwrap_err(),
            IssuersError::NoKeys
        );
        let mut private = jwk.clone();
        private["d"] = Value::String("AAAA".into());
        assert!(matches!(
            WitIssuers::from_document(&doc(vec![private], &[])),
            Err(IssuersError::Key { index: 0, .. })
        ));
        assert!(matches!(
            WitIssuers::parse(b"{\"trust_domain\":\"example.org\",\"keys\":[],\"extra\":1}"),
            Err(IssuersError::Malformed(_))
        ));
    }
}
