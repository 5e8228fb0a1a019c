//! WIMSE tokens: any bytes as a WIT and a WPT, and the input's claims
//! signed by the issuer (a WIT) or by the proof key (a WPT).

use std::sync::LazyLock;

use ephemera_core::wimse::{
    CarriedTokens, IssuersDocument, ProofRequest, VerifiedWit, WitIssuers, issue_wit, verify_wit,
    verify_wpt,
};
use ephemera_core::{Bundle, Es256, PrivateKey, RustCrypto, b64};

use crate::fixtures::{self, NOW};

struct World {
    issuer: PrivateKey,
    proof: PrivateKey,
    issuers: WitIssuers,
    bundle: Bundle,
    wit: String,
    verified: VerifiedWit,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let issuer = fixtures::key("orders_private_key_pem");
    let proof = fixtures::key("billing_private_key_pem");
    let orders = fixtures::id("orders");
    let mut doc = IssuersDocument::new("example.org");
    doc.keys
        .push(serde_json::to_value(issuer.public_key().jwk()).expect("a JWK"));
    doc.bindings
        .insert(orders.to_string(), proof.public_key().jwk().thumbprint());
    let issuers = WitIssuers::from_document(&doc).expect("issuers");
    let bundle = fixtures::bundle();
    let wit =
        issue_wit(&issuer, &orders, proof.public_key(), NOW, 3600, &RustCrypto).expect("a WIT");
    let verified = verify_wit(&wit, &issuers, &bundle, NOW, 30, &RustCrypto).expect("verifies");
    World {
        issuer,
        proof,
        issuers,
        bundle,
        wit,
        verified,
    }
});

fn signed(key: &PrivateKey, header: &[u8], claims: &[u8]) -> Option<String> {
    let input = format!("{}.{}", b64::encode(header), b64::encode(claims));
    let signature = RustCrypto.sign(key, input.as_bytes()).ok()?;
    Some(format!("{input}.{}", b64::encode(signature)))
}

/// The input as a WIT and as a proof for a verified WIT; then, after a
/// selector byte, `header 0xff claims` signed as a WIT (even selector) or
/// a proof (odd): verification answers, never panics.
pub fn wimse_tokens(data: &[u8]) {
    let w = &*WORLD;
    let understood = ["x-session".to_owned()];
    let other = [("x-session", " s ")];
    let request = ProofRequest {
        target: "https://billing.example.org/a",
        wit: &w.wit,
        carried: CarriedTokens {
            access_token: Some("at"),
            txn_token: None,
            other: &other,
        },
        understood: &understood,
        now: NOW,
        leeway_secs: 5,
        max_lifetime_secs: 60,
    };
    let text = String::from_utf8_lossy(data);
    let _ = verify_wit(&text, &w.issuers, &w.bundle, NOW, 30, &RustCrypto);
    let _ = verify_wpt(&text, &w.verified, &request, &RustCrypto);
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (header, claims) = match rest.iter().position(|b| *b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    if selector % 2 == 0 {
        if let Some(wit) = signed(&w.issuer, header, claims) {
            let _ = verify_wit(&wit, &w.issuers, &w.bundle, NOW, 30, &RustCrypto);
        }
    } else if let Some(wpt) = signed(&w.proof, header, claims) {
        let _ = verify_wpt(&wpt, &w.verified, &request, &RustCrypto);
    }
}
