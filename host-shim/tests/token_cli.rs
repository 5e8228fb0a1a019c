//! `ephemera token`: exit codes that tell a configuration error (2) from a
//! rejected token (1), and central-issuer mode through the command line.

use std::path::Path;
use std::process::Command;

mod common;
use common::ephemera;

/// `ephemera ARGS…` with exactly the environment `env` → (code, stdout, stderr).
fn ephemera_with(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ephemera"))
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A trust domain with `orders` and `billing`.
fn root(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("root");
    let root_arg = root.to_string_lossy().into_owned();
    let (code, _, err) = ephemera(&[
        "identity",
        "init",
        &root_arg,
        "--trust-domain",
        "example.org",
    ]);
    assert_eq!(code, 0, "{err}");
    for service in ["orders", "billing"] {
        let (code, _, err) = ephemera(&["identity", "add", &root_arg, service]);
        assert_eq!(code, 0, "{err}");
    }
    root
}

/// The identity files of `service` as environment variables.
fn env_of(root: &Path, service: &str) -> Vec<(&'static str, String)> {
    let services = root.join("services").join(service);
    vec![
        (
            "SPIFFILE_ID_FILE",
            services.join("id").display().to_string(),
        ),
        (
            "SPIFFILE_KEY_FILE",
            services.join("key.pem").display().to_string(),
        ),
        (
            "SPIFFILE_BUNDLE_FILE",
            root.join("bundle.json").display().to_string(),
        ),
    ]
}

fn mint(root: &Path, from: &str, audience: &str) -> String {
    let (code, out, err) = ephemera_with(
        &["token", "mint", "--audience", audience],
        &env_of(root, from),
    );
    assert_eq!(code, 0, "{err}");
    out.trim().to_owned()
}

#[test]
fn token_verify_exits_2_on_configuration_errors_and_1_on_a_rejected_token() {
    let dir = tempfile::tempdir().unwrap();
    let root = root(dir.path());
    let token = mint(&root, "orders", "spiffe://example.org/billing");

    let (code, out, _) = ephemera_with(&["token", "verify", &token], &env_of(&root, "billing"));
    assert_eq!(code, 0);
    assert!(out.contains("spiffe://example.org/orders"), "{out}");

    // No identity configured, or a bundle that is not there: configuration.
    let (code, _, err) = ephemera_with(&["token", "verify", &token], &[]);
    assert_eq!(code, 2, "{err}");
    let mut missing = env_of(&root, "billing");
    missing[2].1 = dir.path().join("nope.json").display().to_string();
    let (code, _, err) = ephemera_with(&["token", "verify", &token], &missing);
    assert_eq!(code, 2, "{err}");

    // A token for someone else, or garbage: rejected.
    let (code, _, err) = ephemera_with(&["token", "verify", &token], &env_of(&root, "orders"));
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = ephemera_with(&["token", "verify", "a.b.c"], &env_of(&root, "billing"));
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains(&token));
}

#[test]
fn central_issuer_reads_a_spiffe_jwks_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let root = root(dir.path());
    let token = mint(&root, "orders", "spiffe://example.org/billing");
    // One standard JWKS holding the issuer's key (here: orders' key).
    let spiffile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("bundle.json")).unwrap()).unwrap();
    let keys = spiffile["identities"]["spiffe://example.org/orders"]["keys"].clone();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({ "keys": keys }).to_string()).unwrap();
    let mut env = env_of(&root, "billing");
    env[2].1 = jwks.display().to_string();

    let (code, out, err) = ephemera_with(&["token", "verify", "--central-issuer", &token], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("spiffe://example.org/orders"), "{out}");
    // Without the flag the same file is not a spiffile bundle.
    let (code, _, err) = ephemera_with(&["token", "verify", &token], &env);
    assert_eq!(code, 2, "{err}");
}
