//! Every rejection rule of JWT-SVID verification, one test each.

mod common;

use common::{bundle, header, id, sign_raw};
use ephemera_core::token::DEFAULT_TTL_SECS;
use ephemera_core::{
    Bundle, InvalidToken, Minter, PrivateKey, RustCrypto, TokenVerifier, VerifyError,
    VerifyOptions, b64,
};
use serde_json::json;

const NOW: u64 = 1_900_000_000;
const ORDERS: &str = "spiffe://example.org/orders";
const BILLING: &str = "spiffe://example.org/billing";

struct World {
    orders: PrivateKey,
    billing: PrivateKey,
    bundle: Bundle,
    verifier: TokenVerifier,
}

fn world() -> World {
    let orders = PrivateKey::generate().unwrap();
    let billing = PrivateKey::generate().unwrap();
    let bundle = bundle(&[(ORDERS, &[&orders]), (BILLING, &[&billing])]);
    World {
        orders,
        billing,
        bundle,
        verifier: TokenVerifier::new(id(BILLING), VerifyOptions::default()),
    }
}

fn claims() -> serde_json::Value {
    json!({"sub": ORDERS, "aud": BILLING, "iat": NOW, "exp": NOW + 60})
}

impl World {
    fn check(&self, token: &str) -> Result<ephemera_core::VerifiedToken, VerifyError> {
        self.verifier.verify(token, &self.bundle, NOW, &RustCrypto)
    }
    fn with_claims(&self, claims: serde_json::Value) -> String {
        sign_raw(&self.orders, &header(&self.orders), &claims.to_string())
    }
    fn rejects(&self, token: &str, reason: InvalidToken) {
        assert_eq!(self.check(token), Err(VerifyError::Invalid(reason)));
    }
}

#[test]
fn a_well_formed_token_verifies_and_names_its_caller() {
    let w = world();
    let v = w.check(&w.with_claims(claims())).unwrap();
    assert_eq!(v.caller, id(ORDERS));
    assert_eq!(v.expires_at, NOW + 60);
}

#[test]
fn only_es256_is_accepted_whatever_the_header_says() {
    let w = world();
    let c = claims().to_string();
    for alg in [
        json!("none"),
        json!("HS256"),
        json!("ES384"),
        json!("es256"),
        json!(null),
    ] {
        let h = json!({"alg": alg, "kid": w.orders.public_key().kid()}).to_string();
        w.rejects(&sign_raw(&w.orders, &h, &c), InvalidToken::Algorithm);
    }
    let no_alg = json!({"kid": w.orders.public_key().kid()}).to_string();
    w.rejects(&sign_raw(&w.orders, &no_alg, &c), InvalidToken::Algorithm);
}

#[test]
fn a_key_bound_to_one_identity_never_validates_another() {
    let w = world();
    // billing signs a token claiming to be orders, naming billing's own kid.
    let forged = sign_raw(&w.billing, &header(&w.billing), &claims().to_string());
    w.rejects(&forged, InvalidToken::SignatureMismatch);
}

#[test]
fn a_token_offering_a_key_or_a_key_location_is_refused() {
    let w = world();
    let attacker = PrivateKey::generate().unwrap();
    let offered = [
        ("jwk", json!(attacker.public_key().jwk())),
        ("jku", json!("https://evil.example/jwks")),
        ("x5u", json!("https://evil.example/x5u")),
        ("x5c", json!(["AAAA"])),
        ("x5t", json!("AAAA")),
        ("x5t#S256", json!("AAAA")),
    ];
    for (name, value) in offered {
        let mut h = json!({"alg": "ES256", "kid": w.orders.public_key().kid()});
        h[name] = value;
        // Signed by the subject's own key, and by the key it offers.
        for key in [&w.orders, &attacker] {
            w.rejects(
                &sign_raw(key, &h.to_string(), &claims().to_string()),
                InvalidToken::KeyInHeader(name),
            );
        }
    }
    // Found by fuzzing (fuzz/regressions/token_signed): a `jwk` that is not
    // even a JWK.
    let h = json!({"alg": "ES256", "jwk": "mxUG_1qRFVEqi_fztCHOjfEaOE5uWmGYxvFQ", "typ": "JWT"});
    w.rejects(
        &sign_raw(&w.orders, &h.to_string(), &claims().to_string()),
        InvalidToken::KeyInHeader("jwk"),
    );
}

#[test]
fn encrypted_object_parameters_and_mistyped_kid_or_cty_are_refused() {
    let w = world();
    for (name, value, reason) in [
        ("enc", json!("A128GCM"), InvalidToken::NotJws("enc")),
        ("zip", json!("DEF"), InvalidToken::NotJws("zip")),
        ("kid", json!(7), InvalidToken::HeaderType("kid")),
        ("cty", json!({"a": 1}), InvalidToken::HeaderType("cty")),
    ] {
        let mut h = json!({"alg": "ES256"});
        h[name] = value;
        w.rejects(
            &sign_raw(&w.orders, &h.to_string(), &claims().to_string()),
            reason,
        );
    }
}

#[test]
fn an_unknown_subject_is_an_unknown_identity_not_an_invalid_token() {
    let w = world();
    let mut c = claims();
    c["sub"] = json!("spiffe://example.org/stranger");
    assert_eq!(
        w.check(&w.with_claims(c)),
        Err(VerifyError::UnknownIdentity(id(
            "spiffe://example.org/stranger"
        )))
    );
}

#[test]
fn an_unknown_kid_falls_back_to_the_subjects_other_keys() {
    let w = world();
    let h = json!({"alg": "ES256", "kid": "no-such-kid"}).to_string();
    assert!(
        w.check(&sign_raw(&w.orders, &h, &claims().to_string()))
            .is_ok()
    );
    let no_kid = json!({"alg": "ES256"}).to_string();
    assert!(
        w.check(&sign_raw(&w.orders, &no_kid, &claims().to_string()))
            .is_ok()
    );
}

#[test]
fn every_key_of_a_rotation_overlap_verifies() {
    let old = PrivateKey::generate().unwrap();
    let new = PrivateKey::generate().unwrap();
    let b = bundle(&[(ORDERS, &[&new, &old])]);
    let verifier = TokenVerifier::new(id(BILLING), VerifyOptions::default());
    for key in [&old, &new] {
        let t = sign_raw(key, &header(key), &claims().to_string());
        assert!(verifier.verify(&t, &b, NOW, &RustCrypto).is_ok());
    }
}

#[test]
fn aud_must_be_one_string_equal_to_the_receiver() {
    let w = world();
    let mut c = claims();
    c["aud"] = json!([BILLING]);
    w.rejects(&w.with_claims(c.clone()), InvalidToken::AudienceNotString);
    c["aud"] = json!(BILLING.len());
    w.rejects(&w.with_claims(c.clone()), InvalidToken::AudienceNotString);
    c["aud"] = json!("spiffe://example.org/other");
    w.rejects(&w.with_claims(c.clone()), InvalidToken::AudienceMismatch);
    c["aud"] = json!(format!("{BILLING}/"));
    w.rejects(&w.with_claims(c), InvalidToken::AudienceMismatch);
}

#[test]
fn sub_aud_and_exp_are_required() {
    let w = world();
    for name in ["sub", "aud", "exp"] {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(name);
        let expected = InvalidToken::MissingClaim(match name {
            "sub" => "sub",
            "aud" => "aud",
            _ => "exp",
        });
        w.rejects(&w.with_claims(c), expected);
    }
}

#[test]
fn numeric_dates_must_be_json_numbers() {
    let w = world();
    for name in ["exp", "iat", "nbf"] {
        let mut c = claims();
        c[name] = json!((NOW + 10).to_string());
        let expected = InvalidToken::ClaimType(match name {
            "exp" => "exp",
            "iat" => "iat",
            _ => "nbf",
        });
        w.rejects(&w.with_claims(c), expected);
    }
    let mut c = claims();
    c["exp"] = json!(-5);
    w.rejects(&w.with_claims(c), InvalidToken::ClaimType("exp"));
    let mut fractional = claims();
    fractional["exp"] = json!(NOW as f64 + 60.5);
    assert!(w.check(&w.with_claims(fractional)).is_ok());
}

#[test]
fn a_sub_that_is_not_a_spiffe_id_is_rejected() {
    let w = world();
    let mut c = claims();
    c["sub"] = json!("orders");
    assert!(matches!(
        w.check(&w.with_claims(c)),
        Err(VerifyError::Invalid(InvalidToken::Subject(_)))
    ));
}

#[test]
fn exp_nbf_and_iat_allow_thirty_seconds_of_leeway() {
    let w = world();
    let mut c = claims();
    c["exp"] = json!(NOW - 29);
    assert!(w.check(&w.with_claims(c.clone())).is_ok());
    c["exp"] = json!(NOW - 30);
    w.rejects(&w.with_claims(c), InvalidToken::Expired);

    let mut c = claims();
    c["nbf"] = json!(NOW + 30);
    assert!(w.check(&w.with_claims(c.clone())).is_ok());
    c["nbf"] = json!(NOW + 31);
    w.rejects(&w.with_claims(c), InvalidToken::NotYetValid);

    let mut c = claims();
    c["iat"] = json!(NOW + 30);
    assert!(w.check(&w.with_claims(c.clone())).is_ok());
    c["iat"] = json!(NOW + 31);
    w.rejects(&w.with_claims(c), InvalidToken::IssuedInFuture);
}

#[test]
fn the_leeway_is_configurable() {
    let w = world();
    let strict = TokenVerifier::new(
        id(BILLING),
        VerifyOptions {
            leeway_secs: 0,
            ..VerifyOptions::default()
        },
    );
    let mut c = claims();
    c["exp"] = json!(NOW);
    let t = w.with_claims(c);
    assert_eq!(
        strict.verify(&t, &w.bundle, NOW, &RustCrypto),
        Err(VerifyError::Invalid(InvalidToken::Expired))
    );
    assert!(w.check(&t).is_ok());
}

#[test]
fn critical_header_parameters_are_rejected() {
    let w = world();
    for crit in [json!(["exp"]), json!([]), json!("b64")] {
        let h = json!({"alg": "ES256", "crit": crit, "b64": false}).to_string();
        w.rejects(
            &sign_raw(&w.orders, &h, &claims().to_string()),
            InvalidToken::Critical,
        );
    }
}

#[test]
fn typ_jwt_jose_or_absent_is_accepted() {
    let w = world();
    let kid = w.orders.public_key().kid();
    for h in [
        json!({"alg": "ES256", "kid": kid, "typ": "JWT"}),
        json!({"alg": "ES256", "kid": kid, "typ": "JOSE"}),
        json!({"alg": "ES256", "kid": kid}),
    ] {
        let token = sign_raw(&w.orders, &h.to_string(), &claims().to_string());
        assert!(w.check(&token).is_ok(), "{h}");
    }
}

#[test]
fn typ_other_than_jwt_is_rejected() {
    let w = world();
    let h = json!({"alg": "ES256", "typ": "at+jwt"}).to_string();
    w.rejects(
        &sign_raw(&w.orders, &h, &claims().to_string()),
        InvalidToken::Type,
    );
}

#[test]
fn duplicate_member_names_are_rejected_in_header_and_claims() {
    let w = world();
    let kid = w.orders.public_key().kid();
    let dup_header = format!(r#"{{"alg":"ES256","kid":"{kid}","alg":"ES256"}}"#);
    assert!(matches!(
        w.check(&sign_raw(&w.orders, &dup_header, &claims().to_string())),
        Err(VerifyError::Invalid(InvalidToken::Json {
            part: "header",
            ..
        }))
    ));
    let dup_claims = format!(
        r#"{{"sub":"spiffe://example.org/stranger","aud":"{BILLING}","exp":{},"sub":"{ORDERS}"}}"#,
        NOW + 60
    );
    assert!(matches!(
        w.check(&sign_raw(&w.orders, &header(&w.orders), &dup_claims)),
        Err(VerifyError::Invalid(InvalidToken::Json {
            part: "claims",
            ..
        }))
    ));
    let nested = format!(
        r#"{{"sub":"{ORDERS}","aud":"{BILLING}","exp":{},"x":{{"a":1,"a":2}}}}"#,
        NOW + 60
    );
    assert!(matches!(
        w.check(&sign_raw(&w.orders, &header(&w.orders), &nested)),
        Err(VerifyError::Invalid(InvalidToken::Json {
            part: "claims",
            ..
        }))
    ));
}

#[test]
fn oversized_tokens_are_rejected_before_parsing() {
    let w = world();
    let huge = "x".repeat(8 * 1024 + 1);
    w.rejects(
        &huge,
        InvalidToken::TooLarge {
            len: 8 * 1024 + 1,
            limit: 8 * 1024,
        },
    );
    let mut c = claims();
    c["pad"] = json!("p".repeat(9000));
    let big = w.with_claims(c);
    assert!(matches!(
        w.check(&big),
        Err(VerifyError::Invalid(InvalidToken::TooLarge { .. }))
    ));
}

#[test]
fn signatures_must_be_exactly_64_bytes_r_s() {
    let w = world();
    let t = w.with_claims(claims());
    let (input, sig) = t.rsplit_once('.').unwrap();
    let raw = b64::decode(sig).unwrap();
    let der = ephemera_core::crypto::raw_to_der(&raw.clone().try_into().unwrap()).unwrap();
    let der = der.as_bytes();
    w.rejects(
        &format!("{input}.{}", b64::encode(der)),
        InvalidToken::SignatureLength(der.len()),
    );
    w.rejects(
        &format!("{input}.{}", b64::encode(&raw[..63])),
        InvalidToken::SignatureLength(63),
    );
    let mut longer = raw.clone();
    longer.push(0);
    w.rejects(
        &format!("{input}.{}", b64::encode(&longer)),
        InvalidToken::SignatureLength(65),
    );
    w.rejects(&format!("{input}."), InvalidToken::SignatureLength(0));
}

#[test]
fn a_tampered_payload_fails_the_signature() {
    let w = world();
    let t = w.with_claims(claims());
    let parts: Vec<&str> = t.split('.').collect();
    let mut c = claims();
    c["exp"] = json!(NOW + 6000);
    let tampered = format!("{}.{}.{}", parts[0], b64::encode(c.to_string()), parts[2]);
    w.rejects(&tampered, InvalidToken::SignatureMismatch);
}

#[test]
fn structural_garbage_is_malformed() {
    let w = world();
    for t in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "...",
        "e30.x.AAAA",
        "e30=.e30.AAAA",
        "W10.e30.AAAA",
    ] {
        let err = w.check(t).unwrap_err();
        assert_eq!(err.code(), "malformed", "{t:?}: {err}");
    }
}

#[test]
fn error_messages_never_contain_the_token() {
    let w = world();
    let mut c = claims();
    c["aud"] = json!("spiffe://example.org/secret-audience-xyz");
    let t = w.with_claims(c);
    let err = w.check(&t).unwrap_err().to_string();
    for part in t.split('.') {
        assert!(!err.contains(part), "{err}");
    }
    assert!(!err.contains("secret-audience-xyz"));
}

#[test]
fn minted_tokens_have_the_profiles_header_and_claims() {
    let key = PrivateKey::generate().unwrap();
    let minter = Minter::new(id(ORDERS), key.clone());
    let t = minter
        .mint(&id(BILLING), NOW, DEFAULT_TTL_SECS, None, &RustCrypto)
        .unwrap();
    let parts: Vec<&str> = t.split('.').collect();
    let h: serde_json::Value = serde_json::from_slice(&b64::decode(parts[0]).unwrap()).unwrap();
    assert_eq!(
        h,
        json!({"alg": "ES256", "kid": key.public_key().kid(), "typ": "JWT"})
    );
    let c: serde_json::Value = serde_json::from_slice(&b64::decode(parts[1]).unwrap()).unwrap();
    assert_eq!(
        c,
        json!({"sub": ORDERS, "aud": BILLING, "iat": NOW, "exp": NOW + 60})
    );

    let b = bundle(&[(ORDERS, &[&key])]);
    let v = TokenVerifier::new(id(BILLING), VerifyOptions::default());
    assert_eq!(
        v.verify(&t, &b, NOW, &RustCrypto).unwrap().caller,
        id(ORDERS)
    );
}

#[test]
fn minted_jtis_are_random_and_carried() {
    let key = PrivateKey::generate().unwrap();
    let minter = Minter::new(id(ORDERS), key.clone());
    let a = ephemera_core::token::random_jti().unwrap();
    let b = ephemera_core::token::random_jti().unwrap();
    assert_ne!(a, b);
    assert_eq!(b64::decode(&a).unwrap().len(), 16);
    let t = minter
        .mint(&id(BILLING), NOW, 60, Some(&a), &RustCrypto)
        .unwrap();
    let b = bundle(&[(ORDERS, &[&key])]);
    let v = TokenVerifier::new(id(BILLING), VerifyOptions::default());
    assert_eq!(
        v.verify(&t, &b, NOW, &RustCrypto).unwrap().jti.as_deref(),
        Some(a.as_str())
    );
    assert_eq!(
        minter.mint(&id(BILLING), NOW, 0, None, &RustCrypto),
        Err(ephemera_core::MintError::ZeroTtl)
    );
}

#[test]
fn central_issuer_mode_accepts_any_id_of_its_domain_only_when_configured() {
    let issuer = PrivateKey::generate().unwrap();
    let jwks = json!({"keys": [issuer.public_key().jwk()], "spiffe_sequence": 1});
    let central = Bundle::parse_central_issuer(jwks.to_string().as_bytes(), "example.org").unwrap();
    let v = TokenVerifier::new(id(BILLING), VerifyOptions::default());
    let t = sign_raw(&issuer, &header(&issuer), &claims().to_string());
    assert_eq!(
        v.verify(&t, &central, NOW, &RustCrypto).unwrap().caller,
        id(ORDERS)
    );
    let mut foreign = claims();
    foreign["sub"] = json!("spiffe://other.org/orders");
    let t = sign_raw(&issuer, &header(&issuer), &foreign.to_string());
    assert!(matches!(
        v.verify(&t, &central, NOW, &RustCrypto),
        Err(VerifyError::UnknownIdentity(_))
    ));
}

/// Billing's verifier allowing `aud` arrays, over its own spiffile bundle
/// federated with `partner.org`, a central issuer whose key is `issuer`.
fn several_audiences(issuer: &PrivateKey) -> (TokenVerifier, Bundle, World) {
    let w = world();
    let jwks = json!({"keys": [w_jwk(issuer)]}).to_string();
    let partner = Bundle::parse_central_issuer(jwks.as_bytes(), "partner.org").unwrap();
    let bundle = w.bundle.clone().federate(vec![partner]).unwrap();
    let options = VerifyOptions {
        allow_multiple_audiences: true,
        ..VerifyOptions::default()
    };
    (TokenVerifier::new(id(BILLING), options), bundle, w)
}

fn w_jwk(key: &PrivateKey) -> serde_json::Value {
    serde_json::to_value(key.public_key().jwk()).unwrap()
}

#[test]
fn an_aud_array_is_accepted_only_where_allowed_and_only_from_a_standard_domain() {
    let issuer = PrivateKey::generate().unwrap();
    let (verifier, bundle, w) = several_audiences(&issuer);
    let check = |token: &str| verifier.verify(token, &bundle, NOW, &RustCrypto);
    let partner = |aud: serde_json::Value| {
        let c = json!({"sub": "spiffe://partner.org/job", "aud": aud, "iat": NOW, "exp": NOW + 60});
        sign_raw(&issuer, &header(&issuer), &c.to_string())
    };
    // A standard domain's caller may name several audiences, one of them ours.
    let v = check(&partner(json!([BILLING, "spiffe://example.org/other"]))).unwrap();
    assert_eq!(v.caller, id("spiffe://partner.org/job"));
    assert_eq!(
        check(&partner(json!(["spiffe://example.org/other"]))),
        Err(VerifyError::Invalid(InvalidToken::AudienceMismatch))
    );
    assert_eq!(
        check(&partner(json!([]))),
        Err(VerifyError::Invalid(InvalidToken::ClaimType("aud")))
    );
    assert_eq!(
        check(&partner(json!([BILLING, 7]))),
        Err(VerifyError::Invalid(InvalidToken::ClaimType("aud")))
    );
    // A spiffile caller keeps the single string, even where arrays are allowed.
    let mut c = claims();
    c["aud"] = json!([BILLING]);
    assert_eq!(
        check(&w.with_claims(c)),
        Err(VerifyError::Invalid(InvalidToken::AudienceNotString))
    );
    // Without the option, no caller may send an array.
    assert_eq!(
        TokenVerifier::new(id(BILLING), VerifyOptions::default()).verify(
            &partner(json!([BILLING])),
            &bundle,
            NOW,
            &RustCrypto
        ),
        Err(VerifyError::Invalid(InvalidToken::AudienceNotString))
    );
}
