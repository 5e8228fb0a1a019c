//! Audit under faults: an IPT ledger that cannot be written (through real
//! Envoy), a shim killed mid-burst, and a secrets audit ledger that fills up.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ephemera_tests::net::{get, wait_until};
use ephemera_tests::openbao::OpenBao;
use ephemera_tests::tmpfs::Tmpfs;
use ephemera_tests::workload::{
    EchoApp, Root, envoy_for_shim, ledger_key, serve, serve_secrets, shim_socket, verify_ledger,
};
use serde_json::Value;

const BILLING: &str = "spiffe://example.org/billing";
const FILTER: &str = "inbound:\n  transactions:\n    - { path: \"/orders/{name}\", resource: \"secret/data/orders/{name}\", broker: vault, credential_headers: { token: x-vault-token } }\n";

fn ipt_config(dir: &Path, ledger: &Path, bao: &OpenBao) -> PathBuf {
    let path = dir.join("ipt.yaml");
    std::fs::write(
        &path,
        format!(
            "ledger: {{ path: \"{}\", signing_key_file: \"{}\" }}\nbrokers:\n  vault: {{ kind: openbao, address: \"http://127.0.0.1:{}\", token_file: \"{}\" }}\npolicy:\n  - {{ callers: [\"spiffe://example.org/orders\"], resources: [\"secret/data/orders/*\"], actions: [read], broker: vault }}\n",
            ledger.display(),
            ledger_key(dir).0.display(),
            bao.port,
            bao.shim_token_file.display()
        ),
    )
    .unwrap();
    path
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn a_ledger_that_cannot_be_written_means_503_and_nothing_reaches_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let bao = OpenBao::start(dir.path());
    let tokens_before = bao.token_count();
    let app = EchoApp::start(dir.path(), "app", 200);
    let caller = root.mint("orders", BILLING, &["--ttl", "120"]);

    // 1. A ledger filesystem that fills up while the shim runs.
    let full = Tmpfs::mount(&dir.path().join("full"), "size=64k").expect("a tmpfs (root)");
    let config = ipt_config(dir.path(), &full.dir.join("ledger.jsonl"), &bao);
    let cfg = config.display().to_string();
    let _shim = serve(
        dir.path(),
        &root,
        "billing",
        "shim-full",
        &["--ipt-config", &cfg],
    );
    let (_envoy, inbound, _) =
        envoy_for_shim(dir.path(), app.port, &shim_socket(dir.path()), Some(FILTER));
    assert_eq!(
        get(inbound, "/orders/a", &[("authorization", &bearer(&caller))]).status,
        200
    );
    let _ = std::fs::write(full.dir.join("filler"), vec![0u8; 128 * 1024]);
    // The ledger's last page may still take a few records; then appends fail.
    let statuses: Vec<u16> = (0..30)
        .map(|i| {
            get(
                inbound,
                &format!("/orders/f{i}"),
                &[("authorization", &bearer(&caller))],
            )
            .status
        })
        .collect();
    let first_503 = statuses
        .iter()
        .position(|s| *s == 503)
        .expect("the full ledger refuses transactions");
    assert!(
        statuses[first_503..].iter().all(|s| *s == 503),
        "refused while the disk is full: {statuses:?}"
    );
    // Credentials issued for refused opens were revoked; the ones that
    // reached the app were revoked at close (whose record cannot be
    // written): no transaction policy or token is left in OpenBao.
    let leftovers = || {
        let policies = bao.root("LIST", "sys/policies/acl", "").ok().json()["data"]["keys"]
            .as_array()
            .map_or(0, |keys| {
                keys.iter()
                    .filter_map(|k| k.as_str())
                    .filter(|k| k.starts_with("ephemera-") && *k != "ephemera-shim")
                    .count()
            });
        (policies, bao.token_count())
    };
    let cleared = wait_until(Duration::from_secs(5), || leftovers() == (0, tokens_before));
    assert!(cleared.is_some(), "left in OpenBao: {:?}", leftovers());
    let ledger_text = std::fs::read_to_string(full.dir.join("ledger.jsonl")).unwrap();
    let seen = app.requests();
    assert_eq!(
        seen.len(),
        1 + first_503,
        "only audited requests reached the app"
    );
    for request in &seen {
        let name = request["path"]
            .as_str()
            .unwrap()
            .trim_start_matches("/orders/");
        assert!(
            ledger_text.contains(&format!("\"secret/data/orders/{name}\"")),
            "{name} unaudited"
        );
    }
    // Space again: each failed batch was cut back to the last durable
    // length, so appends resume and no partial line sits in the ledger.
    std::fs::remove_file(full.dir.join("filler")).unwrap();
    assert_eq!(
        get(
            inbound,
            "/orders/after",
            &[("authorization", &bearer(&caller))]
        )
        .status,
        200
    );
    let verify = verify_ledger(dir.path(), &full.dir.join("ledger.jsonl"));
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    let seen_before = app.requests().len();

    // 2. A read-only ledger filesystem from the start.
    let ro = Tmpfs::mount(&dir.path().join("ro"), "ro,size=64k").expect("a tmpfs (root)");
    let config = ipt_config(dir.path(), &ro.dir.join("ledger.jsonl"), &bao);
    let cfg = config.display().to_string();
    let shim = serve(
        dir.path(),
        &root,
        "billing",
        "shim-ro",
        &["--ipt-config", &cfg],
    );
    let (_envoy2, inbound2, _) =
        envoy_for_shim(dir.path(), app.port, &shim_socket(dir.path()), Some(FILTER));
    assert_eq!(
        get(
            inbound2,
            "/orders/c",
            &[("authorization", &bearer(&caller))]
        )
        .status,
        503
    );
    assert_eq!(app.requests().len(), seen_before);
    assert!(
        shim.proc.stderr().contains("transactions unavailable"),
        "{}",
        shim.proc.stderr()
    );
}

#[test]
fn a_shim_killed_mid_burst_leaves_a_verifiable_ledger_covering_every_transaction_the_app_saw() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let bao = OpenBao::start(dir.path());
    let app = EchoApp::start(dir.path(), "app", 200);
    let ledger = dir.path().join("ledger.jsonl");
    let config = ipt_config(dir.path(), &ledger, &bao);
    let cfg = config.display().to_string();
    let mut first = serve(
        dir.path(),
        &root,
        "billing",
        "shim-1",
        &["--ipt-config", &cfg],
    );
    let (_envoy, inbound, _) =
        envoy_for_shim(dir.path(), app.port, &shim_socket(dir.path()), Some(FILTER));
    let caller = root.mint("orders", BILLING, &["--ttl", "120"]);

    let workers: Vec<_> = (0..4)
        .map(|t| {
            let caller = caller.clone();
            std::thread::spawn(move || {
                // Until well after the restart: the burst spans the outage.
                let start = std::time::Instant::now();
                let mut statuses = Vec::new();
                let mut i = 0;
                while start.elapsed() < Duration::from_millis(2500) {
                    let path = format!("/orders/k{t}-{i}");
                    statuses
                        .push(get(inbound, &path, &[("authorization", &bearer(&caller))]).status);
                    i += 1;
                }
                statuses
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    first.proc.signal_and_wait("KILL");
    std::thread::sleep(Duration::from_millis(300));
    let _second = serve(
        dir.path(),
        &root,
        "billing",
        "shim-2",
        &["--ipt-config", &cfg],
    );
    let statuses: Vec<u16> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&200) && statuses.contains(&503),
        "the burst spanned the outage: {statuses:?}"
    );

    let verify = verify_ledger(dir.path(), &ledger);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    let opened: BTreeSet<String> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["event"] == "open")
        .map(|r| r["resource"].as_str().unwrap().to_owned())
        .collect();
    let seen = app.requests();
    assert_eq!(seen.len(), statuses.iter().filter(|s| **s == 200).count());
    for request in seen {
        let name = request["path"]
            .as_str()
            .unwrap()
            .trim_start_matches("/orders/");
        assert!(
            opened.contains(&format!("secret/data/orders/{name}")),
            "the app saw {name} without an open record"
        );
    }
}

#[test]
fn a_secret_read_that_cannot_be_audited_is_refused_and_its_token_stays_spent() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "api"]);
    let files = dir.path().join("files");
    std::fs::create_dir_all(files.join("api")).unwrap();
    std::fs::write(files.join("api/token"), "audited-secret-value\n").unwrap();
    let salt = dir.path().join("salt");
    std::fs::write(&salt, [5u8; 32]).unwrap();
    let full = Tmpfs::mount(&dir.path().join("audit"), "size=64k").expect("a tmpfs (root)");
    let ledger = full.dir.join("secrets.jsonl");
    let config = dir.path().join("secrets.yaml");
    std::fs::write(
        &config,
        format!(
            "stores:\n  files: {{ backend: file, dir: \"{}\", mount: creds }}\nrefs:\n  api_token: {{ store: files, path: api/token, policy: p }}\npolicies:\n  p: {{ allowed_principals: [orders] }}\nprincipals:\n  - {{ match: \"spiffe://example.org/orders\", principal: orders }}\naudit: {{ ledger: \"{}\", tenant: acme, salt_file: \"{}\", signing_key_file: \"{}\" }}\n",
            files.display(),
            ledger.display(),
            salt.display(),
            ledger_key(dir.path()).0.display()
        ),
    )
    .unwrap();
    let shim = serve_secrets(dir.path(), &root, "api", &config);
    let token = |jti: &str| root.secrets_token("orders", "api", jti);
    let resolve = |token: &str| shim.resolve_secret("api_token", token);
    assert_eq!(resolve(&token("before")).status, 200);

    // The audit ledger's disk fills: the read happens, the release does not.
    let _ = std::fs::write(full.dir.join("filler"), vec![0u8; 128 * 1024]);
    // The ledger's last page may still take a few records.
    let (spent, refused) = (0..30)
        .map(|i| token(&format!("while-full-{i}")))
        .map(|t| {
            let r = resolve(&t);
            (t, r)
        })
        .find(|(_, r)| r.status != 200)
        .expect("a full audit ledger refuses reads");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.body.contains("audit unavailable"),
        "{}",
        refused.body
    );
    assert!(!refused.body.contains("audited-secret-value"));

    // Space again: the same token does not get a second read.
    std::fs::remove_file(full.dir.join("filler")).unwrap();
    let again = resolve(&spent);
    assert_ne!(again.status, 200, "{}", again.body);
    assert!(again.body.contains("token replayed"), "{}", again.body);
    assert_eq!(
        resolve(&token("after")).status,
        200,
        "fresh tokens read again"
    );
}
