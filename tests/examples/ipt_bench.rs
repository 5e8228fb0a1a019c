//! Per-transaction overhead through Envoy vs the raw OpenBao calls it makes.
//!   EPHEMERA_BIN=target/release/ephemera cargo run --release -p ephemera-tests --example ipt_bench [REQUESTS]
//! Needs the venv (tests/setup.sh), the release filter and a built `ephemera`.
//! The last line is the same figures as JSON, with the sidecar's (shim's)
//! resident memory after the load, for `bench/run`.

use std::time::{Duration, Instant};

use ephemera_tests::net::get;
use ephemera_tests::openbao::OpenBao;
use ephemera_tests::workload::{EchoApp, Root, Sidecar, ledger_key};

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.50), at(0.99))
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let bao = OpenBao::start(dir.path());
    bao.root("POST", "secret/data/orders/a", r#"{"data":{"v":"x"}}"#)
        .ok();
    let ipt = dir.path().join("ipt.yaml");
    std::fs::write(&ipt, format!(
        "ledger: {{ path: \"{}\", signing_key_file: \"{}\" }}\nbrokers:\n  vault: {{ kind: openbao, address: \"http://127.0.0.1:{}\", token_file: \"{}\" }}\npolicy:\n  - {{ callers: [\"spiffe://example.org/orders\"], resources: [\"secret/data/orders/*\"], actions: [read], broker: vault }}\n",
        dir.path().join("ledger.jsonl").display(), ledger_key(dir.path()).0.display(), bao.port, bao.shim_token_file.display())).expect("write");
    let app = EchoApp::start(dir.path(), "app", 200);
    let filter = "inbound:\n  transactions:\n    - { path: \"/orders/{name}\", resource: \"secret/data/orders/{name}\", broker: vault, credential_headers: { token: x-vault-token } }\n";
    let ipt_arg = ipt.display().to_string();
    let sidecar = Sidecar::start_with(
        dir.path(),
        &root,
        "billing",
        app.port,
        Some(filter),
        false,
        &["--ipt-config", &ipt_arg],
    );
    let token = root.mint("orders", "spiffe://example.org/billing", &["--ttl", "600"]);
    let auth = format!("Bearer {token}");

    // Raw OpenBao: the four calls of one transaction, made with the shim's token.
    let raw: Vec<Duration> = (0..n)
        .map(|i| {
            let start = Instant::now();
            let policy = format!("ephemera-bench-{i}");
            let t = &bao.shim_token;
            bao.with_token(t, "PUT", &format!("sys/policies/acl/{policy}"), r#"{"policy":"path \"secret/data/orders/a\" { capabilities = [\"read\"] }"}"#).ok();
            let created = bao.with_token(t, "POST", "auth/token/create/ephemera", &format!(r#"{{"policies":["{policy}"],"no_default_policy":true,"ttl":"60s","explicit_max_ttl":"60s","num_uses":3,"renewable":false}}"#)).ok().json();
            let accessor = created["auth"]["accessor"].as_str().unwrap_or_default().to_owned();
            bao.with_token(t, "POST", "auth/token/revoke-accessor", &format!(r#"{{"accessor":"{accessor}"}}"#)).ok();
            bao.with_token(t, "DELETE", &format!("sys/policies/acl/{policy}"), "").ok();
            start.elapsed()
        })
        .collect();
    let measure = |path: &str| -> Vec<Duration> {
        (0..n)
            .map(|_| {
                let start = Instant::now();
                let r = get(sidecar.inbound, path, &[("authorization", &auth)]);
                assert_eq!(r.status, 200, "{}", r.body);
                start.elapsed()
            })
            .collect()
    };
    let plain = measure("/plain");
    let txn = measure("/orders/a");
    let (rp50, rp99) = percentiles(raw);
    let (pp50, pp99) = percentiles(plain);
    let (tp50, tp99) = percentiles(txn);
    println!(
        "{n} sequential requests each; Envoy 1.40 + ephemera filter, shim, OpenBao dev server, all on 127.0.0.1"
    );
    println!(
        "raw OpenBao transaction calls (policy, token, revoke, delete): p50 {rp50:.2} ms  p99 {rp99:.2} ms"
    );
    println!(
        "through Envoy, verified request without IPT:                   p50 {pp50:.2} ms  p99 {pp99:.2} ms"
    );
    println!(
        "through Envoy, IPT request (open before the app):              p50 {tp50:.2} ms  p99 {tp99:.2} ms"
    );
    println!(
        "IPT overhead per request (IPT - plain):                        p50 {:.2} ms  p99 {:.2} ms",
        tp50 - pp50,
        tp99 - pp99
    );
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", sidecar.proc.pid())).unwrap_or_default();
    let shim_rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "requests": n,
            "raw_ms": {"p50": rp50, "p99": rp99},
            "plain_ms": {"p50": pp50, "p99": pp99},
            "ipt_ms": {"p50": tp50, "p99": tp99},
            "shim_rss_kb": shim_rss_kb,
        })
    );
}
