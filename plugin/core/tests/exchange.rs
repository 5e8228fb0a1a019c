//! The life of one request, event by event: what the filter asks its host
//! to do at each turn, and what it leaves behind when the stream ends.

mod common;

use common::{Request, bundle, id};
use ephemera_core::filter::edits::Edits;
use ephemera_core::filter::exchange::{
    Exchange, Filter, OPEN_PATH, RESOLVE_PATH, ShimAnswer, ShimCall, Step, Turn, WorkerState,
};
use ephemera_core::filter::note::{Note, OpenFailure};
use ephemera_core::filter::{FilterConfig, WorkloadIdentity};
use ephemera_core::ipt::Resource;
use ephemera_core::{Minter, PrivateKey, RustCrypto};
use serde_json::{Value, json};

const NOW_MS: u64 = 1_900_000_000_000;
const BILLING: &str = "spiffe://example.org/billing";
const ORDERS: &str = "spiffe://example.org/orders";

const IPT: &str = r#"{"direction":"inbound","startup_wait_ms":2000,"inbound":{"transactions":[
  {"path":"/secrets/{name}","resource":"secret/data/{name}","broker":"vault",
   "credential_headers":{"token":"x-vault-token"}}]}}"#;

const EGRESS: &str = r#"{"direction":"outbound","outbound":{"secrets":[
  {"host":"api.example.com","secret":"api-key","inject":{"as":"bearer"}}]}}"#;

struct World {
    filter: Filter,
    worker: WorkerState,
    caller: Minter,
    /// The identity still on its way.
    loading: Option<WorkloadIdentity>,
}

impl World {
    /// Billing's filter with `config`; its identity in force unless `loading`.
    fn new(config: &str, loading: bool) -> Self {
        let (billing, orders) = (
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap(),
        );
        let bundle = bundle(&[(BILLING, &[&billing]), (ORDERS, &[&orders])]);
        let filter = Filter::new(FilterConfig::parse(config.as_bytes()).unwrap(), &RustCrypto);
        let worker = WorkerState::new(filter.config());
        let identity = WorkloadIdentity {
            version: "v1".into(),
            generation: 1,
            bundle,
            minter: Minter::new(id(BILLING), billing),
            wimse: Default::default(),
        };
        let mut world = Self {
            filter,
            worker,
            caller: Minter::new(id(ORDERS), orders),
            loading: Some(identity),
        };
        if !loading {
            world.arrive();
        }
        world
    }

    fn arrive(&mut self) {
        let identity = self.loading.take().unwrap();
        self.worker.install(identity);
        self.worker.confirm(NOW_MS);
    }

    fn bearer(&self) -> String {
        let token = self
            .caller
            .mint(&id(BILLING), NOW_MS / 1000, 60, None, &RustCrypto)
            .unwrap();
        format!("Bearer {token}")
    }

    fn get(&self, path: &str) -> Request {
        Request(vec![
            (":method", "GET".into()),
            (":path", path.into()),
            ("authorization", self.bearer()),
        ])
    }

    fn request(&mut self, exchange: &mut Exchange, request: &Request) -> Turn {
        exchange.on_request(&self.filter, &mut self.worker, request, NOW_MS)
    }

    fn answer(
        &mut self,
        exchange: &mut Exchange,
        status: Option<u16>,
        body: &Value,
    ) -> Option<Turn> {
        let body = body.to_string();
        exchange.on_shim_answer(
            &self.filter,
            &mut self.worker,
            ShimAnswer::Http {
                status,
                body: body.as_bytes(),
            },
            NOW_MS,
        )
    }
}

fn opened(transaction_id: &str) -> Value {
    json!({"transaction_id": transaction_id, "credential": {"token": "s.transaction-token"},
           "expires_at": 1, "scope": "read:secret/data/db", "blast_radius": "one path"})
}

fn call(turn: &Turn) -> (&Edits, &ShimCall) {
    match &turn.step {
        Step::Call(edits, call) => (edits, call),
        other => panic!("expected a shim call, got {other:?}"),
    }
}

fn body(call: &ShimCall) -> Value {
    serde_json::from_slice(&call.body()).unwrap()
}

/// A request on a transaction route, held for its open: the world, the
/// exchange and the transaction id it asked the shim for.
fn open_in_flight() -> (World, Exchange, String) {
    let mut w = World::new(IPT, false);
    let mut exchange = Exchange::new();
    let turn = w.request(&mut exchange, &w.get("/secrets/db"));
    let id = body(call(&turn).1)["transaction_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (w, exchange, id)
}

fn status(turn: &Turn) -> u16 {
    match &turn.step {
        Step::Reply(reply) => reply.status,
        Step::Forward(_) => 200,
        other => panic!("expected a reply or a forward, got {other:?}"),
    }
}

fn notes(turn: &Turn) -> Vec<Note> {
    turn.notes().cloned().collect()
}

#[test]
fn a_transaction_is_opened_before_forwarding_and_closed_with_the_upstream_status() {
    let mut w = World::new(IPT, false);
    let mut exchange = Exchange::new();
    let turn = w.request(&mut exchange, &w.get("/secrets/db"));
    assert_eq!(notes(&turn), [Note::Verified { cached: false }]);
    let (edits, open) = call(&turn);
    assert!(
        edits
            .set
            .contains(&("x-ephemera-caller".into(), ORDERS.into()))
    );
    assert!(
        edits.remove.iter().any(|name| &**name == "x-vault-token"),
        "{edits:?}"
    );
    assert_eq!(open.path(), OPEN_PATH);
    let request = body(open);
    assert_eq!(request["resource"], "secret/data/db");
    assert_eq!(request["action"], "read");
    let id = request["transaction_id"].as_str().unwrap().to_owned();
    assert!(exchange.awaits_shim());

    let turn = w.answer(&mut exchange, Some(200), &opened(&id)).unwrap();
    assert_eq!(
        turn.step,
        Step::Forward(Edits::new([], [("x-vault-token", "s.transaction-token")]))
    );
    assert_eq!(notes(&turn), [Note::TransactionOpened]);

    let stripped: Vec<&str> = exchange.on_response(&w.filter, || Some(201)).collect();
    assert_eq!(stripped, ["x-vault-token"]);
    let close = exchange.on_end().expect("a close");
    assert_eq!(close.path(), format!("/v1/transactions/{id}/close"));
    assert_eq!(
        body(&close),
        json!({"outcome": {"kind": "responded", "status": 201}})
    );
    assert_eq!(exchange.on_end(), None, "closed once");
}

#[test]
fn a_stream_that_ends_while_its_open_is_in_flight_closes_it_and_ignores_the_late_answer() {
    let (mut w, mut exchange, id) = open_in_flight();
    let close = exchange.on_end().expect("the open may complete: close it");
    assert_eq!(close.path(), format!("/v1/transactions/{id}/close"));
    assert_eq!(body(&close), json!({"outcome": {"kind": "aborted"}}));
    assert!(!exchange.awaits_shim(), "nothing is left waiting");
    assert_eq!(w.answer(&mut exchange, Some(200), &opened(&id)), None);
    assert_eq!(exchange.on_end(), None);
}

#[test]
fn an_open_that_may_have_happened_is_refused_and_closed_and_a_refused_one_is_not_closed() {
    for (answer, reply, closed, note) in [
        (
            None,
            503,
            true,
            Note::TransactionFailed(OpenFailure::ShimUnreachable),
        ),
        (
            Some(500),
            503,
            true,
            Note::TransactionFailed(OpenFailure::ShimAnswered(500)),
        ),
        (
            Some(504),
            503,
            true,
            Note::TransactionFailed(OpenFailure::ShimAnswered(504)),
        ),
        (
            Some(400),
            503,
            false,
            Note::TransactionFailed(OpenFailure::ShimAnswered(400)),
        ),
        (
            Some(403),
            403,
            false,
            Note::TransactionDenied(Resource::parse("secret/data/db").unwrap()),
        ),
        (Some(429), 429, false, Note::TransactionLimited),
    ] {
        let mut w = World::new(IPT, false);
        let mut exchange = Exchange::new();
        let _ = w.request(&mut exchange, &w.get("/secrets/db"));
        let turn = w.answer(&mut exchange, answer, &json!({})).unwrap();
        assert_eq!(status(&turn), reply, "{answer:?}");
        assert_eq!(notes(&turn), [note], "{answer:?}");
        assert_eq!(exchange.on_end().is_some(), closed, "{answer:?}");
    }
}

#[test]
fn a_credential_without_the_routes_fields_never_reaches_the_app() {
    let (mut w, mut exchange, id) = open_in_flight();
    let mut incomplete = opened(&id);
    incomplete["credential"] = json!({"other": "x"});
    let turn = w.answer(&mut exchange, Some(200), &incomplete).unwrap();
    assert_eq!(status(&turn), 503);
    assert_eq!(
        notes(&turn),
        [Note::TransactionFailed(OpenFailure::CredentialIncomplete)]
    );
    assert!(
        exchange.on_end().is_some(),
        "the issued credential is closed"
    );
}

#[test]
fn requests_outside_transaction_routes_forward_at_once_and_hit_the_cache_next_time() {
    let mut w = World::new(IPT, false);
    let request = w.get("/other");
    for cached in [false, true] {
        let mut exchange = Exchange::new();
        let turn = w.request(&mut exchange, &request);
        assert_eq!(status(&turn), 200);
        assert_eq!(notes(&turn), [Note::Verified { cached }]);
        assert_eq!(exchange.on_end(), None, "nothing to close");
    }
}

#[test]
fn an_unmappable_request_is_400_and_opens_nothing() {
    let mut w = World::new(IPT, false);
    let mut exchange = Exchange::new();
    let mut request = w.get("/secrets/db");
    request.0[0].1 = "OPTIONS".into();
    let turn = w.request(&mut exchange, &request);
    assert_eq!(status(&turn), 400);
    assert!(matches!(
        notes(&turn)[..],
        [Note::Verified { .. }, Note::TransactionUnmappable(_)]
    ));
    assert_eq!(exchange.on_end(), None);
}

#[test]
fn a_request_waits_for_the_first_identity_and_is_decided_when_it_arrives() {
    let mut w = World::new(IPT, true);
    let request = w.get("/other");
    let mut exchange = Exchange::new();
    let turn = w.request(&mut exchange, &request);
    assert_eq!(
        turn.step,
        Step::AwaitIdentity {
            until_ms: NOW_MS + 2000
        }
    );
    assert_eq!(notes(&turn), [Note::AwaitedIdentity]);
    w.arrive();
    let turn = exchange
        .on_identity(&w.filter, &mut w.worker, &request, NOW_MS)
        .unwrap();
    assert_eq!(status(&turn), 200);
    assert!(
        exchange
            .on_identity(&w.filter, &mut w.worker, &request, NOW_MS)
            .is_none(),
        "decided once"
    );
    assert!(exchange.on_identity_timeout().is_none());

    let mut w = World::new(IPT, true);
    let mut exchange = Exchange::new();
    let _ = w.request(&mut exchange, &request);
    let turn = exchange.on_identity_timeout().unwrap();
    assert_eq!(status(&turn), 503);
    assert_eq!(notes(&turn), [Note::Unavailable]);
}

fn egress_request() -> Request {
    Request(vec![
        (":method", "GET".into()),
        (":authority", "api.example.com:443".into()),
        ("authorization", "Bearer app-supplied".into()),
    ])
}

#[test]
fn an_egress_secret_is_resolved_at_the_shim_then_injected_from_the_cache_it_allows() {
    let mut w = World::new(EGRESS, false);
    let mut exchange = Exchange::new();
    let turn = w.request(&mut exchange, &egress_request());
    let (edits, resolve) = call(&turn);
    assert_eq!(edits, &Edits::default());
    assert_eq!(resolve.path(), RESOLVE_PATH);
    assert_eq!(
        body(resolve),
        json!({"name": "api-key", "purpose": "egress"})
    );
    let injected = Step::Forward(Edits::new(
        ["authorization"],
        [("authorization", "Bearer from-the-shim")],
    ));
    let turn = w
        .answer(
            &mut exchange,
            Some(200),
            &json!({"value": "from-the-shim", "cache_ttl_secs": 60}),
        )
        .unwrap();
    assert_eq!(turn.step, injected);
    assert_eq!(notes(&turn), [Note::EgressInjected]);

    let mut again = Exchange::new();
    let turn = w.request(&mut again, &egress_request());
    assert_eq!(turn.step, injected, "from the cache, no call");
    assert_eq!(notes(&turn), [Note::EgressInjected]);
}

#[test]
fn an_egress_secret_the_shim_refuses_is_403_and_one_it_cannot_give_is_503() {
    for (answer, reply, note) in [
        (Some(403), 403, Note::EgressDenied("api-key".into())),
        (
            Some(503),
            503,
            Note::EgressFailed("api-key".into(), Some(503)),
        ),
        (None, 503, Note::EgressFailed("api-key".into(), None)),
        (
            Some(200),
            503,
            Note::EgressFailed("api-key".into(), Some(200)),
        ),
    ] {
        let mut w = World::new(EGRESS, false);
        let mut exchange = Exchange::new();
        let _ = w.request(&mut exchange, &egress_request());
        let turn = w
            .answer(&mut exchange, answer, &json!({"unexpected": 1}))
            .unwrap();
        assert_eq!(status(&turn), reply, "{answer:?}");
        assert_eq!(notes(&turn), [note], "{answer:?}");
        let request = egress_request();
        let mut next = Exchange::new();
        assert!(
            matches!(w.request(&mut next, &request).step, Step::Call(..)),
            "nothing cached"
        );
    }
}

#[test]
fn typed_answers_of_a_host_that_speaks_the_api_count_as_their_http_twins() {
    use ephemera_core::ipt::OpenResponse;
    let typed = |transaction_id: &str| {
        let response: OpenResponse = serde_json::from_value(opened(transaction_id)).unwrap();
        ShimAnswer::Opened(response)
    };
    for (answer, reply, closed) in [
        (None, 200, true),
        (Some(ShimAnswer::Refused(403)), 403, false),
        (Some(ShimAnswer::Refused(429)), 429, false),
        (Some(ShimAnswer::Failed(None)), 503, true),
        (Some(ShimAnswer::Failed(Some(502))), 503, true),
    ] {
        let (mut w, mut exchange, id) = open_in_flight();
        let answer = answer.unwrap_or_else(|| typed(&id));
        let turn = exchange
            .on_shim_answer(&w.filter, &mut w.worker, answer, NOW_MS)
            .unwrap();
        assert_eq!(status(&turn), reply);
        if reply == 200 {
            let _ = exchange.on_response(&w.filter, || Some(204)).count();
        }
        assert_eq!(exchange.on_end().is_some(), closed, "{reply}");
    }
}

#[test]
fn edits_of_a_call_and_of_the_forward_combine_in_order() {
    let call = Edits::new(["x-vault-token"], [("x-ephemera-caller", ORDERS)]);
    let forward = Edits::new(["X-Ephemera-Caller"], [("x-vault-token", "t")]);
    assert_eq!(
        call.then(forward),
        Edits::new(
            ["x-vault-token", "X-Ephemera-Caller"],
            [("x-vault-token", "t")]
        )
    );
}
