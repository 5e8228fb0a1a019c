//! Renders the Envoy bootstrap from `envoy/sidecar.yaml`: the template is a
//! valid bootstrap itself; rendering sets addresses, plugin configurations
//! and the Wasm path, and replaces the sample outbound destination.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::config::SidecarConfig;
use crate::serve::Listen;

/// The template, as shipped in `envoy/sidecar.yaml`.
pub const TEMPLATE: &str = include_str!("../../../envoy/sidecar.yaml");

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The template does not parse (a build defect).
    #[error("envoy/sidecar.yaml does not parse: {0}")]
    Template(String),
    /// The template lacks a part rendering needs.
    #[error("envoy/sidecar.yaml has no {0}")]
    Missing(&'static str),
    /// An address is not HOST:PORT.
    #[error("{0:?} is not HOST:PORT")]
    Address(String),
}

/// What varies between sidecars.
#[derive(Debug, Clone)]
pub struct Params {
    /// The local app, HOST:PORT.
    pub app: String,
    /// The inbound listener, HOST:PORT.
    pub inbound: String,
    /// The outbound listener, HOST:PORT, if wanted.
    pub outbound: Option<String>,
    /// Envoy's admin listener: a Unix socket (mode 0600), or loopback TCP
    /// when asked for (port 0: any).
    pub admin: Listen,
    /// Where the shim listens.
    pub shim: Listen,
    /// The shim's per-start secret (a TCP shim only): put into both plugin
    /// configurations as `shim.bearer`.
    pub shim_secret: Option<String>,
    /// The filter module.
    pub wasm: PathBuf,
    /// Rules and destinations.
    pub config: SidecarConfig,
}

fn socket_address(addr: &str) -> Result<Value, BootstrapError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| BootstrapError::Address(addr.to_owned()))?;
    let port: u16 = port
        .parse()
        .map_err(|_| BootstrapError::Address(addr.to_owned()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(BootstrapError::Address(addr.to_owned()));
    }
    Ok(json!({"socket_address": {"address": host, "port_value": port}}))
}

fn cluster(name: &str, address: Value) -> Value {
    let is_ip = address["socket_address"]["address"]
        .as_str()
        .is_none_or(|h| h.parse::<std::net::IpAddr>().is_ok());
    json!({
        "name": name,
        "type": if is_ip { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    })
}

fn listener<'a>(bootstrap: &'a mut Value, name: &str) -> Result<&'a mut Value, BootstrapError> {
    bootstrap["static_resources"]["listeners"]
        .as_array_mut()
        .and_then(|ls| ls.iter_mut().find(|l| l["name"] == name))
        .ok_or(BootstrapError::Missing("inbound/outbound listener"))
}

fn hcm(listener: &mut Value) -> &mut Value {
    &mut listener["filter_chains"][0]["filters"][0]["typed_config"]
}

/// The Envoy address of a listener: a pipe (owner-only) or a socket address.
fn envoy_address(listen: &Listen) -> Value {
    match listen {
        Listen::Tcp(addr) => {
            json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}})
        }
        Listen::Unix(path) => json!({"pipe": {"path": path, "mode": 0o600}}),
    }
}

fn set_plugin(
    listener: &mut Value,
    plugin: &Value,
    wasm: &str,
    shim_secret: Option<&str>,
) -> Result<(), BootstrapError> {
    let mut plugin = plugin.clone();
    if let Some(secret) = shim_secret {
        plugin["shim"]["bearer"] = Value::String(secret.to_owned());
    }
    let filters = hcm(listener)["http_filters"]
        .as_array_mut()
        .ok_or(BootstrapError::Missing("http_filters"))?;
    let ephemera = filters
        .iter_mut()
        .find(|f| f["name"] == "ephemera")
        .ok_or(BootstrapError::Missing("ephemera http filter"))?;
    let config = &mut ephemera["typed_config"]["config"];
    config["configuration"]["value"] = Value::String(plugin.to_string());
    config["vm_config"]["code"]["local"]["filename"] = Value::String(wasm.to_owned());
    Ok(())
}

/// A routed outbound upstream: a SPIFFE destination or an egress host.
struct Upstream<'a> {
    host: &'a str,
    address: &'a str,
}

fn upstreams(config: &SidecarConfig) -> impl Iterator<Item = Upstream<'_>> {
    let out = &config.outbound;
    out.destinations
        .iter()
        .map(|d| Upstream {
            host: &d.host,
            address: &d.address,
        })
        .chain(out.egress.iter().map(|e| Upstream {
            host: &e.host,
            address: &e.address,
        }))
}

/// Renders the bootstrap as JSON (which Envoy reads as YAML).
pub fn render(params: &Params) -> Result<Value, BootstrapError> {
    let mut b: Value =
        serde_yaml_ng::from_str(TEMPLATE).map_err(|e| BootstrapError::Template(e.to_string()))?;
    let wasm = params.wasm.to_string_lossy().into_owned();
    b["admin"]["address"] = envoy_address(&params.admin);
    let secret = params.shim_secret.as_deref();

    let inbound = listener(&mut b, "inbound")?;
    inbound["address"] = socket_address(&params.inbound)?;
    set_plugin(inbound, &params.config.inbound_plugin(), &wasm, secret)?;

    match &params.outbound {
        Some(addr) => {
            let outbound = listener(&mut b, "outbound")?;
            outbound["address"] = socket_address(addr)?;
            set_plugin(outbound, &params.config.outbound_plugin(), &wasm, secret)?;
            let hosts: Vec<Value> = upstreams(&params.config)
                .enumerate()
                .map(|(i, d)| {
                    json!({
                        "name": format!("dest_{i}"),
                        "domains": [d.host, format!("{}:*", d.host)],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": format!("dest_{i}")}}],
                    })
                })
                .collect();
            hcm(outbound)["route_config"]["virtual_hosts"] = Value::Array(hosts);
        }
        None => {
            if let Some(ls) = b["static_resources"]["listeners"].as_array_mut() {
                ls.retain(|l| l["name"] != "outbound");
            }
        }
    }

    let mut clusters = vec![
        cluster("local_app", socket_address(&params.app)?),
        cluster("ephemera_shim", envoy_address(&params.shim)),
    ];
    if params.outbound.is_some() {
        for (i, d) in upstreams(&params.config).enumerate() {
            clusters.push(cluster(&format!("dest_{i}"), socket_address(d.address)?));
        }
    }
    b["static_resources"]["clusters"] = Value::Array(clusters);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(outbound: Option<&str>) -> Params {
        Params {
            app: "127.0.0.1:8080".into(),
            inbound: "127.0.0.1:15006".into(),
            outbound: outbound.map(str::to_owned),
            admin: Listen::Unix("/run/ephemera/admin.sock".into()),
            shim: Listen::Unix("/run/ephemera/shim.sock".into()),
            shim_secret: None,
            wasm: "/x/ephemera_envoy.wasm".into(),
            config: SidecarConfig::parse(
                "outbound:\n  destinations:\n    - {host: billing, address: 'billing.svc:80', spiffe_id: 'spiffe://e.org/billing'}\n",
                "t",
            )
            .unwrap(),
        }
    }

    #[test]
    fn without_an_outbound_address_there_is_no_outbound_listener() {
        let b = render(&params(None)).unwrap();
        let names: Vec<_> = b["static_resources"]["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("inbound")]);
        assert_eq!(
            b["static_resources"]["clusters"].as_array().unwrap().len(),
            2
        );
    }

    #[test]
    fn destinations_become_clusters_and_virtual_hosts() {
        let b = render(&params(Some("127.0.0.1:15001"))).unwrap();
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters[2]["type"], "STRICT_DNS");
        assert_eq!(
            clusters[1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["pipe"]["path"],
            "/run/ephemera/shim.sock"
        );
        let text = b.to_string();
        assert!(
            text.contains(r#"\"hosts\":{\"billing\":\"spiffe://e.org/billing\"}"#),
            "{text}"
        );
    }

    /// Every cluster a route of the rendered bootstrap sends requests to.
    fn routed_clusters(b: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for l in b["static_resources"]["listeners"].as_array().unwrap() {
            let hcm = &l["filter_chains"][0]["filters"][0]["typed_config"];
            for vh in hcm["route_config"]["virtual_hosts"].as_array().unwrap() {
                for r in vh["routes"].as_array().unwrap() {
                    out.push(r["route"]["cluster"].as_str().unwrap().to_owned());
                }
            }
        }
        out
    }

    #[test]
    fn no_route_reaches_the_shim_cluster() {
        for outbound in [None, Some("127.0.0.1:15001")] {
            let b = render(&params(outbound)).unwrap();
            let routed = routed_clusters(&b);
            assert!(!routed.is_empty());
            assert!(!routed.iter().any(|c| c == "ephemera_shim"), "{routed:?}");
        }
    }

    #[test]
    fn admin_is_an_owner_only_pipe_unless_tcp_is_asked_for() {
        let b = render(&params(None)).unwrap();
        assert_eq!(
            b["admin"]["address"]["pipe"]["path"],
            "/run/ephemera/admin.sock"
        );
        assert_eq!(b["admin"]["address"]["pipe"]["mode"], 0o600);
        let mut p = params(None);
        p.admin = "tcp:127.0.0.1:0".parse().unwrap();
        let b = render(&p).unwrap();
        assert_eq!(
            b["admin"]["address"]["socket_address"]["address"],
            "127.0.0.1"
        );
    }

    #[test]
    fn a_tcp_shim_secret_reaches_both_plugin_configurations() {
        let mut p = params(Some("127.0.0.1:15001"));
        p.shim = "tcp:127.0.0.1:15080".parse().unwrap();
        p.shim_secret = Some("s3cr3t".into());
        let b = render(&p).unwrap();
        let text = b.to_string();
        assert_eq!(
            text.matches(r#"\"bearer\":\"s3cr3t\""#).count(),
            2,
            "{text}"
        );
    }
}
