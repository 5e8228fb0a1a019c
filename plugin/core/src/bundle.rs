//! Trust bundles: the spiffile v1 document (keys bound to one identity each)
//! and, when explicitly configured, a standard SPIFFE JWKS (central issuer).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::jwk::JwkError;
use crate::keys::PublicKey;
use crate::spiffe_id::{SpiffeId, SpiffeIdError, validate_trust_domain};
use crate::strict_json::{self, JsonError};

/// The spiffile bundle version this implementation reads and writes.
pub const SPIFFILE_VERSION: u64 = 1;

/// Which document a bundle source holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleFormat {
    /// The spiffile v1 document: every key is bound to one SPIFFE ID.
    Spiffile,
    /// A standard SPIFFE bundle (JWKS) of a central issuer: any of its keys may
    /// sign for any ID in `trust_domain`. Only when explicitly configured.
    CentralIssuer {
        /// The trust domain the JWKS speaks for.
        trust_domain: String,
    },
}

/// Why a bundle document was rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not acceptable JSON.
    #[error("bundle is not valid JSON: {0}")]
    Json(#[from] JsonError),
    /// A required member is absent.
    #[error("bundle is missing required member {0:?}")]
    MissingMember(&'static str),
    /// A member has the wrong JSON type.
    #[error("bundle member {0:?} has the wrong type")]
    WrongType(&'static str),
    /// `spiffile_version` is not one this implementation knows.
    #[error("unsupported spiffile_version {0} (supported: 1)")]
    UnsupportedVersion(String),
    /// The trust domain is not a valid name.
    #[error("bundle trust domain is invalid: {0}")]
    TrustDomain(SpiffeIdError),
    /// A bundle names another trust domain than the one it was given for.
    #[error("bundle is for trust domain {found:?}, configured for {expected:?}")]
    WrongTrustDomain {
        /// The configured trust domain.
        expected: String,
        /// The bundle's own.
        found: String,
    },
    /// Two bundles for one trust domain: bundles are never merged.
    #[error("trust domain {0:?} has more than one bundle")]
    DuplicateTrustDomain(String),
}

/// An entry skipped while loading: the rest of the bundle stays usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleWarning {
    /// The identity (or key index) the entry was listed under.
    pub entry: String,
    /// Why it was skipped.
    pub reason: String,
}

impl fmt::Display for BundleWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped bundle entry {:?}: {}", self.entry, self.reason)
    }
}

#[derive(Debug, Clone)]
enum Keys {
    PerIdentity(HashMap<SpiffeId, Vec<PublicKey>>),
    CentralIssuer(Vec<PublicKey>),
}

/// A parsed, validated trust bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    trust_domain: String,
    keys: Keys,
    sequence: Option<u64>,
    refresh_hint: Option<u64>,
    warnings: Vec<BundleWarning>,
    /// Other trust domains' bundles, each kept apart: a key of one never
    /// validates an ID of another.
    federated: Vec<Bundle>,
}

impl Bundle {
    /// Parses a bundle document of the given format.
    pub fn parse(bytes: &[u8], format: &BundleFormat) -> Result<Self, BundleError> {
        match format {
            BundleFormat::Spiffile => Self::parse_spiffile(bytes),
            BundleFormat::CentralIssuer { trust_domain } => {
                Self::parse_central_issuer(bytes, trust_domain)
            }
        }
    }

    /// Parses a spiffile v1 document.
    pub fn parse_spiffile(bytes: &[u8]) -> Result<Self, BundleError> {
        let doc = strict_json::parse_object(bytes)?;
        let trust_domain = string_member(&doc, "trust_domain")?;
        validate_trust_domain(trust_domain).map_err(BundleError::TrustDomain)?;
        let version = doc
            .get("spiffile_version")
            .ok_or(BundleError::MissingMember("spiffile_version"))?;
        if version.as_u64() != Some(SPIFFILE_VERSION) {
            return Err(BundleError::UnsupportedVersion(version.to_string()));
        }
        let identities = doc
            .get("identities")
            .ok_or(BundleError::MissingMember("identities"))?
            .as_object()
            .ok_or(BundleError::WrongType("identities"))?;

        let mut warnings = Vec::new();
        let mut bound = HashMap::with_capacity(identities.len());
        for (raw_id, set) in identities {
            let mut skip = |reason: String| {
                warnings.push(BundleWarning {
                    entry: raw_id.clone(),
                    reason,
                })
            };
            let id = match SpiffeId::parse(raw_id) {
                Ok(id) => id,
                Err(e) => {
                    skip(format!("invalid SPIFFE ID: {e}"));
                    continue;
                }
            };
            if id.trust_domain() != trust_domain {
                skip(format!("not in trust domain {trust_domain:?}"));
                continue;
            }
            let Some(jwks) = set.get("keys").and_then(Value::as_array) else {
                skip("no \"keys\" array".into());
                continue;
            };
            let mut keys = Vec::with_capacity(jwks.len());
            for (i, jwk) in jwks.iter().enumerate() {
                match PublicKey::from_json(jwk) {
                    Ok(key) if key.kid() != key.jwk().thumbprint() => {
                        skip(format!("key {i}: kid is not the key's RFC 7638 thumbprint"));
                    }
                    Ok(key) => keys.push(key),
                    Err(e) => skip(format!("key {i}: {e}")),
                }
            }
            if keys.is_empty() {
                skip("no usable keys".into());
                continue;
            }
            bound.insert(id, keys);
        }
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            keys: Keys::PerIdentity(bound),
            sequence: None,
            refresh_hint: None,
            warnings,
            federated: Vec::new(),
        })
    }

    /// Parses a standard SPIFFE bundle (JWKS with `spiffe_sequence`,
    /// `spiffe_refresh_hint`) as the keys of a central issuer for `trust_domain`.
    pub fn parse_central_issuer(bytes: &[u8], trust_domain: &str) -> Result<Self, BundleError> {
        validate_trust_domain(trust_domain).map_err(BundleError::TrustDomain)?;
        let doc = strict_json::parse_object(bytes)?;
        let jwks = doc
            .get("keys")
            .ok_or(BundleError::MissingMember("keys"))?
            .as_array()
            .ok_or(BundleError::WrongType("keys"))?;
        let number = |name: &'static str| match doc.get(name) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or(BundleError::WrongType(name)),
        };
        let sequence = number("spiffe_sequence")?;
        let refresh_hint = number("spiffe_refresh_hint")?;
        let mut warnings = Vec::new();
        let mut keys = Vec::with_capacity(jwks.len());
        for (i, jwk) in jwks.iter().enumerate() {
            match PublicKey::from_json(jwk) {
                Ok(key) => keys.push(key),
                // X.509-SVID roots live in the same set; they are not ours to use.
                Err(JwkError::WrongUse(u)) if u == "x509-svid" => {}
                Err(e) => warnings.push(BundleWarning {
                    entry: format!("keys[{i}]"),
                    reason: e.to_string(),
                }),
            }
        }
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            keys: Keys::CentralIssuer(keys),
            sequence,
            refresh_hint,
            warnings,
            federated: Vec::new(),
        })
    }

    /// This bundle with the bundles of `others` trust domains beside it.
    /// Each answers only for IDs of its own trust domain.
    pub fn federate(mut self, others: Vec<Bundle>) -> Result<Self, BundleError> {
        let mut seen = vec![self.trust_domain.as_str()];
        for other in &others {
            if seen.contains(&other.trust_domain.as_str()) {
                return Err(BundleError::DuplicateTrustDomain(
                    other.trust_domain.clone(),
                ));
            }
            seen.push(&other.trust_domain);
        }
        self.federated = others;
        Ok(self)
    }

    /// The bundle of `trust_domain`: this one or a federated one.
    pub fn domain(&self, trust_domain: &str) -> Option<&Bundle> {
        if trust_domain == self.trust_domain {
            return Some(self);
        }
        self.federated
            .iter()
            .find(|b| b.trust_domain == trust_domain)
    }

    /// The federated trust domains' bundles.
    pub fn federated(&self) -> &[Bundle] {
        &self.federated
    }

    /// The keys that may validate a token whose `sub` is `id`, from the
    /// bundle of `id`'s own trust domain only; `None` when no bundle knows
    /// such an identity (an *unknown identity*, not a bad token).
    pub fn keys_for(&self, id: &SpiffeId) -> Option<&[PublicKey]> {
        if id.trust_domain() != self.trust_domain {
            return self.domain(id.trust_domain())?.keys_for(id);
        }
        match &self.keys {
            Keys::PerIdentity(map) => map.get(id).map(Vec::as_slice),
            Keys::CentralIssuer(keys) => (!keys.is_empty()).then_some(keys.as_slice()),
        }
    }

    /// True for a spiffile bundle (each key signs for one identity only);
    /// false for a central issuer's key set, any key of which signs for
    /// the whole trust domain.
    pub fn binds_keys_to_identities(&self) -> bool {
        matches!(self.keys, Keys::PerIdentity(_))
    }

    /// The trust domain the bundle speaks for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// `spiffe_sequence` of a SPIFFE bundle, if it carried one.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// `spiffe_refresh_hint` of a SPIFFE bundle, in seconds, if it carried one.
    pub fn refresh_hint(&self) -> Option<u64> {
        self.refresh_hint
    }

    /// Entries skipped while loading.
    pub fn warnings(&self) -> &[BundleWarning] {
        &self.warnings
    }

    /// Number of identities (spiffile) or keys (central issuer) loaded.
    pub fn len(&self) -> usize {
        match &self.keys {
            Keys::PerIdentity(map) => map.len(),
            Keys::CentralIssuer(keys) => keys.len(),
        }
    }

    /// True when nothing usable was loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn string_member<'a>(
    doc: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, BundleError> {
    doc.get(name)
        .ok_or(BundleError::MissingMember(name))?
        .as_str()
        .ok_or(BundleError::WrongType(name))
}

/// A JWK Set: the value of one identity in a spiffile bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The JWKs, newest first by convention.
    pub keys: Vec<Value>,
}

/// The spiffile bundle as an editable document, for provisioning tools.
/// Entries are kept verbatim, including ones a reader would skip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleDocument {
    /// The trust domain.
    pub trust_domain: String,
    /// Always [`SPIFFILE_VERSION`].
    pub spiffile_version: u64,
    /// SPIFFE ID → its keys.
    pub identities: BTreeMap<String, JwkSet>,
}

impl BundleDocument {
    /// An empty bundle for a trust domain.
    pub fn new(trust_domain: &str) -> Result<Self, BundleError> {
        validate_trust_domain(trust_domain).map_err(BundleError::TrustDomain)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            spiffile_version: SPIFFILE_VERSION,
            identities: BTreeMap::new(),
        })
    }

    /// Reads a document, validating it exactly as a verifier would.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        Bundle::parse_spiffile(bytes)?;
        serde_json::from_slice(bytes)
            .map_err(|e| BundleError::Json(JsonError::Syntax(e.to_string())))
    }

    /// The document as pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use serde_json::json;

    fn spiffile(trust_domain: &str, id: &str, key: &Value) -> Bundle {
        let doc = json!({
            "trust_domain": trust_domain,
            "spiffile_version": 1,
            "identities": { id: { "keys": [key] } }
        });
        Bundle::parse_spiffile(doc.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_federated_key_never_answers_for_another_trust_domain() {
        let (a_key, b_key, c_key) = (jwk(), jwk(), jwk());
        let local = spiffile("a.org", "spiffe://a.org/x", &a_key);
        let b = spiffile("b.org", "spiffe://b.org/x", &b_key);
        let c_doc = json!({ "keys": [c_key] }).to_string();
        let c = Bundle::parse_central_issuer(c_doc.as_bytes(), "c.org").unwrap();
        let all = local.federate(vec![b, c]).unwrap();
        let kid = |keys: Option<&[PublicKey]>| keys.map(|k| k[0].jwk().clone());
        let id = |s: &str| SpiffeId::parse(s).unwrap();
        let as_jwk = |v: &Value| serde_json::from_value::<crate::jwk::Jwk>(v.clone()).unwrap();
        assert_eq!(
            kid(all.keys_for(&id("spiffe://a.org/x"))),
            Some(as_jwk(&a_key))
        );
        assert_eq!(
            kid(all.keys_for(&id("spiffe://b.org/x"))),
            Some(as_jwk(&b_key))
        );
        // A central issuer answers for its own domain only.
        assert_eq!(
            kid(all.keys_for(&id("spiffe://c.org/any"))),
            Some(as_jwk(&c_key))
        );
        for unknown in ["spiffe://b.org/y", "spiffe://a.org/y", "spiffe://d.org/x"] {
            assert!(all.keys_for(&id(unknown)).is_none(), "{unknown}");
        }
    }

    #[test]
    fn one_trust_domain_never_gets_two_bundles() {
        let local = spiffile("a.org", "spiffe://a.org/x", &jwk());
        let again = spiffile("a.org", "spiffe://a.org/y", &jwk());
        assert_eq!(
            local.clone().federate(vec![again]).unwrap_err(),
            BundleError::DuplicateTrustDomain("a.org".into())
        );
        let b1 = spiffile("b.org", "spiffe://b.org/x", &jwk());
        assert!(matches!(
            local.federate(vec![b1.clone(), b1]),
            Err(BundleError::DuplicateTrustDomain(_))
        ));
    }

    fn jwk() -> Value {
        serde_json::to_value(PrivateKey::generate().unwrap().public_key().jwk()).unwrap()
    }

    fn doc(identities: Value) -> Vec<u8> {
        json!({"trust_domain": "example.org", "spiffile_version": 1, "identities": identities})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn unknown_version_rejects_the_document() {
        let bytes = json!({"trust_domain": "example.org", "spiffile_version": 2, "identities": {}});
        assert_eq!(
            Bundle::parse_spiffile(bytes.to_string().as_bytes()).err(),
            Some(BundleError::UnsupportedVersion("2".into()))
        );
    }

    #[test]
    fn missing_members_reject_the_document() {
        for (missing, bytes) in [
            (
                "trust_domain",
                json!({"spiffile_version": 1, "identities": {}}),
            ),
            (
                "spiffile_version",
                json!({"trust_domain": "example.org", "identities": {}}),
            ),
            (
                "identities",
                json!({"trust_domain": "example.org", "spiffile_version": 1}),
            ),
        ] {
            assert_eq!(
                Bundle::parse_spiffile(bytes.to_string().as_bytes()).err(),
                Some(BundleError::MissingMember(missing))
            );
        }
    }

    #[test]
    fn malformed_entries_are_skipped_with_a_warning() {
        let good = jwk();
        let bytes = doc(json!({
            "spiffe://example.org/good": {"keys": [good]},
            "spiffe://example.org/bad~id": {"keys": [jwk()]},
            "spiffe://other.org/x": {"keys": [jwk()]},
            "spiffe://example.org/nokeys": {"keys": []},
            "spiffe://example.org/notaset": 5,
            "spiffe://example.org/private": {"keys": [{"kty":"EC","crv":"P-256","x":"a","y":"b","d":"c"}]},
        }));
        let bundle = Bundle::parse_spiffile(&bytes).unwrap();
        assert_eq!(bundle.len(), 1);
        assert_eq!(bundle.warnings().len(), 5 + 1, "{:?}", bundle.warnings());
        let good_id = SpiffeId::parse("spiffe://example.org/good").unwrap();
        assert_eq!(bundle.keys_for(&good_id).map(<[_]>::len), Some(1));
    }

    #[test]
    fn a_kid_that_is_not_the_thumbprint_skips_the_key() {
        let mut odd = jwk();
        odd["kid"] = json!("my-own-kid");
        let bytes = doc(json!({"spiffe://example.org/a": {"keys": [odd, jwk()]}}));
        let bundle = Bundle::parse_spiffile(&bytes).unwrap();
        let a = SpiffeId::parse("spiffe://example.org/a").unwrap();
        assert_eq!(bundle.keys_for(&a).map(<[_]>::len), Some(1));
        assert!(bundle.warnings()[0].reason.contains("thumbprint"));
    }

    #[test]
    fn keys_are_bound_to_their_identity_only() {
        let bytes = doc(json!({"spiffe://example.org/a": {"keys": [jwk()]}}));
        let bundle = Bundle::parse_spiffile(&bytes).unwrap();
        let b = SpiffeId::parse("spiffe://example.org/b").unwrap();
        assert!(bundle.keys_for(&b).is_none());
    }

    #[test]
    fn central_issuer_keys_sign_for_the_whole_trust_domain_only() {
        let mut x509 = jwk();
        x509["use"] = json!("x509-svid");
        let bytes =
            json!({"keys": [jwk(), x509], "spiffe_sequence": 7, "spiffe_refresh_hint": 300});
        let bundle =
            Bundle::parse_central_issuer(bytes.to_string().as_bytes(), "example.org").unwrap();
        assert_eq!(bundle.sequence(), Some(7));
        assert_eq!(bundle.refresh_hint(), Some(300));
        assert!(bundle.warnings().is_empty());
        let inside = SpiffeId::parse("spiffe://example.org/any/one").unwrap();
        let outside = SpiffeId::parse("spiffe://evil.org/any").unwrap();
        assert_eq!(bundle.keys_for(&inside).map(<[_]>::len), Some(1));
        assert!(bundle.keys_for(&outside).is_none());
    }

    #[test]
    fn a_spiffe_jwks_is_not_read_as_a_spiffile_bundle() {
        let bytes = json!({"keys": [jwk()]});
        assert!(Bundle::parse_spiffile(bytes.to_string().as_bytes()).is_err());
    }

    #[test]
    fn duplicate_identities_reject_the_document() {
        let text = format!(
            r#"{{"trust_domain":"example.org","spiffile_version":1,"identities":{{"spiffe://example.org/a":{{"keys":[{0}]}},"spiffe://example.org/a":{{"keys":[{0}]}}}}}}"#,
            jwk()
        );
        assert!(matches!(
            Bundle::parse_spiffile(text.as_bytes()),
            Err(BundleError::Json(JsonError::DuplicateMember(_)))
        ));
    }
}
