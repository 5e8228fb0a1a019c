//! The scenario table (`tests/scenarios/filter.yaml`) against both builds:
//! the release `ephemera_envoy.wasm` on the proxy-wasm host and
//! `ephemera_component.wasm` on the component host. Both must meet every
//! expectation and agree with each other, also when the proxy-wasm build
//! runs on two workers that share one identity fetch, and whether the host
//! offers Envoy's crypto foreign functions, lacks them, or offers a broken
//! one; a filter that lets a forged caller header through is caught.

use std::sync::OnceLock;

use ephemera_tests::harness::component::{ComponentPlugin, component_path};
use ephemera_tests::harness::foreign::HostCrypto;
use ephemera_tests::harness::proxy_wasm::Plugin;
use ephemera_tests::harness::proxy_wasm_driver::ProxyWasmDriver;
use ephemera_tests::harness::scenario::{
    Build, Driver, Run, Scenario, Verdict, parse_table, run_scenario, verdicts,
};
use ephemera_tests::harness::world::{
    SecretAnswer, Signer, World, plugin_path, redact_jwts, require,
};
use ephemera_tests::repo_root;

fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let path = plugin_path();
        require(&path).unwrap();
        Plugin::load(&path).unwrap()
    })
}

fn proxy_wasm() -> Build<'static> {
    Build::ProxyWasm(plugin())
}

fn component() -> Build<'static> {
    static PLUGIN: OnceLock<ComponentPlugin> = OnceLock::new();
    Build::Component(PLUGIN.get_or_init(|| {
        let path = component_path();
        require(&path).unwrap();
        ComponentPlugin::load(&path).unwrap()
    }))
}

fn table() -> Vec<Scenario> {
    let text = std::fs::read_to_string(repo_root().join("tests/scenarios/filter.yaml")).unwrap();
    parse_table(&text).unwrap()
}

fn failures(build: Build<'_>, scenarios: &[Scenario]) -> Vec<(String, Vec<String>)> {
    scenarios
        .iter()
        .filter_map(|s| run_scenario(build, s).err().map(|p| (s.name.clone(), p)))
        .collect()
}

fn timed(label: &str, build: Build<'_>, scenarios: &[Scenario]) -> Vec<(String, Vec<String>)> {
    let started = std::time::Instant::now();
    let failed = failures(build, scenarios);
    eprintln!(
        "{label}: {} scenarios in {:.2?}",
        scenarios.len(),
        started.elapsed()
    );
    failed
}

#[test]
fn every_scenario_of_the_table_holds_on_the_proxy_wasm_host() {
    let scenarios = table();
    assert!(scenarios.len() >= 20, "{}", scenarios.len());
    let failed = timed("proxy-wasm host", proxy_wasm(), &scenarios);
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn every_scenario_of_the_table_holds_on_the_component_host() {
    let scenarios = table();
    let failed = timed("component host", component(), &scenarios);
    assert!(failed.is_empty(), "{failed:#?}");
}

/// What both builds must agree on: the whole verdict (status, headers the
/// app sees, the local reply, calls to the shim, ledger), with minted tokens
/// compared by subject and audience (they carry each host's clock).
fn comparable(v: &Verdict) -> Verdict {
    let jwts = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, val)| (k.clone(), redact_jwts(val)))
            .collect()
    };
    Verdict {
        app_headers: jwts(&v.app_headers),
        reply_headers: jwts(&v.reply_headers),
        ..v.clone()
    }
}

/// Where the proxy-wasm build on `workers` workers and the component differ.
fn disagreements(workers: usize) -> Vec<String> {
    let mut disagreements = Vec::new();
    for mut s in table() {
        let b = verdicts(component(), &s).unwrap();
        s.workers = workers;
        let a = verdicts(proxy_wasm(), &s).unwrap();
        assert_eq!(a.len(), b.len(), "{}", s.name);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            if comparable(x) != comparable(y) {
                disagreements.push(format!(
                    "{} / request {i}:\n  proxy-wasm {x:?}\n  component  {y:?}",
                    s.name
                ));
            }
        }
    }
    disagreements
}

#[test]
fn both_builds_reach_the_same_verdicts() {
    let found = disagreements(1);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn two_workers_meet_the_table_and_agree_with_one_instance() {
    let mut scenarios = table();
    scenarios.iter_mut().for_each(|s| s.workers = 2);
    let failed = timed("proxy-wasm host, 2 workers", proxy_wasm(), &scenarios);
    assert!(failed.is_empty(), "{failed:#?}");
    let found = disagreements(2);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// Identity fetches per worker over `ms` of simulated time.
fn identity_fetches(workers: usize, ms: u64) -> (ProxyWasmDriver, Vec<usize>) {
    let world = World::new("api", &["orders"]).unwrap();
    let mut driver = ProxyWasmDriver::start(
        plugin(),
        br#"{"direction":"inbound"}"#,
        world,
        workers,
        HostCrypto::Absent,
    )
    .unwrap();
    assert!(driver.configured());
    driver.advance(ms).unwrap();
    let fetches = driver
        .calls_by_worker()
        .iter()
        .map(|calls| calls.iter().filter(|c| *c == "GET /v1/identity").count())
        .collect();
    (driver, fetches)
}

#[test]
fn every_worker_fetches_its_own_identity_and_nothing_enters_shared_data() {
    let (_, alone) = identity_fetches(1, 10_000);
    // The harness offers no shared data (readable by every plugin in the
    // Envoy): had a worker put the identity there, its call would trap.
    let (mut driver, fetches) = identity_fetches(4, 10_000);
    assert!(alone[0] >= 10, "one worker polls every 200 ms: {alone:?}");
    assert!(
        fetches.iter().all(|n| *n >= alone[0] / 2 && *n <= alone[0]),
        "each worker polls for itself: {fetches:?} (alone: {alone:?})"
    );
    // Requests go to the workers in turn: each serves with the identity
    // it fetched.
    let now = driver.now_ms() / 1000;
    let audience = driver.world().id("api").unwrap();
    let token = driver
        .world()
        .token("orders", Signer::Current("orders"), &audience, now, 60)
        .unwrap();
    for _ in 0..4 {
        let headers = vec![
            (":method".to_owned(), b"GET".to_vec()),
            (":path".to_owned(), b"/x".to_vec()),
            (
                "authorization".to_owned(),
                format!("Bearer {token}").into_bytes(),
            ),
        ];
        let verdict = driver.request(headers, None, 200).unwrap();
        assert_eq!(verdict.status, 200, "{verdict:?}");
    }
}

#[test]
fn a_filter_that_forwards_a_forged_caller_header_is_caught_by_the_table() {
    // Mis-configured: the filter writes the caller to another header, so the
    // client's own x-ephemera-caller reaches the app untouched.
    let broken: Vec<Scenario> = table()
        .into_iter()
        .filter(|s| s.config["direction"] == "inbound")
        .map(|mut s| {
            s.config["inbound"]["caller_header"] = "x-verified-peer".into();
            s
        })
        .collect();
    for build in [proxy_wasm(), component()] {
        let failed = failures(build, &broken);
        let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "a verified caller is forwarded with its SPIFFE ID and without its token",
            "unauthenticated paths pass without a token, but never with a forged caller header",
        ] {
            assert!(
                names.contains(&expected),
                "not caught: {expected}; caught {names:?}"
            );
        }
        let problems = failed.iter().flat_map(|(_, p)| p).collect::<Vec<_>>();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("app header x-ephemera-caller")),
            "{problems:#?}"
        );
    }
}

#[test]
fn the_table_holds_with_native_crypto_and_a_host_that_verifies_anything_is_refused() {
    for (crypto, log) in [
        (HostCrypto::Native, "(crypto: envoy native)"),
        (
            HostCrypto::AcceptsAll,
            "native crypto unavailable (verify_signature accepted a signature over another message); using pure Rust",
        ),
    ] {
        let mut scenarios = table();
        scenarios.iter_mut().for_each(|s| s.host_crypto = crypto);
        let run = Run::start(proxy_wasm(), &scenarios[0]).unwrap();
        assert!(
            run.logs().iter().any(|l| l.contains(log)),
            "{crypto:?}: {:#?}",
            run.logs()
        );
        let failed = failures(proxy_wasm(), &scenarios);
        assert!(failed.is_empty(), "{crypto:?}: {failed:#?}");
    }
}

/// A client that leaves before the shim answers leaves nothing behind: the
/// transaction its request may have opened is closed on the next tick, and
/// the next request finds no trace of the abandoned one.
#[test]
fn a_client_that_leaves_before_the_shim_answers_leaves_no_state() {
    let ipt = br#"{"direction":"inbound","inbound":{"transactions":[{"path":"/objects/{key}",
        "resource":"secret/data/{key}","broker":"vault","credential_headers":{"token":"x-vault-token"}}]}}"#;
    let egress = br#"{"direction":"outbound","outbound":{"secrets":[
        {"host":"api.example.com","secret":"api_token","inject":{"as":"bearer"}}]}}"#;
    for (config, call, close) in [
        (
            &ipt[..],
            "POST /v1/transactions",
            Some("POST /v1/transactions/{id}/close"),
        ),
        (&egress[..], "POST /v1/secrets/resolve", None),
    ] {
        let mut world = World::new("api", &["orders"]).unwrap();
        world
            .script
            .secret_values
            .insert("api_token".into(), SecretAnswer::Value("tok-1".into()));
        let mut driver =
            ProxyWasmDriver::start(plugin(), config, world, 1, HostCrypto::Absent).unwrap();
        driver.advance(1000).unwrap();
        let api = driver.world().id("api").unwrap();
        let now = driver.now_ms() / 1000;
        let token = driver
            .world()
            .token("orders", Signer::Current("orders"), &api, now, 600)
            .unwrap();
        let headers = |path: &str| -> Vec<(String, Vec<u8>)> {
            [
                (":method", "GET"),
                (":path", path),
                (":authority", "api.example.com"),
                ("authorization", &format!("Bearer {token}")),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
        };
        assert_eq!(driver.leave_at_once(headers("/objects/a")).unwrap(), [call]);
        let before = driver.calls_by_worker()[0].len();
        driver.advance(1000).unwrap();
        let after: Vec<String> = driver.calls_by_worker()[0][before..]
            .iter()
            .filter(|c| *c != "GET /v1/identity")
            .cloned()
            .collect();
        assert_eq!(after, close.into_iter().collect::<Vec<_>>(), "{call}");

        let verdict = driver.request(headers("/objects/b"), None, 200).unwrap();
        assert_eq!(verdict.status, 200, "{call}: {verdict:?}");
        assert_eq!(verdict.calls[0], call, "asked afresh, nothing left over");
    }
}
