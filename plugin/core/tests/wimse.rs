//! WIMSE workload identity and proof tokens: the drafts' examples, and
//! every rule a hostile token breaks, one case each.

mod common;

use common::{Request, bundle, id, sign_raw};
use ephemera_core::filter::exchange::{Exchange, Filter, Step, WorkerState};
use ephemera_core::filter::workload_identity::WimseMaterial;
use ephemera_core::filter::{FilterConfig, WorkloadIdentity};
use ephemera_core::wimse::{
    CarriedTokens, IssuersDocument, ProofRequest, VerifiedWit, WimseError, WitIssuers, create_wpt,
    issue_wit, verify_wit, verify_wpt,
};
use ephemera_core::{Bundle, Minter, PrivateKey, PublicKey, RustCrypto, b64};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const NOW: u64 = 1_900_000_000;
const ORDERS: &str = "spiffe://example.org/orders";
const BILLING: &str = "spiffe://example.org/billing";
const TARGET: &str = "https://billing.example.org/invoices/7";

struct World {
    issuer: PrivateKey,
    proof_key: PrivateKey,
    issuers: WitIssuers,
    bundle: Bundle,
    wit: String,
}

fn issuers_for(issuer: &PrivateKey, bindings: &[(&str, &PrivateKey)]) -> WitIssuers {
    let doc = IssuersDocument {
        trust_domain: "example.org".into(),
        keys: vec![serde_json::to_value(issuer.public_key().jwk()).unwrap()],
        bindings: bindings
            .iter()
            .map(|(id, k)| ((*id).into(), k.public_key().jwk().thumbprint()))
            .collect(),
    };
    WitIssuers::from_document(&doc).unwrap()
}

fn world() -> World {
    let issuer = PrivateKey::generate().unwrap();
    let proof_key = PrivateKey::generate().unwrap();
    let orders_svid = PrivateKey::generate().unwrap();
    let billing_svid = PrivateKey::generate().unwrap();
    let wit = issue_wit(
        &issuer,
        &id(ORDERS),
        proof_key.public_key(),
        NOW,
        3600,
        &RustCrypto,
    )
    .unwrap();
    World {
        issuers: issuers_for(&issuer, &[(ORDERS, &proof_key)]),
        bundle: bundle(&[(ORDERS, &[&orders_svid]), (BILLING, &[&billing_svid])]),
        issuer,
        proof_key,
        wit,
    }
}

fn request<'a>(
    wit: &'a str,
    carried: CarriedTokens<'a>,
    understood: &'a [String],
) -> ProofRequest<'a> {
    ProofRequest {
        target: TARGET,
        wit,
        carried,
        understood,
        now: NOW,
        leeway_secs: 5,
        max_lifetime_secs: 60,
    }
}

impl World {
    fn verified(&self) -> VerifiedWit {
        verify_wit(&self.wit, &self.issuers, &self.bundle, NOW, 5, &RustCrypto).unwrap()
    }

    fn wit_with(&self, header: Value, claims: Value) -> Result<VerifiedWit, WimseError> {
        let wit = sign_raw(&self.issuer, &header.to_string(), &claims.to_string());
        verify_wit(&wit, &self.issuers, &self.bundle, NOW, 5, &RustCrypto)
    }

    fn wit_claims(&self) -> Value {
        let jwk = self.proof_key.public_key().jwk();
        json!({"sub": ORDERS, "exp": NOW + 3600, "iat": NOW,
               "cnf": {"jwk": {"kty": "EC", "crv": "P-256", "x": jwk.x, "y": jwk.y, "alg": "ES256"}}})
    }

    fn proof(&self, claims: Value) -> String {
        self.proof_with(json!({"typ": "wpt+jwt", "alg": "ES256"}), claims)
    }

    fn proof_with(&self, header: Value, claims: Value) -> String {
        sign_raw(&self.proof_key, &header.to_string(), &claims.to_string())
    }

    fn wpt_claims(&self) -> Value {
        json!({"aud": TARGET, "exp": NOW + 30, "jti": "p-1", "wth": hash(&self.wit)})
    }

    fn check(&self, proof: &str) -> Result<(), WimseError> {
        self.check_with(proof, CarriedTokens::default(), &[])
    }

    fn check_with(
        &self,
        proof: &str,
        carried: CarriedTokens<'_>,
        understood: &[String],
    ) -> Result<(), WimseError> {
        verify_wpt(
            proof,
            &self.verified(),
            &request(&self.wit, carried, understood),
            &RustCrypto,
        )
        .map(|_| ())
    }
}

fn hash(text: &str) -> String {
    b64::encode(Sha256::digest(text.as_bytes()))
}

// The drafts' examples (draft-ietf-wimse-workload-creds-02 §3.1,
// draft-ietf-wimse-wpt-01 §3).
const DRAFT_WIT: &str = "eyJhbGciOiJFUzI1NiIsImtpZCI6Ikp1bmUgNSIsInR5cCI6IndpdCtqd3QifQ.eyJjbmYiOnsiandrIjp7ImFsZyI6IkVkRFNBIiwiY3J2IjoiRWQyNTUxOSIsImt0eSI6Ik9LUCIsIngiOiIxQ1hYdmZsTl9MVlZzSXNZWHNVdkIwM0ptbEdXZUNIcVFWdW91Q0Y5MmJnIn19LCJleHAiOjE3NDU1MTI1MTAsImlhdCI6MTc0NTUwODkxMCwianRpIjoieC1fMUNUTDJjY2EzQ1NFNGN3Yl9sIiwic3ViIjoid2ltc2U6Ly9leGFtcGxlLmNvbS9zcGVjaWZpYy13b3JrbG9hZCJ9.6KraSQUxWdl9dxFQ3Fj6dPY0Vi88OkwFwZpAIOhLeq6AbXAnLLQgOp8U9UDGcBuYF3KiNv6oKQD1ZWAzrMZOJw";
const DRAFT_ISSUER: &str = r#"{"kty":"EC","kid":"June 5","crv":"P-256","x":"kXqnA2Op7hgd4zRMbw0iFcc_hDxUxhojxOFVGjE2gks","y":"n__VndPMR021-59UAs0b9qDTFT-EZtT6xSNs_xFskLo"}"#;

#[test]
fn the_drafts_hashes_are_sha256_of_the_token_text_in_base64url() {
    // The example WPT's wth and ath.
    assert_eq!(
        hash(DRAFT_WIT),
        "AaYUfC34D1di2FxQLpiIJJ7Sg8VZ6o8OCdwSf9IToLg"
    );
    assert_eq!(
        hash("16_mAd0GiwaZokU26_0902100"),
        "CL4wjfpRmNf-bdYIbYLnV9d5rMARGwKYE10wUwzC0jI"
    );
}

#[test]
fn the_drafts_example_wit_is_signed_by_its_issuer_and_refused_for_its_ed25519_key() {
    let issuer = PublicKey::from_json(&serde_json::from_str(DRAFT_ISSUER).unwrap()).unwrap();
    let (input, signature) = DRAFT_WIT.rsplit_once('.').unwrap();
    let signature: [u8; 64] = b64::decode(signature).unwrap().try_into().unwrap();
    use ephemera_core::Es256;
    assert!(
        RustCrypto
            .verify(&issuer, input.as_bytes(), &signature)
            .unwrap()
    );
    // Its sub is wimse://, and its proof key Ed25519: ephemera admits SPIFFE
    // IDs and ES256 proof keys only.
    let issuers = WitIssuers::from_document(&IssuersDocument {
        trust_domain: "example.com".into(),
        keys: vec![serde_json::from_str(DRAFT_ISSUER).unwrap()],
        bindings: Default::default(),
    })
    .unwrap();
    let bundle = bundle(&[]);
    assert_eq!(
        verify_wit(DRAFT_WIT, &issuers, &bundle, 1_745_510_000, 5, &RustCrypto).unwrap_err(),
        WimseError::WitSubject
    );
}

#[test]
fn a_wit_from_the_issuer_bound_to_the_workloads_proof_key_names_the_workload() {
    let w = world();
    let verified = w.verified();
    assert_eq!(verified.caller, id(ORDERS));
    assert_eq!(
        verified.proof_key.jwk().thumbprint(),
        w.proof_key.public_key().jwk().thumbprint()
    );
    assert_eq!(verified.expires_at, NOW + 3600);
}

#[test]
fn hostile_wits_are_refused_each_for_its_rule() {
    let w = world();
    let head = json!({"typ": "wit+jwt", "alg": "ES256"});
    let claims = w.wit_claims();
    assert!(w.wit_with(head.clone(), claims.clone()).is_ok());

    let typ_jwt = json!({"typ": "JWT", "alg": "ES256"});
    assert_eq!(
        w.wit_with(typ_jwt, claims.clone()).unwrap_err(),
        WimseError::WitHeader
    );
    let mut no_alg = claims.clone();
    no_alg["cnf"]["jwk"].as_object_mut().unwrap().remove("alg");
    assert_eq!(
        w.wit_with(head.clone(), no_alg).unwrap_err(),
        WimseError::ProofAlgorithm
    );
    let mut hs256 = claims.clone();
    hs256["cnf"]["jwk"]["alg"] = json!("HS256");
    assert_eq!(
        w.wit_with(head.clone(), hs256).unwrap_err(),
        WimseError::ProofAlgorithm
    );
    let mut expired = claims.clone();
    expired["exp"] = json!(NOW - 6);
    assert_eq!(
        w.wit_with(head.clone(), expired).unwrap_err(),
        WimseError::WitExpired
    );
    let mut foreign = claims.clone();
    foreign["sub"] = json!("spiffe://other.org/orders");
    assert_eq!(
        w.wit_with(head.clone(), foreign).unwrap_err(),
        WimseError::UnknownIssuer("other.org".into())
    );
    // Signed by the issuer, but for a workload bound to another proof key.
    let mut billing = claims.clone();
    billing["sub"] = json!(BILLING);
    assert_eq!(
        w.wit_with(head.clone(), billing).unwrap_err(),
        WimseError::NotBound(id(BILLING))
    );
    // Bound, but no longer in the bundle: removal revokes the WIT.
    let removed = World {
        bundle: bundle(&[(BILLING, &[&w.issuer])]),
        ..world()
    };
    assert_eq!(
        verify_wit(
            &removed.wit,
            &removed.issuers,
            &removed.bundle,
            NOW,
            5,
            &RustCrypto
        )
        .unwrap_err(),
        WimseError::UnknownWorkload(id(ORDERS))
    );
    // Signed by the workload's own proof key instead of the issuer.
    let self_signed = sign_raw(&w.proof_key, &head.to_string(), &claims.to_string());
    assert_eq!(
        verify_wit(&self_signed, &w.issuers, &w.bundle, NOW, 5, &RustCrypto).unwrap_err(),
        WimseError::WitSignature
    );
}

#[test]
fn a_wit_bound_to_a_rotated_proof_key_is_refused() {
    let w = world();
    let rotated = PrivateKey::generate().unwrap();
    let issuers = issuers_for(&w.issuer, &[(ORDERS, &rotated)]);
    assert_eq!(
        verify_wit(&w.wit, &issuers, &w.bundle, NOW, 5, &RustCrypto).unwrap_err(),
        WimseError::NotBound(id(ORDERS))
    );
}

#[test]
fn a_proof_for_this_request_and_this_wit_is_accepted() {
    let w = world();
    let carried = CarriedTokens::default();
    let proof = create_wpt(&w.proof_key, &w.wit, TARGET, &carried, NOW, 30, &RustCrypto).unwrap();
    let verified = verify_wpt(
        &proof,
        &w.verified(),
        &request(&w.wit, carried, &[]),
        &RustCrypto,
    )
    .unwrap();
    assert_eq!(verified.lapses_at, NOW + 35);
    assert!(!verified.jti.is_empty());
}

#[test]
fn hostile_proofs_are_refused_each_for_its_rule() {
    let w = world();
    let claims = w.wpt_claims();
    assert_eq!(w.check(&w.proof(claims.clone())), Ok(()));

    // A proof made for another WIT.
    let other = world();
    let mut for_other = claims.clone();
    for_other["wth"] = json!(hash(&other.wit));
    assert_eq!(
        w.check(&w.proof(for_other)),
        Err(WimseError::WptIdentityHash)
    );
    // Signed by another key than the WIT's cnf.
    let stolen = other.proof_with(json!({"typ": "wpt+jwt", "alg": "ES256"}), claims.clone());
    assert_eq!(w.check(&stolen), Err(WimseError::WptSignature));
    // Aimed at another path, another authority, or with the query kept.
    for aud in [
        "https://billing.example.org/invoices/8",
        "https://evil.example.org/invoices/7",
        "https://billing.example.org/invoices/7?x=1",
    ] {
        let mut wrong = claims.clone();
        wrong["aud"] = json!(aud);
        assert_eq!(
            w.check(&w.proof(wrong)),
            Err(WimseError::WptAudience),
            "{aud}"
        );
    }
    // alg differing from cnf.jwk.alg, typ of another token.
    let es384 = w.proof_with(json!({"typ": "wpt+jwt", "alg": "ES384"}), claims.clone());
    assert_eq!(w.check(&es384), Err(WimseError::WptAlgorithm));
    let dpop = w.proof_with(json!({"typ": "dpop+jwt", "alg": "ES256"}), claims.clone());
    assert_eq!(w.check(&dpop), Err(WimseError::WptType));
    let wit_typed = w.proof_with(json!({"typ": "wit+jwt", "alg": "ES256"}), claims.clone());
    assert_eq!(w.check(&wit_typed), Err(WimseError::WptType));
    // Expired beyond the 5 s leeway; alive for longer than allowed.
    let mut expired = claims.clone();
    expired["exp"] = json!(NOW - 5);
    assert_eq!(w.check(&w.proof(expired)), Err(WimseError::WptExpired));
    let mut in_leeway = claims.clone();
    in_leeway["exp"] = json!(NOW - 4);
    assert_eq!(w.check(&w.proof(in_leeway)), Ok(()));
    let mut long = claims.clone();
    long["exp"] = json!(NOW + 66);
    assert_eq!(w.check(&w.proof(long)), Err(WimseError::WptLifetime(60)));
    // Required claims.
    for name in ["aud", "exp", "jti", "wth"] {
        let mut missing = claims.clone();
        missing.as_object_mut().unwrap().remove(name);
        assert!(
            matches!(w.check(&w.proof(missing)), Err(WimseError::WptClaim(_))),
            "{name}"
        );
    }
    assert!(matches!(
        w.check("not.a.proof"),
        Err(WimseError::WptMalformed(_))
    ));
}

#[test]
fn every_token_the_request_carries_is_bound_and_no_other() {
    let w = world();
    let claims = w.wpt_claims();
    let access = CarriedTokens {
        access_token: Some("access-1"),
        ..Default::default()
    };
    // An access token in the request needs ath, and the right one.
    assert_eq!(
        w.check_with(&w.proof(claims.clone()), access, &[]),
        Err(WimseError::WptBinding("access token (ath)"))
    );
    let mut with_ath = claims.clone();
    with_ath["ath"] = json!(hash("access-1"));
    assert_eq!(
        w.check_with(&w.proof(with_ath.clone()), access, &[]),
        Ok(())
    );
    let other_token = CarriedTokens {
        access_token: Some("access-2"),
        ..Default::default()
    };
    assert!(
        w.check_with(&w.proof(with_ath.clone()), other_token, &[])
            .is_err()
    );
    // ath for a token the request does not carry.
    assert_eq!(
        w.check(&w.proof(with_ath)),
        Err(WimseError::WptBinding("access token (ath)"))
    );
    // Txn-Token: tth.
    let txn = CarriedTokens {
        txn_token: Some("txn-1"),
        ..Default::default()
    };
    assert!(w.check_with(&w.proof(claims.clone()), txn, &[]).is_err());
    let mut with_tth = claims.clone();
    with_tth["tth"] = json!(hash("txn-1"));
    assert_eq!(w.check_with(&w.proof(with_tth), txn, &[]), Ok(()));

    // oth: understood headers only, each carried one bound by the hash of
    // its trimmed value.
    let understood = vec!["x-session-token".to_owned()];
    let pairs = [("x-session-token", " s-1 ")];
    let session = CarriedTokens {
        other: &pairs,
        ..Default::default()
    };
    let mut with_oth = claims.clone();
    with_oth["oth"] = json!({"x-session-token": hash("s-1")});
    assert_eq!(
        w.check_with(&w.proof(with_oth.clone()), session, &understood),
        Ok(())
    );
    assert_eq!(
        w.check_with(&w.proof(claims.clone()), session, &understood),
        Err(WimseError::WptBinding("other token (oth)"))
    );
    let mut mismatch = claims.clone();
    mismatch["oth"] = json!({"x-session-token": hash("s-2")});
    assert_eq!(
        w.check_with(&w.proof(mismatch), session, &understood),
        Err(WimseError::WptBinding("other token (oth)"))
    );
    let mut unknown = claims.clone();
    unknown["oth"] = json!({"x-session-token": hash("s-1"), "x-other": hash("o")});
    assert_eq!(
        w.check_with(&w.proof(unknown), session, &understood),
        Err(WimseError::WptUnknownOther)
    );
    assert_eq!(
        w.check_with(&w.proof(with_oth), CarriedTokens::default(), &understood),
        Err(WimseError::WptBinding("other token (oth)"))
    );
}

/// Billing's filter accepting WIMSE callers for `https://billing.example.org`,
/// with `w`'s bundle and issuers in force.
fn wimse_filter(w: &World) -> (Filter, WorkerState) {
    let config =
        br#"{"direction":"inbound","inbound":{"wimse":{"origin":"https://billing.example.org"}}}"#;
    let filter = Filter::new(FilterConfig::parse(config).unwrap(), &RustCrypto);
    let mut worker = WorkerState::new(filter.config());
    worker.install(WorkloadIdentity {
        version: "v1".into(),
        generation: 1,
        bundle: w.bundle.clone(),
        minter: Minter::new(id(BILLING), PrivateKey::generate().unwrap()),
        wimse: WimseMaterial {
            issuers: Some(w.issuers.clone()),
            own: None,
        },
    });
    worker.confirm(NOW * 1000);
    (filter, worker)
}

#[test]
fn an_admitted_wimse_caller_is_forwarded_without_its_tokens_and_a_replay_gets_a_problem() {
    let w = world();
    let (filter, mut worker) = wimse_filter(&w);
    let proof = create_wpt(
        &w.proof_key,
        &w.wit,
        TARGET,
        &CarriedTokens::default(),
        NOW,
        30,
        &RustCrypto,
    )
    .unwrap();
    let request = Request(vec![
        (":method", "GET".into()),
        (":path", "/invoices/7?expand=lines".into()),
        ("workload-identity-token", w.wit.clone()),
        ("workload-proof-token", proof),
    ]);
    let turn = Exchange::new().on_request(&filter, &mut worker, &request, NOW * 1000);
    let Step::Forward(edits) = turn.step else {
        panic!("not forwarded: {turn:?}");
    };
    assert!(
        edits
            .set
            .iter()
            .any(|(k, v)| &**k == "x-ephemera-caller" && &**v == ORDERS)
    );
    for header in ["workload-identity-token", "workload-proof-token"] {
        assert!(edits.remove.iter().any(|r| &**r == header), "{header} kept");
    }
    // The same proof again (the WIT now from the cache): a replay.
    let turn = Exchange::new().on_request(&filter, &mut worker, &request, NOW * 1000);
    let Step::Reply(reply) = turn.step else {
        panic!("replay forwarded: {turn:?}");
    };
    assert_eq!(reply.status, 400);
    assert!(
        reply
            .headers
            .contains(&("content-type".into(), "application/problem+json".into()))
    );
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["code"], "wpt_replayed");
    assert_eq!(body["status"], 400);
}

#[test]
fn a_new_identity_empties_the_wit_cache() {
    let w = world();
    let (filter, mut worker) = wimse_filter(&w);
    // Each proof draws a fresh random jti.
    let proof = |now: u64| {
        create_wpt(
            &w.proof_key,
            &w.wit,
            TARGET,
            &CarriedTokens::default(),
            now,
            30,
            &RustCrypto,
        )
        .unwrap()
    };
    let request = |proof: String| {
        Request(vec![
            (":method", "GET".into()),
            (":path", "/invoices/7".into()),
            ("workload-identity-token", w.wit.clone()),
            ("workload-proof-token", proof),
        ])
    };
    let first = Exchange::new().on_request(&filter, &mut worker, &request(proof(NOW)), NOW * 1000);
    assert!(matches!(first.step, Step::Forward(_)));
    // The workload removed from the bundle: its cached WIT no longer counts.
    worker.install(WorkloadIdentity {
        version: "v2".into(),
        generation: 2,
        bundle: bundle(&[(BILLING, &[&w.issuer])]),
        minter: Minter::new(id(BILLING), PrivateKey::generate().unwrap()),
        wimse: WimseMaterial {
            issuers: Some(w.issuers.clone()),
            own: None,
        },
    });
    worker.confirm(NOW * 1000);
    let after = Exchange::new().on_request(&filter, &mut worker, &request(proof(NOW)), NOW * 1000);
    let Step::Reply(reply) = after.step else {
        panic!("a removed workload was admitted: {after:?}");
    };
    assert!(reply.body.contains("unknown_identity"), "{}", reply.body);
}
