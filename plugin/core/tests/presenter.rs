//! The rules a caller's own JWT-SVID meets before it may ask for a secret.

mod common;

use common::{bundle, header, id, sign_raw};
use ephemera_core::filter::WorkloadIdentity;
use ephemera_core::secrets::grants::SenderBinding;
use ephemera_core::secrets::presenter::RESOLVE_PATH;
use ephemera_core::secrets::{Presented, PresenterError, present};
use ephemera_core::token::create_proof;
use ephemera_core::{Minter, PrivateKey, RustCrypto};
use serde_json::json;

const BILLING: &str = "spiffe://example.org/billing";
const ORDERS: &str = "spiffe://example.org/orders";
const AUDIENCE: &str = "spiffe://example.org/billing/ephemera-secrets";
const NOW: u64 = 1_900_000_000;
const WINDOW_MS: u64 = 300_000;

struct World {
    identity: WorkloadIdentity,
    orders: PrivateKey,
}

impl World {
    fn new() -> Self {
        let (billing, orders) = (
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap(),
        );
        let identity = WorkloadIdentity {
            version: "v1".into(),
            generation: 1,
            bundle: bundle(&[(BILLING, &[&billing]), (ORDERS, &[&orders])]),
            minter: Minter::new(id(BILLING), billing),
            wimse: Default::default(),
        };
        Self { identity, orders }
    }

    /// A token by orders with `claims` added to a valid secrets request.
    fn token(&self, extra: serde_json::Value) -> String {
        let mut claims =
            json!({"sub": ORDERS, "aud": AUDIENCE, "iat": NOW, "exp": NOW + 60, "jti": "j-1"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        sign_raw(&self.orders, &header(&self.orders), &claims.to_string())
    }

    fn present(
        &self,
        authorization: Option<&str>,
        dpop: Option<&str>,
    ) -> Result<String, PresenterError> {
        let presented = Presented {
            authorization,
            dpop,
        };
        present(presented, &self.identity, NOW, WINDOW_MS, &RustCrypto).map(|p| {
            assert_eq!(p.jti, "j-1");
            p.caller.to_string()
        })
    }
}

#[test]
fn a_fresh_token_with_a_jti_for_the_secrets_audience_presents_its_caller() {
    let w = World::new();
    let bearer = format!("Bearer {}", w.token(json!({})));
    assert_eq!(w.present(Some(&bearer), None).unwrap(), ORDERS);
}

#[test]
fn no_token_or_no_bearer_scheme_is_refused() {
    let w = World::new();
    assert_eq!(w.present(None, None), Err(PresenterError::Missing));
    let basic = format!("Basic {}", w.token(json!({})));
    assert_eq!(
        w.present(Some(&basic), None),
        Err(PresenterError::NotBearer)
    );
}

#[test]
fn a_token_for_the_workload_itself_is_not_one_for_its_secrets() {
    let w = World::new();
    let bearer = format!("Bearer {}", w.token(json!({"aud": BILLING})));
    assert!(matches!(
        w.present(Some(&bearer), None),
        Err(PresenterError::Token(_))
    ));
}

#[test]
fn a_token_without_a_jti_could_be_replayed_and_is_refused() {
    let w = World::new();
    let bearer = format!("Bearer {}", w.token(json!({"jti": null})));
    assert_eq!(w.present(Some(&bearer), None), Err(PresenterError::NoJti));
}

#[test]
fn a_token_outliving_the_replay_window_is_refused() {
    let w = World::new();
    let bearer = format!("Bearer {}", w.token(json!({"exp": NOW + 301})));
    assert_eq!(
        w.present(Some(&bearer), None),
        Err(PresenterError::TooLong { max_secs: 300 })
    );
    let bearer = format!("Bearer {}", w.token(json!({"exp": NOW + 300})));
    assert!(w.present(Some(&bearer), None).is_ok());
}

#[test]
fn a_sender_bound_token_counts_only_with_a_proof_by_its_key() {
    let w = World::new();
    let holder = PrivateKey::generate().unwrap();
    let jkt = holder.public_key().jwk().thumbprint();
    let token = w.token(json!({"cnf": {"jkt": jkt}}));
    let bearer = format!("Bearer {token}");
    let htu = format!("https://billing{RESOLVE_PATH}");
    assert_eq!(w.present(Some(&bearer), None), Err(PresenterError::NoProof));

    let thief = PrivateKey::generate().unwrap();
    let stolen = create_proof(&thief, "POST", &htu, &token, NOW, "p-1", &RustCrypto).unwrap();
    assert_eq!(
        w.present(Some(&bearer), Some(&stolen)),
        Err(PresenterError::ProofKey)
    );
    let elsewhere = create_proof(
        &holder,
        "POST",
        "https://billing/v1/other",
        &token,
        NOW,
        "p-2",
        &RustCrypto,
    )
    .unwrap();
    assert!(matches!(
        w.present(Some(&bearer), Some(&elsewhere)),
        Err(PresenterError::Proof(_))
    ));

    let proof = create_proof(&holder, "POST", &htu, &token, NOW, "p-3", &RustCrypto).unwrap();
    let presented = Presented {
        authorization: Some(&bearer),
        dpop: Some(&proof),
    };
    let who = present(presented, &w.identity, NOW, WINDOW_MS, &RustCrypto).unwrap();
    assert_eq!(who.sender, Some(SenderBinding::JwkThumbprint(jkt)));
}
