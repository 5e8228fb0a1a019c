//! `ephemera-harness`: a dry run of a plugin configuration for people
//! writing one, and the scenario table from the command line.

use std::process::Command;

use ephemera_tests::{repo_root, run};

fn harness(args: &[&str]) -> ephemera_tests::Run {
    run(Command::new(env!("CARGO_BIN_EXE_ephemera-harness")).args(args))
}

#[test]
fn a_dry_run_shows_what_the_filter_does_with_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "direction: inbound\ninbound:\n  routes:\n    - { path: \"/admin/*\", allow: [\"spiffe://example.org/billing\"] }\n    - { path: \"/*\", allow: [\"spiffe://example.org/*\"] }\n",
    )
    .unwrap();
    let request = dir.path().join("request.yaml");
    std::fs::write(
        &request,
        "- request:\n    headers: { \":method\": GET, \":path\": /admin/x, authorization: \"Bearer {token:orders}\" }\n- request:\n    headers: { \":method\": GET, \":path\": /orders, authorization: \"Bearer {token:orders}\", x-ephemera-caller: forged }\n",
    )
    .unwrap();
    let (c, r) = (config.to_string_lossy(), request.to_string_lossy());
    let out = harness(&["dry-run", "--config", &c, "--request", &r]);
    let text = out.ok();
    let verdicts: Vec<&str> = text.split("---\n").filter(|s| !s.is_empty()).collect();
    assert_eq!(verdicts.len(), 2, "{text}");
    assert!(verdicts[0].starts_with("status: 403"), "{text}");
    assert!(
        verdicts[0].contains("is not allowed on this route"),
        "the filter's log: {text}"
    );
    assert!(verdicts[1].starts_with("status: 200"), "{text}");
    assert!(
        verdicts[1].contains("x-ephemera-caller: spiffe://example.org/orders")
            && !verdicts[1].contains("forged")
            && !verdicts[1].contains("authorization"),
        "{text}"
    );

    // An expectation that does not hold fails the run.
    std::fs::write(
        &request,
        "headers: { \":method\": GET, \":path\": /orders }\nexpect: { status: 200 }\n",
    )
    .unwrap();
    let out = harness(&["dry-run", "--config", &c, "--request", &r]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("not as expected: status 401 (expected 200)"),
        "{}",
        out.stdout
    );

    // A configuration the filter refuses is reported with its reason.
    std::fs::write(
        &config,
        "direction: inbound\ninbound: { cache_size: lots }\n",
    )
    .unwrap();
    let out = harness(&["dry-run", "--config", &c, "--request", &r]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.starts_with("configuration: refused"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("inbound.cache_size: invalid type"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_table_runs_from_the_command_line() {
    let table = repo_root().join("tests/scenarios/filter.yaml");
    for host in ["proxy-wasm", "component"] {
        let out = harness(&["--host", host, "table", &table.to_string_lossy()]);
        assert!(
            out.ok().contains(" scenarios, 0 failed"),
            "{host}: {}",
            out.stdout
        );
    }

    let out = harness(&["table", "/nonexistent.yaml"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("/nonexistent.yaml"), "{}", out.stderr);
}
