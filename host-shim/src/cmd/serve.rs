//! `ephemera serve`: the shim's identity service for the filter.

use std::sync::Arc;

use clap::Args;
use ephemera_core::filter::workload_identity::BundleFormatName;

use super::Failure;
use crate::identity_files::IdentityPaths;
use crate::identity_source::IdentitySource;
use crate::ipt::{IptConfig, Transactions};
use crate::serve::{self, Listen};
use crate::watch;

/// Options of `ephemera serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen: HOST:PORT (loopback) or unix:PATH.
    #[arg(long, default_value = "127.0.0.1:15080")]
    pub listen: Listen,
    /// Read the bundle as a standard SPIFFE JWKS (central issuer).
    #[arg(long)]
    pub central_issuer: bool,
    /// Identity-Per-Transaction configuration (ledger, brokers, policy):
    /// enables `POST /v1/transactions`.
    #[arg(long)]
    pub ipt_config: Option<std::path::PathBuf>,
    /// Secrets configuration (stores, refs, policies, principals): enables
    /// `POST /v1/secrets/resolve` for this workload's own identity.
    #[arg(long)]
    pub secrets_config: Option<std::path::PathBuf>,
}

impl ServeArgs {
    /// The identity source these options describe (files from the environment).
    pub fn source(&self) -> Result<Arc<IdentitySource>, Failure> {
        let paths = IdentityPaths::from_env().map_err(Failure::config)?;
        let format = if self.central_issuer {
            BundleFormatName::SpiffeJwks
        } else {
            BundleFormatName::Spiffile
        };
        let source = Arc::new(IdentitySource::new(paths, format));
        if let Err(e) = source.reload() {
            tracing::error!("no identity yet (serving 503 until the files are valid): {e}");
        }
        Ok(source)
    }

    /// The shim's routes: identity, plus transactions when configured (the
    /// reaper starts with them). Must run inside the runtime.
    pub fn router(&self, source: Arc<IdentitySource>) -> Result<axum::Router, Failure> {
        let mut router = serve::router(source.clone());
        if let Some(path) = &self.secrets_config {
            let config = super::secrets::load(path)?;
            let service = crate::secrets_api::SecretsService::new(config, source.clone())
                .map_err(Failure::config)?;
            let service = Arc::new(service);
            router = router.merge(service.routes());
        }
        let Some(path) = &self.ipt_config else {
            return Ok(router);
        };
        let config = IptConfig::load(path).map_err(Failure::config)?;
        match Transactions::new(config, source) {
            Ok(service) => {
                let service = Arc::new(service);
                tokio::spawn(service.clone().run_reaper());
                Ok(router.merge(crate::ipt::api::routes(service)))
            }
            // The identity service stays up; transactions fail closed.
            Err(e) => {
                tracing::error!("transactions unavailable: {e}");
                Ok(router.merge(crate::ipt::api::unavailable(e)))
            }
        }
    }

    /// Runs the service until SIGINT or SIGTERM.
    pub fn run(self) -> Result<(), Failure> {
        super::init_tracing();
        let runtime = super::runtime()?;
        runtime.block_on(async {
            let source = self.source()?;
            let router = self.router(source.clone())?;
            let bound = serve::bind(&self.listen).await.map_err(Failure::config)?;
            tracing::info!("ephemera serve: listening on {}", self.listen);
            tokio::spawn(watch::run(source.clone()));
            serve::serve(bound, router, super::shutdown_signal())
                .await
                .map_err(Failure::config)
        })
    }
}
