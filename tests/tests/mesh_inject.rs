//! `ephemera inject` on a corpus of manifests (tests/data/inject), each
//! with its golden output: what it adds, where, and what it refuses. Every
//! output passes Kubernetes' schemas strictly, injecting twice changes
//! nothing, and the app's containers never get the socket or the identity.
//! `EPHEMERA_BLESS=1` rewrites the goldens.

use std::path::{Path, PathBuf};

use ephemera_tests::k8s::validate;
use ephemera_tests::{Run, ephemera, repo_root};
use serde_json::Value;

const SHIM_IMAGE: &str = "registry.example.com/ephemera:0.1.0";
const PLUGIN_IMAGE: &str = "registry.example.com/ephemera-filter:0.1.0";

fn corpus() -> PathBuf {
    repo_root().join("tests/data/inject")
}

fn inject(input: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "inject",
        "-f",
        input.to_str().unwrap(),
        "--image",
        SHIM_IMAGE,
    ];
    args.extend_from_slice(extra);
    ephemera(&args, &[])
}

/// Compares `actual` with the golden file, or writes it when blessing.
fn golden(name: &str, actual: &str) {
    let path = corpus().join(name);
    if std::env::var_os("EPHEMERA_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (EPHEMERA_BLESS=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden output");
}

fn objects(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The pod spec of an object, if it has a template.
fn pod_spec(object: &Value) -> Option<&Value> {
    match object["kind"].as_str()? {
        "Pod" => Some(&object["spec"]),
        "CronJob" => Some(&object["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        "Deployment" | "StatefulSet" | "DaemonSet" => Some(&object["spec"]["template"]["spec"]),
        _ => None,
    }
}

fn mounts(container: &Value) -> Vec<&str> {
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .collect()
}

/// The boundaries of an injected pod.
fn check_boundaries(text: &str) {
    for object in objects(text) {
        let Some(spec) = pod_spec(&object) else {
            continue;
        };
        let containers = spec["containers"].as_array().unwrap();
        let init = spec["initContainers"].as_array().into_iter().flatten();
        for container in containers.iter().chain(init) {
            let name = container["name"].as_str().unwrap();
            let mounted = mounts(container);
            match name {
                "ephemera-shim" => {
                    assert!(
                        mounted.contains(&"ephemera-identity")
                            && mounted.contains(&"ephemera-socket")
                    );
                    let security = &container["securityContext"];
                    assert_eq!(security["runAsNonRoot"], true);
                    assert_eq!(security["readOnlyRootFilesystem"], true);
                    assert_eq!(security["allowPrivilegeEscalation"], false);
                    assert_eq!(security["capabilities"]["drop"][0], "ALL");
                    let args: Vec<&str> = container["args"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(Value::as_str)
                        .collect();
                    if args.contains(&"--ipt-config") {
                        let ledger = spec["volumes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|v| v["name"] == "ephemera-ledger")
                            .unwrap();
                        assert!(
                            ledger["persistentVolumeClaim"]["claimName"].is_string(),
                            "the ledger is durable"
                        );
                        assert!(mounted.contains(&"ephemera-ledger"));
                    }
                }
                "ephemera-envoy" | "ephemera-ledger-key" => {
                    assert!(!mounted.contains(&"ephemera-identity"), "{name}")
                }
                _ => assert!(
                    !mounted.iter().any(|m| m.starts_with("ephemera-")),
                    "the app's container {name} mounts {mounted:?}"
                ),
            }
        }
        if containers.iter().any(|c| c["name"] == "ephemera-shim") {
            let volumes = spec["volumes"].as_array().unwrap();
            let identity = volumes
                .iter()
                .find(|v| v["name"] == "ephemera-identity")
                .unwrap();
            assert_eq!(identity["secret"]["defaultMode"], 0o440);
            assert!(spec["securityContext"]["fsGroup"].is_u64());
        }
    }
}

#[test]
fn the_corpus_injects_as_its_golden_outputs_say() {
    let ipt = [
        "--ipt-config-map",
        "vault-reader-ipt",
        "--ledger-key-secret",
        "vault-reader-ledger-key",
        "--ledger-claim",
        "vault-reader-ledger",
    ];
    let cases: [(&str, &[&str], &str); 5] = [
        (
            "ipt-deployment.yaml",
            &ipt,
            "ipt-deployment.istio.golden.yaml",
        ),
        ("deployment.yaml", &[], "deployment.istio.golden.yaml"),
        (
            "deployment.yaml",
            &[
                "--mesh",
                "none",
                "--plugin-image",
                PLUGIN_IMAGE,
                "--rewrite-services",
            ],
            "deployment.none.golden.yaml",
        ),
        ("cronjob.yaml", &[], "cronjob.istio.golden.yaml"),
        ("pod-opted-out.yaml", &[], "pod-opted-out.istio.golden.yaml"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (input, extra, output) in cases {
        let injected = inject(&corpus().join(input), extra);
        let text = injected.ok().to_owned() + "\n";
        golden(output, &text);
        check_boundaries(&text);

        let checked = validate(&text);
        assert_eq!(
            checked.code, 0,
            "{output}: {}{}",
            checked.stdout, checked.stderr
        );

        // Injecting the output again changes nothing.
        let again_in = dir.path().join(output);
        std::fs::write(&again_in, &text).unwrap();
        assert_eq!(
            inject(&again_in, extra).ok().to_owned() + "\n",
            text,
            "{output}: idempotent"
        );
    }
}

#[test]
fn istio_gets_the_socket_through_its_mount_annotation_merged_with_the_pods_own() {
    let text = inject(&corpus().join("deployment.yaml"), &[])
        .ok()
        .to_owned();
    let objects = objects(&text);
    let annotations = &objects[0]["spec"]["template"]["metadata"]["annotations"];
    let mounts: Value = serde_json::from_str(
        annotations["sidecar.istio.io/userVolumeMount"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        mounts["certs"]["mountPath"], "/etc/certs",
        "the pod's own mount is kept"
    );
    assert_eq!(mounts["ephemera-socket"]["mountPath"], "/var/run/ephemera");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    // The Service and the ConfigMap pass through unchanged with a mesh.
    assert_eq!(objects[1]["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(objects[2]["data"]["mode"], "strict");
    // The identity follows the service account.
    let volumes = objects[0]["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let identity = volumes
        .iter()
        .find(|v| v["name"] == "ephemera-identity")
        .unwrap();
    assert_eq!(identity["secret"]["secretName"], "ephemera-orders");
}

#[test]
fn pods_whose_boundaries_cannot_hold_or_whose_names_clash_are_refused_by_name() {
    for (input, says) in [
        (
            "daemonset-host-network.yaml",
            "DaemonSet/node-agent: hostNetwork: true",
        ),
        (
            "statefulset-taken-volume.yaml",
            "StatefulSet/ledger-db: a volume named \"ephemera-socket\" exists",
        ),
    ] {
        let refused = inject(&corpus().join(input), &[]);
        assert_eq!(refused.code, 2, "{input}: {}", refused.stdout);
        assert!(refused.stderr.contains(says), "{input}: {}", refused.stderr);
        assert!(refused.stdout.is_empty(), "nothing is written");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: Deployment\nspec: [1, 2\n").unwrap();
    let refused = inject(&bad, &[]);
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("document 1"), "{}", refused.stderr);

    // Values that would not survive in a pod spec are named.
    let spaced = ephemera(
        &[
            "inject",
            "-f",
            corpus().join("cronjob.yaml").to_str().unwrap(),
            "--image",
            "bad image\"",
        ],
        &[],
    );
    assert_eq!(spaced.code, 2);
    assert!(
        spaced.stderr.contains("--image \"bad image"),
        "{}",
        spaced.stderr
    );

    // Transactions without a durable ledger volume are refused.
    let partial = inject(
        &corpus().join("ipt-deployment.yaml"),
        &[
            "--ipt-config-map",
            "vault-reader-ipt",
            "--ledger-key-secret",
            "k",
        ],
    );
    assert_eq!(partial.code, 2);
    assert!(
        partial.stderr.contains("--ledger-claim"),
        "{}",
        partial.stderr
    );
}
