//! Shared helpers for the core's integration tests.
#![allow(dead_code, missing_docs)]

use std::borrow::Cow;

use ephemera_core::filter::RequestView;
use ephemera_core::{Bundle, Es256, PrivateKey, RustCrypto, SpiffeId, b64};
use serde_json::{Value, json};

pub const FIXTURES: &str = include_str!("../../../tests/data/spiffile-fixtures.json");

pub fn fixtures() -> Value {
    serde_json::from_str(FIXTURES).unwrap()
}

pub fn id(text: &str) -> SpiffeId {
    SpiffeId::parse(text).unwrap()
}

/// Signs arbitrary header and claims text with `key`, bypassing every rule.
pub fn sign_raw(key: &PrivateKey, header: &str, claims: &str) -> String {
    let input = format!("{}.{}", b64::encode(header), b64::encode(claims));
    let sig = RustCrypto.sign(key, input.as_bytes()).unwrap();
    format!("{input}.{}", b64::encode(sig))
}

/// A standard header naming `key`.
pub fn header(key: &PrivateKey) -> String {
    json!({"alg": "ES256", "kid": key.public_key().kid(), "typ": "JWT"}).to_string()
}

/// A bundle binding each (id, keys) pair.
pub fn bundle(entries: &[(&str, &[&PrivateKey])]) -> Bundle {
    let mut identities = serde_json::Map::new();
    for (spiffe_id, keys) in entries {
        let jwks: Vec<Value> = keys
            .iter()
            .map(|k| serde_json::to_value(k.public_key().jwk()).unwrap())
            .collect();
        identities.insert(spiffe_id.to_string(), json!({ "keys": jwks }));
    }
    let doc =
        json!({"trust_domain": "example.org", "spiffile_version": 1, "identities": identities});
    Bundle::parse_spiffile(doc.to_string().as_bytes()).unwrap()
}

/// A request as a list of headers, lent to the filter as a host that can
/// lend them does.
pub struct Request(pub Vec<(&'static str, String)>);

impl RequestView for Request {
    fn header(&self, name: &str) -> Option<Result<Cow<'_, str>, ()>> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| Ok(Cow::Borrowed(v.as_str())))
    }
    fn header_values(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn cluster(&self) -> Option<String> {
        None
    }
}
