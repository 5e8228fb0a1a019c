//! `ephemera inject`: adds the shim (and, without a mesh, Envoy) to every
//! pod template of a manifest, as `istioctl kube-inject` does for Istio.
//!
//! Per pod template: the socket volume (`emptyDir`, memory) mounted into the
//! shim's and the proxy's containers only; the identity Secret of the pod's
//! service account (`ephemera-<sa>`: id, key.pem, bundle.json), mounted into
//! the shim's container only, 0440 for the pod's `fsGroup`; the shim
//! container (non-root, read-only root file system, no privilege
//! escalation, no capabilities, probes on its socket). Which identity a pod
//! gets follows its service account, never an annotation.
//!
//! Idempotent: `ephemera.dev/status` records what was added, and a template
//! carrying it is left alone, as is one annotated
//! `ephemera.dev/inject: "false"`. Objects without pod templates pass
//! through unchanged, and every field inject does not own is kept, in order.

use serde_yaml_ng::{Mapping, Value};

use super::render::{Mesh, POD_WASM, SHIM_SOCKET, SOCKET_DIR};

/// The annotation recording what inject added.
pub const STATUS: &str = "ephemera.dev/status";
/// The annotation opting a pod out.
pub const OPT_OUT: &str = "ephemera.dev/inject";
/// Istio's annotation adding volume mounts to its proxy.
const ISTIO_MOUNTS: &str = "sidecar.istio.io/userVolumeMount";
/// Istio's proxy user.
const ISTIO_PROXY_UID: u32 = 1337;
/// The uid of the shim's container.
const SHIM_UID: u32 = 65532;
/// The uid of the Envoy container (no mesh).
const ENVOY_UID: u32 = 101;
/// The group shared by the shim and the proxy: the pod's `fsGroup`.
const DEFAULT_FS_GROUP: u32 = 65532;
/// Where the identity Secret is mounted in the shim's container.
const IDENTITY_DIR: &str = "/etc/ephemera/identity";
/// The port name Services point at without a mesh.
pub const INBOUND_PORT_NAME: &str = "ephemera-inbound";
/// Volume names inject owns.
const SOCKET_VOLUME: &str = "ephemera-socket";
const IDENTITY_VOLUME: &str = "ephemera-identity";
const ENVOY_CONFIG_VOLUME: &str = "ephemera-envoy-config";
const PLUGIN_VOLUME: &str = "ephemera-plugin";
const IPT_VOLUME: &str = "ephemera-ipt";
const LEDGER_SECRET_VOLUME: &str = "ephemera-ledger-key-secret";
const LEDGER_KEY_VOLUME: &str = "ephemera-ledger-key";
const KEY_INIT_CONTAINER: &str = "ephemera-ledger-key";
const LEDGER_VOLUME: &str = "ephemera-ledger";
/// Container names inject owns.
const SHIM_CONTAINER: &str = "ephemera-shim";
const ENVOY_CONTAINER: &str = "ephemera-envoy";

/// How to inject.
#[derive(Debug, Clone)]
pub struct Options {
    /// Which proxy carries the filter.
    pub mesh: Mesh,
    /// The shim's image.
    pub shim_image: String,
    /// Envoy's image (no mesh).
    pub envoy_image: String,
    /// The filter's image, mounted as an image volume (no mesh).
    pub plugin_image: String,
    /// Envoy's inbound port (no mesh).
    pub inbound_port: u16,
    /// Point Services of the same manifest that select an injected pod at
    /// its `ephemera-inbound` port (no mesh).
    pub rewrite_services: bool,
    /// Identity-Per-Transaction for the pod, if wanted.
    pub transactions: Option<Transactions>,
}

/// What the shim needs for Identity-Per-Transaction: its configuration, the
/// ledger's signing key, and a durable volume for the ledger (never the
/// pod's `emptyDir`, which dies with the pod).
#[derive(Debug, Clone)]
pub struct Transactions {
    /// The ConfigMap holding `ipt.yaml`.
    pub config_map: String,
    /// The Secret holding the ledger's signing key (`ledger.key`).
    pub key_secret: String,
    /// The PersistentVolumeClaim the ledger is written to.
    pub ledger_claim: String,
}

/// Where the IPT configuration, the ledger key and the ledger are mounted
/// in the shim's container; `ipt.yaml` names its paths under them.
pub const IPT_DIR: &str = "/etc/ephemera/ipt";
/// See [`IPT_DIR`]: the key as the shim reads it, 0600, copied there by
/// an init container from the Secret (which the shim does not mount).
pub const LEDGER_KEY_DIR: &str = "/etc/ephemera/ledger-key";
/// Where the init container reads the Secret.
const LEDGER_SECRET_DIR: &str = "/etc/ephemera/ledger-key-secret";
/// See [`IPT_DIR`].
pub const LEDGER_DIR: &str = "/var/lib/ephemera/ledger";

/// Why a manifest cannot be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// Not YAML, or not Kubernetes objects.
    #[error("document {index}: {message}")]
    Syntax {
        /// Which document, from 1.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A pod where the shim's boundaries do not hold.
    #[error(
        "{object}: {field}: true shares {what} with the app; ephemera's boundaries do not hold there"
    )]
    Unsafe {
        /// `Kind/name`.
        object: String,
        /// The field.
        field: &'static str,
        /// What it shares.
        what: &'static str,
    },
    /// A name inject owns is already used by something else.
    #[error("{object}: a {what} named {name:?} exists and is not ephemera's; rename it")]
    Taken {
        /// `Kind/name`.
        object: String,
        /// Volume or container.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// An option's value cannot be put into a pod spec.
    #[error("{flag} {value:?}: {rule}")]
    Option {
        /// The option.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        rule: &'static str,
    },
    /// A field has the wrong shape.
    #[error("{object}: {field} is not {expected}")]
    Shape {
        /// `Kind/name`.
        object: String,
        /// The field.
        field: String,
        /// What it should be.
        expected: &'static str,
    },
}

fn key(text: &str) -> Value {
    Value::String(text.to_owned())
}

fn get<'a>(map: &'a Mapping, k: &str) -> Option<&'a Value> {
    map.get(key(k))
}

/// `map[k]` as a mapping, created empty when absent.
fn mapping<'a>(
    map: &'a mut Mapping,
    k: &str,
    object: &str,
) -> Result<&'a mut Mapping, InjectError> {
    let entry = map
        .entry(key(k))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if entry.is_null() {
        *entry = Value::Mapping(Mapping::new());
    }
    entry.as_mapping_mut().ok_or_else(|| InjectError::Shape {
        object: object.to_owned(),
        field: k.to_owned(),
        expected: "a mapping",
    })
}

/// `map[k]` as a sequence, created empty when absent.
fn sequence<'a>(
    map: &'a mut Mapping,
    k: &str,
    object: &str,
) -> Result<&'a mut Vec<Value>, InjectError> {
    let entry = map
        .entry(key(k))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if entry.is_null() {
        *entry = Value::Sequence(Vec::new());
    }
    entry.as_sequence_mut().ok_or_else(|| InjectError::Shape {
        object: object.to_owned(),
        field: k.to_owned(),
        expected: "a list",
    })
}

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap_or(Value::Null)
}

fn named<'a>(items: &'a [Value], name: &str) -> Option<&'a Value> {
    items
        .iter()
        .find(|item| item.get("name").and_then(Value::as_str) == Some(name))
}

/// `Kind/name` of an object.
fn describe(object: &Mapping) -> String {
    let kind = get(object, "kind").and_then(Value::as_str).unwrap_or("?");
    let name = get(object, "metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!("{kind}/{name}")
}

/// The path of an object's pod template, if it has one.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

impl Options {
    /// Checks the values that go into pod specs: image references and
    /// object names.
    pub fn check(&self) -> Result<(), InjectError> {
        let image = |c: char| c.is_ascii_alphanumeric() || "./:@_-".contains(c);
        let object = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c);
        let mut checks = vec![
            (
                "--image",
                &self.shim_image,
                image as fn(char) -> bool,
                "an image reference",
            ),
            (
                "--envoy-image",
                &self.envoy_image,
                image,
                "an image reference",
            ),
        ];
        if self.mesh == Mesh::None {
            checks.push((
                "--plugin-image",
                &self.plugin_image,
                image,
                "an image reference",
            ));
        }
        if let Some(t) = &self.transactions {
            checks.push((
                "--ipt-config-map",
                &t.config_map,
                object,
                "a Kubernetes object name",
            ));
            checks.push((
                "--ledger-key-secret",
                &t.key_secret,
                object,
                "a Kubernetes object name",
            ));
            checks.push((
                "--ledger-claim",
                &t.ledger_claim,
                object,
                "a Kubernetes object name",
            ));
        }
        for (flag, value, allowed, rule) in checks {
            if value.is_empty() || value.len() > 253 || !value.chars().all(allowed) {
                return Err(InjectError::Option {
                    flag,
                    value: value.clone(),
                    rule,
                });
            }
        }
        Ok(())
    }
}

/// Injects every pod template in `manifest` (YAML documents); returns the
/// new manifest.
pub fn inject(manifest: &str, options: &Options) -> Result<String, InjectError> {
    options.check()?;
    let mut documents = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(manifest).enumerate() {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|e| InjectError::Syntax {
                index: i + 1,
                message: e.to_string(),
            })?;
        documents.push(value);
    }
    let mut injected_labels = Vec::new();
    for (i, document) in documents.iter_mut().enumerate() {
        let Some(object) = document.as_mapping_mut() else {
            if document.is_null() {
                continue;
            }
            return Err(InjectError::Syntax {
                index: i + 1,
                message: "not a Kubernetes object".into(),
            });
        };
        if let Some(labels) = inject_object(object, options)? {
            injected_labels.push(labels);
        }
    }
    if options.rewrite_services && options.mesh == Mesh::None {
        for document in &mut documents {
            if let Some(object) = document.as_mapping_mut() {
                rewrite_service(object, &injected_labels);
            }
        }
    }
    let mut out = String::new();
    for document in documents.iter().filter(|d| !d.is_null()) {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(document).unwrap_or_default());
    }
    Ok(out)
}

/// Injects one object's pod template; returns its labels when injected.
pub fn inject_object(
    object: &mut Mapping,
    options: &Options,
) -> Result<Option<Mapping>, InjectError> {
    let name = describe(object);
    let kind = get(object, "kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some(path) = template_path(&kind) else {
        return Ok(None);
    };
    let workload = get(object, "metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("workload")
        .to_owned();
    let mut template = &mut *object;
    for step in path {
        template = mapping(template, step, &name)?;
    }
    inject_template(template, &name, &workload, options)
}

/// Injects a pod template (`metadata` + `spec`), or a Pod, of `workload`
/// (`name` is its `Kind/name` for messages).
pub fn inject_template(
    template: &mut Mapping,
    name: &str,
    workload: &str,
    options: &Options,
) -> Result<Option<Mapping>, InjectError> {
    let metadata = mapping(template, "metadata", name)?;
    let annotations = get(metadata, "annotations").and_then(Value::as_mapping);
    let opted_out = annotations
        .and_then(|a| a.get(key(OPT_OUT)))
        .and_then(Value::as_str)
        == Some("false");
    if opted_out || annotations.is_some_and(|a| a.contains_key(key(STATUS))) {
        return Ok(None);
    }
    let labels = get(metadata, "labels")
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();

    let spec = mapping(template, "spec", name)?;
    for (field, what) in [
        ("hostNetwork", "the node's network"),
        ("shareProcessNamespace", "its processes"),
    ] {
        if get(spec, field).and_then(Value::as_bool) == Some(true) {
            return Err(InjectError::Unsafe {
                object: name.to_owned(),
                field,
                what,
            });
        }
    }
    let service_account = get(spec, "serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    let security = mapping(spec, "securityContext", name)?;
    let fs_group = match get(security, "fsGroup").and_then(Value::as_u64) {
        Some(group) => u32::try_from(group).unwrap_or(DEFAULT_FS_GROUP),
        None => {
            security.insert(key("fsGroup"), Value::from(DEFAULT_FS_GROUP));
            DEFAULT_FS_GROUP
        }
    };

    let mut volumes = vec![
        yaml(&format!(
            "{{name: {SOCKET_VOLUME}, emptyDir: {{medium: Memory}}}}"
        )),
        yaml(&format!(
            "{{name: {IDENTITY_VOLUME}, secret: {{secretName: ephemera-{service_account}, defaultMode: 288}}}}"
        )),
    ];
    let envoy_uid = match options.mesh {
        Mesh::Istio => ISTIO_PROXY_UID,
        Mesh::None => ENVOY_UID,
    };
    if let Some(t) = &options.transactions {
        volumes.push(yaml(&format!(
            "{{name: {IPT_VOLUME}, configMap: {{name: {:?}}}}}",
            t.config_map
        )));
        volumes.push(yaml(&format!(
            "{{name: {LEDGER_SECRET_VOLUME}, secret: {{secretName: {:?}, defaultMode: 288}}}}",
            t.key_secret
        )));
        volumes.push(yaml(&format!(
            "{{name: {LEDGER_KEY_VOLUME}, emptyDir: {{medium: Memory}}}}"
        )));
        volumes.push(yaml(&format!(
            "{{name: {LEDGER_VOLUME}, persistentVolumeClaim: {{claimName: {:?}}}}}",
            t.ledger_claim
        )));
    }
    let mut containers = vec![shim_container(options, envoy_uid, fs_group)];
    if options.mesh == Mesh::None {
        volumes.push(yaml(&format!(
            "{{name: {ENVOY_CONFIG_VOLUME}, configMap: {{name: {workload}-ephemera-envoy}}}}"
        )));
        volumes.push(yaml(&format!(
            "{{name: {PLUGIN_VOLUME}, image: {{reference: {:?}, pullPolicy: IfNotPresent}}}}",
            options.plugin_image
        )));
        containers.push(envoy_container(options));
    }
    let init: Vec<Value> = options
        .transactions
        .iter()
        .map(|_| key_init_container(options))
        .collect();
    for (what, list, items) in [
        ("volume", "volumes", &volumes),
        ("container", "containers", &containers),
        ("init container", "initContainers", &init),
    ] {
        if items.is_empty() {
            continue;
        }
        let existing = sequence(spec, list, name)?;
        for item in items {
            let item_name = item.get("name").and_then(Value::as_str).unwrap_or_default();
            if named(existing, item_name).is_some() {
                return Err(InjectError::Taken {
                    object: name.to_owned(),
                    what,
                    name: item_name.to_owned(),
                });
            }
        }
        existing.extend(items.iter().cloned());
    }

    let metadata = mapping(template, "metadata", name)?;
    let annotations = mapping(metadata, "annotations", name)?;
    if options.mesh == Mesh::Istio {
        let mut mounts: serde_json::Map<String, serde_json::Value> = get(annotations, ISTIO_MOUNTS)
            .and_then(Value::as_str)
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        mounts.insert(
            SOCKET_VOLUME.into(),
            serde_json::json!({ "mountPath": SOCKET_DIR }),
        );
        annotations.insert(
            key(ISTIO_MOUNTS),
            key(&serde_json::Value::Object(mounts).to_string()),
        );
    }
    let status = serde_json::json!({
        "containers": containers.iter().chain(&init).filter_map(|c| c.get("name").and_then(Value::as_str)).collect::<Vec<_>>(),
        "volumes": volumes.iter().filter_map(|v| v.get("name").and_then(Value::as_str)).collect::<Vec<_>>(),
        "mesh": match options.mesh { Mesh::Istio => "istio", Mesh::None => "none" },
    });
    annotations.insert(key(STATUS), key(&status.to_string()));
    Ok(Some(labels))
}

/// The security context every added container gets.
fn locked_down(uid: u32) -> Value {
    yaml(&format!(
        "{{runAsNonRoot: true, runAsUser: {uid}, readOnlyRootFilesystem: true, \
         allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}, \
         seccompProfile: {{type: RuntimeDefault}}}}"
    ))
}

fn shim_container(options: &Options, envoy_uid: u32, fs_group: u32) -> Value {
    let probe = format!(
        "{{exec: {{command: [ephemera, probe, --listen, \"unix:{SHIM_SOCKET}\"]}}, periodSeconds: 10}}"
    );
    let mut container = yaml(&format!(
        "{{name: {SHIM_CONTAINER}, image: {image:?}, \
         args: [serve, --listen, \"unix:{SHIM_SOCKET}\", --envoy-uid, \"{envoy_uid}\", --socket-group, \"{fs_group}\"], \
         env: [{{name: SPIFFILE_DIR, value: {IDENTITY_DIR}}}], \
         volumeMounts: [{{name: {SOCKET_VOLUME}, mountPath: {SOCKET_DIR}}}, \
                        {{name: {IDENTITY_VOLUME}, mountPath: {IDENTITY_DIR}, readOnly: true}}], \
         resources: {{requests: {{cpu: 10m, memory: 16Mi}}, limits: {{memory: 64Mi}}}}, \
         readinessProbe: {probe}, livenessProbe: {probe}}}",
        image = options.shim_image,
    ));
    if let Some(c) = container.as_mapping_mut() {
        c.insert(key("securityContext"), locked_down(SHIM_UID));
        if options.transactions.is_some() {
            if let Some(args) = c.get_mut(key("args")).and_then(Value::as_sequence_mut) {
                args.extend([key("--ipt-config"), key(&format!("{IPT_DIR}/ipt.yaml"))]);
            }
            if let Some(mounts) = c
                .get_mut(key("volumeMounts"))
                .and_then(Value::as_sequence_mut)
            {
                mounts.push(yaml(&format!(
                    "{{name: {IPT_VOLUME}, mountPath: {IPT_DIR}, readOnly: true}}"
                )));
                mounts.push(yaml(&format!(
                    "{{name: {LEDGER_KEY_VOLUME}, mountPath: {LEDGER_KEY_DIR}, readOnly: true}}"
                )));
                mounts.push(yaml(&format!(
                    "{{name: {LEDGER_VOLUME}, mountPath: {LEDGER_DIR}}}"
                )));
            }
        }
    }
    container
}

/// Copies the ledger key from its Secret to a 0600 file of the shim's user
/// (the shim refuses a key others could read; Secret files are 0440).
fn key_init_container(options: &Options) -> Value {
    let mut container = yaml(&format!(
        "{{name: {KEY_INIT_CONTAINER}, image: {image:?}, \
         args: [ledger, install-key, --from, {LEDGER_SECRET_DIR}/ledger.key, --to, {LEDGER_KEY_DIR}/ledger.key], \
         volumeMounts: [{{name: {LEDGER_SECRET_VOLUME}, mountPath: {LEDGER_SECRET_DIR}, readOnly: true}}, \
                        {{name: {LEDGER_KEY_VOLUME}, mountPath: {LEDGER_KEY_DIR}}}], \
         resources: {{requests: {{cpu: 10m, memory: 16Mi}}, limits: {{memory: 32Mi}}}}}}",
        image = options.shim_image,
    ));
    if let Some(c) = container.as_mapping_mut() {
        c.insert(key("securityContext"), locked_down(SHIM_UID));
    }
    container
}

fn envoy_container(options: &Options) -> Value {
    let mut container = yaml(&format!(
        "{{name: {ENVOY_CONTAINER}, image: {image:?}, \
         args: [-c, /etc/ephemera/envoy/envoy.json, --disable-hot-restart], \
         ports: [{{name: {INBOUND_PORT_NAME}, containerPort: {port}}}], \
         volumeMounts: [{{name: {SOCKET_VOLUME}, mountPath: {SOCKET_DIR}}}, \
                        {{name: {ENVOY_CONFIG_VOLUME}, mountPath: /etc/ephemera/envoy, readOnly: true}}, \
                        {{name: {PLUGIN_VOLUME}, mountPath: {plugin_dir}, readOnly: true}}], \
         resources: {{requests: {{cpu: 50m, memory: 64Mi}}, limits: {{memory: 256Mi}}}}}}",
        image = options.envoy_image,
        port = options.inbound_port,
        plugin_dir = POD_WASM.rsplit_once('/').map_or(POD_WASM, |(dir, _)| dir),
    ));
    if let Some(c) = container.as_mapping_mut() {
        c.insert(key("securityContext"), locked_down(ENVOY_UID));
    }
    container
}

/// Points a Service selecting an injected pod at `ephemera-inbound`.
fn rewrite_service(object: &mut Mapping, injected: &[Mapping]) {
    if get(object, "kind").and_then(Value::as_str) != Some("Service") {
        return;
    }
    let Some(spec) = object.get_mut(key("spec")).and_then(Value::as_mapping_mut) else {
        return;
    };
    let Some(selector) = get(spec, "selector").and_then(Value::as_mapping).cloned() else {
        return;
    };
    let selects = |labels: &Mapping| {
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    if !injected.iter().any(selects) {
        return;
    }
    if let Some(ports) = spec.get_mut(key("ports")).and_then(Value::as_sequence_mut) {
        for port in ports.iter_mut().filter_map(Value::as_mapping_mut) {
            port.insert(key("targetPort"), key(INBOUND_PORT_NAME));
        }
    }
}
