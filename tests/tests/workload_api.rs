//! The SPIFFE Workload API served by the shim, driven by clients nobody
//! here wrote: the Python `spiffe` package (py-spiffe) and the Rust
//! `spiffe` crate. A token they fetch passes ephemera's filter in real
//! Envoy; validation keeps the spiffile binding of key to identity; bundle
//! streams move on every identity change; requests the standard refuses
//! get the status it names.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ephemera_tests::net::{get, wait_until};
use ephemera_tests::procs::Proc;
use ephemera_tests::workload::{self, EchoApp, Root, Shim, Sidecar};
use ephemera_tests::{Run, python, repo_root, run, spiffile_peer};

const ORDERS: &str = "spiffe://example.org/orders";
const BILLING: &str = "spiffe://example.org/billing";

fn client(args: &[&str]) -> Run {
    run(Command::new(python())
        .arg(repo_root().join("tests/peers/workload_client.py"))
        .args(args))
}

/// `ephemera serve` for orders with the Workload API on `dir/spire/api.sock`.
fn serve(dir: &Path, root: &Root, extra: &[&str], env: &[(&str, &str)]) -> (Shim, PathBuf) {
    let socket = dir.join("spire/api.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let listen = format!("unix:{}", socket.display());
    let mut args = vec!["--workload-api", listen.as_str()];
    args.extend_from_slice(extra);
    let shim = workload::serve_env(dir, root, "orders", "shim", &args, env);
    (shim, socket)
}

fn fetch(socket: &Path, audience: &str) -> Run {
    client(&["fetch", &socket.to_string_lossy(), audience])
}

fn status(port: u16, token: &str) -> u16 {
    get(port, "/", &[("authorization", &format!("Bearer {token}"))]).status
}

fn rust_client(socket: &Path) -> (tokio::runtime::Runtime, spiffe::WorkloadApiClient) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let endpoint = format!("unix:{}", socket.display());
    let client = runtime
        .block_on(spiffe::WorkloadApiClient::connect_to(endpoint))
        .unwrap();
    (runtime, client)
}

#[test]
fn an_app_written_for_spire_fetches_tokens_the_filter_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path(), &["orders", "billing", "research"]);
    let app = EchoApp::start(dir.path(), "billing-app", 200);
    let billing = Sidecar::start(dir.path(), &root, "billing", app.port, None, false);
    let (_shim, socket) = serve(dir.path(), &root, &[], &[]);

    // py-spiffe, as an app written for SPIRE's agent uses it.
    let fetched = fetch(&socket, BILLING);
    let svid: serde_json::Value = serde_json::from_str(fetched.ok()).unwrap();
    assert_eq!(svid["spiffe_id"], ORDERS);
    let token = svid["token"].as_str().unwrap();
    assert_eq!(status(billing.inbound, token), 200, "billing admits orders");
    let seen = app.requests();
    assert_eq!(seen.len(), 1, "the request reached the app once");

    // A token for another audience does not open billing.
    let other = fetch(&socket, "spiffe://example.org/research");
    let other: serde_json::Value = serde_json::from_str(other.ok()).unwrap();
    assert_eq!(
        status(billing.inbound, other["token"].as_str().unwrap()),
        401
    );

    // The Rust `spiffe` crate gets a token the filter accepts too.
    let (runtime, rust) = rust_client(&socket);
    let svid = runtime
        .block_on(rust.fetch_jwt_svid([BILLING], None))
        .unwrap();
    assert_eq!(svid.spiffe_id().to_string(), ORDERS);
    assert_eq!(svid.audience(), [BILLING.to_owned()]);
    assert_eq!(status(billing.inbound, svid.token()), 200);
    assert_eq!(app.requests().len(), 2);
}

#[test]
fn validation_keeps_every_key_bound_to_its_own_identity() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path(), &["orders", "billing"]);
    let (_shim, socket) = serve(dir.path(), &root, &[], &[]);
    let s = socket.to_string_lossy();

    // A real token billing sent to orders validates as billing.
    let token = root.mint("billing", ORDERS, &[]);
    assert_eq!(
        client(&["validate", &s, ORDERS, &token]).ok().trim(),
        BILLING
    );
    let (runtime, rust) = rust_client(&socket);
    let svid = runtime
        .block_on(rust.validate_jwt_token(ORDERS, &token))
        .unwrap();
    assert_eq!(svid.spiffe_id().to_string(), BILLING);

    // Billing's key signing for orders is refused: spiffile keys are never
    // a trust-domain-wide key set.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"sub": ORDERS, "aud": ORDERS, "iat": now, "exp": now + 60});
    let forged = spiffile_peer(&[
        "sign-claims",
        &root.dir.to_string_lossy(),
        "billing",
        &claims.to_string(),
    ]);
    let refused = client(&["validate", &s, ORDERS, forged.ok().trim()]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("ValidateJwtSvidError"),
        "{}",
        refused.stderr
    );
    let rust_refused = runtime.block_on(rust.validate_jwt_token(ORDERS, forged.ok().trim()));
    assert!(rust_refused.is_err(), "the Rust client is refused too");

    // The wrong audience is refused.
    let refused = client(&["validate", &s, BILLING, &token]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
}

#[test]
fn requests_the_standard_refuses_get_the_errors_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path(), &["orders", "billing"]);
    let (_shim, socket) = serve(dir.path(), &root, &[], &[]);
    let s = socket.to_string_lossy();
    let raw = |case: &str| client(&["raw", &s, case]).ok().trim().to_owned();

    assert_eq!(
        raw("no-header"),
        "INVALID_ARGUMENT security header missing from request"
    );
    assert_eq!(
        raw("empty-audience"),
        "INVALID_ARGUMENT audience must be specified"
    );
    assert!(raw("two-audiences").starts_with("INVALID_ARGUMENT "));
    assert!(raw("x509").starts_with("UNIMPLEMENTED "), "{}", raw("x509"));

    // Only audiences the bundle knows; never the workload's secrets audience
    // or another trust domain.
    for audience in [
        "spiffe://example.org/orders/ephemera-secrets",
        "spiffe://example.org/unknown",
        "spiffe://other.org/billing",
    ] {
        let refused = fetch(&socket, audience);
        assert_ne!(refused.code, 0, "{audience}");
        assert!(
            refused.stderr.contains("PERMISSION_DENIED"),
            "{audience}: {}",
            refused.stderr
        );
    }

    // The socket is the app's: it is open to whoever reaches its directory.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o666);
}

#[test]
fn an_explicit_audience_list_is_all_the_app_can_ask_for() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path(), &["orders", "billing", "research"]);
    // `ephemera sidecar` serves the Workload API from its in-process shim.
    let app = EchoApp::start(dir.path(), "orders-app", 200);
    let socket = dir.path().join("api.sock");
    let listen = format!("unix:{}", socket.display());
    let extra = [
        "--workload-api",
        &listen,
        "--workload-api-audience",
        BILLING,
    ];
    let _orders = Sidecar::start_with(dir.path(), &root, "orders", app.port, None, false, &extra);
    fetch(&socket, BILLING).ok();
    let refused = fetch(&socket, "spiffe://example.org/research");
    assert!(
        refused.stderr.contains("PERMISSION_DENIED"),
        "{}",
        refused.stderr
    );
}

/// A central issuer's JWKS holding the public keys of `services`.
fn jwks(root: &Root, services: &[&str]) -> String {
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.dir.join("bundle.json")).unwrap()).unwrap();
    let keys: Vec<_> = services
        .iter()
        .flat_map(|s| {
            bundle["identities"][format!("spiffe://example.org/{s}")]["keys"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect();
    serde_json::json!({ "keys": keys, "spiffe_sequence": keys.len() }).to_string()
}

/// Replaces `path` atomically, as provisioning tools do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

fn watch(dir: &Path, socket: &Path, updates: usize) -> Proc {
    let mut watcher = Proc::spawn(
        &format!("watch-{updates}"),
        dir,
        Command::new(python())
            .arg(repo_root().join("tests/peers/workload_client.py"))
            .args([
                "watch",
                &socket.to_string_lossy(),
                &updates.to_string(),
                "30",
            ]),
    );
    watcher.wait_for_line("update ", Duration::from_secs(15));
    watcher
}

fn updates(watcher: &Proc) -> Vec<serde_json::Value> {
    watcher
        .stdout()
        .lines()
        .filter_map(|l| l.strip_prefix("update "))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bundle_streams_carry_standard_domains_and_move_on_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path(), &["orders", "billing"]);

    // Central issuer: the trust domain's JWKS is served, re-sent when it
    // changes.
    let jwks_file = dir.path().join("bundle/jwks.json");
    std::fs::create_dir_all(jwks_file.parent().unwrap()).unwrap();
    replace(&jwks_file, &jwks(&root, &["orders"]));
    let bundle = jwks_file.to_string_lossy().into_owned();
    let (shim, socket) = serve(
        dir.path(),
        &root,
        &["--central-issuer"],
        &[("SPIFFILE_BUNDLE_FILE", &bundle)],
    );
    let s = socket.to_string_lossy();
    let first: serde_json::Value = serde_json::from_str(client(&["bundles", &s]).ok()).unwrap();
    assert_eq!(first["example.org"].as_array().unwrap().len(), 1, "{first}");
    let watcher = watch(dir.path(), &socket, 2);
    replace(&jwks_file, &jwks(&root, &["orders", "billing"]));
    if wait_until(Duration::from_secs(20), || updates(&watcher).len() >= 2).is_none() {
        panic!(
            "no update after the bundle changed: client {} {}; shim {}",
            watcher.stdout(),
            watcher.stderr(),
            shim.proc.stderr()
        );
    }
    let seen = updates(&watcher);
    let last = seen.last().unwrap();
    assert_eq!(last["example.org"].as_array().unwrap().len(), 2, "{seen:?}");

    let (runtime, rust) = rust_client(&socket);
    let set = runtime.block_on(rust.fetch_jwt_bundles()).unwrap();
    let domain = spiffe::TrustDomain::new("example.org").unwrap();
    let keys = set.get(&domain).unwrap().jwt_authorities().count();
    assert_eq!(keys, 2);
}

#[test]
fn spiffile_keys_never_reach_a_bundle_stream_but_revocations_wake_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path(), &["orders", "billing"]);
    let (_shim, socket) = serve(dir.path(), &root, &[], &[]);
    let s = socket.to_string_lossy();
    let from_billing = root.mint("billing", ORDERS, &[]);
    client(&["validate", &s, ORDERS, &from_billing]).ok();
    let watcher = watch(dir.path(), &socket, 3);
    root.identity("rotate", "orders", &[]);
    wait_until(Duration::from_secs(20), || updates(&watcher).len() >= 2)
        .expect("an update after the rotation");
    root.identity("remove", "billing", &[]);
    wait_until(Duration::from_secs(20), || updates(&watcher).len() >= 3)
        .expect("an update after the removal");
    // Each update is empty: per-identity keys are not a trust domain's set.
    assert!(
        updates(&watcher)
            .iter()
            .all(|u| u == &serde_json::json!({}))
    );
    // And a token the removed identity minted before no longer validates.
    let refused = client(&["validate", &s, ORDERS, &from_billing]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
}
