//! The filter in real Envoy 1.40 (V8), in front of a real app, with the real
//! shim: inbound verification and authorization, outbound minting, identity
//! reload, and failure behaviour.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ephemera_tests::net::{get, wait_until};
use ephemera_tests::workload::{
    EchoApp, Root, Shim, Sidecar, envoy, envoy_for_shim, serve, shim_socket, stats, wasm,
};
use ephemera_tests::{ephemera_bin, repo_root, run, spiffile_peer};
use serde_json::json;

const ORDERS: &str = "spiffe://example.org/orders";
const BILLING: &str = "spiffe://example.org/billing";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn sign_claims(root: &Root, service: &str, claims: serde_json::Value) -> String {
    let r = root.dir.to_string_lossy();
    spiffile_peer(&["sign-claims", &r, service, &claims.to_string()])
        .ok()
        .to_owned()
}

const INBOUND_RULES: &str = r#"
inbound:
  unauthenticated: ["/healthz"]
  routes:
    - path: /orders-only/*
      allow: ["spiffe://example.org/orders"]
    - path: /*
      allow: ["spiffe://example.org/*"]
"#;

/// Runs every inbound case against a billing sidecar; returns (case, status).
fn inbound_cases(
    dir: &std::path::Path,
    root: &Root,
    crypto: &str,
) -> (Vec<(&'static str, u16)>, Sidecar) {
    let app = EchoApp::start(dir, &format!("billing-app-{crypto}"), 200);
    let config = format!("crypto: {crypto}\n{INBOUND_RULES}");
    let sidecar = Sidecar::start(dir, root, "billing", app.port, Some(&config), false);
    let port = sidecar.inbound;
    let t = now();
    let valid = root.mint("orders", BILLING, &[]);
    let ci = root.mint("ci", BILLING, &[]);
    let reference = spiffile_peer(&["mint", &root.dir.to_string_lossy(), "orders", BILLING])
        .ok()
        .to_owned();
    let expired = sign_claims(
        root,
        "orders",
        json!({"sub": ORDERS, "aud": BILLING, "iat": t - 200, "exp": t - 100}),
    );
    let ghost = sign_claims(
        root,
        "orders",
        json!({"sub": "spiffe://example.org/ghost", "aud": BILLING, "exp": t + 60}),
    );
    let stolen_key = sign_claims(
        root,
        "ci",
        json!({"sub": ORDERS, "aud": BILLING, "exp": t + 60}),
    );
    let wrong_aud = root.mint("orders", "spiffe://example.org/other", &[]);

    let mut verdicts = Vec::new();
    let mut case = |name: &'static str, path: &str, headers: &[(&str, &str)]| {
        let r = get(port, path, headers);
        if r.status == 401 {
            assert_eq!(
                r.headers.get("www-authenticate").map(String::as_str),
                Some("Bearer error=\"invalid_token\""),
                "{name}"
            );
            assert!(
                !r.body.contains("expired") && !r.body.contains("signature"),
                "no reasons to the client: {}",
                r.body
            );
        }
        verdicts.push((name, r.status));
        r
    };

    // A valid token: the app sees the verified caller, not the client's
    // claims (setting the header replaces every copy a client sent), and no token.
    let seen = case(
        "valid",
        "/hello",
        &[
            ("authorization", &bearer(&valid)),
            ("x-ephemera-caller", "spiffe://example.org/admin"),
            ("x-ephemera-caller", "spiffe://example.org/root"),
        ],
    )
    .json();
    let callers: Vec<_> = seen["header_list"]
        .as_array()
        .expect("the echo lists every header")
        .iter()
        .filter(|pair| pair[0] == "x-ephemera-caller")
        .map(|pair| pair[1].clone())
        .collect();
    assert_eq!(
        callers,
        [ORDERS],
        "exactly one caller header reaches the app"
    );
    assert!(
        seen["headers"].get("authorization").is_none(),
        "token stripped"
    );
    case(
        "valid again (cache)",
        "/hello",
        &[("authorization", &bearer(&valid))],
    );
    case(
        "reference-minted",
        "/hello",
        &[("authorization", &bearer(&reference))],
    );
    case("missing", "/hello", &[("x-ephemera-caller", ORDERS)]);
    case(
        "garbage",
        "/hello",
        &[("authorization", "Bearer not.a.token")],
    );
    case(
        "not bearer",
        "/hello",
        &[("authorization", &format!("Basic {valid}"))],
    );
    case("expired", "/hello", &[("authorization", &bearer(&expired))]);
    case(
        "wrong audience",
        "/hello",
        &[("authorization", &bearer(&wrong_aud))],
    );
    case(
        "unknown identity",
        "/hello",
        &[("authorization", &bearer(&ghost))],
    );
    case(
        "another identity's key",
        "/hello",
        &[("authorization", &bearer(&stolen_key))],
    );
    case(
        "route allows caller",
        "/orders-only/x",
        &[("authorization", &bearer(&valid))],
    );
    case(
        "route refuses caller",
        "/orders-only/x",
        &[("authorization", &bearer(&ci))],
    );
    case(
        "route lookalike",
        "/orders-only-not/x",
        &[("authorization", &bearer(&ci))],
    );
    case(
        "dot segments",
        "/public/../orders-only/x",
        &[("authorization", &bearer(&ci))],
    );
    case(
        "underscore caller header",
        "/healthz",
        &[("x_ephemera_caller", ORDERS)],
    );
    let health = case(
        "unauthenticated path",
        "/healthz",
        &[("x-ephemera-caller", ORDERS)],
    )
    .json();
    assert!(
        health["headers"].get("x-ephemera-caller").is_none(),
        "client caller header removed"
    );

    // The app never saw an unauthenticated request on a protected path,
    // nor a caller header it did not get from the filter.
    for r in app.requests() {
        if r["path"] != "/healthz" {
            assert!(
                r["headers"]["x-ephemera-caller"] == ORDERS
                    || r["headers"]["x-ephemera-caller"] == "spiffe://example.org/ci",
                "{r}"
            );
        }
    }
    drop(app);
    (verdicts, sidecar)
}

#[test]
fn inbound_verdicts_are_the_same_on_both_crypto_paths() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing", "ci"]);
    let (native, native_sidecar) = inbound_cases(dir.path(), &root, "auto");
    let expected = [
        ("valid", 200),
        ("valid again (cache)", 200),
        ("reference-minted", 200),
        ("missing", 401),
        ("garbage", 401),
        ("not bearer", 401),
        ("expired", 401),
        ("wrong audience", 401),
        ("unknown identity", 401),
        ("another identity's key", 401),
        ("route allows caller", 200),
        ("route refuses caller", 403),
        ("route lookalike", 200),
        ("dot segments", 403),
        ("underscore caller header", 400),
        ("unauthenticated path", 200),
    ];
    assert_eq!(native, expected);
    let s = native_sidecar.stats();
    assert_eq!(s["ephemera.inbound.crypto_native"], 1);
    assert!(
        s["ephemera.inbound.verify_native"] > 0 && s["ephemera.inbound.verify_rust"] == 0,
        "{s:?}"
    );
    assert!(s["ephemera.inbound.cache_hits"] > 0, "{s:?}");
    for reason in [
        "expired",
        "wrong_audience",
        "unknown_identity",
        "bad_signature",
        "missing_token",
        "malformed",
    ] {
        assert!(
            s[&format!("ephemera.inbound.rejected.{reason}")] >= 1,
            "{reason}: {s:?}"
        );
    }
    assert_eq!(s["ephemera.inbound.forbidden"], 2);
    drop(native_sidecar);

    let (rust, rust_sidecar) = inbound_cases(dir.path(), &root, "rust");
    assert_eq!(rust, native, "both crypto paths give the same verdicts");
    let s = rust_sidecar.stats();
    assert_eq!(s["ephemera.inbound.crypto_native"], 0);
    assert!(
        s["ephemera.inbound.verify_rust"] > 0 && s["ephemera.inbound.verify_native"] == 0,
        "{s:?}"
    );
}

/// Orders' sidecar, whose outbound listener reaches billing through
/// billing's sidecar and payments' app directly.
struct Outbound {
    billing_app: EchoApp,
    _billing: Sidecar,
    payments_app: EchoApp,
    _orders_app: EchoApp,
    orders: Sidecar,
}

fn orders_calling_billing_and_payments(dir: &std::path::Path, root: &Root) -> Outbound {
    let billing_app = EchoApp::start(dir, "billing-app", 200);
    let billing = Sidecar::start(dir, root, "billing", billing_app.port, None, false);
    let payments_app = EchoApp::start(dir, "payments-app", 200);
    let config = format!(
        "outbound:\n  destinations:\n    - {{host: billing, address: '127.0.0.1:{}', spiffe_id: '{BILLING}'}}\n    - {{host: payments, address: '127.0.0.1:{}', spiffe_id: 'spiffe://example.org/payments'}}\n",
        billing.inbound, payments_app.port
    );
    let orders_app = EchoApp::start(dir, "orders-app", 200);
    let orders = Sidecar::start(dir, root, "orders", orders_app.port, Some(&config), true);
    Outbound {
        billing_app,
        _billing: billing,
        payments_app,
        _orders_app: orders_app,
        orders,
    }
}

/// The `kid` in a JWT's header.
fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_rotated_key_signs_only_once_its_bundle_has_reached_the_verifiers() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing", "payments"]);
    let outbound = orders_calling_billing_and_payments(dir.path(), &root);
    let orders = &outbound.orders;
    let out = orders.outbound.unwrap();
    let signing_kid = || {
        let seen = get(out, "/pay", &[("host", "payments")]).json();
        kid_of(
            seen["headers"]["authorization"]
                .as_str()
                .unwrap()
                .trim_start_matches("Bearer "),
        )
    };
    let old_kid = signing_kid();

    // Calls to billing never stop while orders' key is rotated: each is
    // signed by a key billing's sidecar already knows.
    let traffic = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut statuses = Vec::new();
        while start.elapsed() < Duration::from_millis(3500) {
            statuses.push(get(out, "/invoice", &[("host", "billing")]).status);
        }
        statuses
    });
    std::thread::sleep(Duration::from_millis(300));
    root.identity("rotate", "orders", &[]);
    let bundle: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.dir.join("bundle.json")).unwrap())
            .unwrap();
    let new_kid = bundle["identities"][ORDERS]["keys"][0]["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(signing_kid(), old_kid, "the new key waits before it signs");
    let statuses = traffic.join().unwrap();
    assert!(statuses.len() > 50, "traffic ran: {}", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every call during the rotation was accepted: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    // Then it signs (the default wait is 2 s; the shim re-reads every 2 s).
    wait_until(Duration::from_secs(8), || signing_kid() == new_kid)
        .expect("the new key signs after its wait");
    assert_eq!(get(out, "/invoice", &[("host", "billing")]).status, 200);
}

#[test]
fn outbound_calls_carry_a_token_for_exactly_their_destination() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing", "payments"]);
    let outbound = orders_calling_billing_and_payments(dir.path(), &root);
    let (orders, billing_app, payments_app) = (
        &outbound.orders,
        &outbound.billing_app,
        &outbound.payments_app,
    );
    let out = orders.outbound.unwrap();

    // Through the mesh: orders' outbound listener → billing's inbound sidecar → billing's app.
    let seen = get(
        out,
        "/invoice",
        &[
            ("host", "billing"),
            ("authorization", "Bearer app-supplied"),
        ],
    )
    .json();
    assert_eq!(seen["headers"]["x-ephemera-caller"], ORDERS);

    // Straight to an app: the token it receives verifies for it in the reference implementation.
    let seen = get(out, "/pay", &[("host", "payments:8443")]).json();
    let token = seen["headers"]["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned();
    let r = root.dir.to_string_lossy();
    assert_eq!(
        spiffile_peer(&["verify", &r, "payments", &token]).ok(),
        ORDERS
    );
    assert!(
        spiffile_peer(&["verify", &r, "billing", &token]).code != 0,
        "audience-bound to payments only"
    );

    // Reused within its window (per worker: with two workers, three more
    // calls put two on one worker).
    let tokens: Vec<String> = (0..3)
        .map(|_| {
            get(out, "/pay", &[("host", "payments")]).json()["headers"]["authorization"].to_string()
        })
        .chain([seen["headers"]["authorization"].to_string()])
        .collect();
    let distinct: std::collections::BTreeSet<_> = tokens.iter().collect();
    assert!(distinct.len() < tokens.len(), "a minted token was reused");

    // An unmapped destination is refused locally; nothing leaves.
    let before = payments_app.requests().len() + billing_app.requests().len();
    assert_eq!(get(out, "/x", &[("host", "elsewhere")]).status, 403);
    assert_eq!(
        payments_app.requests().len() + billing_app.requests().len(),
        before
    );

    let s = orders.stats();
    assert!(
        s["ephemera.outbound.minted"] >= 2 && s["ephemera.outbound.mint_reused"] >= 1,
        "{s:?}"
    );
    assert_eq!(s["ephemera.outbound.unmapped"], 1);
}

#[test]
fn rotation_keeps_old_tokens_and_removal_revokes_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let app = EchoApp::start(dir.path(), "app", 200);
    let sidecar = Sidecar::start_with(
        dir.path(),
        &root,
        "billing",
        app.port,
        None,
        false,
        &["--envoy-log-level", "info"],
    );
    let old = root.mint("orders", BILLING, &["--ttl", "300"]);
    assert_eq!(
        get(sidecar.inbound, "/", &[("authorization", &bearer(&old))]).status,
        200
    );

    root.identity("rotate", "orders", &[]);
    let rotated = std::time::Instant::now();
    let new = root.mint("orders", BILLING, &[]);
    let new_ok = wait_until(Duration::from_secs(5), || {
        get(sidecar.inbound, "/", &[("authorization", &bearer(&new))]).status == 200
    });
    assert!(
        new_ok.is_some(),
        "the rotated key is accepted without a restart"
    );
    // Each worker polls the shim on its own: by the README's bound every
    // one has the rotation a second after it.
    std::thread::sleep(Duration::from_secs(1).saturating_sub(rotated.elapsed()));
    for _ in 0..8 {
        assert_eq!(
            get(sidecar.inbound, "/", &[("authorization", &bearer(&new))]).status,
            200,
            "a worker still lacks the rotation a second later"
        );
    }
    assert_eq!(
        get(sidecar.inbound, "/", &[("authorization", &bearer(&old))]).status,
        200,
        "overlap keeps the old key"
    );

    // A malformed bundle is refused; the last good one stays in force.
    let bundle = root.dir.join("bundle.json");
    let good = std::fs::read(&bundle).unwrap();
    std::fs::write(&bundle, b"{ not json").unwrap();
    let refused = wait_until(Duration::from_secs(5), || {
        sidecar
            .proc
            .stderr()
            .contains("identity reload refused, keeping the last good one")
    });
    assert!(
        refused.is_some(),
        "the malformed bundle was read and refused"
    );
    let r = get(sidecar.inbound, "/", &[("authorization", &bearer(&new))]);
    assert_eq!(r.status, 200, "{}\n{}", r.body, sidecar.proc.stderr());
    std::fs::write(&bundle, &good).unwrap();

    root.identity("remove", "orders", &[]);
    let delay = wait_until(Duration::from_secs(5), || {
        get(sidecar.inbound, "/", &[("authorization", &bearer(&old))]).status == 401
    })
    .expect("removal revokes the caller");
    println!(
        "revocation delay (identity remove -> first 401): {} ms",
        delay.as_millis()
    );
    // The README's bound: the file watch, then the filter's next poll.
    assert!(
        delay < Duration::from_secs(1),
        "removal took {} ms",
        delay.as_millis()
    );
    // Every worker picks the change up on its next tick (100 ms): the new
    // token is refused too, on whichever worker serves it.
    let everywhere = wait_until(Duration::from_secs(2), || {
        (0..4).all(|_| get(sidecar.inbound, "/", &[("authorization", &bearer(&new))]).status == 401)
    });
    assert!(everywhere.is_some(), "every worker revoked the caller");
    assert!(sidecar.stats()["ephemera.inbound.identity_reloads"] >= 2);
}

fn shim(dir: &std::path::Path, root: &Root, service: &str, name: &str) -> Shim {
    serve(dir, root, service, name, &[])
}

#[test]
fn a_shim_restarted_mid_traffic_lets_nothing_through_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let app = EchoApp::start(dir.path(), "app", 200);
    let mut first = shim(dir.path(), &root, "billing", "shim-1");
    let (envoy_proc, inbound, admin) = envoy_for_shim(dir.path(), app.port, &first.socket, None);
    wait_until(Duration::from_secs(10), || {
        stats(admin)
            .get("ephemera.inbound.identity_generation")
            .copied()
            .unwrap_or(0)
            >= 1
    })
    .expect("identity loaded");

    let valid = root.mint("orders", BILLING, &["--ttl", "120"]);
    let forged = root.mint("orders", "spiffe://example.org/other", &[]);
    let (valid_copy, forged_copy) = (valid.clone(), forged.clone());
    let traffic = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(4) {
            seen.push((
                "valid",
                get(inbound, "/", &[("authorization", &bearer(&valid))]).status,
            ));
            seen.push((
                "forged",
                get(inbound, "/", &[("authorization", &bearer(&forged))]).status,
            ));
            seen.push(("none", get(inbound, "/", &[]).status));
        }
        seen
    });
    std::thread::sleep(Duration::from_millis(800));
    first.proc.signal_and_wait("KILL");
    std::thread::sleep(Duration::from_millis(1500));
    let second = shim(dir.path(), &root, "billing", "shim-2");
    let seen = traffic.join().unwrap();

    assert!(seen.len() > 30, "traffic ran: {}", seen.len());
    for (kind, status) in &seen {
        match *kind {
            "valid" => assert_eq!(*status, 200, "the last good identity stays in force"),
            _ => assert_eq!(*status, 401, "{kind} must never pass"),
        }
    }
    for r in app.requests() {
        assert_eq!(r["headers"]["x-ephemera-caller"], ORDERS, "{r}");
    }
    // Tokens and the key never appear in Envoy's or the shims' output.
    let key = std::fs::read_to_string(root.dir.join("services/billing/key.pem")).unwrap();
    let key_body = key.lines().nth(1).unwrap().to_owned();
    let logs = [
        envoy_proc.stderr(),
        envoy_proc.stdout(),
        first.proc.stderr(),
        second.proc.stderr(),
    ];
    for secret in [valid_copy.as_str(), forged_copy.as_str(), key_body.as_str()] {
        for log in &logs {
            assert!(!log.contains(secret), "a secret leaked into a log");
        }
    }
    assert!(
        stats(admin)["ephemera.inbound.reload_failures"] >= 1,
        "the outage was counted"
    );
}

#[test]
fn until_the_first_identity_arrives_requests_wait_then_get_503() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let app = EchoApp::start(dir.path(), "app", 200);
    // Nothing listens yet.
    let (_envoy, inbound, admin) =
        envoy_for_shim(dir.path(), app.port, &shim_socket(dir.path()), None);
    let token = root.mint("orders", BILLING, &[]);
    let start = std::time::Instant::now();
    let r = get(inbound, "/", &[("authorization", &bearer(&token))]);
    assert_eq!(r.status, 503);
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "it waited for the identity first"
    );
    assert!(app.requests().is_empty(), "nothing reached the app");

    let _shim = shim(dir.path(), &root, "billing", "shim");
    let served = wait_until(Duration::from_secs(10), || {
        get(inbound, "/", &[("authorization", &bearer(&token))]).status == 200
    });
    assert!(served.is_some());
    let s = stats(admin);
    assert!(
        s["ephemera.inbound.unavailable"] >= 1 && s["ephemera.inbound.awaited_identity"] >= 1,
        "{s:?}"
    );
}

#[test]
fn a_request_arriving_while_the_identity_loads_is_resumed_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let app = EchoApp::start(dir.path(), "app", 200);
    let (_envoy, inbound, _admin) =
        envoy_for_shim(dir.path(), app.port, &shim_socket(dir.path()), Some("{}"));
    let token = root.mint("orders", BILLING, &[]);
    let pending =
        std::thread::spawn(move || get(inbound, "/", &[("authorization", &bearer(&token))]));
    std::thread::sleep(Duration::from_millis(300));
    let _shim = shim(dir.path(), &root, "billing", "shim");
    let r = pending.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["x-ephemera-caller"], ORDERS);
}

#[test]
fn every_envoy_configuration_validates() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("envoy")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap().replace(
                "/usr/local/lib/ephemera/ephemera_envoy.wasm",
                &wasm().display().to_string(),
            );
            let copy = dir.path().join(path.file_name().unwrap());
            std::fs::write(&copy, text).unwrap();
            files.push(copy);
        }
    }
    assert!(!files.is_empty());
    let variants: [&[&str]; 3] = [
        &["--inbound", "127.0.0.1:1"],
        &["--inbound", "127.0.0.1:1", "--outbound", "127.0.0.1:2"],
        &[
            "--inbound",
            "127.0.0.1:1",
            "--shim",
            "unix:/run/ephemera/shim.sock",
        ],
    ];
    for (i, extra) in variants.iter().enumerate() {
        let rendered = run(Command::new(ephemera_bin())
            .args(["bootstrap", "--app", "127.0.0.1:3", "--wasm"])
            .arg(wasm())
            .args(*extra));
        let path = dir.path().join(format!("rendered-{i}.json"));
        std::fs::write(&path, rendered.ok()).unwrap();
        files.push(path);
    }
    for file in files {
        let r = run(Command::new(envoy())
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&file));
        assert_eq!(r.code, 0, "{}: {}{}", file.display(), r.stdout, r.stderr);
    }
}

#[test]
fn a_bad_plugin_configuration_keeps_envoy_from_starting_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo_root().join("envoy/sidecar.yaml"))
        .unwrap()
        .replace("/usr/local/lib/ephemera/ephemera_envoy.wasm", &wasm().display().to_string())
        .replace(
            r#"value: '{"direction": "inbound"}'"#,
            r#"value: '{"direction": "inbound", "inbound": {"routes": [{"path": "/a/*", "allow": ["spiffe://example.org/x*"]}]}}'"#,
        );
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, text).unwrap();
    let r = run(Command::new(envoy())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path));
    assert_ne!(r.code, 0);
    let log = format!("{}{}", r.stdout, r.stderr);
    assert!(
        log.contains("ephemera: refusing to start: invalid filter configuration"),
        "{log}"
    );
    assert!(
        log.contains("caller pattern") && log.contains("spiffe://example.org/x*"),
        "{log}"
    );
}
