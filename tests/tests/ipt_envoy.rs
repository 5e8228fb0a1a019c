//! Identity-Per-Transaction through real Envoy: the filter opens a
//! transaction at the shim, the app receives a credential for exactly one
//! OpenBao path, and the credential dies when the request ends. Nothing
//! reaches the app when the transaction cannot be opened.

use std::time::Duration;

use ephemera_tests::net::{CountingProxy, get, get_h2, wait_until};
use ephemera_tests::openbao::OpenBao;
use ephemera_tests::workload::{EchoApp, Root, Sidecar, ledger_key};

const BILLING: &str = "spiffe://example.org/billing";

const FILTER: &str = r#"
inbound:
  transactions:
    - path: /orders/{name}
      resource: secret/data/orders/{name}
      broker: vault
      credential_headers: { token: x-vault-token }
"#;

struct World {
    _dir: tempfile::TempDir,
    root: Root,
    bao: OpenBao,
    app: EchoApp,
    sidecar: Sidecar,
    ledger: std::path::PathBuf,
}

fn world(app_status: u16) -> World {
    world_with(app_status, FILTER, "")
}

/// A world whose sidecar has `filter` and whose IPT configuration ends in
/// `ipt_extra` (YAML lines).
fn world_with(app_status: u16, filter: &str, ipt_extra: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing", "ci"]);
    let bao = OpenBao::start(dir.path());
    bao.root(
        "POST",
        "secret/data/orders/a",
        r#"{"data":{"v":"alpha-secret-value"}}"#,
    )
    .ok();
    bao.root(
        "POST",
        "secret/data/orders/b",
        r#"{"data":{"v":"beta-secret-value"}}"#,
    )
    .ok();
    let (ledger, ipt) = ipt_config(dir.path(), &bao, bao.port, "num_uses: 10", ipt_extra);
    let app = EchoApp::start(dir.path(), "app", app_status);
    let ipt_arg = ipt.display().to_string();
    let sidecar = Sidecar::start_with(
        dir.path(),
        &root,
        "billing",
        app.port,
        Some(filter),
        false,
        &["--ipt-config", &ipt_arg, "--envoy-log-level", "info"],
    );
    World {
        _dir: dir,
        root,
        bao,
        app,
        sidecar,
        ledger,
    }
}

/// Writes the IPT configuration: one OpenBao broker `vault` reached at
/// `port` (`broker_extra`: more of its fields), `orders` may read
/// `secret/data/orders/*`, then `ipt_extra` (YAML lines). Returns the
/// ledger's and the configuration's paths.
fn ipt_config(
    dir: &std::path::Path,
    bao: &OpenBao,
    port: u16,
    broker_extra: &str,
    ipt_extra: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let ledger = dir.join("ledger.jsonl");
    let ipt = dir.join("ipt.yaml");
    std::fs::write(
        &ipt,
        format!(
            "ledger: {{ path: \"{}\", signing_key_file: \"{}\" }}\nbrokers:\n  vault: {{ kind: openbao, address: \"http://127.0.0.1:{port}\", token_file: \"{}\", {broker_extra} }}\npolicy:\n  - {{ callers: [\"spiffe://example.org/orders\"], resources: [\"secret/data/orders/*\"], actions: [read], broker: vault }}\n{ipt_extra}",
            ledger.display(),
            ledger_key(dir).0.display(),
            bao.shim_token_file.display()
        ),
    )
    .unwrap();
    (ledger, ipt)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn ledger_events(w: &World) -> Vec<String> {
    std::fs::read_to_string(&w.ledger)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn the_app_gets_a_token_for_its_one_path_that_dies_with_the_request() {
    let w = world(200);
    let caller = w.root.mint("orders", BILLING, &[]);
    let r = get(
        w.sidecar.inbound,
        "/orders/a",
        &[
            ("authorization", &bearer(&caller)),
            ("x-vault-token", "client-supplied"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !r.headers.contains_key("x-vault-token"),
        "credential headers never reach the client"
    );
    let seen = r.json();
    let token = seen["headers"]["x-vault-token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(token, "client-supplied");

    // While the transaction is open the token reads exactly its path (the
    // close follows the stream's end on the filter's next tick, so this can
    // race: check what must hold either way).
    let sibling = w
        .bao
        .with_token(&token, "GET", "secret/data/orders/b", "")
        .0
        .status;
    assert_eq!(sibling, 403, "never the sibling");
    let dead = wait_until(Duration::from_secs(5), || !w.bao.token_exists(&token));
    println!("credential revoked {:?} after the response", dead);
    assert!(dead.is_some(), "revoked after the request ended");
    assert_eq!(
        w.bao
            .with_token(&token, "GET", "secret/data/orders/a", "")
            .0
            .status,
        403,
        "a thief holding it reads nothing"
    );
    let events = wait_until(Duration::from_secs(5), || {
        ledger_events(&w) == ["open", "close"]
    });
    assert!(events.is_some(), "{:?}", ledger_events(&w));
    assert_eq!(w.sidecar.stats()["ephemera.inbound.transactions.opened"], 1);

    // Neither the credential nor the caller's token appears in Envoy's or the
    // shim's output (Envoy at info level; its debug level dumps
    // request headers, credentials included), or in the ledger.
    // A rejection is logged by the filter: request-time logs are captured.
    let r = get(
        w.sidecar.inbound,
        "/orders/a",
        &[("authorization", "Bearer not-a-token")],
    );
    assert_eq!(r.status, 401);
    let logged = wait_until(Duration::from_secs(5), || {
        w.sidecar.proc.stderr().contains("ephemera inbound: 401")
    });
    assert!(logged.is_some(), "the filter's request log was captured");
    let logs = format!("{}{}", w.sidecar.proc.stdout(), w.sidecar.proc.stderr());
    let ledger = std::fs::read_to_string(&w.ledger).unwrap();
    for secret in [token.as_str(), caller.as_str(), w.bao.shim_token.as_str()] {
        assert!(
            !logs.contains(secret),
            "a secret leaked into the sidecar's output"
        );
        assert!(!ledger.contains(secret), "a secret leaked into the ledger");
    }
}

#[test]
fn an_upstream_500_still_revokes_and_is_recorded_as_fail() {
    let w = world(500);
    let caller = w.root.mint("orders", BILLING, &[]);
    let r = get(
        w.sidecar.inbound,
        "/orders/a",
        &[("authorization", &bearer(&caller))],
    );
    assert_eq!(r.status, 500);
    let token = r.json()["headers"]["x-vault-token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        wait_until(Duration::from_secs(5), || !w.bao.token_exists(&token)).is_some(),
        "revoked after the upstream's 500"
    );
    assert!(
        wait_until(Duration::from_secs(5), || ledger_events(&w)
            == ["open", "fail"])
        .is_some(),
        "{:?}",
        ledger_events(&w)
    );
}

#[test]
fn denied_unmappable_and_unavailable_requests_never_reach_the_app() {
    let mut w = world(200);
    let ci = w.root.mint("ci", BILLING, &[]);
    let orders = w.root.mint("orders", BILLING, &[]);
    assert_eq!(
        get(
            w.sidecar.inbound,
            "/orders/a",
            &[("authorization", &bearer(&ci))]
        )
        .status,
        403,
        "shim policy denies ci"
    );
    let r = ephemera_tests::net::request(
        w.sidecar.inbound,
        "OPTIONS",
        "/orders/a",
        &[("authorization", &bearer(&orders))],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // The reason names the route's configuration: logged, never sent.
    assert!(!r.body.contains("no action"), "{}", r.body);
    assert!(
        wait_until(Duration::from_secs(5), || w
            .sidecar
            .proc
            .stderr()
            .contains("has no action on this route"))
        .is_some(),
        "the reason is in Envoy's log"
    );
    let before = w.app.requests().len();

    w.bao.proc.signal_and_wait("KILL");
    let r = get(
        w.sidecar.inbound,
        "/orders/a",
        &[("authorization", &bearer(&orders))],
    );
    assert_eq!(r.status, 503);
    assert_eq!(w.app.requests().len(), before, "nothing reached the app");
    assert!(
        w.app
            .requests()
            .iter()
            .all(|r| r["path"] != "/orders/a" || r["headers"]["x-vault-token"].is_string())
    );
    let events = ledger_events(&w);
    assert_eq!(events, ["deny", "fail"], "{events:?}");
}

/// The token the app received for the request to `path` (from the app's log).
fn token_seen(w: &World, path: &str) -> Option<String> {
    w.app
        .requests()
        .iter()
        .find(|r| r["path"] == path)
        .and_then(|r| r["headers"]["x-vault-token"].as_str().map(str::to_owned))
}

#[test]
fn while_the_request_runs_the_app_reads_its_path_and_a_client_abort_still_revokes() {
    let w = world(200);
    let caller = w.root.mint("orders", BILLING, &[]);
    let port = w.sidecar.inbound;
    let auth = bearer(&caller);
    // A slow app: the transaction stays open while it works.
    let slow = std::thread::spawn(move || {
        get(
            port,
            "/orders/a",
            &[("authorization", &auth), ("x-echo-delay-ms", "1500")],
        )
        .status
    });
    let token = wait_until(Duration::from_secs(5), || {
        token_seen(&w, "/orders/a").is_some()
    })
    .and_then(|_| token_seen(&w, "/orders/a"))
    .expect("the app got a credential");
    let read = w
        .bao
        .with_token(&token, "GET", "secret/data/orders/a", "")
        .0;
    assert_eq!(read.status, 200, "the app's credential reads its one path");
    assert_eq!(read.json()["data"]["data"]["v"], "alpha-secret-value");
    assert_eq!(
        w.bao
            .with_token(&token, "GET", "secret/data/orders/b", "")
            .0
            .status,
        403
    );
    assert_eq!(slow.join().unwrap(), 200);

    // The client gives up while the app works: the stream is torn down.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", w.sidecar.inbound)).unwrap();
    use std::io::Write as _;
    write!(
        stream,
        "GET /orders/b HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {caller}\r\nx-echo-delay-ms: 2000\r\ncontent-length: 0\r\n\r\n"
    )
    .unwrap();
    let token = wait_until(Duration::from_secs(5), || {
        token_seen(&w, "/orders/b").is_some()
    })
    .and_then(|_| token_seen(&w, "/orders/b"))
    .expect("the app got a credential");
    drop(stream);
    let revoked = wait_until(Duration::from_secs(5), || !w.bao.token_exists(&token));
    assert!(revoked.is_some(), "a client abort revokes");
    let events = wait_until(Duration::from_secs(5), || ledger_events(&w).len() == 4);
    assert!(events.is_some(), "{:?}", ledger_events(&w));
    // Each transaction ended its own way (closes are sent by each worker's
    // root context, so their order across workers is not fixed).
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&w.ledger)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let end_of = |resource: &str| {
        records
            .iter()
            .filter(|r| r["resource"] == resource && r["event"] != "open")
            .map(|r| r["event"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(end_of("secret/data/orders/a"), ["close"]);
    assert_eq!(end_of("secret/data/orders/b"), ["fail"]);
}

#[test]
fn the_shim_re_verifies_callers_for_the_filters_own_audience() {
    const AUDIENCE: &str = "spiffe://example.org/billing-api";
    let filter = FILTER.replace("inbound:\n", &format!("inbound:\n  audience: {AUDIENCE}\n"));
    let w = world_with(200, &filter, "");
    let for_audience = w.root.mint("orders", AUDIENCE, &[]);
    let r = get(
        w.sidecar.inbound,
        "/orders/a",
        &[("authorization", &bearer(&for_audience))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = w.app.requests();
    assert!(
        seen.last().unwrap()["headers"]["x-vault-token"].is_string(),
        "{seen:?}"
    );
    // A token for the workload's own ID is not for this filter.
    let for_id = w.root.mint("orders", BILLING, &[]);
    let r = get(
        w.sidecar.inbound,
        "/orders/a",
        &[("authorization", &bearer(&for_id))],
    );
    assert_eq!(r.status, 401);
    assert_eq!(w.app.requests().len(), seen.len());
}

#[test]
fn a_caller_with_too_many_open_transactions_gets_429() {
    let w = world_with(200, FILTER, "max_open_per_caller: 2\n");
    let token = w.root.mint("orders", BILLING, &["--ttl", "120"]);
    let auth = bearer(&token);
    let inbound = w.sidecar.inbound;
    // Three slow requests at once: two hold their transactions open.
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let auth = auth.clone();
            std::thread::spawn(move || {
                get(
                    inbound,
                    "/orders/a",
                    &[("authorization", &auth), ("x-echo-delay-ms", "1500")],
                )
                .status
            })
        })
        .collect();
    let mut statuses: Vec<u16> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429]);
    assert!(w.sidecar.stats()["ephemera.inbound.transactions.limited"] >= 1);
    // Closed transactions free their places (the close follows the
    // response on the filter's next tick).
    wait_until(Duration::from_secs(5), || {
        get(inbound, "/orders/a", &[("authorization", &auth)]).status == 200
    })
    .expect("a place again once the transactions closed");
}

#[test]
fn credentials_an_app_reflects_never_reach_the_client_over_http1_or_http2() {
    let w = world(200);
    let caller = w.root.mint("orders", BILLING, &[]);
    let auth = bearer(&caller);
    let headers = [
        ("authorization", auth.as_str()),
        ("x-echo-reflect", "x-vault-token,x-probe"),
        ("x-probe", "reflected"),
    ];
    for (version, r) in [
        ("HTTP/1.1", get(w.sidecar.inbound, "/orders/a", &headers)),
        ("HTTP/2", get_h2(w.sidecar.inbound, "/orders/a", &headers)),
    ] {
        assert_eq!(r.status, 200, "{version}: {}", r.body);
        assert_eq!(
            r.headers.get("x-probe").map(String::as_str),
            Some("reflected"),
            "{version}: the app reflects the headers it is given"
        );
        assert!(
            r.json()["headers"]["x-vault-token"].is_string(),
            "{version}: the app was given a credential"
        );
        assert!(
            !r.headers.contains_key("x-vault-token"),
            "{version}: the reflected credential reached the client"
        );
    }
}

#[test]
fn an_open_the_shim_finishes_after_the_filter_gave_up_is_revoked_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let bao = OpenBao::start(dir.path());
    let before = bao.token_count();
    // OpenBao answers the shim only after 1.5 s; the filter waits 300 ms.
    let slow = CountingProxy::start_delayed(bao.port, Duration::from_millis(1500));
    let (ledger, ipt) = ipt_config(dir.path(), &bao, slow.port, "timeout_ms: 5000", "");
    let app = EchoApp::start(dir.path(), "app", 200);
    let ipt_arg = ipt.display().to_string();
    let sidecar = Sidecar::start_with(
        dir.path(),
        &root,
        "billing",
        app.port,
        Some(&format!("shim: {{ timeout_ms: 300 }}\n{FILTER}")),
        false,
        &["--ipt-config", &ipt_arg],
    );
    let caller = root.mint("orders", BILLING, &[]);
    let r = get(
        sidecar.inbound,
        "/orders/a",
        &[("authorization", &bearer(&caller))],
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(app.requests().is_empty(), "nothing reached the app");

    // The shim issues the credential after the filter gave up; the close the
    // filter sent meanwhile revokes it as soon as it exists.
    let events = || {
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let ended = wait_until(Duration::from_secs(10), || events().len() == 2);
    assert!(ended.is_some(), "{:?}\n{}", events(), sidecar.proc.stderr());
    let events = events();
    assert_eq!(events[0]["event"], "open");
    assert_eq!(events[1]["event"], "fail");
    assert_eq!(events[1]["error"], "closed while opening");
    assert_eq!(bao.token_count(), before, "the late credential was revoked");
    let id = events[0]["transaction_id"].as_str().unwrap();
    assert_eq!(
        bao.root("GET", &format!("sys/policies/acl/ephemera-{id}"), "")
            .0
            .status,
        404
    );
}
