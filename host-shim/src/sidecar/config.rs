//! The sidecar configuration file (YAML or JSON): inbound rules as the filter
//! takes them, outbound destinations with their addresses and SPIFFE IDs.

use std::path::Path;

use ephemera_core::SpiffeId;
use ephemera_core::filter::FilterConfig;
use ephemera_core::filter::config::Unmapped;
use serde::Deserialize;
use serde_json::{Value, json};

/// Why a sidecar configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum SidecarConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not the expected shape (message has line and column).
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// What is wrong, and where.
        message: String,
    },
    /// The filter would refuse the derived plugin configuration.
    #[error("{path}: {source}")]
    Filter {
        /// The file.
        path: String,
        /// The filter's complaint.
        source: ephemera_core::filter::ConfigError,
    },
}

/// One outbound destination.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// The `:authority` host the app uses for it.
    pub host: String,
    /// Where it is reached, HOST:PORT.
    pub address: String,
    /// Its SPIFFE ID: the audience of tokens minted for it.
    pub spiffe_id: SpiffeId,
    /// How calls to it prove the workload's identity.
    #[serde(default)]
    pub auth: DestinationAuth,
    /// For `auth: wimse`: the origin its receiver expects in a proof's
    /// `aud` (default `https://<host>`).
    #[serde(default)]
    pub origin: Option<String>,
}

/// How calls to a destination prove the workload's identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestinationAuth {
    /// A JWT-SVID minted for its SPIFFE ID.
    #[default]
    JwtSvid,
    /// The workload's WIT and a fresh Workload Proof Token.
    Wimse,
}

/// An external host whose calls carry a secret (egress injection).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    /// The `:authority` host the app uses.
    pub host: String,
    /// Where it is reached, HOST:PORT.
    pub address: String,
    /// The secret's name (resolved by the shim for this workload).
    pub secret: String,
    /// How it is injected: `{as: bearer}`, `{as: header, header: x-api-key}`,
    /// `{as: basic, username: svc}`.
    pub inject: Value,
}

/// Outbound settings of the sidecar.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSection {
    /// Destinations.
    #[serde(default)]
    pub destinations: Vec<Destination>,
    /// External hosts with injected secrets.
    #[serde(default)]
    pub egress: Vec<Egress>,
    /// What happens to calls to other hosts.
    #[serde(default = "default_unmapped")]
    pub unmapped: Unmapped,
    /// Token lifetime, seconds.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Token reuse window, seconds.
    #[serde(default)]
    pub reuse_secs: Option<u64>,
}

fn default_unmapped() -> Unmapped {
    Unmapped::Reject
}

impl Default for OutboundSection {
    fn default() -> Self {
        Self {
            destinations: Vec::new(),
            egress: Vec::new(),
            unmapped: Unmapped::Reject,
            ttl_secs: None,
            reuse_secs: None,
        }
    }
}

/// The sidecar configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// The inbound filter settings (the filter's `inbound` object); absent:
    /// any caller with a valid token is admitted.
    #[serde(default)]
    pub inbound: Option<Value>,
    /// Outbound destinations.
    #[serde(default)]
    pub outbound: OutboundSection,
    /// `auto` (Envoy native crypto when it self-tests) or `rust`.
    #[serde(default)]
    pub crypto: Option<String>,
    /// The filters' shim settings (`timeout_ms`, `poll_ms`,
    /// `max_identity_age_ms`), for both directions.
    #[serde(default)]
    pub shim: Option<Value>,
}

impl SidecarConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, SidecarConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| SidecarConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self, SidecarConfigError> {
        let config: Self =
            serde_yaml_ng::from_str(text).map_err(|e| SidecarConfigError::Syntax {
                path: origin.to_owned(),
                message: e.to_string(),
            })?;
        for plugin in [config.inbound_plugin(), config.outbound_plugin()] {
            FilterConfig::parse(plugin.to_string().as_bytes()).map_err(|source| {
                SidecarConfigError::Filter {
                    path: origin.to_owned(),
                    source,
                }
            })?;
        }
        Ok(config)
    }

    /// The inbound filter's plugin configuration.
    pub fn inbound_plugin(&self) -> Value {
        let mut plugin = json!({"direction": "inbound"});
        if let Some(inbound) = &self.inbound {
            plugin["inbound"] = inbound.clone();
        }
        self.with_common(plugin)
    }

    /// The outbound filter's plugin configuration.
    pub fn outbound_plugin(&self) -> Value {
        let out = &self.outbound;
        let hosts: serde_json::Map<String, Value> = out
            .destinations
            .iter()
            .filter(|d| d.auth == DestinationAuth::JwtSvid)
            .map(|d| (d.host.clone(), Value::String(d.spiffe_id.to_string())))
            .collect();
        let origins: serde_json::Map<String, Value> = out
            .destinations
            .iter()
            .filter(|d| d.auth == DestinationAuth::Wimse)
            .map(|d| {
                let origin = d
                    .origin
                    .clone()
                    .unwrap_or_else(|| format!("https://{}", d.host));
                (d.host.clone(), Value::String(origin))
            })
            .collect();
        let mut outbound = json!({
            "hosts": hosts,
            "unmapped": match out.unmapped { Unmapped::Reject => "reject", Unmapped::Pass => "pass" },
        });
        if let Some(ttl) = out.ttl_secs {
            outbound["ttl_secs"] = json!(ttl);
        }
        if let Some(reuse) = out.reuse_secs {
            outbound["reuse_secs"] = json!(reuse);
        }
        if !origins.is_empty() {
            outbound["wimse"] = json!({"origins": origins});
        }
        if !out.egress.is_empty() {
            outbound["secrets"] = out
                .egress
                .iter()
                .map(|e| json!({"host": e.host, "secret": e.secret, "inject": e.inject}))
                .collect();
        }
        self.with_common(json!({"direction": "outbound", "outbound": outbound}))
    }

    /// Adds the settings both directions share.
    fn with_common(&self, mut plugin: Value) -> Value {
        if let Some(crypto) = &self.crypto {
            plugin["crypto"] = json!(crypto);
        }
        if let Some(shim) = &self.shim {
            plugin["shim"] = shim.clone();
        }
        plugin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_rules_are_checked_when_the_sidecar_config_loads() {
        let err = SidecarConfig::parse(
            "inbound:\n  routes:\n    - path: /admin/*\n      allow: [\"not-an-id\"]\n",
            "s.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("s.yaml") && err.contains("caller pattern"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_file() {
        let err = SidecarConfig::parse("outbund: {}\n", "s.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("s.yaml") && err.contains("outbund"), "{err}");
    }

    #[test]
    fn shim_settings_reach_both_filters_and_are_checked() {
        let config =
            SidecarConfig::parse("shim: { max_identity_age_ms: 5000 }\n", "s.yaml").unwrap();
        for plugin in [config.inbound_plugin(), config.outbound_plugin()] {
            assert_eq!(plugin["shim"]["max_identity_age_ms"], 5000, "{plugin}");
        }
        let err = SidecarConfig::parse("shim: { max_identity_age_ms: 10 }\n", "s.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_identity_age_ms"), "{err}");
    }

    #[test]
    fn wimse_destinations_get_an_origin_and_no_jwt_svid() {
        let config = SidecarConfig::parse(
            "outbound:\n  destinations:\n    - { host: billing, address: \"127.0.0.1:1\", spiffe_id: \"spiffe://e.org/billing\", auth: wimse }\n    - { host: audit, address: \"127.0.0.1:2\", spiffe_id: \"spiffe://e.org/audit\" }\n",
            "s.yaml",
        )
        .unwrap();
        let plugin = config.outbound_plugin();
        assert_eq!(
            plugin["outbound"]["wimse"]["origins"]["billing"],
            "https://billing"
        );
        assert!(plugin["outbound"]["hosts"].get("billing").is_none());
        assert_eq!(plugin["outbound"]["hosts"]["audit"], "spiffe://e.org/audit");
        let err = SidecarConfig::parse(
            "outbound:\n  destinations:\n    - { host: b, address: \"127.0.0.1:1\", spiffe_id: \"spiffe://e.org/b\", auth: wimse, origin: \"https://b/x\" }\n",
            "s.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("outbound.wimse.origins.b"), "{err}");
    }
}
