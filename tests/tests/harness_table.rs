//! The scenario table (`tests/scenarios/filter.yaml`) against the release
//! `ephemera_envoy.wasm` on the proxy-wasm host, and proof that the table
//! catches a filter that lets a forged caller header through.

use std::sync::OnceLock;

use ephemera_tests::harness::proxy_wasm::Plugin;
use ephemera_tests::harness::scenario::{Scenario, parse_table, run_scenario};
use ephemera_tests::harness::world::{plugin_path, require};
use ephemera_tests::repo_root;

fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let path = plugin_path();
        require(&path).unwrap();
        Plugin::load(&path).unwrap()
    })
}

fn table() -> Vec<Scenario> {
    let text = std::fs::read_to_string(repo_root().join("tests/scenarios/filter.yaml")).unwrap();
    parse_table(&text).unwrap()
}

fn failures(scenarios: &[Scenario]) -> Vec<(String, Vec<String>)> {
    scenarios
        .iter()
        .filter_map(|s| run_scenario(plugin(), s).err().map(|p| (s.name.clone(), p)))
        .collect()
}

#[test]
fn every_scenario_of_the_table_holds_on_the_proxy_wasm_host() {
    let scenarios = table();
    assert!(scenarios.len() >= 20, "{}", scenarios.len());
    let started = std::time::Instant::now();
    let failed = failures(&scenarios);
    eprintln!(
        "{} scenarios in {:.2?} on the proxy-wasm host",
        scenarios.len(),
        started.elapsed()
    );
    assert!(failed.is_empty(), "{failed:#?}");
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
    let failed = failures(&broken);
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
