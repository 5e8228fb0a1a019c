//! The spiffile reference implementation's cross-implementation fixtures.

mod common;

use common::{fixtures, id};
use ephemera_core::{
    Bundle, InvalidToken, PrivateKey, RustCrypto, SpiffeId, TokenVerifier, VerifyError,
    VerifyOptions,
};

const NOW: u64 = 1_800_000_000; // 2027, inside the fixture token's lifetime.

#[test]
fn jwks_and_kids_are_derived_byte_for_byte_from_the_pems() {
    let f = fixtures();
    for who in ["orders", "billing"] {
        let key = PrivateKey::from_pkcs8_pem(f[format!("{who}_private_key_pem")].as_str().unwrap())
            .unwrap();
        let ours = serde_json::to_value(key.public_key().jwk()).unwrap();
        assert_eq!(ours, f[format!("{who}_jwk")], "{who}");
        assert_eq!(
            key.public_key().kid(),
            f[format!("{who}_jwk")]["kid"].as_str().unwrap()
        );
    }
}

#[test]
fn the_2035_orders_to_billing_token_verifies() {
    let f = fixtures();
    let bundle = Bundle::parse_spiffile(f["bundle"].to_string().as_bytes()).unwrap();
    assert!(bundle.warnings().is_empty());
    let verifier = TokenVerifier::new(id("spiffe://example.org/billing"), VerifyOptions::default());
    let token = f["token_orders_to_billing_exp_2035"].as_str().unwrap();
    let verified = verifier.verify(token, &bundle, NOW, &RustCrypto).unwrap();
    assert_eq!(verified.caller, id("spiffe://example.org/orders"));
    assert_eq!(verified.expires_at, 2_051_222_400);
}

#[test]
fn the_multi_audience_token_is_rejected() {
    let f = fixtures();
    let bundle = Bundle::parse_spiffile(f["bundle"].to_string().as_bytes()).unwrap();
    let verifier = TokenVerifier::new(id("spiffe://example.org/billing"), VerifyOptions::default());
    let token = f["token_orders_to_billing_multi_aud_exp_2035"]
        .as_str()
        .unwrap();
    assert_eq!(
        verifier.verify(token, &bundle, NOW, &RustCrypto),
        Err(VerifyError::Invalid(InvalidToken::AudienceNotString))
    );
}

#[test]
fn every_valid_spiffe_id_vector_parses_and_round_trips() {
    for v in fixtures()["valid_spiffe_ids"].as_array().unwrap() {
        let text = v.as_str().unwrap();
        assert_eq!(SpiffeId::parse(text).unwrap().to_string(), text);
    }
}

#[test]
fn every_invalid_spiffe_id_vector_is_rejected() {
    for v in fixtures()["invalid_spiffe_ids"].as_array().unwrap() {
        assert!(SpiffeId::parse(v.as_str().unwrap()).is_err(), "{v}");
    }
}
