//! Workloads for end-to-end tests: provisioned identities, the echo app, and
//! ephemera sidecars (real Envoy, real shim).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::net::wait_until;
use crate::net::{Target, free_port, get};
use crate::procs::Proc;
use crate::{Run, ephemera, ephemera_bin, python, repo_root, run, service_env};

/// A provisioning root made with the `ephemera` CLI.
pub struct Root {
    /// Its directory.
    pub dir: PathBuf,
}

impl Root {
    /// A JWT-SVID from `caller` for the secrets audience of `service`'s
    /// shim, carrying `jti` and living 60 s (signed by the spiffile
    /// reference implementation).
    pub fn secrets_token(&self, caller: &str, service: &str, jti: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = serde_json::json!({
            "sub": format!("spiffe://example.org/{caller}"),
            "aud": format!("spiffe://example.org/{service}/ephemera-secrets"),
            "iat": now, "exp": now + 60, "jti": jti,
        });
        crate::spiffile_peer(&[
            "sign-claims",
            &self.dir.to_string_lossy(),
            caller,
            &claims.to_string(),
        ])
        .ok()
        .to_owned()
    }

    /// Initializes `dir` for `example.org` and adds `services`.
    pub fn new(dir: &Path, services: &[&str]) -> Self {
        Self::for_domain(dir, "example.org", services)
    }

    /// Initializes `dir` for `trust_domain` and adds `services`.
    pub fn for_domain(dir: &Path, trust_domain: &str, services: &[&str]) -> Self {
        let d = dir.to_string_lossy();
        ephemera(
            &["identity", "init", &d, "--trust-domain", trust_domain],
            &[],
        )
        .ok();
        for s in services {
            ephemera(&["identity", "add", &d, s], &[]).ok();
        }
        Self {
            dir: dir.to_owned(),
        }
    }

    /// The SPIFFILE_* variables of a service.
    pub fn env(&self, service: &str) -> Vec<(String, String)> {
        service_env(&self.dir, service)
    }

    /// `ephemera token mint` as `service` for `audience` (extra args appended).
    pub fn mint(&self, service: &str, audience: &str, extra: &[&str]) -> String {
        let env = self.env(service);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut args = vec!["token", "mint", "--audience", audience];
        args.extend_from_slice(extra);
        ephemera(&args, &env).ok().to_owned()
    }

    /// `ephemera identity <op> ROOT <service> [args]`.
    pub fn identity(&self, op: &str, service: &str, args: &[&str]) {
        let d = self.dir.to_string_lossy();
        let mut all = vec!["identity", op, &d, service];
        all.extend_from_slice(args);
        ephemera(&all, &[]).ok();
    }
}

/// The echo app (`tests/peers/echo_app.py`).
pub struct EchoApp {
    /// Its port.
    pub port: u16,
    proc: Proc,
}

impl EchoApp {
    /// Starts an echo app answering `status` to everything.
    pub fn start(dir: &Path, name: &str, status: u16) -> Self {
        let port = free_port();
        let mut proc = Proc::spawn(
            name,
            dir,
            Command::new(python())
                .arg(repo_root().join("tests/peers/echo_app.py"))
                .arg(port.to_string())
                .args(["--status", &status.to_string()]),
        );
        proc.wait_for_line("listening", Duration::from_secs(10));
        Self { port, proc }
    }

    /// Every request the app has seen, as the JSON it echoed.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.proc
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("method").is_some())
            .collect()
    }
}

/// The Wasm filter built by `cargo build --release -p ephemera-envoy --target wasm32-wasip1`.
pub fn wasm() -> PathBuf {
    let path = crate::target_dir().join("wasm32-wasip1/release/ephemera_envoy.wasm");
    assert!(
        path.exists(),
        "{} is missing: tests/run.sh builds it",
        path.display()
    );
    path
}

/// The venv's Envoy.
pub fn envoy() -> PathBuf {
    let path = repo_root().join(".venv/bin/envoy");
    assert!(
        path.exists(),
        "{} is missing: run tests/setup.sh",
        path.display()
    );
    path
}

/// A running `ephemera sidecar`.
pub struct Sidecar {
    /// Inbound listener port.
    pub inbound: u16,
    /// Outbound listener port, when started with one.
    pub outbound: Option<u16>,
    /// Envoy's admin listener (a Unix socket unless TCP was asked for).
    pub admin: Target,
    /// The process.
    pub proc: Proc,
}

impl Sidecar {
    /// Starts a sidecar for `service` of `root` in front of `app_port`,
    /// with an optional sidecar configuration (YAML text).
    pub fn start(
        dir: &Path,
        root: &Root,
        service: &str,
        app_port: u16,
        config: Option<&str>,
        outbound: bool,
    ) -> Self {
        Self::start_with(dir, root, service, app_port, config, outbound, &[])
    }

    /// A sidecar of `orders` with an outbound listener and egress secrets
    /// from the `secrets` configuration, Envoy logging at `info` (where
    /// credentials flow).
    pub fn start_egress(
        dir: &Path,
        root: &Root,
        app_port: u16,
        config: &str,
        secrets: &Path,
    ) -> Self {
        let secrets = secrets.display().to_string();
        let extra = ["--secrets-config", &secrets, "--envoy-log-level", "info"];
        Self::start_with(dir, root, "orders", app_port, Some(config), true, &extra)
    }

    /// As [`Self::start`], with extra `ephemera sidecar` arguments.
    pub fn start_with(
        dir: &Path,
        root: &Root,
        service: &str,
        app_port: u16,
        config: Option<&str>,
        outbound: bool,
        extra: &[&str],
    ) -> Self {
        let inbound = free_port();
        let outbound = outbound.then(free_port);
        let mut command = Command::new(ephemera_bin());
        command
            .args(["sidecar", "--app", &format!("127.0.0.1:{app_port}")])
            .args(["--inbound", &format!("127.0.0.1:{inbound}")])
            .arg("--envoy")
            .arg(envoy())
            .arg("--wasm")
            .arg(wasm())
            .envs(root.env(service));
        if let Some(port) = outbound {
            command.args(["--outbound", &format!("127.0.0.1:{port}")]);
        }
        command.args(extra);
        if let Some(text) = config {
            let path = dir.join(format!("{service}-sidecar.yaml"));
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
            command.arg("--config").arg(path);
        }
        let mut proc = Proc::spawn(&format!("sidecar-{service}"), dir, &mut command);
        let line = proc.wait_for_line("ephemera sidecar ready", Duration::from_secs(40));
        let admin = match line.rsplit_once("; admin ").map(|(_, a)| a.trim()) {
            Some(a) if a.starts_with("unix:") => Target::Unix(a["unix:".len()..].into()),
            Some(a) => a
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .map(Target::Port)
                .unwrap_or_else(|| panic!("no admin address in {line:?}")),
            None => panic!("no admin address in {line:?}"),
        };
        Self {
            inbound,
            outbound,
            admin,
            proc,
        }
    }

    /// The filter's stats (`wasmcustom.ephemera.*`), by name without the prefix.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        stats(self.admin.clone())
    }
}

/// Envoy's `ephemera.*` stats at an admin listener. The filter counts in
/// its VM and hands the counts to Envoy on every 100 ms tick, so they are
/// read after three ticks.
pub fn stats(admin: impl Into<Target>) -> BTreeMap<String, u64> {
    std::thread::sleep(Duration::from_millis(300));
    get(admin, "/stats?filter=ephemera", &[])
        .body
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| {
            Some((
                k.strip_prefix("wasmcustom.")?.to_owned(),
                v.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// A ledger signing key made by `ephemera ledger keygen` in `dir/keys`
/// (outside the directory the tests' ledgers live in): (private, public).
/// Made once per directory.
pub fn ledger_key(dir: &Path) -> (PathBuf, PathBuf) {
    let keys = dir.join("keys");
    let (private, public) = (keys.join("ledger.key"), keys.join("ledger.pub"));
    if !private.exists() {
        std::fs::create_dir_all(&keys).unwrap();
        let (p, q) = (private.to_string_lossy(), public.to_string_lossy());
        ephemera(&["ledger", "keygen", &p, &q], &[]).ok();
    }
    (private, public)
}

/// `ephemera ledger verify LEDGER --public-key` with `dir`'s ledger key
/// ([`ledger_key`]).
pub fn verify_ledger(dir: &Path, ledger: &Path) -> Run {
    let public = ledger_key(dir).1;
    ephemera(
        &[
            "ledger",
            "verify",
            &ledger.to_string_lossy(),
            "--public-key",
            &public.to_string_lossy(),
        ],
        &[],
    )
}

/// Where the shims of a test directory listen: a socket in a private
/// directory the shim creates (a restarted shim takes the same path).
pub fn shim_socket(dir: &Path) -> PathBuf {
    dir.join("run/shim.sock")
}

/// A running `ephemera serve`, on a Unix socket in its own private
/// directory (the default transport).
pub struct Shim {
    /// The Envoy listener's socket.
    pub socket: PathBuf,
    /// The app listener's socket (serving only with a secrets configuration).
    pub app_socket: PathBuf,
    /// The process.
    pub proc: Proc,
}

impl Shim {
    /// `POST /v1/secrets/resolve` of `name` on the app listener, presenting
    /// `token`.
    pub fn resolve_secret(&self, name: &str, token: &str) -> crate::net::Response {
        let auth = format!("Bearer {token}");
        crate::net::send(
            &self.app_socket,
            "POST",
            "/v1/secrets/resolve",
            &[
                ("content-type", "application/json"),
                ("authorization", auth.as_str()),
            ],
            &serde_json::json!({ "name": name, "purpose": "egress" }).to_string(),
        )
    }
}

/// Starts Envoy on a bootstrap rendered by `ephemera bootstrap` for the
/// shim on `shim` (its admin on a loopback port, for the tests to read).
pub fn envoy_for_shim(
    dir: &std::path::Path,
    app: u16,
    shim: &Path,
    config: Option<&str>,
) -> (Proc, u16, u16) {
    let inbound = free_port();
    let admin = free_port();
    let mut args = vec![
        "bootstrap".to_owned(),
        "--app".into(),
        format!("127.0.0.1:{app}"),
        "--inbound".into(),
        format!("127.0.0.1:{inbound}"),
        "--admin".into(),
        format!("tcp:127.0.0.1:{admin}"),
        "--shim".into(),
        format!("unix:{}", shim.display()),
        "--wasm".into(),
        wasm().display().to_string(),
    ];
    if let Some(text) = config {
        let path = dir.join(format!("sidecar-{inbound}.yaml"));
        std::fs::write(&path, text).unwrap();
        args.extend(["--config".into(), path.display().to_string()]);
    }
    let rendered = run(Command::new(ephemera_bin()).args(&args));
    let path = dir.join(format!("envoy-{inbound}.json"));
    std::fs::write(&path, rendered.ok()).unwrap();
    let proc = Proc::spawn(
        &format!("envoy-{inbound}"),
        dir,
        Command::new(envoy()).arg("-c").arg(&path).args([
            "--disable-hot-restart",
            "--log-level",
            "info",
        ]),
    );
    wait_until(Duration::from_secs(20), || {
        get(admin, "/ready", &[]).status == 200
    })
    .expect("envoy ready");
    (proc, inbound, admin)
}

/// Starts `ephemera serve` for `service` (extra args appended) and waits
/// for its health check.
pub fn serve(dir: &Path, root: &Root, service: &str, name: &str, extra: &[&str]) -> Shim {
    serve_env(dir, root, service, name, extra, &[])
}

/// As [`serve`], for `service` with the secrets configuration at `config`,
/// the app listener on.
pub fn serve_secrets(dir: &Path, root: &Root, service: &str, config: &Path) -> Shim {
    let config = config.display().to_string();
    serve(dir, root, service, "shim", &["--secrets-config", &config])
}

/// As [`serve`], with extra environment variables (e.g. AWS credentials).
/// With `--secrets-config` among `extra`, the app listener is on too.
pub fn serve_env(
    dir: &Path,
    root: &Root,
    service: &str,
    name: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Shim {
    let socket = shim_socket(dir);
    let app_socket = dir.join("shim-app.sock");
    let mut command = Command::new(ephemera_bin());
    command
        .arg("serve")
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .args(extra)
        .envs(root.env(service))
        .envs(env.iter().copied());
    if extra.contains(&"--secrets-config") {
        command
            .arg("--app-listen")
            .arg(format!("unix:{}", app_socket.display()));
    }
    let mut proc = Proc::spawn(name, dir, &mut command);
    wait_until(Duration::from_secs(10), || {
        get(&socket, "/healthz", &[]).status == 200
    })
    .unwrap_or_else(|| panic!("shim up: {}", proc.stderr()));
    assert!(proc.running());
    Shim {
        socket,
        app_socket,
        proc,
    }
}
