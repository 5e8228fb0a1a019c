//! The scenario table (`tests/scenarios/filter.yaml`) against both builds:
//! the release `ephemera_envoy.wasm` on the proxy-wasm host and
//! `ephemera_component.wasm` on the component host. Both must meet every
//! expectation and agree with each other; a filter that lets a forged
//! caller header through is caught.

use std::sync::OnceLock;

use ephemera_tests::harness::component::{ComponentPlugin, component_path};
use ephemera_tests::harness::proxy_wasm::Plugin;
use ephemera_tests::harness::scenario::{
    Build, Scenario, Verdict, parse_table, run_scenario, verdicts,
};
use ephemera_tests::harness::world::{plugin_path, require};
use ephemera_tests::repo_root;

fn proxy_wasm() -> Build<'static> {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    Build::ProxyWasm(PLUGIN.get_or_init(|| {
        let path = plugin_path();
        require(&path).unwrap();
        Plugin::load(&path).unwrap()
    }))
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

/// What both builds must agree on: status, ledger, and the headers the app
/// sees (minted tokens compared by presence: they carry each host's clock).
fn comparable(v: &Verdict) -> (u16, Vec<String>, Vec<(String, String)>) {
    let headers = v
        .app_headers
        .iter()
        .map(|(k, val)| {
            let val = if val.starts_with("Bearer ey") {
                "Bearer <jwt>".into()
            } else {
                val.clone()
            };
            (k.clone(), val)
        })
        .collect();
    (v.status, v.ledger.clone(), headers)
}

#[test]
fn both_builds_reach_the_same_verdicts() {
    let mut disagreements = Vec::new();
    for s in table() {
        let a = verdicts(proxy_wasm(), &s).unwrap();
        let b = verdicts(component(), &s).unwrap();
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
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
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
