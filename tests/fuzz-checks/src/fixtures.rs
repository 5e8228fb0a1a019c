//! The test suite's identities, which the checks sign and verify with.

use ephemera_core::{Bundle, PrivateKey, SpiffeId};
use serde_json::Value;

/// The suite's spiffile fixtures (keys, a bundle, tokens).
const FIXTURES: &str = include_str!("../../data/spiffile-fixtures.json");

/// The fixtures, parsed.
pub fn fixtures() -> Value {
    serde_json::from_str(FIXTURES).expect("fixtures are JSON")
}

/// A fixture private key by its field name.
pub fn key(field: &str) -> PrivateKey {
    PrivateKey::from_pkcs8_pem(fixtures()[field].as_str().unwrap_or_default()).expect("fixture key")
}

/// The fixture bundle (orders and billing).
pub fn bundle() -> Bundle {
    Bundle::parse_spiffile(fixtures()["bundle"].to_string().as_bytes()).expect("fixture bundle")
}

/// A SPIFFE ID of the fixtures' trust domain.
pub fn id(path: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://example.org/{path}")).expect("an ID")
}

/// A time inside every fixture token's lifetime.
pub const NOW: u64 = 2_000_000_000;
