//! The gopass store with a real password store: `pass` (the same store
//! format and `show` command) and GnuPG with a throwaway key, behind a
//! `gopass` on PATH that records every start. An mxm-secrets configuration
//! works unchanged; a denied caller starts no process; each failure has
//! its typed error; no value reaches an error or the audit ledger.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ephemera_tests::{Run, ephemera_bin, run};

/// An mxm-secrets configuration, verbatim (no `principals`: the caller
/// `spiffe://<td>/<name>` is principal `<name>`).
const MXM: &str = "\
stores:
  red:
    backend: gopass
    root: mxm/red
refs:
  databento_api_key:
    store: red
    path: marketdata/databento/api_key
    policy: marketdata_access
policies:
  marketdata_access:
    allowed_principals:
      - marketdata
      - research
";

struct Store {
    dir: tempfile::TempDir,
    gnupg: PathBuf,
    store: PathBuf,
    bin: PathBuf,
    calls: PathBuf,
}

impl Drop for Store {
    /// Stops the GnuPG agent the store's key started.
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", &self.gnupg)
            .status();
    }
}

impl Store {
    /// A GPG key without passphrase, a password store encrypted to it, and
    /// a `gopass` that logs its arguments and runs `pass`.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let gnupg = dir.path().join("gnupg");
        std::fs::create_dir(&gnupg).unwrap();
        std::fs::set_permissions(&gnupg, std::fs::Permissions::from_mode(0o700)).unwrap();
        let store = dir.path().join("password-store");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let calls = dir.path().join("calls.log");
        let wrapper = bin.join("gopass");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\nexec pass \"$@\"\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = Self {
            dir,
            gnupg,
            store,
            bin,
            calls,
        };
        s.gpg(&[
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "ephemera test <test@example.org>",
            "default",
            "default",
            "never",
        ]);
        s.pass(&["init", "test@example.org"], None);
        s.pass(
            &[
                "insert",
                "--multiline",
                "mxm/red/marketdata/databento/api_key",
            ],
            Some("db-s3cret-value\nkey_id: dbk-42\nuser: svc-marketdata\n"),
        );
        s
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        vec![
            ("GNUPGHOME", self.gnupg.display().to_string()),
            ("PASSWORD_STORE_DIR", self.store.display().to_string()),
            ("PATH", path),
        ]
    }

    fn gpg(&self, args: &[&str]) {
        run(Command::new("gpg").args(args).envs(self.env())).ok();
    }

    fn pass(&self, args: &[&str], input: Option<&str>) {
        let mut child = Command::new("pass")
            .args(args)
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap();
            stdin
                .write_all(input.unwrap_or_default().as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "pass {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `ephemera secrets get NAME --as CALLER --config CONFIG`.
    fn get(&self, config: &Path, name: &str, caller: &str) -> Run {
        run(Command::new(ephemera_bin())
            .args(["secrets", "get", name, "--as", caller, "--config"])
            .arg(config)
            .envs(self.env()))
    }

    fn calls(&self) -> usize {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .count()
    }
}

#[test]
fn an_mxm_secrets_configuration_resolves_unchanged_through_gopass() {
    let store = Store::new();
    let config = store.config("mxm.yaml", MXM);
    let checked = run(Command::new(ephemera_bin())
        .args(["secrets", "check", "--config"])
        .arg(&config));
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);

    let read = store.get(
        &config,
        "databento_api_key",
        "spiffe://example.org/marketdata",
    );
    assert_eq!(
        read.ok(),
        "db-s3cret-value",
        "the first line is the password"
    );
    assert_eq!(store.calls(), 1);
    let line = std::fs::read_to_string(&store.calls).unwrap();
    assert_eq!(line.trim(), "show -- mxm/red/marketdata/databento/api_key");

    // A denied caller, or one no principal names, starts no process at all.
    for caller in [
        "spiffe://example.org/ops",
        "spiffe://example.org/team/marketdata",
    ] {
        let denied = store.get(&config, "databento_api_key", caller);
        assert_eq!(denied.code, 1, "{caller}: {}", denied.stdout);
        assert!(
            denied.stderr.contains("not authorized"),
            "{}",
            denied.stderr
        );
    }
    assert_eq!(store.calls(), 1, "authorization comes before the store");
}

#[test]
fn a_field_reads_its_key_value_line() {
    let store = Store::new();
    let config = store.config(
        "fields.yaml",
        &MXM.replace(
            "    policy: marketdata_access\n",
            "    policy: marketdata_access\n  databento_key_id:\n    store: red\n    path: marketdata/databento/api_key\n    field: key_id\n    policy: marketdata_access\n  databento_pin:\n    store: red\n    path: marketdata/databento/api_key\n    field: pin\n    policy: marketdata_access\n",
        ),
    );
    let read = store.get(&config, "databento_key_id", "spiffe://example.org/research");
    assert_eq!(read.ok(), "dbk-42");
    let missing = store.get(&config, "databento_pin", "spiffe://example.org/research");
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("field") && missing.stderr.contains("pin"),
        "{}",
        missing.stderr
    );
}

#[test]
fn each_failure_has_its_typed_error_and_none_shows_the_value_or_gpgs_words() {
    let store = Store::new();
    let empty_gnupg = store.dir.path().join("empty-gnupg");
    std::fs::create_dir(&empty_gnupg).unwrap();
    std::fs::set_permissions(&empty_gnupg, std::fs::Permissions::from_mode(0o700)).unwrap();
    for (name, config, says) in [
        (
            "wrong-path.yaml",
            MXM.replace(
                "path: marketdata/databento/api_key",
                "path: marketdata/nope",
            ),
            "not found",
        ),
        (
            "no-binary.yaml",
            MXM.replace(
                "root: mxm/red",
                "root: mxm/red\n    binary: /nonexistent/gopass",
            ),
            "no such program",
        ),
        (
            "no-key.yaml",
            MXM.replace(
                "root: mxm/red",
                &format!("root: mxm/red\n    gnupg_home: {}", empty_gnupg.display()),
            ),
            "the store or its GPG key is not usable",
        ),
    ] {
        let config = store.config(name, &config);
        let failed = store.get(
            &config,
            "databento_api_key",
            "spiffe://example.org/marketdata",
        );
        assert_eq!(failed.code, 1, "{name}: {}", failed.stdout);
        assert!(failed.stderr.contains(says), "{name}: {}", failed.stderr);
        for leak in ["db-s3cret-value", "dbk-42", "gpg:", "decryption"] {
            assert!(
                !failed.stderr.contains(leak) && !failed.stdout.contains(leak),
                "{name}: {leak}"
            );
        }
    }
    // A path that would read as an option, or climb out of the root, is a
    // configuration error before anything runs.
    let before = store.calls();
    let config = store.config(
        "dash.yaml",
        &MXM.replace("path: marketdata/databento/api_key", "path: -x/../y"),
    );
    let refused = run(Command::new(ephemera_bin())
        .args(["secrets", "check", "--config"])
        .arg(&config));
    assert_eq!(refused.code, 2, "{}", refused.stdout);
    assert_eq!(store.calls(), before);
}

#[test]
fn egress_through_real_envoy_carries_the_password_store_secret_and_nothing_leaks() {
    use ephemera_tests::net::get;
    use ephemera_tests::workload::{EchoApp, Root, Sidecar, ledger_key};

    let store = Store::new();
    let dir = store.dir.path();
    let root = Root::new(&dir.join("root"), &["orders", "billing"]);
    let ledger = dir.join("secrets-audit.jsonl");
    let salt = dir.join("salt");
    std::fs::write(&salt, [9u8; 32]).unwrap();
    // The mxm configuration, the store's location spelled out (the
    // sidecar's shim does not inherit this test's environment), and audit.
    let secrets = store.config(
        "secrets.yaml",
        &format!(
            "{}audit: {{ ledger: \"{}\", tenant: acme, salt_file: \"{}\", signing_key_file: \"{}\" }}\n",
            MXM.replace("research", "orders").replace(
                "root: mxm/red",
                &format!(
                    "root: mxm/red\n    binary: {}\n    store_dir: {}\n    gnupg_home: {}",
                    store.bin.join("gopass").display(),
                    store.store.display(),
                    store.gnupg.display()
                ),
            ),
            ledger.display(),
            salt.display(),
            ledger_key(dir).0.display()
        ),
    );
    let api = EchoApp::start(dir, "external-api", 200);
    let app = EchoApp::start(dir, "orders-app", 200);
    let config = format!(
        "outbound:\n  egress:\n    - {{ host: api.example.com, address: \"127.0.0.1:{}\", secret: databento_api_key, inject: {{ as: header, header: x-api-key }} }}\n",
        api.port
    );
    let sidecar = Sidecar::start_egress(dir, &root, app.port, &config, &secrets);
    let out = sidecar.outbound.unwrap();
    let seen = get(out, "/v1/bars", &[("host", "api.example.com")]).json();
    assert_eq!(seen["headers"]["x-api-key"], "db-s3cret-value");
    assert!(store.calls() >= 1, "the value came from the password store");

    let logs = format!("{}{}", sidecar.proc.stdout(), sidecar.proc.stderr());
    let stats = get(&sidecar.admin, "/stats", &[]).body;
    let audit = std::fs::read_to_string(&ledger).unwrap();
    assert!(audit.contains("\"event\":\"allow\""), "{audit}");
    for (place, text) in [("logs", &logs), ("stats", &stats), ("audit ledger", &audit)] {
        assert!(
            !text.contains("db-s3cret-value"),
            "the value in the {place}"
        );
        assert!(!text.contains("dbk-42"), "a field in the {place}");
    }
}

#[test]
fn the_shims_api_resolves_from_the_password_store_for_the_workload_itself() {
    use ephemera_tests::net::{get, send, wait_until};
    use ephemera_tests::procs::Proc;
    use ephemera_tests::workload::Root;

    let store = Store::new();
    let dir = store.dir.path();
    let root = Root::new(&dir.join("root"), &["marketdata", "ops"]);
    let config = store.config("mxm.yaml", MXM);
    let socket = dir.join("run/shim.sock");
    let serve = |name: &str| {
        Proc::spawn(
            name,
            dir,
            Command::new(ephemera_bin())
                .args(["serve", "--listen"])
                .arg(format!("unix:{}", socket.display()))
                .arg("--secrets-config")
                .arg(&config)
                .envs(root.env(name))
                .envs(store.env()),
        )
    };
    let resolve = || {
        send(
            &socket,
            "POST",
            "/v1/secrets/resolve",
            &[("content-type", "application/json")],
            r#"{"name": "databento_api_key"}"#,
        )
    };
    for (workload, status) in [("marketdata", 200), ("ops", 403)] {
        let before = store.calls();
        let shim = serve(workload);
        wait_until(std::time::Duration::from_secs(10), || {
            get(&socket, "/healthz", &[]).status == 200
        })
        .expect("shim up");
        let answer = resolve();
        assert_eq!(answer.status, status, "{workload}: {}", answer.body);
        if status == 200 {
            let value: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
            assert_eq!(value["value"], "db-s3cret-value");
            assert_eq!(store.calls(), before + 1);
        } else {
            assert_eq!(store.calls(), before, "a denied workload starts no process");
            assert!(!answer.body.contains("db-s3cret-value"));
        }
        let output = format!("{}{}", shim.stdout(), shim.stderr());
        assert!(!output.contains("db-s3cret-value"), "{output}");
        drop(shim);
    }
}
