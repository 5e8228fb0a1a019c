//! Arbitrary and mutated input never panics the verifier, and a mutated
//! token never verifies.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{bundle, id};
use ephemera_core::{
    Bundle, BundleFormat, Minter, PrivateKey, RustCrypto, TokenVerifier, VerifyOptions,
};
use proptest::prelude::*;

const NOW: u64 = 1_900_000_000;

fn setup() -> (String, Bundle, TokenVerifier) {
    let key = PrivateKey::generate().unwrap();
    let token = Minter::new(id("spiffe://example.org/orders"), key.clone())
        .mint(
            &id("spiffe://example.org/billing"),
            NOW,
            60,
            Some("j"),
            &RustCrypto,
        )
        .unwrap();
    let b = bundle(&[("spiffe://example.org/orders", &[&key])]);
    let v = TokenVerifier::new(id("spiffe://example.org/billing"), VerifyOptions::default());
    (token, b, v)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_text_is_rejected_without_panic(s in "\\PC{0,300}") {
        let (_, b, v) = setup();
        prop_assert!(v.verify(&s, &b, NOW, &RustCrypto).is_err());
    }

    #[test]
    fn random_dotted_base64_is_rejected_without_panic(
        parts in proptest::collection::vec("[A-Za-z0-9_-]{0,120}", 1..5)
    ) {
        let (_, b, v) = setup();
        prop_assert!(v.verify(&parts.join("."), &b, NOW, &RustCrypto).is_err());
    }

    #[test]
    fn any_single_byte_change_to_a_valid_token_is_rejected(pos in 0usize..10_000, byte in any::<u8>()) {
        let (token, b, v) = setup();
        let mut bytes = token.clone().into_bytes();
        let pos = pos % bytes.len();
        prop_assume!(bytes[pos] != byte);
        bytes[pos] = byte;
        let mutated = String::from_utf8_lossy(&bytes).into_owned();
        // Base64url has 2 ignorable trailing bits in a final partial group:
        // a change there can decode to the same bytes. Compare decoded parts.
        let same = mutated.split('.').map(|p| ephemera_core::b64::decode(p).ok()).collect::<Vec<_>>()
            == token.split('.').map(|p| ephemera_core::b64::decode(p).ok()).collect::<Vec<_>>();
        prop_assume!(!same);
        prop_assert!(v.verify(&mutated, &b, NOW, &RustCrypto).is_err());
    }

    #[test]
    fn random_bundles_are_rejected_or_parsed_without_panic(s in "\\PC{0,400}") {
        let _ = Bundle::parse(s.as_bytes(), &BundleFormat::Spiffile);
        let _ = Bundle::parse(s.as_bytes(), &BundleFormat::CentralIssuer { trust_domain: "example.org".into() });
    }
}
