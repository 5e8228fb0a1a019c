//! The filter as an OCI image: what `ephemera oci build` writes is read by
//! tools nobody here wrote (skopeo, umoci, oci-image-tool, a real
//! docker-registry), byte for byte, in both variants.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ephemera_tests::net::{free_port, wait_until};
use ephemera_tests::procs::Proc;
use ephemera_tests::workload::wasm;
use ephemera_tests::{Run, ephemera, run};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `ephemera oci build` into `out`.
fn build(variant: &str, out: &Path) -> Run {
    ephemera(
        &[
            "oci",
            "build",
            "--wasm",
            &wasm().to_string_lossy(),
            "--variant",
            variant,
            "--out",
            &out.to_string_lossy(),
        ],
        &[],
    )
}

/// A tool from the test command's Debian packages.
fn tool(name: &str, args: &[&str]) -> Run {
    run(Command::new(name).args(args))
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// The layout's manifest: its bytes and JSON.
fn manifest(layout: &Path) -> (Vec<u8>, Value) {
    let index = json(&layout.join("index.json"));
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let bytes = blob(layout, index["manifests"][0]["digest"].as_str().unwrap());
    let value = serde_json::from_slice(&bytes).unwrap();
    (bytes, value)
}

fn media_types(manifest: &Value) -> (String, Vec<String>) {
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_owned())
        .collect();
    (
        manifest["config"]["mediaType"].as_str().unwrap().to_owned(),
        layers,
    )
}

#[test]
fn the_same_module_gives_the_same_digests_and_the_module_hash_for_the_wasmplugin() {
    let dir = tempfile::tempdir().unwrap();
    let module = std::fs::read(wasm()).unwrap();
    for variant in ["compat", "oci"] {
        let (a, b) = (
            dir.path().join(format!("{variant}-a")),
            dir.path().join(format!("{variant}-b")),
        );
        let printed = build(variant, &a);
        build(variant, &b).ok();
        assert!(
            printed
                .ok()
                .contains(&format!("module sha256: {}", sha256(&module))),
            "{}",
            printed.stdout
        );
        let (bytes_a, _) = manifest(&a);
        let (bytes_b, _) = manifest(&b);
        assert_eq!(bytes_a, bytes_b, "{variant}: same manifest");
        assert!(
            printed
                .stdout
                .contains(&format!("manifest:      sha256:{}", sha256(&bytes_a)))
        );
        assert_eq!(
            std::fs::read(a.join("index.json")).unwrap(),
            std::fs::read(b.join("index.json")).unwrap()
        );
    }
}

#[test]
fn the_media_types_are_the_ones_istio_reads() {
    let dir = tempfile::tempdir().unwrap();
    let module = std::fs::read(wasm()).unwrap();

    let compat = dir.path().join("compat");
    build("compat", &compat).ok();
    let (_, m) = manifest(&compat);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["annotations"]["module.wasm.image/variant"], "compat");
    assert_eq!(
        media_types(&m),
        (
            "application/vnd.oci.image.config.v1+json".to_owned(),
            vec!["application/vnd.oci.image.layer.v1.tar+gzip".to_owned()]
        )
    );

    let oci = dir.path().join("oci");
    build("oci", &oci).ok();
    let (_, m) = manifest(&oci);
    assert_eq!(m["annotations"]["module.wasm.image/variant"], "oci");
    assert_eq!(
        media_types(&m),
        (
            "application/vnd.module.wasm.config.v1+json".to_owned(),
            vec![
                "application/vnd.module.wasm.config.v1+json".to_owned(),
                "application/vnd.module.wasm.content.layer.v1+wasm".to_owned(),
            ]
        )
    );
    // The module layer is the module itself, uncompressed.
    assert_eq!(
        blob(&oci, m["layers"][1]["digest"].as_str().unwrap()),
        module
    );
    let config: Value =
        serde_json::from_slice(&blob(&oci, m["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["type"], "envoy_proxy");
}

#[test]
fn skopeo_umoci_and_oci_image_tool_read_the_compat_layout() {
    let dir = tempfile::tempdir().unwrap();
    let module = std::fs::read(wasm()).unwrap();
    let layout = dir.path().join("compat");
    build("compat", &layout).ok();
    let image = format!("{}:latest", layout.display());

    let validate = |layout: &Path| {
        let layout = layout.to_string_lossy();
        let args = [
            "validate",
            "--type",
            "image",
            "--ref",
            "name=latest",
            &layout,
        ];
        tool("oci-image-tool", &args)
    };
    let validated = validate(&layout);
    assert_eq!(
        validated.code, 0,
        "{}{}",
        validated.stdout, validated.stderr
    );
    assert!(
        validated.stdout.contains("Validation succeeded"),
        "{}",
        validated.stdout
    );
    // The validator does look: a layer that is not what its digest says fails.
    let damaged = dir.path().join("damaged");
    build("compat", &damaged).ok();
    let (_, m) = manifest(&damaged);
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let path = damaged
        .join("blobs/sha256")
        .join(layer.strip_prefix("sha256:").unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    assert_ne!(
        validate(&damaged).code,
        0,
        "a damaged layer fails validation"
    );

    let bundle = dir.path().join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &image,
            &bundle.to_string_lossy(),
        ],
    )
    .ok();
    assert_eq!(
        std::fs::read(bundle.join("rootfs/plugin.wasm")).unwrap(),
        module,
        "umoci unpacks the very module"
    );

    // A copy keeps every digest.
    let copy = dir.path().join("copy");
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci:{image}"),
            &format!("oci:{}:latest", copy.display()),
        ],
    )
    .ok();
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:latest", copy.display()),
        ],
    );
    assert_eq!(raw.ok().as_bytes(), manifest(&layout).0.as_slice());
}

/// A real registry on 127.0.0.1, storing under `dir`.
fn registry(dir: &Path) -> (Proc, String) {
    let port = free_port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{ level: warn }}\nstorage: {{ filesystem: {{ rootdirectory: {} }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\n",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    let proc = Proc::spawn(
        "registry",
        dir,
        Command::new(registry_bin()).arg("serve").arg(&config),
    );
    let address = format!("127.0.0.1:{port}");
    wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(&address).is_ok()
    })
    .expect("registry up");
    (proc, address)
}

fn registry_bin() -> PathBuf {
    ["/usr/bin/docker-registry", "/usr/sbin/docker-registry"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("docker-registry is installed by tests/setup.sh")
}

#[test]
fn both_variants_round_trip_through_a_real_registry() {
    let dir = tempfile::tempdir().unwrap();
    let module = std::fs::read(wasm()).unwrap();
    let (_registry, address) = registry(dir.path());
    for variant in ["compat", "oci"] {
        let layout = dir.path().join(variant);
        build(variant, &layout).ok();
        let remote = format!("docker://{address}/ephemera:{variant}");
        tool(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                &format!("oci:{}:latest", layout.display()),
                &remote,
            ],
        )
        .ok();
        let raw = tool(
            "skopeo",
            &["inspect", "--raw", "--tls-verify=false", &remote],
        );
        let (bytes, m) = manifest(&layout);
        assert_eq!(
            raw.ok().as_bytes(),
            bytes.as_slice(),
            "{variant}: the registry serves our manifest"
        );
        let pulled = dir.path().join(format!("{variant}-pulled"));
        tool(
            "skopeo",
            &[
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                &remote,
                &format!("oci:{}:latest", pulled.display()),
            ],
        )
        .ok();
        let (_, back) = manifest(&pulled);
        assert_eq!(media_types(&back), media_types(&m));
        if variant == "oci" {
            assert_eq!(
                blob(&pulled, back["layers"][1]["digest"].as_str().unwrap()),
                module
            );
        }
    }
}

#[test]
fn a_file_that_is_not_wasm_or_a_used_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("plugin.wasm");
    std::fs::write(&text, "not a module").unwrap();
    let out = dir.path().join("out");
    let refused = ephemera(
        &[
            "oci",
            "build",
            "--wasm",
            &text.to_string_lossy(),
            "--out",
            &out.to_string_lossy(),
        ],
        &[],
    );
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("not a WebAssembly module"),
        "{}",
        refused.stderr
    );
    assert!(!out.exists(), "nothing written");

    build("compat", &out).ok();
    let again = build("compat", &out);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("exists and is not empty"),
        "{}",
        again.stderr
    );
}
