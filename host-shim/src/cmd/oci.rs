//! `ephemera oci build`: the filter as an OCI image layout for Istio.

use std::path::PathBuf;

use clap::Subcommand;

use super::Failure;
use crate::oci::{self, Variant};

/// Packaging the filter.
#[derive(Debug, Subcommand)]
pub enum OciCommand {
    /// Write `ephemera_envoy.wasm` as an OCI image layout (deterministic:
    /// the same module gives the same digests). Push it with
    /// `skopeo copy oci:DIR:TAG docker://REGISTRY/REPO:TAG`.
    Build {
        /// The filter module.
        #[arg(
            long,
            default_value = "target/wasm32-wasip1/release/ephemera_envoy.wasm"
        )]
        wasm: PathBuf,
        /// `compat` (a tar+gzip layer holding plugin.wasm) or `oci` (the
        /// Wasm artifact media types).
        #[arg(long, value_enum, default_value_t = Variant::Compat)]
        variant: Variant,
        /// The tag recorded in the layout's index.
        #[arg(long, default_value = "latest")]
        tag: String,
        /// A new (or empty) directory for the layout.
        #[arg(long)]
        out: PathBuf,
    },
}

impl OciCommand {
    /// Runs the command.
    pub fn run(self) -> Result<(), Failure> {
        match self {
            Self::Build {
                wasm,
                variant,
                tag,
                out,
            } => {
                let built = oci::build(&wasm, variant, &out, &tag).map_err(Failure::config)?;
                println!(
                    "layout:        {} ({variant:?}, {} bytes of blobs)",
                    out.display(),
                    built.size
                );
                println!("manifest:      {}", built.manifest_digest);
                println!(
                    "module sha256: {}  (WasmPlugin spec.sha256)",
                    built.module_sha256
                );
                println!(
                    "push:          skopeo copy oci:{}:{tag} docker://REGISTRY/ephemera:{tag}",
                    out.display()
                );
                Ok(())
            }
        }
    }
}
