//! Federated trust domains in one Envoy: a spiffile domain and a standard
//! SPIFFE (JWKS) domain beside the local one, never merged. A key of one
//! domain never validates an ID of another; a foreign domain gets in only
//! where a route rule names it; a federated bundle's change takes effect
//! without a restart, from a file or from a bundle endpoint over TLS.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ephemera_tests::net::{free_port, get, wait_until};
use ephemera_tests::procs::Proc;
use ephemera_tests::tls::{TestCa, TlsFront};
use ephemera_tests::workload::{EchoApp, Root, Sidecar};
use ephemera_tests::{ephemera, python, spiffile_peer};

const BILLING: &str = "spiffe://example.org/billing";
const ORDERS: &str = "spiffe://example.org/orders";
const PARTNER: &str = "spiffe://other.org/partner";
const NIGHTLY: &str = "spiffe://third.org/jobs/nightly";

/// Route rules naming both federated domains.
const NAMED: &str = r#"
inbound:
  routes:
    - { path: /*, allow: ["spiffe://example.org/*", "spiffe://other.org/partner", "spiffe://third.org/jobs/*"] }
"#;

fn status(port: u16, token: &str) -> u16 {
    get(port, "/", &[("authorization", &format!("Bearer {token}"))]).status
}

/// Roots for the local domain (orders, billing) and other.org (partner).
fn local_and_other(dir: &Path) -> (Root, Root) {
    let local = Root::for_domain(&dir.join("example"), "example.org", &["orders", "billing"]);
    let other = Root::for_domain(&dir.join("other"), "other.org", &["partner"]);
    (local, other)
}

/// A token with `sub` and `aud` (and a fresh `jti`, so no cache has seen
/// it), signed with `service`'s key of `root`.
fn signed(root: &Root, service: &str, sub: &str, aud: &str) -> String {
    signed_for(root, service, sub, serde_json::json!(aud))
}

/// As [`signed`], with `aud` as given (a string or an array).
fn signed_for(root: &Root, service: &str, sub: &str, aud: serde_json::Value) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let (secs, jti) = (now.as_secs(), now.as_nanos().to_string());
    let claims =
        serde_json::json!({"sub": sub, "aud": aud, "iat": secs, "exp": secs + 120, "jti": jti});
    spiffile_peer(&[
        "sign-claims",
        &root.dir.to_string_lossy(),
        service,
        &claims.to_string(),
    ])
    .ok()
    .trim()
    .to_owned()
}

#[test]
fn two_federated_domains_share_one_envoy_without_sharing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (local, other) = local_and_other(dir.path());
    // third.org is run by a central issuer: its JWKS signs for the domain.
    let third = Root::for_domain(&dir.path().join("third"), "third.org", &["issuer"]);
    let third_bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(third.dir.join("bundle.json")).unwrap()).unwrap();
    let jwks = dir.path().join("third-jwks.json");
    let keys = &third_bundle["identities"]["spiffe://third.org/issuer"]["keys"];
    std::fs::write(&jwks, serde_json::json!({ "keys": keys }).to_string()).unwrap();

    let federation = [
        "--federated-spiffile".to_owned(),
        format!("other.org={}", other.dir.join("bundle.json").display()),
        "--federated-jwks".to_owned(),
        format!("third.org={}", jwks.display()),
    ];
    let federation: Vec<&str> = federation.iter().map(String::as_str).collect();
    let app = EchoApp::start(dir.path(), "billing-app", 200);
    let unnamed = Sidecar::start_with(
        dir.path(),
        &local,
        "billing",
        app.port,
        None,
        false,
        &federation,
    );
    let named = Sidecar::start_with(
        dir.path(),
        &local,
        "billing",
        app.port,
        Some(NAMED),
        false,
        &federation,
    );

    let from_orders = local.mint("orders", BILLING, &[]);
    let from_partner = other.mint("partner", BILLING, &[]);
    let from_nightly = signed(&third, "issuer", NIGHTLY, BILLING);

    // Without rules, only the local trust domain is admitted: a federated
    // caller authenticates but is not let in.
    assert_eq!(status(unnamed.inbound, &from_orders), 200);
    assert_eq!(status(unnamed.inbound, &from_partner), 403);
    assert_eq!(status(unnamed.inbound, &from_nightly), 403);
    // Rules that name them admit them.
    assert_eq!(status(named.inbound, &from_orders), 200);
    assert_eq!(status(named.inbound, &from_partner), 200);
    assert_eq!(status(named.inbound, &from_nightly), 200);

    // Cross-domain key confusion: every key signs only for its own domain.
    for (signer_root, signer, sub) in [
        (&other, "partner", ORDERS),
        (&local, "orders", PARTNER),
        (&third, "issuer", ORDERS),
        (&third, "issuer", PARTNER),
    ] {
        let forged = signed(signer_root, signer, sub, BILLING);
        assert_eq!(
            status(named.inbound, &forged),
            401,
            "{signer} signing as {sub}"
        );
    }

    // An aud array: only where allowed, only from the standard domain.
    let arrays = format!("{NAMED}  allow_multiple_audiences: true\n");
    let lenient = Sidecar::start_with(
        dir.path(),
        &local,
        "billing",
        app.port,
        Some(&arrays),
        false,
        &federation,
    );
    let both = serde_json::json!([BILLING, ORDERS]);
    let nightly_both = signed_for(&third, "issuer", NIGHTLY, both.clone());
    assert_eq!(
        status(named.inbound, &nightly_both),
        401,
        "arrays not allowed"
    );
    assert_eq!(status(lenient.inbound, &nightly_both), 200);
    let partner_both = signed_for(&other, "partner", PARTNER, both);
    assert_eq!(
        status(lenient.inbound, &partner_both),
        401,
        "spiffile: one string"
    );
    let elsewhere = signed_for(&third, "issuer", NIGHTLY, serde_json::json!([ORDERS]));
    assert_eq!(status(lenient.inbound, &elsewhere), 401, "not for billing");

    // The partner's rotation reaches the filters without a restart.
    let d = other.dir.to_string_lossy();
    ephemera(&["identity", "rotate", &d, "partner", "--drop-old"], &[]).ok();
    let rotated = other.mint("partner", BILLING, &[]);
    wait_until(Duration::from_secs(10), || {
        status(named.inbound, &rotated) == 200
    })
    .expect("the rotated key is accepted");
}

#[test]
fn a_federated_bundle_for_another_domain_is_refused_and_the_last_good_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (local, other) = local_and_other(dir.path());
    let federated = dir.path().join("other-bundle.json");
    std::fs::copy(other.dir.join("bundle.json"), &federated).unwrap();
    let flag = format!("other.org={}", federated.display());
    let app = EchoApp::start(dir.path(), "billing-app", 200);
    let billing = Sidecar::start_with(
        dir.path(),
        &local,
        "billing",
        app.port,
        Some(NAMED),
        false,
        &["--federated-spiffile", &flag],
    );
    assert_eq!(
        status(billing.inbound, &other.mint("partner", BILLING, &["--jti"])),
        200
    );

    // The file now holds example.org's bundle: a bundle is never taken for
    // another domain's, so the reload is refused and other.org's stays.
    std::fs::copy(local.dir.join("bundle.json"), &federated).unwrap();
    wait_until(Duration::from_secs(10), || {
        billing
            .proc
            .stderr()
            .contains("federated trust domain \"other.org\" is invalid")
    })
    .expect("the reload is refused");
    assert_eq!(
        status(billing.inbound, &other.mint("partner", BILLING, &["--jti"])),
        200
    );
    let forged = signed(&local, "orders", PARTNER, BILLING);
    assert_eq!(status(billing.inbound, &forged), 401);
}

/// Serves third.org's JWKS with the keys of `services`, `sequence` and a
/// one-second refresh hint.
fn publish(www: &Path, third: &Root, services: &[&str], sequence: u64) {
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(third.dir.join("bundle.json")).unwrap()).unwrap();
    let keys: Vec<_> = services
        .iter()
        .map(|s| bundle["identities"][format!("spiffe://third.org/{s}")]["keys"][0].clone())
        .collect();
    let doc =
        serde_json::json!({"keys": keys, "spiffe_sequence": sequence, "spiffe_refresh_hint": 1});
    let tmp = www.join("bundle.json.tmp");
    std::fs::write(&tmp, doc.to_string()).unwrap();
    std::fs::rename(tmp, www.join("bundle.json")).unwrap();
}

#[test]
fn a_bundle_endpoint_over_tls_is_followed_and_never_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let local = Root::for_domain(
        &dir.path().join("example"),
        "example.org",
        &["orders", "billing"],
    );
    let third = Root::for_domain(
        &dir.path().join("third"),
        "third.org",
        &["one", "two", "three"],
    );
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    publish(&www, &third, &["one"], 1);
    let port = free_port();
    let _server = Proc::spawn(
        "bundle-server",
        dir.path(),
        Command::new(python())
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&www),
    );
    wait_until(Duration::from_secs(10), || {
        get(port, "/bundle.json", &[]).status == 200
    })
    .expect("the bundle server is up");
    let ca = TestCa::new(dir.path(), "bundles");
    let front = TlsFront::start(dir.path(), &ca, port);
    let endpoint = format!("third.org=https://127.0.0.1:{}/bundle.json", front.port);
    let ca_file = ca.cert.display().to_string();
    let app = EchoApp::start(dir.path(), "billing-app", 200);
    let billing = Sidecar::start_with(
        dir.path(),
        &local,
        "billing",
        app.port,
        Some(NAMED),
        false,
        &[
            "--federated-endpoint",
            &endpoint,
            "--federated-endpoint-ca",
            &ca_file,
        ],
    );
    let accepted =
        |service: &str| status(billing.inbound, &signed(&third, service, NIGHTLY, BILLING));
    wait_until(Duration::from_secs(10), || accepted("one") == 200).expect("the first fetch");
    assert_eq!(accepted("two"), 401);

    // A rotation is picked up within the refresh hint (plus the filter's poll).
    publish(&www, &third, &["one", "two"], 2);
    let took =
        wait_until(Duration::from_secs(10), || accepted("two") == 200).expect("the rotation");
    eprintln!("rotation picked up after {took:?}");

    // A bundle with a lower sequence is refused: its key never gets in, and
    // the accepted bundle stays in force.
    publish(&www, &third, &["three"], 1);
    wait_until(Duration::from_secs(10), || {
        billing
            .proc
            .stderr()
            .contains("spiffe_sequence went backwards (1 after 2)")
    })
    .expect("the rollback is refused");
    assert_eq!(accepted("three"), 401);
    assert_eq!(accepted("two"), 200);
}
