//! Live interop with the spiffile reference implementation (Python, PyPI):
//! tokens and provisioning roots in both directions.

use std::path::Path;

use ephemera_tests::{ephemera, service_env, spiffile_peer};

const ORDERS: &str = "spiffe://example.org/orders";
const BILLING: &str = "spiffe://example.org/billing";

fn env_of(root: &Path, name: &str) -> Vec<(String, String)> {
    service_env(root, name)
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `ephemera token mint` as `name`.
fn ephemera_mint(root: &Path, name: &str, audience: &str) -> String {
    let env = env_of(root, name);
    ephemera(&["token", "mint", "--audience", audience], &as_refs(&env))
        .ok()
        .to_owned()
}

/// `ephemera token verify` as `name`; Ok(caller) or Err(stderr).
fn ephemera_verify(root: &Path, name: &str, token: &str) -> Result<String, String> {
    let env = env_of(root, name);
    let run = ephemera(&["token", "verify", token], &as_refs(&env));
    if run.code == 0 {
        let out: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
        Ok(out["caller"].as_str().unwrap().to_owned())
    } else {
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "one line on stderr: {}",
            run.stderr
        );
        Err(run.stderr)
    }
}

fn peer_verify(root: &Path, name: &str, token: &str) -> Result<String, String> {
    let run = spiffile_peer(&["verify", &root.to_string_lossy(), name, token]);
    if run.code == 0 {
        Ok(run.stdout.trim().to_owned())
    } else {
        Err(run.stderr)
    }
}

fn peer(args: &[&str]) -> String {
    spiffile_peer(args).ok().to_owned()
}

fn ephemera_ok(args: &[&str]) -> String {
    ephemera(args, &[]).ok().to_owned()
}

/// orders → billing tokens minted by each implementation verify in the other,
/// and are refused by both for any other audience.
fn tokens_cross_both_ways(root: &Path) {
    let r = root.to_string_lossy();
    let theirs = peer(&["mint", &r, "orders", BILLING]);
    assert_eq!(
        ephemera_verify(root, "billing", &theirs),
        Ok(ORDERS.to_owned())
    );
    let ours = ephemera_mint(root, "orders", BILLING);
    assert_eq!(peer_verify(root, "billing", &ours), Ok(ORDERS.to_owned()));
    assert!(
        ephemera_verify(root, "orders", &theirs)
            .unwrap_err()
            .contains("aud")
    );
    assert!(peer_verify(root, "orders", &ours).is_err());
}

#[test]
fn tokens_cross_between_implementations_on_a_reference_provisioned_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let r = root.to_string_lossy();
    peer(&["init", &r, "example.org"]);
    peer(&["add", &r, "orders"]);
    peer(&["add", &r, "billing"]);

    tokens_cross_both_ways(&root);
}

#[test]
fn a_root_provisioned_by_ephemera_is_usable_by_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let r = root.to_string_lossy();
    ephemera_ok(&["identity", "init", &r, "--trust-domain", "example.org"]);
    assert_eq!(ephemera_ok(&["identity", "add", &r, "orders"]), ORDERS);
    assert_eq!(ephemera_ok(&["identity", "add", &r, "billing"]), BILLING);

    tokens_cross_both_ways(&root);
}

#[test]
fn add_is_idempotent_and_init_refuses_an_initialized_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let r = root.to_string_lossy();
    ephemera_ok(&["identity", "init", &r, "--trust-domain", "example.org"]);
    ephemera_ok(&["identity", "add", &r, "orders"]);
    let key = std::fs::read(root.join("services/orders/key.pem")).unwrap();
    ephemera_ok(&["identity", "add", &r, "orders"]);
    assert_eq!(
        std::fs::read(root.join("services/orders/key.pem")).unwrap(),
        key
    );
    let again = ephemera(
        &["identity", "init", &r, "--trust-domain", "example.org"],
        &[],
    );
    assert_ne!(again.code, 0);
    assert!(
        again.stderr.contains("already initialized"),
        "{}",
        again.stderr
    );
}

#[test]
fn rotation_keeps_old_tokens_valid_until_the_old_key_is_dropped() {
    for rotate_with_reference in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let r = root.to_string_lossy();
        peer(&["init", &r, "example.org"]);
        peer(&["add", &r, "orders"]);
        peer(&["add", &r, "billing"]);
        let before_ours = ephemera_mint(&root, "orders", BILLING);
        let before_theirs = peer(&["mint", &r, "orders", BILLING]);

        let rotate = |drop_old: bool| {
            if rotate_with_reference {
                let mut args = vec!["rotate", &r, "orders"];
                if drop_old {
                    args.push("--drop-old");
                }
                peer(&args);
            } else {
                let mut args = vec!["identity", "rotate", &r, "orders"];
                if drop_old {
                    args.push("--drop-old");
                }
                ephemera_ok(&args);
            }
        };

        rotate(false);
        for old in [&before_ours, &before_theirs] {
            assert_eq!(
                ephemera_verify(&root, "billing", old),
                Ok(ORDERS.to_owned())
            );
            assert_eq!(peer_verify(&root, "billing", old), Ok(ORDERS.to_owned()));
        }
        let after = ephemera_mint(&root, "orders", BILLING);
        assert_eq!(peer_verify(&root, "billing", &after), Ok(ORDERS.to_owned()));
        let after_theirs = peer(&["mint", &r, "orders", BILLING]);
        assert_eq!(
            ephemera_verify(&root, "billing", &after_theirs),
            Ok(ORDERS.to_owned())
        );

        rotate(true);
        for old in [&before_ours, &before_theirs, &after] {
            let err = ephemera_verify(&root, "billing", old).unwrap_err();
            assert!(err.contains("signature"), "{err}");
            assert!(peer_verify(&root, "billing", old).is_err());
        }
    }
}

#[test]
fn removal_turns_the_caller_into_an_unknown_identity() {
    for remove_with_reference in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let r = root.to_string_lossy();
        ephemera_ok(&["identity", "init", &r, "--trust-domain", "example.org"]);
        ephemera_ok(&["identity", "add", &r, "orders"]);
        ephemera_ok(&["identity", "add", &r, "billing"]);
        let token = ephemera_mint(&root, "orders", BILLING);
        assert!(ephemera_verify(&root, "billing", &token).is_ok());

        if remove_with_reference {
            peer(&["remove", &r, "orders"]);
        } else {
            ephemera_ok(&["identity", "remove", &r, "orders"]);
        }
        assert!(!root.join("services/orders").exists());
        let err = ephemera_verify(&root, "billing", &token).unwrap_err();
        assert!(err.contains("unknown identity"), "{err}");
        let err = peer_verify(&root, "billing", &token).unwrap_err();
        assert!(err.contains("UnknownIdentityError"), "{err}");
    }
}

#[test]
fn token_verify_reads_stdin_and_defaults_the_audience_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let r = root.to_string_lossy();
    ephemera_ok(&["identity", "init", &r, "--trust-domain", "example.org"]);
    ephemera_ok(&["identity", "add", &r, "orders"]);
    ephemera_ok(&["identity", "add", &r, "billing"]);
    let token = ephemera_mint(&root, "orders", BILLING);
    let env = env_of(&root, "billing");
    let mut command = std::process::Command::new(ephemera_tests::ephemera_bin());
    command
        .args(["token", "verify", "-"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    use std::io::Write as _;
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["caller"], ORDERS);
    assert_eq!(v["claims"]["aud"], BILLING);

    // With an explicit audience that is not in the token: rejected.
    let run = ephemera(
        &[
            "token",
            "verify",
            "--audience",
            "spiffe://example.org/other",
            &token,
        ],
        &as_refs(&env),
    );
    assert_eq!(run.code, 1);
    assert!(!run.stderr.contains(&token));
}

/// `identity rotate` writes the bundle before the key, so no token signed by
/// the new key can reach a peer that does not know it yet. A rotation whose
/// key write fails therefore leaves the new key already published.
#[test]
fn rotation_publishes_the_new_key_before_the_service_can_sign_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let r = root.to_string_lossy();
    ephemera_ok(&["identity", "init", &r, "--trust-domain", "example.org"]);
    ephemera_ok(&["identity", "add", &r, "orders"]);
    let env = env_of(&root, "orders");
    let path_of = |name: &str| {
        let (_, path) = env.iter().find(|(k, _)| k == name).unwrap();
        std::path::PathBuf::from(path)
    };
    let (bundle, key) = (
        path_of("SPIFFILE_BUNDLE_FILE"),
        path_of("SPIFFILE_KEY_FILE"),
    );
    let kids = || -> Vec<String> {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
        doc["identities"][ORDERS]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    let before = kids();

    // A directory where the key file was: renaming the new key onto it fails
    // for every user, root included.
    std::fs::remove_file(&key).unwrap();
    std::fs::create_dir(&key).unwrap();
    let run = ephemera(&["identity", "rotate", &r, "orders"], &[]);
    assert_ne!(run.code, 0, "the key write failed: {}", run.stdout);

    let after = kids();
    assert_eq!(
        after.len(),
        before.len() + 1,
        "new key published: {after:?}"
    );
    assert_eq!(after[1..], before[..], "old keys kept for overlap");
    assert!(key.is_dir(), "nothing wrote a key");
}
