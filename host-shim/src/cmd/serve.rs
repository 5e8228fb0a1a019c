//! `ephemera serve`: the shim's API for the filter (the Envoy listener) and,
//! optionally, the secrets API for the app (the app listener).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ephemera_core::filter::workload_identity::BundleFormatName;

use super::Failure;
use crate::identity::IdentitySource;
use crate::identity::endpoint::{self, BundleEndpoint};
use crate::identity::files::{FederatedFile, IdentityPaths};
use crate::identity::store::BundleStore;
use crate::identity::{self, watch};
use crate::ledger::postgres_writer::PostgresLedger;
use crate::ledger::signing::configured_key;
use crate::ledger::{Checkpointer, FileLedger, Ledger, LedgerError};
use crate::secrets::{self, Callers, SecretsService};
use crate::serve::{self, Access, Listen, StartSecret, UnixPeers};
use crate::transactions::{IptConfig, SetupError, Transactions};
use crate::workload_api::WorkloadApiArgs;

/// The default Envoy listener: a socket in a directory only the shim's
/// (and Envoy's) user can enter.
pub const DEFAULT_LISTEN: &str = "unix:/run/ephemera/shim.sock";

/// The `:authority` the filter sends and the shim answers to.
pub const AUTHORITY: &str = "ephemera-shim";

/// Options of `ephemera serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The Envoy listener: unix:PATH (default), or tcp:127.0.0.1:PORT for
    /// development outside a pod (requires --secret-file).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: Listen,
    /// Envoy's uid, trusted on the Unix socket besides the shim's own
    /// (default: only the shim's own uid).
    #[arg(long)]
    pub envoy_uid: Option<u32>,
    /// A group the shim and Envoy share (in a pod, the fsGroup): the
    /// socket's directory becomes 0750 and the socket 0660 with that group.
    #[arg(long)]
    pub socket_group: Option<u32>,
    /// With tcp: the file (created 0600) the per-start secret is written
    /// to, for `ephemera bootstrap --shim-secret-file`.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// The app listener (unix:PATH or tcp:127.0.0.1:PORT): the secrets API
    /// for callers presenting their own JWT-SVIDs. Needs --secrets-config.
    #[arg(long)]
    pub app_listen: Option<Listen>,
    /// Read the bundle as a standard SPIFFE JWKS (central issuer).
    #[arg(long)]
    pub central_issuer: bool,
    /// Identity-Per-Transaction configuration (ledger, brokers, policy):
    /// enables `POST /v1/transactions`.
    #[arg(long)]
    pub ipt_config: Option<PathBuf>,
    /// Secrets configuration (stores, refs, policies, principals): enables
    /// `POST /v1/secrets/resolve`.
    #[arg(long)]
    pub secrets_config: Option<PathBuf>,
    /// Run ledgers without a signing key: whoever can write a ledger file
    /// can then rewrite it unnoticed.
    #[arg(long)]
    pub insecure_unkeyed_ledger: bool,
    /// Where the bundles come from besides the identity files.
    #[command(flatten)]
    pub bundles: BundleArgs,
    /// The SPIFFE Workload API for the app.
    #[command(flatten)]
    pub workload_api: WorkloadApiArgs,
}

/// Where the bundles come from besides the identity files: the bundle
/// store (the bundle from PostgreSQL, so that identity changes on one node
/// reach this shim within about a second) and federated trust domains.
#[derive(Debug, Clone, Args)]
pub struct BundleArgs {
    /// Follow the bundle's revisions in this PostgreSQL database
    /// (`postgres://user@host:port/db`, table `ephemera_bundle`) instead of
    /// reading the bundle file.
    #[arg(long)]
    pub bundle_postgres: Option<String>,
    /// A file holding the bundle store role's password.
    #[arg(long)]
    pub bundle_password_file: Option<PathBuf>,
    /// PEM CAs trusted for the bundle store instead of the platform's (TLS
    /// required).
    #[arg(long)]
    pub bundle_ca_file: Option<PathBuf>,
    /// Stop serving the identity (503) once the store has not confirmed the
    /// bundle for this long: a revocation may be pending.
    #[arg(long, default_value_t = 30_000)]
    pub bundle_max_age_ms: u64,
    /// How long a rotated key is published in the bundle before it signs
    /// (while the bundle still binds the key it replaces), milliseconds:
    /// longer than a bundle takes to reach every verifier (raise it where
    /// bundles travel slower, e.g. as Kubernetes Secrets). 0 signs at once.
    #[arg(long, default_value_t = 2000)]
    pub key_activation_ms: u64,
    /// A federated trust domain's spiffile bundle, TRUST_DOMAIN=PATH
    /// (repeatable): its keys validate only its own identities.
    #[arg(long = "federated-spiffile", value_name = "TRUST_DOMAIN=PATH")]
    pub federated_spiffile: Vec<FederatedFile>,
    /// A federated trust domain's standard SPIFFE bundle (JWKS),
    /// TRUST_DOMAIN=PATH (repeatable): any of its keys signs for any ID of
    /// that domain, and of that domain only.
    #[arg(long = "federated-jwks", value_name = "TRUST_DOMAIN=PATH")]
    pub federated_jwks: Vec<FederatedFile>,
    /// A federated trust domain's SPIFFE bundle endpoint (https_web),
    /// TRUST_DOMAIN=https://HOST/PATH (repeatable): its JWKS, refreshed at
    /// its `spiffe_refresh_hint`.
    #[arg(long = "federated-endpoint", value_name = "TRUST_DOMAIN=URL")]
    pub federated_endpoints: Vec<BundleEndpoint>,
    /// PEM CAs trusted for bundle endpoints instead of the platform's.
    #[arg(long)]
    pub federated_endpoint_ca: Option<PathBuf>,
}

impl BundleArgs {
    /// Refuses a trust domain given more than one bundle source.
    fn check_domains(&self) -> Result<(), Failure> {
        let mut seen = std::collections::BTreeSet::new();
        let files = self.federated_spiffile.iter().chain(&self.federated_jwks);
        let domains = files
            .map(|f| &f.trust_domain)
            .chain(self.federated_endpoints.iter().map(|e| &e.trust_domain));
        for domain in domains {
            if !seen.insert(domain) {
                return Err(Failure::config(format!(
                    "trust domain {domain} is federated more than once: bundles are never merged"
                )));
            }
        }
        Ok(())
    }

    fn federated(&self) -> Vec<(BundleFormatName, FederatedFile)> {
        let spiffile = self
            .federated_spiffile
            .iter()
            .map(|f| (BundleFormatName::Spiffile, f.clone()));
        let jwks = self
            .federated_jwks
            .iter()
            .map(|f| (BundleFormatName::SpiffeJwks, f.clone()));
        spiffile.chain(jwks).collect()
    }

    fn store(&self) -> Option<BundleStore> {
        self.bundle_postgres.as_ref().map(|url| BundleStore {
            url: url.clone(),
            password_file: self.bundle_password_file.clone(),
            ca_file: self.bundle_ca_file.clone(),
        })
    }
}

/// The routers of both listeners.
pub struct Routers {
    /// The Envoy listener's.
    pub envoy: axum::Router,
    /// The app listener's, when secrets are configured.
    pub app: Option<axum::Router>,
    /// What to do at shutdown: checkpoint the ledgers' heads.
    pub on_shutdown: Shutdown,
}

/// The services that write a last checkpoint at shutdown.
#[derive(Default)]
pub struct Shutdown {
    secrets: Option<Arc<SecretsService>>,
    transactions: Option<Arc<Checkpointer>>,
}

impl Shutdown {
    /// Checkpoints every checkpointed ledger whose head moved.
    pub async fn run(&self) {
        if let Some(secrets) = &self.secrets {
            secrets.flush_audit().await;
        }
        if let Some(transactions) = &self.transactions {
            transactions.flush().await;
        }
    }
}

impl ServeArgs {
    /// Options for an in-process shim on `listen` (the sidecar's).
    pub fn in_process(
        listen: Listen,
        ipt_config: Option<PathBuf>,
        secrets_config: Option<PathBuf>,
        app_listen: Option<Listen>,
        insecure_unkeyed_ledger: bool,
        bundles: BundleArgs,
        workload_api: WorkloadApiArgs,
    ) -> Self {
        Self {
            listen,
            envoy_uid: None,
            socket_group: None,
            secret_file: None,
            app_listen,
            central_issuer: false,
            ipt_config,
            secrets_config,
            insecure_unkeyed_ledger,
            bundles,
            workload_api,
        }
    }

    /// The identity source these options describe (files from the
    /// environment, the bundle from the store when one is given, followed
    /// from now on). Must run inside the runtime.
    pub fn source(&self) -> Result<Arc<IdentitySource>, Failure> {
        let paths = IdentityPaths::from_env().map_err(Failure::config)?;
        let format = if self.central_issuer {
            BundleFormatName::SpiffeJwks
        } else {
            BundleFormatName::Spiffile
        };
        self.bundles.check_domains()?;
        let federated = self.bundles.federated();
        let activation = Duration::from_millis(self.bundles.key_activation_ms);
        let source = match self.bundles.store() {
            None => {
                let source = IdentitySource::new(paths, format)
                    .federating(federated)
                    .activating_keys_after(activation);
                let source = Arc::new(source);
                if let Err(e) = source.reload() {
                    tracing::error!("no identity yet (serving 503 until the files are valid): {e}");
                }
                source
            }
            Some(store) => {
                let max_age = Duration::from_millis(self.bundles.bundle_max_age_ms);
                let source = IdentitySource::with_store(paths, format, max_age);
                let source = Arc::new(
                    source
                        .federating(federated)
                        .activating_keys_after(activation),
                );
                tokio::spawn(identity::store::follow(store, source.clone()));
                source
            }
        };
        for endpoint in &self.bundles.federated_endpoints {
            let ca = self.bundles.federated_endpoint_ca.clone();
            tokio::spawn(endpoint::follow(endpoint.clone(), ca, source.clone()));
        }
        Ok(source)
    }

    /// Waits (up to `limit`) until the identity is served: at once from
    /// files, after the first revision from a bundle store.
    pub async fn first_identity(source: &IdentitySource, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        let from_store = source.unconfirmed_for().is_some();
        while from_store && source.served().is_none() && start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        source.served().is_some()
    }

    /// The routes of both listeners: identity, plus transactions and
    /// secrets when configured (the reaper starts with transactions). Must
    /// run inside the runtime.
    pub async fn routers(&self, source: Arc<IdentitySource>) -> Result<Routers, Failure> {
        let mut envoy = identity::api::router(source.clone());
        let mut app = None;
        let mut on_shutdown = Shutdown::default();
        if let Some(path) = &self.secrets_config {
            let config = super::secrets::load(path)?;
            let service = SecretsService::new(config, source.clone(), self.insecure_unkeyed_ledger)
                .map_err(Failure::config)?;
            let service = Arc::new(service);
            on_shutdown.secrets = Some(service.clone());
            envoy = envoy.merge(secrets::api::routes(service.clone(), Callers::Workload));
            app = Some(
                identity::api::health(source.clone())
                    .merge(secrets::api::routes(service, Callers::Bearer)),
            );
        }
        if self.app_listen.is_some() && app.is_none() {
            return Err(Failure::config(
                "--app-listen serves the secrets API: give --secrets-config too",
            ));
        }
        let Some(path) = &self.ipt_config else {
            return Ok(Routers {
                envoy,
                app,
                on_shutdown,
            });
        };
        let config = IptConfig::load(path).map_err(Failure::config)?;
        let (ledger_file, ledger_name) = match (&config.ledger.path, &config.ledger.postgres) {
            (Some(file), _) => (Some(file.as_path()), file.display().to_string()),
            (None, Some(pg)) => (None, format!("postgres table {}", pg.table)),
            (None, None) => unreachable!("IptConfig::load requires a ledger"),
        };
        let key = configured_key(
            &ledger_name,
            ledger_file,
            config.ledger.signing_key_file.as_deref(),
            self.insecure_unkeyed_ledger,
        )
        .map_err(Failure::config)?;
        if config.ledger.checkpoint.is_some() && key.is_none() {
            return Err(Failure::config(format!(
                "{}: ledger.checkpoint needs ledger.signing_key_file",
                path.display()
            )));
        }
        let mut orphans = Vec::new();
        let ledger = match (&config.ledger.path, &config.ledger.postgres) {
            (Some(file), _) => match FileLedger::open(file, key.clone()) {
                Ok((ledger, recovery)) => {
                    if recovery.truncated_bytes > 0 {
                        tracing::warn!(
                            "ledger {}: truncated a torn last record ({} bytes)",
                            file.display(),
                            recovery.truncated_bytes
                        );
                    }
                    tracing::info!(
                        "ledger {}: {} records verified",
                        file.display(),
                        recovery.records
                    );
                    orphans = recovery.unfinished;
                    Ok(Ledger::File(ledger))
                }
                // A second writer is a configuration error, not an outage.
                Err(e @ LedgerError::InUse(_)) => return Err(Failure::config(e)),
                Err(e) => Err(e),
            },
            (None, Some(pg)) => PostgresLedger::start(pg, key.clone())
                .await
                .map(Ledger::Postgres),
            (None, None) => unreachable!("IptConfig::load requires a ledger"),
        };
        let checkpoint = config.ledger.checkpoint.clone().zip(key);
        let service = ledger.map_err(SetupError::from).and_then(|ledger| {
            if let (Some((checkpoint, key)), Ledger::File(file)) = (checkpoint, &ledger) {
                on_shutdown.transactions =
                    Some(Checkpointer::start(file.clone(), key, &checkpoint)?);
            }
            Ok(Transactions::new(config, source, ledger)?.with_orphans(orphans))
        });
        let envoy = match service {
            Ok(service) => {
                let service = Arc::new(service);
                tokio::spawn(service.clone().run_reaper());
                envoy.merge(crate::transactions::api::routes(service))
            }
            // The identity service stays up; transactions fail closed.
            Err(e) => {
                tracing::error!("transactions unavailable: {e}");
                envoy.merge(crate::transactions::api::unavailable(e.to_string()))
            }
        };
        Ok(Routers {
            envoy,
            app,
            on_shutdown,
        })
    }

    /// The per-start secret of a TCP Envoy listener, written to
    /// `--secret-file`; `None` on a Unix socket.
    fn start_secret(&self) -> Result<Option<StartSecret>, Failure> {
        let Listen::Tcp(_) = self.listen else {
            return Ok(None);
        };
        let path = self.secret_file.as_ref().ok_or_else(|| {
            Failure::config(
                "--listen tcp: needs --secret-file: every request must carry the per-start \
                 secret, which `ephemera bootstrap --shim-secret-file` puts into the filter",
            )
        })?;
        let secret = StartSecret::generate().map_err(Failure::config)?;
        crate::atomic_file::write(path, secret.expose().as_bytes(), 0o600)
            .map_err(|e| Failure::config(format!("{}: {e}", path.display())))?;
        Ok(Some(secret))
    }

    /// Binds both listeners and serves them until `shutdown` resolves.
    pub async fn serve(
        &self,
        source: Arc<IdentitySource>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Failure> {
        let routers = self.routers(source.clone()).await?;
        let on_shutdown = routers.on_shutdown;
        let secret = self.start_secret()?;
        let peers = UnixPeers {
            envoy_uid: self.envoy_uid,
            group: self.socket_group,
        };
        let envoy_bound = serve::bind_envoy(&self.listen, &peers)
            .await
            .map_err(Failure::config)?;
        let tcp = |l: &Listen| match l {
            Listen::Tcp(addr) => Some(*addr),
            Listen::Unix(_) => None,
        };
        let envoy_access = Access::new(AUTHORITY, tcp(&self.listen), secret);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let app_server = match (&self.app_listen, routers.app) {
            (Some(listen), Some(router)) => {
                let bound = serve::bind_app(listen).await.map_err(Failure::config)?;
                let access = Access::new(AUTHORITY, tcp(listen), None);
                tracing::info!("ephemera serve: app listener on {listen}");
                Some(tokio::spawn(serve::serve(
                    bound,
                    router,
                    access,
                    wait(stopped.clone()),
                )))
            }
            _ => None,
        };
        let workload_api = match self.workload_api.service(source.clone()) {
            Some((socket, api)) => {
                let listener = socket.bind().map_err(Failure::config)?;
                tracing::info!("ephemera serve: SPIFFE Workload API on {socket}");
                Some(tokio::spawn(api.serve(listener, wait(stopped.clone()))))
            }
            None => None,
        };
        tracing::info!("ephemera serve: listening on {}", self.listen);
        tokio::spawn(watch::run(source));
        let envoy_server = tokio::spawn(serve::serve(
            envoy_bound,
            routers.envoy,
            envoy_access,
            wait(stopped),
        ));
        shutdown.await;
        let _ = stop.send(true);
        if let Some(app) = app_server {
            let _ = app.await;
        }
        if let Some(api) = workload_api {
            let _ = api.await;
        }
        let served = envoy_server.await;
        on_shutdown.run().await;
        match served {
            Ok(result) => result.map_err(Failure::config),
            Err(e) => Err(Failure::config(e)),
        }
    }

    /// Runs the service until SIGINT or SIGTERM.
    pub fn run(self) -> Result<(), Failure> {
        super::init_tracing();
        serve::private_umask();
        let runtime = super::runtime()?;
        runtime.block_on(async {
            let source = self.source()?;
            self.serve(source, super::shutdown_signal()).await
        })
    }
}
