//! `ephemera mesh render`: the Kubernetes objects for one workload.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;

use super::Failure;
use crate::mesh::{self, Image, Mesh, Workload};
use crate::sidecar::config::SidecarConfig;

/// Service-mesh integration.
#[derive(Debug, Subcommand)]
pub enum MeshCommand {
    /// Print the objects (YAML, one document each) that put the filter into
    /// one workload's proxy.
    Render {
        /// Sidecar configuration (YAML/JSON): inbound rules, outbound
        /// destinations.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The workload's name; objects are named after it.
        #[arg(long)]
        name: String,
        /// Its namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// A pod label selecting the workload, KEY=VALUE (repeatable;
        /// default app=NAME).
        #[arg(long = "label", value_parser = label)]
        labels: Vec<(String, String)>,
        /// `istio` (its sidecar proxy) or `none` (Envoy in the pod).
        #[arg(long, value_enum, default_value_t = Mesh::Istio)]
        mesh: Mesh,
        /// The image `ephemera oci build` was pushed to (Istio pulls it).
        #[arg(long)]
        image: Option<String>,
        /// The module's SHA-256, as `ephemera oci build` prints it.
        #[arg(long)]
        sha256: Option<String>,
        /// Render Istio's `TrafficExtension` instead of `WasmPlugin`.
        #[arg(long)]
        traffic_extension: bool,
        /// The app's port in the pod (no mesh).
        #[arg(long, default_value_t = 8080)]
        app_port: u16,
        /// Envoy's inbound port (no mesh).
        #[arg(long, default_value_t = 15006)]
        inbound_port: u16,
        /// Also render the MutatingWebhookConfiguration for `ephemera
        /// webhook` behind this Service (NAMESPACE/NAME).
        #[arg(long, requires = "webhook_ca")]
        webhook_service: Option<String>,
        /// The CA (PEM) that signs the webhook's certificate.
        #[arg(long, requires = "webhook_service")]
        webhook_ca: Option<PathBuf>,
    },
}

fn label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?}: expected KEY=VALUE"))
}

impl MeshCommand {
    /// Runs the command.
    pub fn run(self) -> Result<(), Failure> {
        let Self::Render {
            config,
            name,
            namespace,
            labels,
            mesh,
            image,
            sha256,
            traffic_extension,
            app_port,
            inbound_port,
            webhook_service,
            webhook_ca,
        } = self;
        let config = match &config {
            Some(path) => SidecarConfig::load(path).map_err(Failure::config)?,
            None => SidecarConfig::default(),
        };
        let labels: BTreeMap<String, String> = if labels.is_empty() {
            BTreeMap::from([("app".to_owned(), name.clone())])
        } else {
            labels.into_iter().collect()
        };
        let workload = Workload {
            name,
            namespace,
            labels,
            config,
            app_port,
            inbound_port,
        };
        let image = image.map(|reference| Image { reference, sha256 });
        let mut objects = mesh::render(&workload, mesh, image.as_ref(), traffic_extension)
            .map_err(Failure::config)?;
        if let (Some(service), Some(ca)) = (webhook_service, webhook_ca) {
            let (namespace, service) = service
                .split_once('/')
                .ok_or_else(|| Failure::config("--webhook-service is NAMESPACE/NAME"))?;
            let ca_pem = std::fs::read(&ca)
                .map_err(|e| Failure::config(format!("{}: {e}", ca.display())))?;
            let target = mesh::WebhookTarget {
                service: service.to_owned(),
                namespace: namespace.to_owned(),
                ca_pem,
            };
            objects.push(mesh::render::webhook_configuration(&target).map_err(Failure::config)?);
        }
        for object in objects {
            let text = serde_yaml_ng::to_string(&object).map_err(Failure::config)?;
            print!("---\n{text}");
        }
        Ok(())
    }
}

/// How pods are injected (`ephemera inject`, `ephemera webhook`).
#[derive(Debug, clap::Args)]
pub struct InjectOptions {
    /// `istio` (Istio adds its proxy later) or `none` (Envoy is added too).
    #[arg(long, value_enum, default_value_t = Mesh::Istio)]
    mesh: Mesh,
    /// The shim's image (one holding the `ephemera` binary).
    #[arg(long)]
    image: String,
    /// Envoy's image (no mesh).
    #[arg(long, default_value = "envoyproxy/envoy:v1.40.0")]
    envoy_image: String,
    /// The filter's image as `ephemera oci build --variant compat` wrote it
    /// (no mesh: mounted as an image volume); required with `--mesh none`.
    #[arg(long, required_if_eq("mesh", "none"))]
    plugin_image: Option<String>,
    /// Envoy's inbound port (no mesh).
    #[arg(long, default_value_t = 15006)]
    inbound_port: u16,
    /// Identity-Per-Transaction: the ConfigMap holding `ipt.yaml` (its
    /// paths under /etc/ephemera/ledger-key and /var/lib/ephemera/ledger).
    #[arg(long, requires_all = ["ledger_key_secret", "ledger_claim"])]
    ipt_config_map: Option<String>,
    /// The Secret holding the ledger's signing key.
    #[arg(long, requires = "ipt_config_map")]
    ledger_key_secret: Option<String>,
    /// The PersistentVolumeClaim the ledger is written to (with replicas:
    /// one claim each, e.g. a StatefulSet's volumeClaimTemplates name).
    #[arg(long, requires = "ipt_config_map")]
    ledger_claim: Option<String>,
}

impl InjectOptions {
    fn options(self, rewrite_services: bool) -> mesh::Options {
        mesh::Options {
            mesh: self.mesh,
            shim_image: self.image,
            envoy_image: self.envoy_image,
            plugin_image: self.plugin_image.unwrap_or_default(),
            inbound_port: self.inbound_port,
            rewrite_services,
            transactions: match (
                self.ipt_config_map,
                self.ledger_key_secret,
                self.ledger_claim,
            ) {
                (Some(config_map), Some(key_secret), Some(ledger_claim)) => {
                    Some(mesh::Transactions {
                        config_map,
                        key_secret,
                        ledger_claim,
                    })
                }
                _ => None,
            },
        }
    }
}

/// `ephemera inject`: adds the shim to every pod template of a manifest.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// The manifest (YAML, one or more documents); `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Where to write the result (default: stdout).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    #[command(flatten)]
    options: InjectOptions,
    /// No mesh: point the manifest's Services that select an injected pod
    /// at its `ephemera-inbound` port.
    #[arg(long)]
    rewrite_services: bool,
}

impl InjectArgs {
    /// Runs the command.
    pub fn run(self) -> Result<(), Failure> {
        let text = if self.file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(Failure::config)?
        } else {
            std::fs::read_to_string(&self.file)
                .map_err(|e| Failure::config(format!("{}: {e}", self.file.display())))?
        };
        let options = self.options.options(self.rewrite_services);
        let injected = mesh::inject(&text, &options).map_err(Failure::config)?;
        match &self.output {
            Some(path) => std::fs::write(path, injected)
                .map_err(|e| Failure::config(format!("{}: {e}", path.display()))),
            None => {
                print!("{injected}");
                Ok(())
            }
        }
    }
}

/// `ephemera webhook`: the same injection as a mutating admission webhook.
#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// The server certificate chain (PEM).
    #[arg(long)]
    tls_cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    #[arg(long)]
    tls_key: PathBuf,
    /// Where to listen, HOST:PORT.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: std::net::SocketAddr,
    #[command(flatten)]
    options: InjectOptions,
}

impl WebhookArgs {
    /// Serves until SIGINT or SIGTERM.
    pub fn run(self) -> Result<(), Failure> {
        super::init_tracing();
        let tls =
            mesh::webhook::tls_config(&self.tls_cert, &self.tls_key).map_err(Failure::config)?;
        let options = self.options.options(false);
        options.check().map_err(Failure::config)?;
        let router = mesh::webhook::router(options);
        super::runtime()?.block_on(async {
            let listener = tokio::net::TcpListener::bind(self.listen)
                .await
                .map_err(|e| Failure::config(format!("{}: {e}", self.listen)))?;
            tracing::info!("webhook on https://{}{}", self.listen, mesh::webhook::PATH);
            mesh::webhook::serve(listener, tls, router, super::shutdown_signal())
                .await
                .map_err(Failure::config)
        })
    }
}

/// `ephemera probe`: exits 0 when the shim at `--listen` is healthy.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Where the shim listens.
    #[arg(long, default_value = super::serve::DEFAULT_LISTEN)]
    listen: crate::serve::Listen,
}

impl ProbeArgs {
    /// Runs the probe: `GET /healthz`.
    pub fn run(self) -> Result<(), Failure> {
        let status = super::runtime()?
            .block_on(crate::sidecar::http_probe::get(&self.listen, "/healthz"))
            .map(|(status, _)| status);
        match status {
            Some(200) => Ok(()),
            Some(other) => Err(Failure::rejected(format!("shim answered {other}"))),
            None => Err(Failure::rejected("shim unreachable")),
        }
    }
}
