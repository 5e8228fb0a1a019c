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
        let objects = mesh::render(&workload, mesh, image.as_ref(), traffic_extension)
            .map_err(Failure::config)?;
        for object in objects {
            let text = serde_yaml_ng::to_string(&object).map_err(Failure::config)?;
            print!("---\n{text}");
        }
        Ok(())
    }
}
