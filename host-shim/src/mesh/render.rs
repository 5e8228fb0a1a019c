//! The Kubernetes objects that put ephemera into one workload's proxy.
//!
//! - Istio: a `WasmPlugin` (or, asked for, a `TrafficExtension`) per
//!   direction, and the `EnvoyFilter` that adds the `ephemera_shim`
//!   cluster — a pipe on the socket volume the shim and the proxy share;
//!   Istio creates no cluster for a plugin's own calls.
//! - No mesh: a ConfigMap holding the Envoy bootstrap for a pod that runs
//!   Envoy itself.
//!
//! No object carries a secret: the shim is reached over a Unix socket, so
//! the filter configuration holds no per-start secret (Istio's admin port,
//! 127.0.0.1:15000 in the pod, shows every plugin configuration to the app).

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::serve::Listen;
use crate::sidecar::bootstrap::{self, BootstrapError, Params};
use crate::sidecar::config::SidecarConfig;

/// The directory of the socket volume, in the shim's and the proxy's
/// containers (never the app's).
pub const SOCKET_DIR: &str = "/var/run/ephemera";
/// The shim's socket, in a directory the shim creates in that volume
/// (0750, group: the pod's `fsGroup`, which the proxy's user also has).
pub const SHIM_SOCKET: &str = "/var/run/ephemera/shim/shim.sock";
/// Envoy's admin pipe in that volume (no mesh).
pub const ADMIN_SOCKET: &str = "/var/run/ephemera/envoy-admin.sock";
/// Where the module is mounted in a pod that runs Envoy itself.
pub const POD_WASM: &str = "/var/lib/ephemera/plugin/plugin.wasm";
/// The Envoy cluster the filter calls the shim through.
const SHIM_CLUSTER: &str = "ephemera_shim";

/// Which proxy carries the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mesh {
    /// Istio's sidecar proxy.
    Istio,
    /// An Envoy the pod runs itself.
    None,
}

/// Why objects cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Istio pulls the module from a registry: an image is needed.
    #[error("--mesh istio needs --image (the reference `ephemera oci build` was pushed to)")]
    NoImage,
    /// The digest is not 64 lower-case hex digits.
    #[error(
        "--sha256 must be 64 lower-case hex digits (the module sha256 `ephemera oci build` prints)"
    )]
    Sha256,
    /// A name or label that Kubernetes would refuse.
    #[error("{what} {value:?}: {rule}")]
    Name {
        /// Which value.
        what: &'static str,
        /// The value.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The bootstrap for a pod without a mesh.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
}

/// What to render for one workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The workload's name (objects are named after it).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The pod labels that select it.
    pub labels: BTreeMap<String, String>,
    /// The filter's rules and destinations.
    pub config: SidecarConfig,
    /// The app's port in the pod (no mesh: Envoy forwards to it).
    pub app_port: u16,
    /// Envoy's inbound port (no mesh: named `ephemera-inbound`).
    pub inbound_port: u16,
}

/// Istio's view of the module: where to pull it and its digest.
#[derive(Debug, Clone)]
pub struct Image {
    /// The image reference (`oci://` is added when there is no scheme).
    pub reference: String,
    /// The module's SHA-256, hex.
    pub sha256: Option<String>,
}

/// A DNS-1123 label (names, namespaces): at most 63 characters.
fn check_label(what: &'static str, value: &str) -> Result<(), RenderError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    ok.then_some(()).ok_or_else(|| RenderError::Name {
        what,
        value: value.to_owned(),
        rule: "must be a DNS-1123 label (a-z, 0-9, '-', at most 63)",
    })
}

impl Workload {
    fn metadata(&self, suffix: &str) -> Value {
        json!({
            "name": format!("{}-{suffix}", self.name),
            "namespace": self.namespace,
            "labels": { "app.kubernetes.io/managed-by": "ephemera" },
        })
    }

    fn check(&self) -> Result<(), RenderError> {
        check_label("name", &self.name)?;
        check_label("namespace", &self.namespace)?;
        // The longest suffix below must still fit a label.
        check_label("name", &format!("{}-ephemera-outbound", self.name))
    }

    /// The directions the workload needs: inbound always; outbound when it
    /// calls anything ephemera maps (an outbound filter with nothing mapped
    /// would refuse every call the app makes).
    fn directions(&self) -> Vec<(&'static str, &'static str, Value)> {
        let mut directions = vec![("inbound", "SERVER", self.config.inbound_plugin())];
        let out = &self.config.outbound;
        if !out.destinations.is_empty() || !out.egress.is_empty() {
            directions.push(("outbound", "CLIENT", self.config.outbound_plugin()));
        }
        directions
    }
}

/// The objects for `workload` in `mesh`.
pub fn render(
    workload: &Workload,
    mesh: Mesh,
    image: Option<&Image>,
    traffic_extension: bool,
) -> Result<Vec<Value>, RenderError> {
    workload.check()?;
    match mesh {
        Mesh::Istio => istio(
            workload,
            image.ok_or(RenderError::NoImage)?,
            traffic_extension,
        ),
        Mesh::None => plain(workload).map(|config_map| vec![config_map]),
    }
}

fn istio(
    workload: &Workload,
    image: &Image,
    traffic_extension: bool,
) -> Result<Vec<Value>, RenderError> {
    if let Some(sha) = &image.sha256
        && !(sha.len() == 64
            && sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(RenderError::Sha256);
    }
    let url = if image.reference.contains("://") {
        image.reference.clone()
    } else {
        format!("oci://{}", image.reference)
    };
    let selector = json!({ "matchLabels": workload.labels });
    let mut objects = Vec::new();
    for (direction, mode, plugin_config) in workload.directions() {
        let mut wasm = json!({
            "url": url,
            "imagePullPolicy": "IfNotPresent",
            "pluginName": format!("ephemera_{direction}"),
            "failStrategy": "FAIL_CLOSE",
            "pluginConfig": plugin_config,
        });
        if let Some(sha) = &image.sha256 {
            wasm["sha256"] = json!(sha);
        }
        let metadata = workload.metadata(&format!("ephemera-{direction}"));
        let common = json!({
            "selector": selector,
            "phase": "AUTHN",
            "match": [{ "mode": mode }],
        });
        // A TrafficExtension nests the Wasm fields under `wasm`; a
        // WasmPlugin has them beside the selection.
        let (kind, spec) = if traffic_extension {
            let mut spec = common;
            spec["wasm"] = wasm;
            ("TrafficExtension", spec)
        } else {
            let mut spec = wasm;
            for (k, v) in common.as_object().into_iter().flatten() {
                spec[k] = v.clone();
            }
            ("WasmPlugin", spec)
        };
        objects.push(json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": kind,
            "metadata": metadata,
            "spec": spec,
        }));
    }
    objects.push(json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": workload.metadata("ephemera-shim"),
        "spec": {
            "workloadSelector": { "labels": workload.labels },
            "configPatches": [{
                "applyTo": "CLUSTER",
                "match": { "context": "SIDECAR_OUTBOUND" },
                "patch": { "operation": "ADD", "value": shim_cluster() },
            }],
        },
    }));
    Ok(objects)
}

/// The cluster the filter reaches the shim through: the shim's socket.
pub fn shim_cluster() -> Value {
    json!({
        "name": SHIM_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": SHIM_CLUSTER,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": {
                "address": { "pipe": { "path": SHIM_SOCKET } },
            } }] }],
        },
    })
}

/// The ConfigMap with the bootstrap of an Envoy the pod runs itself.
fn plain(workload: &Workload) -> Result<Value, RenderError> {
    let params = Params {
        app: format!("127.0.0.1:{}", workload.app_port),
        inbound: format!("0.0.0.0:{}", workload.inbound_port),
        outbound: workload
            .directions()
            .iter()
            .any(|(d, _, _)| *d == "outbound")
            .then(|| "127.0.0.1:15001".into()),
        admin: Listen::Unix(PathBuf::from(ADMIN_SOCKET)),
        shim: Listen::Unix(PathBuf::from(SHIM_SOCKET)),
        shim_secret: None,
        wasm: PathBuf::from(POD_WASM),
        config: workload.config.clone(),
    };
    let bootstrap = bootstrap::render(&params)?;
    Ok(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": workload.metadata("ephemera-envoy"),
        "data": { "envoy.json": serde_json::to_string_pretty(&bootstrap).unwrap_or_default() },
    }))
}

/// Where the API server reaches `ephemera webhook`.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// The webhook's Service.
    pub service: String,
    /// Its namespace, excluded from injection: with `failurePolicy: Fail`
    /// the webhook's own pods could otherwise not start without it.
    pub namespace: String,
    /// The CA certificates (PEM) that sign the webhook's certificate.
    pub ca_pem: Vec<u8>,
}

/// The `MutatingWebhookConfiguration` sending Pod creations in namespaces
/// labelled `ephemera.dev/inject: enabled` to the webhook.
pub fn webhook_configuration(target: &WebhookTarget) -> Result<Value, RenderError> {
    check_label("webhook service", &target.service)?;
    check_label("webhook namespace", &target.namespace)?;
    Ok(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": "ephemera-inject",
            "labels": { "app.kubernetes.io/managed-by": "ephemera" },
        },
        "webhooks": [{
            "name": "inject.ephemera.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded",
            "clientConfig": {
                "service": {
                    "name": target.service,
                    "namespace": target.namespace,
                    "path": super::webhook::PATH,
                    "port": 443,
                },
                "caBundle": STANDARD.encode(&target.ca_pem),
            },
            "rules": [{
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }],
            "namespaceSelector": { "matchExpressions": [
                { "key": "ephemera.dev/inject", "operator": "In", "values": ["enabled"] },
                { "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [target.namespace] },
            ] },
            "objectSelector": { "matchExpressions": [
                { "key": "ephemera.dev/inject", "operator": "NotIn", "values": ["false"] },
            ] },
        }],
    }))
}
