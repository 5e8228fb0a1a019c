//! `ephemera mesh render`: every object passes the schemas Kubernetes and
//! Istio publish (strictly: unknown fields and bad enum values fail), the
//! Envoy configuration the Istio objects amount to passes Envoy's own
//! validation with the real module, and nothing secret is in any of them.

use std::path::Path;
use std::process::Command;

use ephemera_tests::workload::{envoy, wasm};
use ephemera_tests::{Run, ephemera, run};
use serde_json::{Value, json};

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const CONFIG: &str = r#"
inbound:
  routes:
    - { path: "/admin/*", allow: ["spiffe://example.org/ops"] }
outbound:
  destinations:
    - { host: billing, address: "billing.shop:8080", spiffe_id: "spiffe://example.org/ns/shop/sa/billing" }
  egress:
    - { host: api.example.com, address: "api.example.com:443", secret: api_token, inject: { as: bearer } }
"#;

/// `ephemera mesh render ARGS` with CONFIG; the objects as JSON values.
fn render(dir: &Path, args: &[&str]) -> (Run, Vec<Value>) {
    let config = dir.join("sidecar.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut all = vec![
        "mesh",
        "render",
        "--config",
        config.to_str().unwrap(),
        "--name",
        "orders",
    ];
    if !args.contains(&"--namespace") {
        all.extend(["--namespace", "shop"]);
    }
    all.extend_from_slice(args);
    let rendered = ephemera(&all, &[]);
    let objects = serde_yaml_ng::Deserializer::from_str(&rendered.stdout)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect();
    (rendered, objects)
}

/// The strict validator's verdict on `objects`.
fn validate(objects: &[Value]) -> Run {
    let text: String = objects
        .iter()
        .map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).unwrap()))
        .collect();
    ephemera_tests::k8s::validate(&text)
}

fn kinds(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn istio_objects_pass_istios_crd_schemas_and_a_wrong_field_or_enum_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let image = [
        "--image",
        "registry.example.com/ephemera:0.1.0",
        "--sha256",
        SHA,
    ];
    let (run_, wasm_plugins) = render(dir.path(), &image);
    run_.ok();
    assert_eq!(
        kinds(&wasm_plugins),
        [
            "WasmPlugin/orders-ephemera-inbound",
            "WasmPlugin/orders-ephemera-outbound",
            "EnvoyFilter/orders-ephemera-shim"
        ]
    );
    let inbound = &wasm_plugins[0]["spec"];
    assert_eq!(inbound["url"], "oci://registry.example.com/ephemera:0.1.0");
    assert_eq!(inbound["sha256"], SHA);
    assert_eq!(inbound["pluginName"], "ephemera_inbound");
    assert_eq!(inbound["phase"], "AUTHN");
    assert_eq!(inbound["failStrategy"], "FAIL_CLOSE");
    assert_eq!(inbound["match"], json!([{"mode": "SERVER"}]));
    assert_eq!(inbound["selector"]["matchLabels"], json!({"app": "orders"}));
    assert_eq!(
        wasm_plugins[1]["spec"]["match"],
        json!([{"mode": "CLIENT"}])
    );
    let checked = validate(&wasm_plugins);
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);

    let mut with = image.to_vec();
    with.push("--traffic-extension");
    let (_, extensions) = render(dir.path(), &with);
    assert_eq!(extensions[0]["kind"], "TrafficExtension");
    assert_eq!(
        extensions[0]["spec"]["wasm"]["pluginName"],
        "ephemera_inbound"
    );
    let checked = validate(&extensions);
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);

    // The validator is strict: one bad enum, one unknown field, one bad
    // digest, each fails.
    for break_it in [
        (|o: &mut Value| o["spec"]["phase"] = json!("AUTHENTICATE")) as fn(&mut Value),
        |o| o["spec"]["failStrategy"] = json!("FAIL_SOMETIMES"),
        |o| o["spec"]["pluginConfigs"] = json!({}),
        |o| o["spec"]["sha256"] = json!("ABC"),
    ] {
        let mut broken = wasm_plugins.clone();
        break_it(&mut broken[0]);
        let checked = validate(&broken);
        assert_eq!(checked.code, 1, "{}", checked.stdout);
        assert!(
            checked
                .stdout
                .contains("invalid WasmPlugin/orders-ephemera-inbound"),
            "{}",
            checked.stdout
        );
    }
    let mut broken = wasm_plugins.clone();
    broken[2]["spec"]["configPatches"][0]["applyTo"] = json!("CLUSTERS");
    assert_eq!(validate(&broken).code, 1);
}

#[test]
fn the_envoy_configuration_the_istio_objects_amount_to_passes_envoy_validate() {
    let dir = tempfile::tempdir().unwrap();
    let (run_, objects) = render(dir.path(), &["--image", "r.example/e:1"]);
    run_.ok();
    let cluster = objects[2]["spec"]["configPatches"][0]["patch"]["value"].clone();
    assert_eq!(
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]
            ["path"],
        "/var/run/ephemera/shim/shim.sock"
    );
    // Our translation: each plugin becomes a Wasm HTTP filter with its
    // pluginName as root id and its pluginConfig as configuration, on the
    // real module; the EnvoyFilter's value is the cluster, verbatim.
    let envoy_config = |plugins: &[&Value]| {
        let filters: Vec<Value> = plugins
            .iter()
            .map(|spec| {
                json!({"name": "ephemera", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "root_id": spec["pluginName"],
                        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                          "value": spec["pluginConfig"].to_string()},
                        "fail_open": false,
                        "vm_config": {"runtime": "envoy.wasm.runtime.v8",
                                      "code": {"local": {"filename": wasm()}}}}}})
            })
            .chain([json!({"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})])
            .collect();
        json!({"static_resources": {
            "listeners": [{"name": "virtualInbound", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15006}},
                "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "inbound", "http_filters": filters,
                    "route_config": {"virtual_hosts": [{"name": "app", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]}}}]}]}],
            "clusters": [cluster]}})
    };
    let check = |config: &Value, name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, config.to_string()).unwrap();
        run(Command::new(envoy())
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&path))
    };
    let (inbound, outbound) = (&objects[0]["spec"], &objects[1]["spec"]);
    let valid = check(&envoy_config(&[inbound, outbound]), "istio.json");
    assert_eq!(valid.code, 0, "{}{}", valid.stdout, valid.stderr);

    let mut broken = inbound.clone();
    broken["pluginConfig"]["inbound"]["routes"][0]["allow"] = json!(["spiffe://example.org/x*"]);
    let refused = check(&envoy_config(&[&broken]), "broken.json");
    assert_ne!(refused.code, 0, "a broken pluginConfig fails validation");
    assert!(
        format!("{}{}", refused.stdout, refused.stderr).contains("invalid filter configuration"),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
}

#[test]
fn a_pod_without_a_mesh_gets_its_envoy_bootstrap_in_a_valid_configmap() {
    let dir = tempfile::tempdir().unwrap();
    let (run_, objects) = render(dir.path(), &["--mesh", "none", "--app-port", "3000"]);
    run_.ok();
    assert_eq!(kinds(&objects), ["ConfigMap/orders-ephemera-envoy"]);
    let checked = validate(&objects);
    assert_eq!(checked.code, 0, "{}{}", checked.stdout, checked.stderr);
    let mut bad = objects.clone();
    bad[0]["datas"] = json!({});
    assert_eq!(validate(&bad).code, 1, "kubernetes-validate is strict");

    let bootstrap = objects[0]["data"]["envoy.json"].as_str().unwrap();
    assert!(bootstrap.contains("/var/run/ephemera/shim/shim.sock"));
    assert!(bootstrap.contains("/var/run/ephemera/envoy-admin.sock"));
    // Validated with the module where the pod mounts it.
    let path = dir.path().join("bootstrap.json");
    let local = bootstrap.replace(
        "/var/lib/ephemera/plugin/plugin.wasm",
        wasm().to_str().unwrap(),
    );
    assert_ne!(local, bootstrap);
    std::fs::write(&path, local).unwrap();
    let valid = run(Command::new(envoy())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path));
    assert_eq!(valid.code, 0, "{}{}", valid.stdout, valid.stderr);
}

/// Every object key in `value`, also inside strings holding JSON (the
/// bootstrap in a ConfigMap, a plugin configuration).
fn keys(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                keys(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        Value::String(text) => {
            if let Ok(inner) = serde_json::from_str::<Value>(text) {
                keys(&inner, out);
            }
        }
        _ => {}
    }
}

#[test]
fn no_object_carries_a_secret_or_a_key() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--image", "r.example/e:1"][..], &["--mesh", "none"]] {
        let (run_, objects) = render(dir.path(), args);
        assert!(!run_.ok().contains("PRIVATE KEY"));
        let mut seen = Vec::new();
        objects.iter().for_each(|o| keys(o, &mut seen));
        assert!(
            seen.iter().any(|k| k == "direction"),
            "plugin configurations were searched"
        );
        // `shim.bearer` is the per-start secret of a TCP shim: never here.
        assert!(!seen.iter().any(|k| k == "bearer"), "{seen:?}");
    }
}

#[test]
fn missing_or_malformed_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&[][..], "needs --image"),
        (
            &["--image", "r/e:1", "--sha256", "ABC"][..],
            "--sha256 must be 64",
        ),
        (
            &["--image", "r/e:1", "--namespace", "Shop"][..],
            "namespace \"Shop\"",
        ),
    ] {
        let (run_, _) = render(dir.path(), args);
        assert_eq!(run_.code, 2, "{}", run_.stdout);
        assert!(run_.stderr.contains(says), "{}", run_.stderr);
    }
}
