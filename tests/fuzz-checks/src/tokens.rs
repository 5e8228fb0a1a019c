//! JWT-SVID verification: any bytes as a token, and the input's header and
//! claims signed with a fixture key (random tokens never get past the
//! signature), checked against `jsonwebtoken`.

use std::sync::LazyLock;

use ephemera_core::{Bundle, Es256, PrivateKey, RustCrypto, TokenVerifier, VerifyOptions, b64};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::fixtures::{self, NOW};

static BUNDLE: LazyLock<Bundle> = LazyLock::new(fixtures::bundle);
static KEY: LazyLock<PrivateKey> = LazyLock::new(|| fixtures::key("orders_private_key_pem"));

/// Any bytes as a JWT-SVID for billing: verification answers, never panics.
pub fn token_verify(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    for allow_multiple_audiences in [false, true] {
        let options = VerifyOptions {
            allow_multiple_audiences,
            ..VerifyOptions::default()
        };
        let verifier = TokenVerifier::new(fixtures::id("billing"), options);
        let _ = verifier.verify(&token, &BUNDLE, NOW, &RustCrypto);
    }
}

/// The input as `header 0xff claims` (or claims alone under an ES256
/// header), signed by orders' key: verification never panics, and whatever
/// ephemera accepts, `jsonwebtoken` accepts too (ours is the stricter).
pub fn token_signed(data: &[u8]) {
    let (header, claims) = match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&br#"{"alg":"ES256","typ":"JWT"}"#[..], data),
    };
    let input = format!("{}.{}", b64::encode(header), b64::encode(claims));
    let Ok(signature) = RustCrypto.sign(&KEY, input.as_bytes()) else {
        return;
    };
    let token = format!("{input}.{}", b64::encode(signature));
    let verifier = TokenVerifier::new(fixtures::id("billing"), VerifyOptions::default());
    if verifier.verify(&token, &BUNDLE, NOW, &RustCrypto).is_err() {
        return;
    }
    let jwk = KEY.public_key().jwk();
    let decoding = DecodingKey::from_ec_components(&jwk.x, &jwk.y).expect("fixture key");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["spiffe://example.org/billing"]);
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    validation.leeway = VerifyOptions::default().leeway_secs;
    validation.validate_nbf = true;
    if let Err(e) = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation) {
        // jsonwebtoken judges time by the real clock, not the fixed NOW:
        // only its other refusals are findings.
        let clock = matches!(
            e.kind(),
            jsonwebtoken::errors::ErrorKind::ExpiredSignature
                | jsonwebtoken::errors::ErrorKind::ImmatureSignature
        );
        assert!(
            clock,
            "ephemera accepted what jsonwebtoken refuses ({e:?}): {token}"
        );
    }
}
