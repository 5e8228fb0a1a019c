//! `ephemera serve`: the identity the filter fetches, versioned, reloaded on
//! file changes, and never replaced by a malformed file.

use std::process::Command;
use std::time::{Duration, Instant};

use ephemera_tests::ephemera_bin;
use std::path::Path;

use ephemera_tests::net::{get, wait_until};
use ephemera_tests::procs::Proc;
use ephemera_tests::workload::{self, Root, Shim};

fn serve(dir: &std::path::Path, root: &Root) -> Shim {
    workload::serve(dir, root, "billing", "shim", &[])
}

fn etag(sock: &Path) -> String {
    get(sock, "/v1/identity", &[])
        .headers
        .get("etag")
        .cloned()
        .unwrap_or_default()
}

#[test]
fn unchanged_identities_answer_304_and_changes_get_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let shim = serve(dir.path(), &root);
    let sock = shim.socket.clone();

    let first = get(&sock, "/v1/identity", &[]);
    assert_eq!(first.status, 200);
    let doc = first.json();
    assert_eq!(doc["spiffe_id"], "spiffe://example.org/billing");
    assert_eq!(doc["generation"], 1);
    let tag = first.headers["etag"].clone();
    assert_eq!(
        get(&sock, "/v1/identity", &[("if-none-match", &tag)]).status,
        304
    );

    // `identity rotate` replaces the bundle and the key by rename.
    let start = Instant::now();
    root.identity("rotate", "billing", &[]);
    let written = start.elapsed();
    let seen =
        wait_until(Duration::from_secs(5), || etag(&sock) != tag).expect("new version served");
    println!(
        "identity change served {} ms after the files were replaced",
        seen.saturating_sub(written).as_millis()
    );
    let doc = get(&sock, "/v1/identity", &[]).json();
    assert!(doc["generation"].as_u64().unwrap() >= 2);
    assert_eq!(
        get(&sock, "/v1/identity", &[("if-none-match", &tag)]).status,
        200
    );

    // The document never shows up in the shim's log.
    let key = doc["key_pem"].as_str().unwrap();
    let body = key.lines().nth(1).unwrap();
    assert!(!shim.proc.stderr().contains(body) && !shim.proc.stdout().contains(body));
}

#[test]
fn a_malformed_bundle_or_key_is_refused_and_the_last_good_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["orders", "billing"]);
    let shim = serve(dir.path(), &root);
    let sock = shim.socket.clone();
    let tag = etag(&sock);

    for (file, junk) in [
        ("bundle.json", &b"{\"trust_domain\": \"example.org\"}"[..]),
        (
            "services/billing/key.pem",
            &b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"[..],
        ),
    ] {
        let path = root.dir.join(file);
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, junk).unwrap();
        let failures = wait_until(Duration::from_secs(5), || {
            get(&sock, "/v1/status", &[]).json()["reload_failures"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        });
        assert!(failures.is_some(), "{file}: the refusal is counted");
        assert_eq!(
            etag(&sock),
            tag,
            "{file}: the last good identity is still served"
        );
        std::fs::write(&path, good).unwrap();
        wait_until(Duration::from_secs(5), || etag(&sock) == tag).expect("restored");
    }
    assert!(
        shim.proc.stderr().contains("keeping the last good one"),
        "{}",
        shim.proc.stderr()
    );
}

#[test]
fn the_shim_serves_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(&dir.path().join("root"), &["billing"]);
    let socket = dir.path().join("run/shim.sock");
    let shim = Proc::spawn(
        "shim",
        dir.path(),
        Command::new(ephemera_bin())
            .args(["serve", "--listen", &format!("unix:{}", socket.display())])
            .envs(root.env("billing")),
    );
    wait_until(Duration::from_secs(10), || socket.exists())
        .unwrap_or_else(|| panic!("socket created: {}", shim.stderr()));
    let out = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&socket)
        .arg("http://localhost/healthz")
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}
