//! Per-operation timings of the identity core, natively or on `wasm32-wasip1`
//! (run the .wasm under a V8 WASI host such as `node bench/wasi-run.mjs`).
//!
//! Compares the pure-Rust `p256` path the core uses with `jsonwebtoken`'s
//! RustCrypto backend. Prints one line per operation: median µs over the runs.

use std::time::Instant;

use ephemera_core::crypto::{CryptoError, RawSignature, raw_to_der};
use ephemera_core::filter::TokenCache;
use ephemera_core::{
    Bundle, Es256, Minter, PrivateKey, PublicKey, RustCrypto, SpiffeId, TokenVerifier,
    VerifyOptions,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

const NOW: u64 = 1_900_000_000;

fn median_micros(iterations: usize, mut op: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            op();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Median µs of `op` run in batches of 100 (for operations near a microsecond).
fn median_micros_batched(iterations: usize, mut op: impl FnMut()) -> f64 {
    median_micros(iterations, || {
        for _ in 0..100 {
            op();
        }
    }) / 100.0
}

/// Accepts every signature: what verification costs around the signature
/// check (decoding, parsing, claims, key lookup), which a native backend
/// leaves in the VM.
struct AcceptAll;

impl Es256 for AcceptAll {
    fn name(&self) -> &'static str {
        "accept-all"
    }
    fn verify(&self, _: &PublicKey, _: &[u8], _: &RawSignature) -> Result<bool, CryptoError> {
        Ok(true)
    }
    fn sign(&self, _: &PrivateKey, _: &[u8]) -> Result<RawSignature, CryptoError> {
        Err(CryptoError {
            backend: "accept-all",
            reason: "does not sign".into(),
        })
    }
}

fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let orders = SpiffeId::parse("spiffe://example.org/orders").unwrap();
    let billing = SpiffeId::parse("spiffe://example.org/billing").unwrap();
    let key = PrivateKey::generate().unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    let doc = json!({"trust_domain": "example.org", "spiffile_version": 1,
        "identities": {orders.as_str(): {"keys": [key.public_key().jwk()]}}});
    let bundle_bytes = doc.to_string().into_bytes();
    let bundle = Bundle::parse_spiffile(&bundle_bytes).unwrap();
    let minter = Minter::new(orders.clone(), key.clone());
    let verifier = TokenVerifier::new(billing.clone(), VerifyOptions::default());
    let token = minter.mint(&billing, NOW, 60, None, &RustCrypto).unwrap();
    let raw_signature: RawSignature = ephemera_core::b64::decode(token.rsplit('.').next().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let mut cache = TokenCache::new(1024, 1 << 20);
    cache.insert(&token, orders.clone(), NOW + 60);

    let jwk = key.public_key().jwk();
    let decoding = DecodingKey::from_ec_components(&jwk.x, &jwk.y).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[billing.as_str()]);
    validation.validate_exp = false;
    let encoding = EncodingKey::from_ec_der(key.pkcs8_der());
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.public_key().kid().to_owned());
    let claims =
        json!({"sub": orders.as_str(), "aud": billing.as_str(), "iat": NOW, "exp": NOW + 60});

    let target = if cfg!(target_arch = "wasm32") {
        "wasm32-wasip1"
    } else {
        "native"
    };
    let rows = [
        (
            "p256 verify (full JWT-SVID rules)",
            median_micros(iterations, || {
                verifier.verify(&token, &bundle, NOW, &RustCrypto).unwrap();
            }),
        ),
        (
            "verify around the signature (no signature check)",
            median_micros_batched(iterations, || {
                verifier.verify(&token, &bundle, NOW, &AcceptAll).unwrap();
            }),
        ),
        (
            "r‖s to DER (for verify_signature)",
            median_micros_batched(iterations, || {
                std::hint::black_box(raw_to_der(&raw_signature));
            }),
        ),
        (
            "verified-token cache hit",
            median_micros_batched(iterations, || {
                std::hint::black_box(cache.get(&token, NOW));
            }),
        ),
        (
            "p256 mint (key parsed once)",
            median_micros(iterations, || {
                minter.mint(&billing, NOW, 60, None, &RustCrypto).unwrap();
            }),
        ),
        (
            "jsonwebtoken verify",
            median_micros(iterations, || {
                jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
            }),
        ),
        (
            "jsonwebtoken encode",
            median_micros(iterations, || {
                jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
            }),
        ),
        (
            "parse PKCS#8 PEM key",
            median_micros(iterations, || {
                PrivateKey::from_pkcs8_pem(&pem).unwrap();
            }),
        ),
        (
            "parse bundle (1 identity)",
            median_micros(iterations, || {
                Bundle::parse_spiffile(&bundle_bytes).unwrap();
            }),
        ),
    ];
    for (name, micros) in rows {
        println!("{target:<14} {name:<50} {micros:>9.2} µs");
    }
}
