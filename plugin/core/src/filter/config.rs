//! The filter's configuration (Envoy plugin configuration, JSON), parsed and
//! validated once.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::caller_pattern::CallerPattern;
use super::path_rule::PathRule;
use super::token_cache::{DEFAULT_CACHE_BYTES, DEFAULT_CACHE_SIZE};
use crate::ipt::{Action, PathTemplate};
use crate::spiffe_id::SpiffeId;
use crate::token::{DEFAULT_LEEWAY_SECS, DEFAULT_MAX_TOKEN_BYTES, DEFAULT_TTL_SECS};

/// Default header carrying the verified caller to the app.
pub const DEFAULT_CALLER_HEADER: &str = "x-ephemera-caller";

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not valid JSON or not the expected shape (the parser's message says where).
    #[error("invalid filter configuration: {0}")]
    Syntax(String),
    /// A value is out of range or inconsistent.
    #[error("invalid filter configuration: {0}")]
    Invalid(String),
}

/// Which listener the filter serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Verify callers of the local app.
    Inbound,
    /// Mint tokens for the app's calls to other services.
    Outbound,
}

/// Where the filter reaches the shim.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShimConfig {
    /// The Envoy cluster of the shim.
    pub cluster: String,
    /// `:authority` sent to the shim.
    pub authority: String,
    /// Per-call timeout, milliseconds.
    pub timeout_ms: u64,
    /// How often the identity is refreshed, milliseconds.
    pub poll_ms: u64,
    /// The longest an identity is used without the shim confirming it,
    /// milliseconds: past it inbound answers 503 (a revocation must not
    /// wait for the shim to come back).
    pub max_identity_age_ms: u64,
    /// A TCP shim's per-start secret, sent as `Authorization: Bearer`.
    pub bearer: Option<ShimBearer>,
}

impl Default for ShimConfig {
    fn default() -> Self {
        Self {
            cluster: "ephemera_shim".into(),
            authority: "ephemera-shim".into(),
            timeout_ms: 1000,
            poll_ms: 200,
            max_identity_age_ms: 30_000,
            bearer: None,
        }
    }
}

/// The shim's per-start secret; never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ShimBearer(String);

impl ShimBearer {
    /// The `Authorization` header value.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl std::fmt::Debug for ShimBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShimBearer(<redacted>)")
    }
}

/// One route's authorization rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Paths the rule covers (`/exact` or `/prefix/*`).
    pub path: PathRule,
    /// Callers admitted on those paths.
    pub allow: Vec<CallerPattern>,
}

/// Inbound settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundConfig {
    /// Header the verified caller's SPIFFE ID is sent to the app in.
    pub caller_header: String,
    /// Remove `Authorization` after verification.
    pub strip_token: bool,
    /// Expected `aud` (default: this workload's own ID).
    pub audience: Option<SpiffeId>,
    /// Clock leeway, seconds.
    pub leeway_secs: u64,
    /// Longest token accepted, bytes.
    pub max_token_bytes: usize,
    /// Accept a token whose `aud` is an array containing the audience,
    /// from callers of standard-mode trust domains only. The shim's own
    /// checks (transactions, secrets) never do.
    pub allow_multiple_audiences: bool,
    /// Verified-token cache entries per worker (0: no cache).
    pub cache_size: usize,
    /// Bound on the bytes of cached tokens per worker (0: no cache).
    pub cache_bytes: usize,
    /// The app routes paths case-sensitively: rules then match the path as
    /// sent only. Otherwise a path is also matched ASCII case-folded, and
    /// both matches must agree.
    pub case_sensitive: bool,
    /// Paths served without authentication.
    pub unauthenticated: Vec<PathRule>,
    /// Per-route authorization; the most specific matching rule decides.
    /// With rules configured, a path no rule covers is denied.
    pub routes: Vec<RouteRule>,
    /// Identity-Per-Transaction routes: requests they cover get a credential
    /// for exactly one resource and action before reaching the app.
    pub transactions: Vec<TransactionRoute>,
    /// Accept WIMSE callers (Workload-Identity-Token + Workload-Proof-Token).
    pub wimse: Option<WimseInbound>,
}

/// How WIMSE callers are authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WimseInbound {
    /// Scheme and authority of this workload's target URIs
    /// (`https://billing.example.org`): a proof's `aud` must be this plus
    /// the request's path without its query. Never taken from the request.
    pub origin: String,
    /// Leeway for a proof's `exp`, seconds (at most 5).
    #[serde(default = "default_proof_leeway")]
    pub proof_leeway_secs: u64,
    /// How far ahead a proof's `exp` may be, seconds.
    #[serde(default = "default_proof_lifetime")]
    pub max_proof_lifetime_secs: u64,
    /// Header fields whose `oth` entries this workload understands (lower
    /// case); a proof naming any other is refused.
    #[serde(default)]
    pub other_tokens: Vec<String>,
}

fn default_proof_leeway() -> u64 {
    crate::wimse::MAX_PROOF_LEEWAY_SECS
}

fn default_proof_lifetime() -> u64 {
    60
}

/// Destinations called with WIMSE tokens instead of a JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WimseOutbound {
    /// `:authority` host (port ignored, case-insensitive) → the origin its
    /// receiver expects in a proof's `aud` (`https://billing.example.org`).
    pub origins: BTreeMap<String, String>,
    /// Lifetime of each proof, seconds.
    #[serde(default = "default_proof_ttl")]
    pub proof_ttl_secs: u64,
}

fn default_proof_ttl() -> u64 {
    30
}

/// An Identity-Per-Transaction route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionRoute {
    /// Request paths it covers, with variables: `/objects/{bucket}/{key*}`.
    #[serde(deserialize_with = "path_template")]
    pub path: PathTemplate,
    /// The resource: `arn:aws:s3:::{bucket}/{key}`, `{header.<name>}` allowed.
    pub resource: String,
    /// The shim's broker that issues the credential.
    pub broker: String,
    /// Method → action, replacing the default (GET/HEAD read, PUT/POST/PATCH
    /// write, DELETE delete).
    #[serde(default)]
    pub methods: BTreeMap<String, Action>,
    /// Credential field → request header the app receives it in.
    pub credential_headers: BTreeMap<String, String>,
}

fn path_template<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathTemplate, D::Error> {
    let text = String::deserialize(d)?;
    PathTemplate::parse(&text).map_err(serde::de::Error::custom)
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            caller_header: DEFAULT_CALLER_HEADER.into(),
            strip_token: true,
            audience: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            allow_multiple_audiences: false,
            cache_size: DEFAULT_CACHE_SIZE,
            cache_bytes: DEFAULT_CACHE_BYTES,
            case_sensitive: false,
            unauthenticated: Vec::new(),
            routes: Vec::new(),
            transactions: Vec::new(),
            wimse: None,
        }
    }
}

/// What to do with a call whose destination has no SPIFFE ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmapped {
    /// Local reply 403.
    Reject,
    /// Send it on without a token.
    Pass,
}

/// Outbound settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// `:authority` host (port ignored, case-insensitive) → destination ID.
    pub hosts: BTreeMap<String, SpiffeId>,
    /// Upstream cluster name → destination ID (used when no host matches).
    pub clusters: BTreeMap<String, SpiffeId>,
    /// Unmapped destinations.
    pub unmapped: Unmapped,
    /// Lifetime of minted tokens, seconds.
    pub ttl_secs: u64,
    /// How long a minted token is reused for the same audience, seconds
    /// (0: mint per request). Must leave at least half the lifetime.
    pub reuse_secs: u64,
    /// Egress hosts whose calls carry a secret resolved by the shim.
    pub secrets: Vec<super::egress::EgressRule>,
    /// Destinations called with the workload's WIT and a fresh proof.
    pub wimse: Option<WimseOutbound>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            hosts: BTreeMap::new(),
            clusters: BTreeMap::new(),
            unmapped: Unmapped::Reject,
            ttl_secs: DEFAULT_TTL_SECS,
            reuse_secs: 30,
            secrets: Vec::new(),
            wimse: None,
        }
    }
}

/// Which signature backend the filter may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CryptoChoice {
    /// The host's native functions when present and self-tested, else Rust.
    #[default]
    Auto,
    /// Always the pure-Rust backend.
    Rust,
}

/// The whole filter configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Inbound or outbound.
    pub direction: Direction,
    /// The shim.
    #[serde(default)]
    pub shim: ShimConfig,
    /// How long a request waits for the first identity before a 503, ms.
    #[serde(default = "default_startup_wait")]
    pub startup_wait_ms: u64,
    /// Signature backend.
    #[serde(default)]
    pub crypto: CryptoChoice,
    /// Inbound settings.
    #[serde(default)]
    pub inbound: InboundConfig,
    /// Outbound settings.
    #[serde(default)]
    pub outbound: OutboundConfig,
}

fn default_startup_wait() -> u64 {
    2000
}

impl FilterConfig {
    /// Parses and validates the configuration.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let mut config: Self =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes))
                .map_err(|e| match e.path().to_string().as_str() {
                    "." => ConfigError::Syntax(e.inner().to_string()),
                    path => ConfigError::Syntax(format!("{path}: {}", e.inner())),
                })?;
        config.validate()?;
        config.outbound.hosts = std::mem::take(&mut config.outbound.hosts)
            .into_iter()
            .map(|(host, id)| (host.to_ascii_lowercase(), id))
            .collect();
        if let Some(wimse) = &mut config.outbound.wimse {
            wimse.origins = std::mem::take(&mut wimse.origins)
                .into_iter()
                .map(|(host, origin)| (host.to_ascii_lowercase(), origin))
                .collect();
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.shim.cluster.is_empty() {
            return invalid("shim.cluster must not be empty".into());
        }
        if self.shim.timeout_ms == 0 || self.shim.poll_ms == 0 {
            return invalid("shim.timeout_ms and shim.poll_ms must be positive".into());
        }
        if self.shim.max_identity_age_ms <= self.shim.poll_ms + self.shim.timeout_ms {
            return invalid(format!(
                "shim.max_identity_age_ms ({}) must exceed poll_ms + timeout_ms",
                self.shim.max_identity_age_ms
            ));
        }
        if self
            .shim
            .bearer
            .as_ref()
            .is_some_and(|b| b.0.is_empty() || !b.0.bytes().all(|c| c.is_ascii_graphic()))
        {
            return invalid("shim.bearer must be a non-empty token of visible ASCII".into());
        }
        let header = &self.inbound.caller_header;
        if header.is_empty()
            || !header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return invalid(format!(
                "inbound.caller_header {header:?} must be a lowercase header name"
            ));
        }
        if matches!(header.as_str(), "authorization" | "host" | "cookie") {
            return invalid(format!("inbound.caller_header may not be {header:?}"));
        }
        if self.inbound.max_token_bytes == 0 {
            return invalid("inbound.max_token_bytes must be positive".into());
        }
        for route in &self.inbound.routes {
            if route.allow.is_empty() {
                return invalid(format!(
                    "route {:?} admits nobody: give it an allow list",
                    route.path
                ));
            }
        }
        for t in &self.inbound.transactions {
            if t.broker.is_empty() || t.credential_headers.is_empty() {
                return invalid(format!(
                    "transaction route {:?} needs a broker and credential_headers",
                    t.path.as_str()
                ));
            }
            for header in t.credential_headers.values() {
                if header.is_empty()
                    || !header
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    || matches!(header.as_str(), "authorization" | "host" | "cookie")
                    || *header == self.inbound.caller_header
                {
                    return invalid(format!(
                        "credential header {header:?} must be a lowercase header name of its own"
                    ));
                }
            }
        }
        if let Some(wimse) = &self.inbound.wimse {
            wimse.validate()?;
        }
        if let Some(wimse) = &self.outbound.wimse {
            wimse.validate()?;
        }
        let out = &self.outbound;
        if out.ttl_secs == 0 {
            return invalid("outbound.ttl_secs must be positive".into());
        }
        if out.reuse_secs.saturating_mul(2) > out.ttl_secs {
            return invalid(format!(
                "outbound.reuse_secs ({}) must be at most half of ttl_secs ({})",
                out.reuse_secs, out.ttl_secs
            ));
        }
        Ok(())
    }
}

impl WimseInbound {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !origin_form(&self.origin) {
            return invalid(format!(
                "inbound.wimse.origin {:?} must be scheme://authority without a path",
                self.origin
            ));
        }
        if self.proof_leeway_secs > crate::wimse::MAX_PROOF_LEEWAY_SECS {
            return invalid(format!(
                "inbound.wimse.proof_leeway_secs must be at most {}",
                crate::wimse::MAX_PROOF_LEEWAY_SECS
            ));
        }
        let ring = crate::wimse::RING_SECONDS - crate::wimse::MAX_PROOF_LEEWAY_SECS;
        if self.max_proof_lifetime_secs == 0 || self.max_proof_lifetime_secs >= ring {
            return invalid(format!(
                "inbound.wimse.max_proof_lifetime_secs must be between 1 and {}",
                ring - 1
            ));
        }
        if let Some(bad) = self.other_tokens.iter().find(|h| !header_name(h)) {
            return invalid(format!(
                "inbound.wimse.other_tokens: {bad:?} must be a lowercase header name"
            ));
        }
        Ok(())
    }
}

impl WimseOutbound {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some((host, origin)) = self.origins.iter().find(|(_, o)| !origin_form(o)) {
            return Err(ConfigError::Invalid(format!(
                "outbound.wimse.origins.{host}: {origin:?} must be scheme://authority without a path"
            )));
        }
        if self.proof_ttl_secs == 0 || self.proof_ttl_secs > 60 {
            return Err(ConfigError::Invalid(
                "outbound.wimse.proof_ttl_secs must be between 1 and 60".into(),
            ));
        }
        Ok(())
    }
}

/// `http(s)://authority` with a non-empty authority and nothing after it.
fn origin_form(origin: &str) -> bool {
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    authority.is_some_and(|a| !a.is_empty() && !a.contains(['/', '?', '#', '@', ' ']))
}

fn header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_configuration_takes_the_defaults() {
        let c = FilterConfig::parse(br#"{"direction":"inbound"}"#).unwrap();
        assert_eq!(c.inbound.caller_header, DEFAULT_CALLER_HEADER);
        assert!(c.inbound.strip_token);
        assert_eq!(c.shim.cluster, "ephemera_shim");
        assert_eq!(c.outbound.unmapped, Unmapped::Reject);
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let cases: [(&[u8], &str); 12] = [
            (br#"{"direction":"inbound","inbound":{"wimse":{"origin":"https://b/x"}}}"#, "inbound.wimse.origin"),
            (br#"{"direction":"inbound","inbound":{"wimse":{"origin":"https://b","proof_leeway_secs":6}}}"#, "proof_leeway_secs"),
            (br#"{"direction":"inbound","inbound":{"wimse":{"origin":"https://b","other_tokens":["X-A"]}}}"#, "other_tokens"),
            (br#"{"direction":"outbound","outbound":{"wimse":{"origins":{"b":"ftp://b"}}}}"#, "outbound.wimse.origins.b"),
            (br#"{"direction":"inbound","inbond":{}}"#, "unknown field `inbond`"),
            (br#"{"direction":"sideways"}"#, "unknown variant `sideways`"),
            (br#"{}"#, "missing field `direction`"),
            (br#"{"direction":"inbound","inbound":{"caller_header":"X-Caller"}}"#, "lowercase header"),
            (br#"{"direction":"inbound","inbound":{"routes":[{"path":"/a/*","allow":["spiffe://e.org/a*"]}]}}"#, "caller pattern"),
            (br#"{"direction":"inbound","inbound":{"routes":[{"path":"/a/*","allow":[]}]}}"#, "admits nobody"),
            (br#"{"direction":"outbound","outbound":{"ttl_secs":60,"reuse_secs":50}}"#, "at most half"),
            (br#"{"direction":"outbound","outbound":{"hosts":{"b":"http://x"}}}"#, "scheme"),
        ];
        for (input, needle) in cases {
            let err = FilterConfig::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn host_names_are_matched_case_insensitively() {
        let c = FilterConfig::parse(
            br#"{"direction":"outbound","outbound":{"hosts":{"Billing.Local":"spiffe://e.org/billing"}}}"#,
        )
        .unwrap();
        assert!(c.outbound.hosts.contains_key("billing.local"));
    }
}
