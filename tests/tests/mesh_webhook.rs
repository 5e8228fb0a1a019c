//! `ephemera webhook` as a real HTTPS server, spoken to by curl with real
//! AdmissionReviews: its patch, applied with `json-patch`, gives exactly
//! what `ephemera inject` gives for the same Pod; an injected Pod gets no
//! patch; unsafe Pods are denied; malformed reviews get 400.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use ephemera_tests::k8s::validate;
use ephemera_tests::net::{free_port, wait_until};
use ephemera_tests::procs::Proc;
use ephemera_tests::tls::TestCa;
use ephemera_tests::{ephemera, ephemera_bin, repo_root, run};
use serde_json::{Value, json};

const SHIM_IMAGE: &str = "registry.example.com/ephemera:0.1.0";

struct Webhook {
    _proc: Proc,
    port: u16,
    ca: std::path::PathBuf,
}

fn webhook(dir: &Path) -> Webhook {
    let ca = TestCa::new(dir, "webhook");
    let (cert, key) = ca.server_cert();
    let port = free_port();
    let proc = Proc::spawn(
        "webhook",
        dir,
        Command::new(ephemera_bin())
            .arg("webhook")
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--image",
                SHIM_IMAGE,
            ]),
    );
    wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .expect("webhook up");
    Webhook {
        _proc: proc,
        port,
        ca: ca.cert,
    }
}

impl Webhook {
    /// POSTs `body` with `content_type` through curl: (status, body).
    fn post(&self, body: &str, content_type: &str, extra: &[&str]) -> (u16, String) {
        let r = run(Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
            .arg(&self.ca)
            .args([
                "-H",
                &format!("content-type: {content_type}"),
                "--data-binary",
                body,
            ])
            .args(extra)
            .arg(format!("https://127.0.0.1:{}/mutate", self.port)));
        let (text, status) = r.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (
            status.trim().parse().unwrap_or(0),
            format!("{text}{}", r.stderr),
        )
    }

    fn review(&self, pod: &Value, uid: &str) -> Value {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "dryRun": false,
            },
        });
        let (status, body) = self.post(&review.to_string(), "application/json", &[]);
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["uid"], uid, "the request's uid");
        answer["response"].clone()
    }
}

/// The Pods of the inject corpus: each template as a Pod, and the bare Pods.
fn pods() -> Vec<Value> {
    let mut pods = Vec::new();
    for file in ["deployment.yaml", "cronjob.yaml", "pod-opted-out.yaml"] {
        let text =
            std::fs::read_to_string(repo_root().join("tests/data/inject").join(file)).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let object: Value = serde::Deserialize::deserialize(doc).unwrap();
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let template = match object["kind"].as_str() {
                Some("Pod") => object.clone(),
                Some("Deployment") => object["spec"]["template"].clone(),
                Some("CronJob") => object["spec"]["jobTemplate"]["spec"]["template"].clone(),
                _ => continue,
            };
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"], "spec": template["spec"]});
            if pod["metadata"].is_null() {
                pod["metadata"] = json!({});
            }
            pod["metadata"]["name"] = json!(name);
            pods.push(pod);
        }
    }
    pods
}

/// `ephemera inject` on one Pod, as JSON.
fn injected(dir: &Path, pod: &Value) -> Value {
    let path = dir.join("pod.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(pod).unwrap()).unwrap();
    let out = ephemera(
        &[
            "inject",
            "-f",
            path.to_str().unwrap(),
            "--image",
            SHIM_IMAGE,
        ],
        &[],
    );
    serde_yaml_ng::from_str(out.ok()).unwrap()
}

fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let encoded = response["patch"].as_str()?;
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

#[test]
fn the_webhooks_patch_gives_what_inject_gives_and_an_injected_pod_gets_none() {
    let dir = tempfile::tempdir().unwrap();
    let hook = webhook(dir.path());
    let mut patched_any = 0;
    for (i, pod) in pods().into_iter().enumerate() {
        let response = hook.review(&pod, &format!("uid-{i}"));
        assert_eq!(response["allowed"], true, "{response}");
        let expected = injected(dir.path(), &pod);
        let Some(patch) = patch_of(&response) else {
            assert_eq!(expected, pod, "no patch: inject leaves it alone too");
            continue;
        };
        patched_any += 1;
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_eq!(patched, expected, "{}", pod["metadata"]["name"]);
        // A second review of the patched Pod changes nothing.
        let again = hook.review(&patched, &format!("again-{i}"));
        assert_eq!(again["allowed"], true);
        assert!(again.get("patch").is_none_or(Value::is_null), "{again}");
    }
    assert!(patched_any >= 2, "the corpus has Pods to inject");
}

#[test]
fn unsafe_pods_are_denied_with_the_reason_and_bad_requests_get_400() {
    let dir = tempfile::tempdir().unwrap();
    let hook = webhook(dir.path());
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent"},
        "spec": {"hostNetwork": true, "containers": [{"name": "a", "image": "example/a:1"}]}});
    let response = hook.review(&pod, "deny-1");
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("hostNetwork: true"),
        "{response}"
    );
    for (body, content_type, status) in [
        ("not json", "application/json", 400),
        ("{}", "application/json", 400),
        (
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "application/json",
            400,
        ),
        ("{}", "text/plain", 415),
    ] {
        let (got, text) = hook.post(body, content_type, &[]);
        assert_eq!(got, status, "{body}: {text}");
    }
    // TLS 1.2 at least.
    let (status, text) = hook.post("{}", "application/json", &["--tls-max", "1.1"]);
    assert_eq!(status, 0, "TLS 1.1 refused: {text}");
}

#[test]
fn mesh_render_prints_a_valid_webhook_configuration_that_spares_its_own_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "render");
    let rendered = ephemera(
        &[
            "mesh",
            "render",
            "--name",
            "orders",
            "--image",
            "r.example/e:1",
            "--webhook-service",
            "ephemera-system/ephemera-webhook",
            "--webhook-ca",
            ca.cert.to_str().unwrap(),
        ],
        &[],
    );
    let text = rendered.ok().to_owned();
    let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let config = objects
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    let hook = &config["webhooks"][0];
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["failurePolicy"], "Fail");
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(
        hook["namespaceSelector"]["matchExpressions"][1],
        json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["ephemera-system"]})
    );
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(hook["clientConfig"]["caBundle"].as_str().unwrap())
        .unwrap();
    assert_eq!(bundle, std::fs::read(&ca.cert).unwrap());
    let checked = validate(&text);
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);
}
