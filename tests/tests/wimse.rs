//! WIMSE workload-to-workload authentication between two ephemera
//! sidecars (real Envoys, real shims): orders calls billing with its
//! Workload Identity Token and a fresh Workload Proof Token per request;
//! every hostile variation of a captured pair is refused with a problem
//! document; a new proof key and a removal revoke the old WIT; a WIMSE
//! caller opens transactions; the shim warns before a WIT lapses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ephemera_tests::ephemera;
use ephemera_tests::net::{Response, get, send, wait_until};
use ephemera_tests::openbao::OpenBao;
use ephemera_tests::workload::{EchoApp, Root, Sidecar, ledger_key, serve};

const ORDERS: &str = "spiffe://example.org/orders";

/// Billing accepts WIMSE callers for `http://billing`.
const BILLING: &str = r#"
inbound:
  wimse: { origin: "http://billing" }
  routes:
    - { path: /invoices/*, allow: ["spiffe://example.org/orders"] }
"#;

/// Orders calls billing (and a capturing app posing as billing) with WIMSE.
fn orders_config(billing_port: u16, capture_port: u16) -> String {
    format!(
        r#"
outbound:
  destinations:
    - {{ host: billing, address: "127.0.0.1:{billing_port}", spiffe_id: "spiffe://example.org/billing", auth: wimse, origin: "http://billing" }}
    - {{ host: capture, address: "127.0.0.1:{capture_port}", spiffe_id: "spiffe://example.org/billing", auth: wimse, origin: "http://billing" }}
"#
    )
}

/// A root with `services`, a WIT issuer key outside it, and a WIT for
/// each service: the root and the issuer key's path.
fn wimse_root(dir: &Path, services: &[&str]) -> (Root, String) {
    let root = Root::new(&dir.join("root"), services);
    std::fs::create_dir_all(dir.join("issuer")).unwrap();
    let key = dir
        .join("issuer/wit-issuer.pem")
        .to_string_lossy()
        .into_owned();
    let root_dir = root.dir.to_string_lossy().into_owned();
    ephemera(&["identity", "wit-issuer", &root_dir, "--key", &key], &[]).ok();
    for service in services {
        root.identity("wit", service, &["--issuer-key", &key]);
    }
    (root, key)
}

struct World {
    _dir: tempfile::TempDir,
    root: Root,
    issuer: PathBuf,
    billing_app: EchoApp,
    capture: EchoApp,
    billing: Sidecar,
    orders: Sidecar,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    // The issuer key belongs to the provisioning side, outside the root.
    let (root, key) = wimse_root(dir.path(), &["orders", "billing"]);
    let issuer = PathBuf::from(&key);
    let billing_app = EchoApp::start(dir.path(), "billing-app", 200);
    let capture = EchoApp::start(dir.path(), "capture", 200);
    let orders_app = EchoApp::start(dir.path(), "orders-app", 200);
    let billing = Sidecar::start_with(
        dir.path(),
        &root,
        "billing",
        billing_app.port,
        Some(BILLING),
        false,
        &[],
    );
    let orders = Sidecar::start_with(
        dir.path(),
        &root,
        "orders",
        orders_app.port,
        Some(&orders_config(billing.inbound, capture.port)),
        true,
        &[],
    );
    World {
        _dir: dir,
        root,
        issuer,
        billing_app,
        capture,
        billing,
        orders,
    }
}

impl World {
    /// A call from orders' app through both sidecars.
    fn call(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut all = vec![("host", "billing")];
        all.extend_from_slice(headers);
        get(self.orders.outbound.unwrap(), path, &all)
    }

    /// A WIT and a proof for `path` made by orders' outbound filter,
    /// captured by an app posing as billing (so billing has not seen them).
    fn captured(&self, path: &str) -> (String, String) {
        let before = self.capture.requests().len();
        let r = get(self.orders.outbound.unwrap(), path, &[("host", "capture")]);
        assert_eq!(r.status, 200, "{}", r.body);
        let seen = self.capture.requests();
        assert_eq!(seen.len(), before + 1);
        let headers = &seen[before]["headers"];
        let text = |name: &str| headers[name].as_str().unwrap_or_default().to_owned();
        (
            text("workload-identity-token"),
            text("workload-proof-token"),
        )
    }

    /// Sends `headers` straight to billing's inbound listener.
    fn present(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        send(self.billing.inbound, "GET", path, headers, "")
    }
}

/// The problem document of a 400, and its `code`.
fn problem(r: &Response) -> String {
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/problem+json")
    );
    let body = r.json();
    assert_eq!(body["status"], 400);
    body["code"].as_str().unwrap().to_owned()
}

#[test]
fn two_sidecars_authenticate_each_other_with_wit_and_wpt() {
    let w = world();
    let r = w.call("/invoices/7?expand=lines", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["headers"]["x-ephemera-caller"], ORDERS);
    assert_eq!(seen["path"], "/invoices/7?expand=lines");
    // The tokens stop at billing's filter.
    for header in ["workload-identity-token", "workload-proof-token"] {
        assert!(
            seen["headers"].get(header).is_none(),
            "{header} reached the app"
        );
    }
    // A new proof per request: the second call is not a replay.
    assert_eq!(w.call("/invoices/7", &[]).status, 200);
    // An access token the app sends is bound to the proof (ath).
    assert_eq!(
        w.call(
            "/invoices/8",
            &[("authorization", "Bearer app-access-token")]
        )
        .status,
        200
    );
    // Route rules apply to WIMSE callers as to any other.
    assert_eq!(w.call("/admin", &[]).status, 403);
    let stats = w.orders.stats();
    assert!(stats["ephemera.outbound.wimse.proved"] >= 4, "{stats:?}");
    let stats = w.billing.stats();
    assert!(stats["ephemera.inbound.verified"] >= 3, "{stats:?}");
}

#[test]
fn hostile_presentations_are_refused_with_problem_details() {
    let w = world();
    let (wit, proof) = w.captured("/invoices/7");
    let (_, later_proof) = w.captured("/invoices/7");
    let pair = [
        ("workload-identity-token", wit.as_str()),
        ("workload-proof-token", proof.as_str()),
    ];
    // The captured pair is good once, for its own path, whichever Envoy
    // worker each connection lands on; every replay is refused.
    let answers: Vec<Response> = (0..8).map(|_| w.present("/invoices/7", &pair)).collect();
    assert_eq!(answers[0].status, 200, "{}", answers[0].body);
    for replay in &answers[1..] {
        assert_eq!(problem(replay), "wpt_replayed");
    }
    // Aimed elsewhere: another path, or its own path with a query is fine
    // but a path the proof was not made for is not.
    let other_path = w.present(
        "/invoices/8",
        &[
            ("workload-identity-token", &wit),
            ("workload-proof-token", &later_proof),
        ],
    );
    assert_eq!(problem(&other_path), "wpt_wrong_audience");
    // Two proofs.
    let two = w.present(
        "/invoices/7",
        &[
            ("workload-identity-token", &wit),
            ("workload-proof-token", &later_proof),
            ("workload-proof-token", &later_proof),
        ],
    );
    assert_eq!(problem(&two), "wpt_count");
    // A proof without an access token it claims, or an access token the
    // proof does not bind.
    let unbound = w.present(
        "/invoices/7",
        &[
            ("workload-identity-token", &wit),
            ("workload-proof-token", &later_proof),
            ("authorization", "Bearer smuggled"),
        ],
    );
    assert_eq!(problem(&unbound), "wpt_unbound_token");
    // Another workload's WIT with orders' proof.
    let billing_wit = std::fs::read_to_string(w.root.dir.join("services/billing/wit.jwt")).unwrap();
    let swapped = w.present(
        "/invoices/7",
        &[
            ("workload-identity-token", billing_wit.trim()),
            ("workload-proof-token", &later_proof),
        ],
    );
    assert_eq!(problem(&swapped), "wpt_bad_signature");
    // The proof alone, or the WIT as a bearer token.
    let alone = w.present("/invoices/7", &[("workload-proof-token", &later_proof)]);
    assert_eq!(alone.status, 401);
    let bearer = w.present(
        "/invoices/7",
        &[("authorization", &format!("Bearer {wit}"))],
    );
    assert_eq!(bearer.status, 401);
    // Nothing hostile reached the app: one request, the good one.
    assert_eq!(w.billing_app.requests().len(), 1);
    let stats = w.billing.stats();
    assert_eq!(stats["ephemera.inbound.rejected.wpt_replayed"], 7);
    for code in [
        "wpt_wrong_audience",
        "wpt_count",
        "wpt_unbound_token",
        "wpt_bad_signature",
        "wit_as_bearer",
    ] {
        assert_eq!(
            stats[&format!("ephemera.inbound.rejected.{code}")],
            1,
            "{code}: {stats:?}"
        );
    }
    // No token or key in either sidecar's log.
    let key = std::fs::read_to_string(w.root.dir.join("services/orders/wit-key.pem")).unwrap();
    let wit_signature = wit.rsplit('.').next().unwrap();
    for log in [
        w.billing.proc.stdout() + &w.billing.proc.stderr(),
        w.orders.proc.stdout() + &w.orders.proc.stderr(),
    ] {
        assert!(!log.contains(wit_signature), "a WIT in a log");
        assert!(
            !log.contains(proof.rsplit('.').next().unwrap()),
            "a WPT in a log"
        );
        assert!(
            !log.contains(key.lines().nth(1).unwrap()),
            "a proof key in a log"
        );
    }
}

#[test]
fn a_new_proof_key_or_a_removal_revokes_the_old_wit() {
    let w = world();
    let (old_wit, old_proof) = w.captured("/invoices/7");
    let key = w.issuer.to_string_lossy().into_owned();
    w.root
        .identity("wit", "orders", &["--issuer-key", &key, "--new-proof-key"]);
    let wait = |f: &dyn Fn() -> bool| wait_until(Duration::from_secs(10), f).is_some();
    // Billing learns the new binding; orders serves its new WIT.
    let old = [
        ("workload-identity-token", old_wit.as_str()),
        ("workload-proof-token", old_proof.as_str()),
    ];
    assert!(
        wait(&|| w.present("/invoices/7", &old).status == 400),
        "the WIT bound to the old key is still accepted"
    );
    assert!(
        wait(&|| w.call("/invoices/7", &[]).status == 200),
        "the new WIT is not accepted"
    );
    // Every Envoy worker polls its shim on its own (200 ms): give each time
    // to take the new identity, as the first two only proved one had.
    std::thread::sleep(Duration::from_secs(1));
    let (_, fresh) = w.captured("/invoices/7");
    let stale = w.present(
        "/invoices/7",
        &[
            ("workload-identity-token", &old_wit),
            ("workload-proof-token", &fresh),
        ],
    );
    assert!(
        matches!(
            problem(&stale).as_str(),
            "wit_not_bound" | "wpt_bad_signature"
        ),
        "{}",
        stale.body
    );

    w.root.identity("remove", "orders", &[]);
    assert!(
        wait(&|| w.call("/invoices/7", &[]).status == 400),
        "a removed workload's WIT is still accepted"
    );
    std::thread::sleep(Duration::from_secs(1));
    let r = w.call("/invoices/7", &[]);
    assert_eq!(problem(&r), "unknown_identity");
    assert!(!Path::new(&w.root.dir.join("services/orders/wit.jwt")).exists());
}

#[test]
fn a_wimse_caller_opens_a_transaction_the_shim_verified_again() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = wimse_root(dir.path(), &["orders", "billing"]);
    let bao = OpenBao::start(dir.path());
    bao.root("POST", "secret/data/orders/a", r#"{"data":{"v":"alpha"}}"#)
        .ok();
    let ledger = dir.path().join("ledger.jsonl");
    let ipt = dir.path().join("ipt.yaml");
    std::fs::write(
        &ipt,
        format!(
            "ledger: {{ path: \"{}\", signing_key_file: \"{}\" }}\nbrokers:\n  vault: {{ kind: openbao, address: \"http://127.0.0.1:{}\", token_file: \"{}\" }}\npolicy:\n  - {{ callers: [\"{ORDERS}\"], resources: [\"secret/data/orders/*\"], actions: [read], broker: vault }}\n",
            ledger.display(),
            ledger_key(dir.path()).0.display(),
            bao.port,
            bao.shim_token_file.display()
        ),
    )
    .unwrap();
    let filter = r#"
inbound:
  wimse: { origin: "http://billing" }
  transactions:
    - path: /orders/{name}
      resource: secret/data/orders/{name}
      broker: vault
      credential_headers: { token: x-vault-token }
"#;
    let app = EchoApp::start(dir.path(), "billing-app", 200);
    let orders_app = EchoApp::start(dir.path(), "orders-app", 200);
    let ipt_arg = ipt.display().to_string();
    let billing = Sidecar::start_with(
        dir.path(),
        &root,
        "billing",
        app.port,
        Some(filter),
        false,
        &["--ipt-config", &ipt_arg],
    );
    let orders = Sidecar::start_with(
        dir.path(),
        &root,
        "orders",
        orders_app.port,
        Some(&orders_config(billing.inbound, app.port)),
        true,
        &[],
    );
    let r = get(
        orders.outbound.unwrap(),
        "/orders/a",
        &[("host", "billing")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["headers"]["x-ephemera-caller"], ORDERS);
    let token = seen["headers"]["x-vault-token"].as_str().unwrap();
    assert!(
        !token.is_empty(),
        "the app got the transaction's credential"
    );
    let records = || {
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let closed = wait_until(Duration::from_secs(10), || records().len() == 2);
    assert!(closed.is_some(), "open and close recorded: {:?}", records());
    let records = records();
    assert_eq!(records[0]["event"], "open");
    assert_eq!(records[0]["caller"], ORDERS);
    assert_eq!(records[1]["event"], "close");
    let text = std::fs::read_to_string(&ledger).unwrap();
    assert!(!text.contains(token), "the credential is not in the ledger");
}

#[test]
fn the_shim_serves_the_wit_and_warns_as_it_nears_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (root, key) = wimse_root(dir.path(), &["orders"]);
    root.identity("wit", "orders", &["--issuer-key", &key, "--ttl-secs", "4"]);
    let shim = serve(dir.path(), &root, "orders", "shim", &[]);
    let doc = get(&shim.socket, "/v1/identity", &[]).json();
    let wit = std::fs::read_to_string(root.dir.join("services/orders/wit.jwt")).unwrap();
    assert_eq!(doc["wit"], wit.trim());
    assert!(doc["wit_key_pem"].as_str().unwrap().contains("PRIVATE KEY"));
    assert!(doc["wit_issuers"].as_str().unwrap().contains(ORDERS));
    let status = || get(&shim.socket, "/v1/status", &[]).json();
    let first_expiry = status()["wit_expires_at"].as_u64().unwrap();
    // In the last quarter of its 4 s: a warning, counted.
    let warned = wait_until(Duration::from_secs(10), || {
        status()["wit_expiry_warnings"].as_u64() >= Some(1)
    });
    assert!(warned.is_some(), "no warning: {}", status());
    assert!(
        shim.proc.stderr().contains("the workload's WIT expire"),
        "{}",
        shim.proc.stderr()
    );
    // Renewed: served without a restart.
    root.identity("wit", "orders", &["--issuer-key", &key]);
    let renewed = wait_until(Duration::from_secs(10), || {
        status()["wit_expires_at"].as_u64() > Some(first_expiry + 3000)
    });
    assert!(renewed.is_some(), "{}", status());
}
