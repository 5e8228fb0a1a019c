//! `ephemera sidecar` (run a workload's sidecar: shim + Envoy) and
//! `ephemera bootstrap` (print the Envoy bootstrap it would run).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Args;

use super::Failure;
use crate::serve::{self, Listen};
use crate::sidecar::bootstrap::{self, Params};
use crate::sidecar::config::SidecarConfig;
use crate::sidecar::http_probe;

/// How long Envoy and the filter get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What both commands take.
#[derive(Debug, Args)]
pub struct SidecarArgs {
    /// The local app, HOST:PORT.
    #[arg(long)]
    pub app: String,
    /// The inbound listener, HOST:PORT.
    #[arg(long)]
    pub inbound: String,
    /// The outbound listener, HOST:PORT.
    #[arg(long)]
    pub outbound: Option<String>,
    /// Sidecar configuration (YAML/JSON): inbound rules, outbound destinations.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The filter module (default: $EPHEMERA_WASM, then beside this binary,
    /// then the workspace's release build).
    #[arg(long)]
    pub wasm: Option<PathBuf>,
    /// Envoy's admin listener: unix:PATH (default: a socket in the private
    /// directory), or tcp:127.0.0.1:PORT when asked for (port 0: any).
    #[arg(long)]
    pub admin: Option<Listen>,
}

impl SidecarArgs {
    fn params(
        &self,
        shim: Listen,
        admin: Listen,
        shim_secret: Option<String>,
    ) -> Result<Params, Failure> {
        let config = match &self.config {
            Some(path) => SidecarConfig::load(path).map_err(Failure::config)?,
            None => SidecarConfig::default(),
        };
        Ok(Params {
            app: self.app.clone(),
            inbound: self.inbound.clone(),
            outbound: self.outbound.clone(),
            admin,
            shim,
            shim_secret,
            wasm: find_wasm(self.wasm.as_deref())?,
            config,
        })
    }
}

fn find_wasm(explicit: Option<&Path>) -> Result<PathBuf, Failure> {
    const NAME: &str = "ephemera_envoy.wasm";
    let mut candidates: Vec<PathBuf> = explicit.map(Path::to_path_buf).into_iter().collect();
    if candidates.is_empty() {
        candidates.extend(std::env::var_os("EPHEMERA_WASM").map(PathBuf::from));
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            candidates.push(dir.join(NAME));
            candidates.push(dir.join("../wasm32-wasip1/release").join(NAME));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .and_then(|p| std::path::absolute(p).ok())
        .ok_or_else(|| {
            Failure::config(format!(
                "cannot find {NAME} (tried {candidates:?}); build it with \
                 `cargo build --release -p ephemera-envoy --target wasm32-wasip1` or pass --wasm"
            ))
        })
}

/// `ephemera bootstrap`: prints the Envoy bootstrap for a separately run shim.
#[derive(Debug, Args)]
pub struct BootstrapArgs {
    #[command(flatten)]
    sidecar: SidecarArgs,
    /// Where the shim (`ephemera serve`) listens: unix:PATH or
    /// tcp:127.0.0.1:PORT.
    #[arg(long, default_value = super::serve::DEFAULT_LISTEN)]
    shim: Listen,
    /// With a tcp: shim, the file `ephemera serve --secret-file` wrote its
    /// per-start secret to (it goes into the filter configuration).
    #[arg(long)]
    shim_secret_file: Option<PathBuf>,
}

/// The default admin listener of `ephemera bootstrap`: a pipe beside the
/// shim's socket.
const DEFAULT_ADMIN: &str = "/run/ephemera/envoy-admin.sock";

impl BootstrapArgs {
    /// Prints the rendered bootstrap.
    pub fn run(self) -> Result<(), Failure> {
        let secret = match (&self.shim, &self.shim_secret_file) {
            (Listen::Tcp(_), Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| Failure::config(format!("{}: {e}", path.display())))?
                    .trim()
                    .to_owned(),
            ),
            (Listen::Tcp(_), None) => {
                return Err(Failure::config(
                    "a tcp: shim needs --shim-secret-file (the file `ephemera serve --secret-file` wrote)",
                ));
            }
            (Listen::Unix(_), _) => None,
        };
        let admin = self
            .sidecar
            .admin
            .clone()
            .unwrap_or_else(|| Listen::Unix(DEFAULT_ADMIN.into()));
        let params = self.sidecar.params(self.shim, admin, secret)?;
        let rendered = bootstrap::render(&params).map_err(Failure::config)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&rendered).unwrap_or_default()
        );
        Ok(())
    }
}

/// `ephemera sidecar`: runs the shim in-process and Envoy as a child.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    sidecar: SidecarArgs,
    /// The Envoy binary (default: `envoy` on PATH).
    #[arg(long, default_value = "envoy")]
    envoy: PathBuf,
    /// Envoy's log level.
    #[arg(long, default_value = "warning")]
    envoy_log_level: String,
    /// Identity-Per-Transaction configuration for the shim (ledger,
    /// brokers, policy).
    #[arg(long)]
    ipt_config: Option<PathBuf>,
    /// Secrets configuration for egress injection (and the app listener).
    #[arg(long)]
    secrets_config: Option<PathBuf>,
    /// The shim's app listener (unix:PATH or tcp:127.0.0.1:PORT): the
    /// secrets API for the app, each call with its own JWT-SVID.
    #[arg(long)]
    app_listen: Option<Listen>,
    /// Run ledgers without a signing key: whoever can write a ledger file
    /// can then rewrite it unnoticed.
    #[arg(long)]
    insecure_unkeyed_ledger: bool,
    /// Where the bundles come from besides the identity files.
    #[command(flatten)]
    bundles: super::serve::BundleArgs,
    /// The SPIFFE Workload API for the app.
    #[command(flatten)]
    workload_api: crate::workload_api::WorkloadApiArgs,
}

impl RunArgs {
    /// Runs until SIGINT/SIGTERM or until Envoy exits.
    pub fn run(self) -> Result<(), Failure> {
        super::init_tracing();
        // Everything the shim and Envoy create (sockets, logs) starts private.
        serve::private_umask();
        let work = tempfile::Builder::new()
            .prefix("ephemera-sidecar-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(Failure::config)?;
        let shim = Listen::Unix(work.path().join("shim.sock"));
        let admin = self
            .sidecar
            .admin
            .clone()
            .unwrap_or_else(|| Listen::Unix(work.path().join("admin.sock")));
        let params = self.sidecar.params(shim.clone(), admin.clone(), None)?;
        let rendered = bootstrap::render(&params).map_err(Failure::config)?;
        let bootstrap_path = work.path().join("envoy.json");
        crate::atomic_file::write(&bootstrap_path, rendered.to_string().as_bytes(), 0o600)
            .map_err(Failure::config)?;
        let admin_path = work.path().join("admin-address");

        let runtime = super::runtime()?;
        runtime.block_on(async {
            let serve_args = super::serve::ServeArgs::in_process(
                shim.clone(),
                self.ipt_config.clone(),
                self.secrets_config.clone(),
                self.app_listen.clone(),
                self.insecure_unkeyed_ledger,
                self.bundles.clone(),
                self.workload_api.clone(),
            );
            let source = serve_args.source()?;
            if !super::serve::ServeArgs::first_identity(&source, Duration::from_secs(10)).await {
                return Err(Failure::config(
                    "the identity files are not usable (see the log above); set SPIFFILE_* to a provisioned identity",
                ));
            }
            let (stop_shim, shim_stopped) = tokio::sync::oneshot::channel::<()>();
            let mut server = tokio::spawn(async move {
                let stopped = async {
                    let _ = shim_stopped.await;
                };
                serve_args.serve(source, stopped).await
            });

            let mut envoy = tokio::process::Command::new(&self.envoy)
                .arg("-c")
                .arg(&bootstrap_path)
                .arg("--admin-address-path")
                .arg(&admin_path)
                .arg("--disable-hot-restart")
                .arg("--log-level")
                .arg(&self.envoy_log_level)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| Failure::config(format!("cannot start {}: {e}", self.envoy.display())))?;

            let ready = tokio::select! {
                ready = wait_ready(&admin, &admin_path, params.outbound.is_some()) => ready,
                status = envoy.wait() => Err(format!("envoy exited during start-up: {status:?}")),
                result = &mut server => Err(match result {
                    Ok(Err(e)) => e.message,
                    other => format!("the shim stopped during start-up: {other:?}"),
                }),
                _ = super::shutdown_signal() => Err("interrupted during start-up".to_owned()),
            };
            let result = match ready {
                Ok(admin) => {
                    println!(
                        "ephemera sidecar ready: inbound http://{} -> app {}{}; admin {admin}",
                        params.inbound,
                        params.app,
                        params.outbound.as_ref().map(|o| format!("; outbound http://{o}")).unwrap_or_default(),
                    );
                    tokio::select! {
                        _ = super::shutdown_signal() => Ok(()),
                        status = envoy.wait() => Err(Failure::config(format!("envoy exited: {status:?}"))),
                    }
                }
                Err(e) => Err(Failure::config(e)),
            };
            stop_envoy(&mut envoy).await;
            let _ = stop_shim.send(());
            if !server.is_finished() {
                let _ = server.await;
            }
            result
        })
    }
}

/// Waits until Envoy is ready and every ephemera filter holds an identity;
/// returns the admin listener (a TCP port 0 resolved through `admin_path`).
async fn wait_ready(admin: &Listen, admin_path: &Path, outbound: bool) -> Result<Listen, String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let expected = if outbound { 2 } else { 1 };
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let admin = match admin {
            Listen::Unix(_) => admin.clone(),
            Listen::Tcp(_) => {
                let Ok(text) = std::fs::read_to_string(admin_path) else {
                    continue;
                };
                let Ok(addr) = text.trim().parse() else {
                    continue;
                };
                Listen::Tcp(addr)
            }
        };
        if http_probe::get(&admin, "/ready").await.map(|r| r.0) != Some(200) {
            continue;
        }
        let Some((200, stats)) = http_probe::get(
            &admin,
            "/stats?filter=ephemera%5C..*%5C.identity_generation",
        )
        .await
        else {
            continue;
        };
        let loaded = stats
            .lines()
            .filter(|l| {
                l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|v| v >= 1)
            })
            .count();
        if loaded >= expected {
            return Ok(admin);
        }
    }
    Err(format!(
        "envoy or the filter not ready after {READY_TIMEOUT:?}"
    ))
}

/// SIGTERM, then SIGKILL after a grace period.
async fn stop_envoy(envoy: &mut tokio::process::Child) {
    if let Some(pid) = envoy
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(Duration::from_secs(10), envoy.wait())
        .await
        .is_err()
    {
        let _ = envoy.kill().await;
    }
}
