//! Cross-checks against an independent JWT implementation (`jsonwebtoken`).

mod common;

use common::{bundle, id};
use ephemera_core::{Minter, PrivateKey, RustCrypto, TokenVerifier, VerifyOptions};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

const ORDERS: &str = "spiffe://example.org/orders";
const BILLING: &str = "spiffe://example.org/billing";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn tokens_from_jsonwebtoken_verify_in_ephemera() {
    let key = PrivateKey::generate().unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.public_key().kid().to_owned());
    let t = now();
    let claims = json!({"sub": ORDERS, "aud": BILLING, "iat": t, "exp": t + 60});
    let token =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(key.pkcs8_der())).unwrap();
    let v = TokenVerifier::new(id(BILLING), VerifyOptions::default());
    let b = bundle(&[(ORDERS, &[&key])]);
    assert_eq!(
        v.verify(&token, &b, t, &RustCrypto).unwrap().caller,
        id(ORDERS)
    );
}

#[test]
fn tokens_from_ephemera_verify_in_jsonwebtoken() {
    let key = PrivateKey::generate().unwrap();
    let token = Minter::new(id(ORDERS), key.clone())
        .mint(&id(BILLING), now(), 60, None, &RustCrypto)
        .unwrap();
    let jwk = key.public_key().jwk();
    let decoding = DecodingKey::from_ec_components(&jwk.x, &jwk.y).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[BILLING]);
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
    assert_eq!(data.claims["sub"], ORDERS);
    assert_eq!(data.header.kid.as_deref(), Some(key.public_key().kid()));
}
