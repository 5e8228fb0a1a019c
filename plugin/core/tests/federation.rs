//! Federated trust domains in the filter's decisions: each domain's keys
//! answer for its own IDs only, and a foreign caller is admitted only by a
//! rule that names its domain.

mod common;

use common::{Request, bundle, id};
use ephemera_core::filter::exchange::{Exchange, Filter, Step, WorkerState};
use ephemera_core::filter::{FilterConfig, WorkloadIdentity};
use ephemera_core::{Bundle, Minter, PrivateKey, RustCrypto};
use serde_json::json;

const NOW_MS: u64 = 1_900_000_000_000;
const BILLING: &str = "spiffe://example.org/billing";
const ORDERS: &str = "spiffe://example.org/orders";
const PARTNER: &str = "spiffe://other.org/partner";

const NO_RULES: &str = r#"{"direction":"inbound"}"#;
const NAMED: &str = r#"{"direction":"inbound","inbound":{"routes":[{"path":"/*",
  "allow":["spiffe://example.org/*","spiffe://other.org/partner"]}]}}"#;

fn other_org(key: &PrivateKey) -> Bundle {
    let jwk = serde_json::to_value(key.public_key().jwk()).unwrap();
    let doc = json!({"trust_domain": "other.org", "spiffile_version": 1,
                     "identities": {PARTNER: {"keys": [jwk]}}});
    Bundle::parse_spiffile(doc.to_string().as_bytes()).unwrap()
}

/// The status billing's filter under `config` gives a token with `sub`
/// signed by `key`.
fn status(config: &str, bundle: &Bundle, sub: &str, key: &PrivateKey) -> u16 {
    let filter = Filter::new(FilterConfig::parse(config.as_bytes()).unwrap(), &RustCrypto);
    let mut worker = WorkerState::new(filter.config());
    worker.install(WorkloadIdentity {
        version: "v1".into(),
        generation: 1,
        bundle: bundle.clone(),
        minter: Minter::new(id(BILLING), PrivateKey::generate().unwrap()),
        wimse: Default::default(),
    });
    worker.confirm(NOW_MS);
    let token = Minter::new(id(sub), key.clone())
        .mint(&id(BILLING), NOW_MS / 1000, 60, None, &RustCrypto)
        .unwrap();
    let request = Request(vec![
        (":method", "GET".into()),
        (":path", "/x".into()),
        ("authorization", format!("Bearer {token}")),
    ]);
    match Exchange::new()
        .on_request(&filter, &mut worker, &request, NOW_MS)
        .step
    {
        Step::Reply(reply) => reply.status,
        Step::Forward(_) => 200,
        other => panic!("expected a reply or a forward, got {other:?}"),
    }
}

#[test]
fn a_federated_caller_is_admitted_only_by_a_rule_naming_its_domain() {
    let (orders, partner) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    let local = bundle(&[(ORDERS, &[&orders])]);
    let all = local.federate(vec![other_org(&partner)]).unwrap();
    assert_eq!(status(NO_RULES, &all, ORDERS, &orders), 200);
    assert_eq!(status(NO_RULES, &all, PARTNER, &partner), 403);
    assert_eq!(status(NAMED, &all, PARTNER, &partner), 200);
}

#[test]
fn a_key_of_one_domain_never_signs_for_another() {
    let (orders, partner) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    let local = bundle(&[(ORDERS, &[&orders])]);
    let all = local.federate(vec![other_org(&partner)]).unwrap();
    assert_eq!(status(NAMED, &all, ORDERS, &partner), 401);
    assert_eq!(status(NAMED, &all, PARTNER, &orders), 401);
}
