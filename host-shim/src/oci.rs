//! The filter as an OCI image layout Istio's agent can pull, byte for byte
//! the same for the same module: fixed tar headers, no timestamps, one
//! annotation per object (so no map order to vary).
//!
//! - `compat`: one `application/vnd.oci.image.layer.v1.tar+gzip` layer
//!   holding `plugin.wasm`, under an OCI image config (architecture
//!   `wasm`, os `linux`: the module runs in any Linux Envoy, and tools that
//!   unpack images know no other OS); standard tools (skopeo, umoci,
//!   registries) handle it as any image.
//! - `oci`: the Wasm artifact form, exactly two layers: the runtime config
//!   (`application/vnd.module.wasm.config.v1+json`, also the manifest's
//!   config) and the raw module
//!   (`application/vnd.module.wasm.content.layer.v1+wasm`).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use oci_spec::image::{
    Arch, Descriptor, DescriptorBuilder, Digest, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder, Sha256Digest,
};
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// The media type of the module in the `oci` variant (Istio reads no other).
pub const WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The media type of the runtime config in the `oci` variant.
pub const WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
/// The file the `compat` layer holds.
pub const PLUGIN_FILE: &str = "plugin.wasm";
/// The annotation naming the variant (Wasm image specification).
const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";
/// The annotation naming a manifest's tag in an image layout's index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The root ids the module exports, for the runtime config.
const ROOT_IDS: [&str; 2] = ["ephemera_inbound", "ephemera_outbound"];

/// Which image form to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// One tar+gzip layer holding `plugin.wasm` (any registry, any tool).
    Compat,
    /// The Wasm artifact: the module and its runtime config as two layers.
    Oci,
}

/// Why an image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The module is not a WebAssembly binary.
    #[error("{0}: not a WebAssembly module (no \\0asm header)")]
    NotWasm(PathBuf),
    /// The output directory already holds something.
    #[error("{0}: exists and is not empty; give a new directory")]
    NotEmpty(PathBuf),
    /// The tag is not a valid OCI tag.
    #[error("tag {0:?}: must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}")]
    Tag(String),
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// An OCI object could not be built.
    #[error("oci: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// SHA-256 of the module, hex (`WasmPlugin.sha256`).
    pub module_sha256: String,
    /// The manifest's digest, `sha256:…`.
    pub manifest_digest: String,
    /// Total bytes of the blobs.
    pub size: u64,
}

/// A blob to write: its media type and bytes.
struct Blob {
    media_type: MediaType,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: MediaType, bytes: Vec<u8>) -> Self {
        Self { media_type, bytes }
    }

    fn digest(&self) -> Result<Digest, OciError> {
        Ok(sha256(&self.bytes).parse::<Sha256Digest>()?.into())
    }

    fn descriptor(&self, annotation: Option<(&str, &str)>) -> Result<Descriptor, OciError> {
        let mut builder = DescriptorBuilder::default()
            .media_type(self.media_type.clone())
            .digest(self.digest()?)
            .size(self.bytes.len() as u64);
        if let Some((k, v)) = annotation {
            builder = builder.annotations(one(k, v));
        }
        Ok(builder.build()?)
    }
}

/// One annotation (one entry, so its JSON has no order to vary).
fn one(key: &str, value: &str) -> HashMap<String, String> {
    HashMap::from([(key.to_owned(), value.to_owned())])
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// True for an OCI tag.
fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `plugin.wasm` in a tar with fixed metadata (root, 0444, time 0).
fn plugin_tar(module: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut header = tar::Header::new_ustar();
    header.set_path(PLUGIN_FILE)?;
    header.set_size(module.len() as u64);
    header.set_mode(0o444);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut tar = tar::Builder::new(Vec::new());
    tar.append(&header, module)?;
    tar.into_inner()
}

/// Gzip with no name and time 0, so the same input gives the same bytes.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// The config and layers of `variant` for `module`.
fn image(module: &[u8], variant: Variant) -> Result<(Blob, Vec<Blob>, &'static str), OciError> {
    let io = |e| OciError::Io(PathBuf::from(PLUGIN_FILE), e);
    match variant {
        Variant::Compat => {
            let tar = plugin_tar(module).map_err(io)?;
            let config = ImageConfigurationBuilder::default()
                .architecture(Arch::Wasm)
                .os(Os::Linux)
                .rootfs(
                    RootFsBuilder::default()
                        .typ("layers")
                        .diff_ids(vec![format!("sha256:{}", sha256(&tar))])
                        .build()?,
                )
                .build()?;
            let layer = Blob::new(MediaType::ImageLayerGzip, gzip(&tar).map_err(io)?);
            let config = Blob::new(MediaType::ImageConfig, config.to_string()?.into_bytes());
            Ok((config, vec![layer], "compat"))
        }
        Variant::Oci => {
            let runtime = json!({
                "type": "envoy_proxy",
                "abiVersions": ["v0.2.1"],
                "config": { "rootIds": ROOT_IDS },
            });
            let config = || {
                Blob::new(
                    MediaType::Other(WASM_CONFIG.into()),
                    runtime.to_string().into_bytes(),
                )
            };
            let module = Blob::new(MediaType::Other(WASM_LAYER.into()), module.to_vec());
            Ok((config(), vec![config(), module], "oci"))
        }
    }
}

/// Writes `module` as an image layout at `out` (a new or empty directory),
/// tagged `tag`.
pub fn build(
    module_path: &Path,
    variant: Variant,
    out: &Path,
    tag: &str,
) -> Result<Built, OciError> {
    if !valid_tag(tag) {
        return Err(OciError::Tag(tag.to_owned()));
    }
    let module = std::fs::read(module_path).map_err(|e| OciError::Io(module_path.to_owned(), e))?;
    if !module.starts_with(b"\0asm") {
        return Err(OciError::NotWasm(module_path.to_owned()));
    }
    let at = |p: &Path| {
        let p = p.to_owned();
        move |e| OciError::Io(p, e)
    };
    if std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(OciError::NotEmpty(out.to_owned()));
    }
    let (config, layers, name) = image(&module, variant)?;
    let layer_title =
        (variant == Variant::Oci).then_some(("org.opencontainers.image.title", PLUGIN_FILE));
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor(None)?)
        .layers(
            layers
                .iter()
                .map(|l| {
                    l.descriptor(
                        layer_title.filter(|_| l.media_type == MediaType::Other(WASM_LAYER.into())),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?,
        )
        .annotations(one(VARIANT_ANNOTATION, name))
        .build()?;
    let manifest = Blob::new(MediaType::ImageManifest, manifest.to_string()?.into_bytes());
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest.descriptor(Some((REF_NAME, tag)))?])
        .build()?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;

    let blobs = out.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(at(&blobs))?;
    let mut size = 0;
    for blob in std::iter::once(&config).chain(&layers).chain([&manifest]) {
        let path = blobs.join(sha256(&blob.bytes));
        std::fs::write(&path, &blob.bytes).map_err(at(&path))?;
        size += blob.bytes.len() as u64;
    }
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(at(&path))
    };
    write("oci-layout", layout.to_string()?)?;
    write("index.json", index.to_string()?)?;
    Ok(Built {
        module_sha256: sha256(&module),
        manifest_digest: format!("sha256:{}", sha256(&manifest.bytes)),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_distribution_grammar() {
        for good in ["latest", "v1.2.3", "_x", "a-b_c.d"] {
            assert!(valid_tag(good), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn the_plugin_tar_has_fixed_metadata() {
        let tar = plugin_tar(b"\0asm").unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        let header = entry.header();
        assert_eq!(header.path().unwrap().to_str(), Some(PLUGIN_FILE));
        assert_eq!(header.mtime().unwrap(), 0);
        assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
        assert_eq!(plugin_tar(b"\0asm").unwrap(), tar);
    }
}
