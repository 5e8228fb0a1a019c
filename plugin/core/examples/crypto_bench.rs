//! Per-operation timings of the identity core, natively or on `wasm32-wasip1`
//! (run the .wasm under a V8 WASI host such as `node tests/bench/wasi-run.mjs`).
//!
//! Compares the pure-Rust `p256` path the core uses with `jsonwebtoken`'s
//! RustCrypto backend. Prints one line per operation: median µs over the runs.

use std::time::Instant;

use ephemera_core::{
    Bundle, Minter, PrivateKey, RustCrypto, SpiffeId, TokenVerifier, VerifyOptions,
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
        println!("{target:<14} {name:<36} {micros:>9.1} µs");
    }
}
