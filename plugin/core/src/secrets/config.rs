//! The secrets configuration (`stores`, `refs`, `policies`, `principals`) and
//! its validation, which reports every problem at once.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::filter::CallerPattern;
use crate::secrets::uri::SecretUri;

/// A backend kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Environment variables.
    Env,
    /// A mounted directory.
    File,
    /// OpenBao KVv2 over HTTP.
    Openbao,
    /// Vault KVv2 over HTTP.
    Vault,
    /// A gopass (or `pass`) password store: GPG files, read with `show`.
    Gopass,
}

/// Where secrets are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The backend.
    pub backend: Backend,
    /// OpenBao/Vault address.
    #[serde(default)]
    pub address: Option<String>,
    /// KV mount (OpenBao/Vault), or the mount name of a file store.
    #[serde(default)]
    pub mount: Option<String>,
    /// File store: the directory.
    #[serde(default)]
    pub dir: Option<String>,
    /// Env store: a prefix for variable names.
    #[serde(default)]
    pub prefix: Option<String>,
    /// OpenBao/Vault: the file holding the shim's read token.
    #[serde(default)]
    pub token_file: Option<String>,
    /// Gopass: the folder of the password store the store's paths are in
    /// (e.g. `mxm/red`).
    #[serde(default)]
    pub root: Option<String>,
    /// Gopass: the program to run (`gopass`, or `pass` for the same store
    /// format); default `gopass`.
    #[serde(default)]
    pub binary: Option<String>,
    /// Gopass: the password store directory (default: the environment's
    /// `PASSWORD_STORE_DIR`).
    #[serde(default)]
    pub store_dir: Option<String>,
    /// Gopass: the GnuPG home (default: the environment's `GNUPGHOME`).
    #[serde(default)]
    pub gnupg_home: Option<String>,
}

/// A named secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefConfig {
    /// The store (or give `uri`).
    #[serde(default)]
    pub store: Option<String>,
    /// Path in the store (or variable name for env).
    #[serde(default)]
    pub path: Option<String>,
    /// A canonical secret URI instead of `store` + `path`; its mount selects the store.
    #[serde(default)]
    pub uri: Option<String>,
    /// KVv2 field.
    #[serde(default)]
    pub field: Option<String>,
    /// KVv2 version pin.
    #[serde(default)]
    pub version: Option<u64>,
    /// The policy deciding who may read it.
    pub policy: String,
    /// Cache resolved values this long (default: never).
    #[serde(default)]
    pub cache_ttl_secs: Option<u64>,
}

/// Who may read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Principals admitted.
    pub allowed_principals: Vec<String>,
    /// Reads go through a grant: a window of `ttl_secs` opened by the first
    /// admitted read, with at most `max_uses` reads, bound to the first
    /// sender that presented a `cnf` key. Without it, every admitted read
    /// is released.
    #[serde(default)]
    pub grant: Option<GrantPolicy>,
}

/// The lifetime, use budget and purposes of a grant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantPolicy {
    /// How long a grant lasts, seconds.
    pub ttl_secs: u64,
    /// Reads per grant (default 1).
    #[serde(default = "one")]
    pub max_uses: u32,
    /// The purposes a read may state (default: `egress`). Each purpose has
    /// its own grant, so a caller cannot mint budgets by naming new ones.
    #[serde(default = "egress_only")]
    pub purposes: Vec<String>,
}

fn one() -> u32 {
    1
}

fn egress_only() -> Vec<String> {
    vec!["egress".into()]
}

/// How a verified caller becomes a principal (first match wins).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalRule {
    /// Caller pattern.
    #[serde(rename = "match")]
    pub pattern: CallerPattern,
    /// The principal.
    pub principal: String,
}

/// Where secret decisions are audited.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The ledger file (its own: not the IPT ledger).
    pub ledger: String,
    /// The tenant the decisions belong to.
    pub tenant: String,
    /// File holding the tenant's salt (at least 16 bytes) for HMAC references.
    pub salt_file: String,
    /// The writer's Ed25519 private key (PKCS#8 PEM, 0600, outside the
    /// ledger's directory): every durable batch is signed with it.
    #[serde(default)]
    pub signing_key_file: Option<String>,
    /// Where signed checkpoints of the ledger's head are kept.
    #[serde(default)]
    pub checkpoint: Option<CheckpointConfig>,
}

/// A create-only OpenBao/Vault KV v2 path for a ledger's signed checkpoints:
/// one new key per checkpoint (`<path>/<seq>`, written with `cas: 0`), under
/// a token whose policy grants only `create` there, so the ledger's writer
/// can add checkpoints but never overwrite or delete one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Server address, e.g. `https://bao.example:8200`.
    pub address: String,
    /// File holding the token (policy: `create` on `<mount>/data/<path>/*`).
    pub token_file: String,
    /// The KV v2 mount.
    #[serde(default = "default_checkpoint_mount")]
    pub mount: String,
    /// The folder under the mount, one per ledger.
    pub path: String,
    /// Seconds between checkpoints (also written at shutdown).
    #[serde(default = "default_checkpoint_interval")]
    pub interval_secs: u64,
    /// PEM CAs trusted for an `https://` address instead of the platform's.
    #[serde(default)]
    pub ca_file: Option<String>,
}

fn default_checkpoint_mount() -> String {
    "secret".into()
}

fn default_checkpoint_interval() -> u64 {
    30
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// Stores by name.
    #[serde(default)]
    pub stores: BTreeMap<String, StoreConfig>,
    /// Secrets by name.
    #[serde(default)]
    pub refs: BTreeMap<String, RefConfig>,
    /// Policies by name.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyConfig>,
    /// Principal rules, in order. Without any (an mxm-secrets
    /// configuration has none), a caller `spiffe://<td>/<name>` is principal
    /// `<name>`, and a caller with a longer path is no principal.
    #[serde(default)]
    pub principals: Vec<PrincipalRule>,
    /// Audit of every decision (allow, deny, error).
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    /// Where grant uses, seen `jti`s and remembered denials are kept: this
    /// shim's memory (the default), or a store shared by every replica.
    #[serde(default)]
    pub state: Option<StateConfig>,
}

/// An enforcement state shared by replicas.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Redis (or a server speaking its protocol).
    pub redis: RedisState,
}

/// Enforcement state in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisState {
    /// `redis://host:port[/db]`, or `rediss://…` for TLS; no password in
    /// it (`password_file`).
    pub url: String,
    /// Prefix of every key (default `ephemera:`).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// The ACL user (default: the default user).
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (`AUTH`).
    #[serde(default)]
    pub password_file: Option<String>,
    /// PEM CA certificates a `rediss://` server must chain to (default:
    /// the system's roots).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Longest wait for Redis per operation, milliseconds (default 500).
    #[serde(default = "default_state_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_key_prefix() -> String {
    "ephemera:".into()
}

fn default_state_timeout_ms() -> u64 {
    500
}

impl RedisState {
    /// The problems of this part of a configuration.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let tls = self.url.starts_with("rediss://");
        let Some(rest) = self
            .url
            .strip_prefix("redis://")
            .or_else(|| self.url.strip_prefix("rediss://"))
        else {
            return vec!["url must start with redis:// or rediss://".into()];
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            out.push("url must not carry credentials: use username and password_file".into());
        }
        if self.ca_file.is_some() && !tls {
            out.push("ca_file needs a rediss:// url".into());
        }
        if self.timeout_ms == 0 {
            out.push("timeout_ms must be at least 1".into());
        }
        out
    }
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where (e.g. `refs.db`).
    pub at: String,
    /// What.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// True for a password store path: `/`-separated segments, none empty,
/// `.`, `..`, starting with `-` (it would read as an option) or holding a
/// control character.
pub fn store_path(path: &str) -> bool {
    path.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && !segment.starts_with('-')
            && !segment.chars().any(char::is_control)
    })
}

fn covers(earlier: &CallerPattern, later: &CallerPattern) -> bool {
    match (earlier, later) {
        (CallerPattern::Exact(a), CallerPattern::Exact(b)) => a == b,
        (CallerPattern::Below(a), CallerPattern::Exact(b) | CallerPattern::Below(b)) => {
            b.as_str()
                .strip_prefix(a.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
                || (matches!(later, CallerPattern::Below(_)) && a == b)
        }
        (CallerPattern::Exact(_), CallerPattern::Below(_)) => false,
    }
}

impl SecretsConfig {
    /// Every cross-reference problem, in a stable order.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut problem = |at: String, message: String| out.push(ConfigProblem { at, message });
        for (name, store) in &self.stores {
            let at = format!("stores.{name}");
            match store.backend {
                Backend::Openbao | Backend::Vault
                    if store.address.is_none()
                        || store.mount.is_none()
                        || store.token_file.is_none() =>
                {
                    problem(
                        at,
                        "openbao/vault stores need address, mount and token_file".into(),
                    );
                }
                Backend::File if store.dir.is_none() => problem(at, "file stores need dir".into()),
                Backend::Gopass if store.root.as_deref().is_none_or(|r| !store_path(r)) => problem(
                    at,
                    "gopass stores need root, a store path (segments without `..`, `.` or a \
                     leading `-`)"
                        .into(),
                ),
                _ => {}
            }
        }
        for (name, r) in &self.refs {
            let at = format!("refs.{name}");
            match (&r.store, &r.uri) {
                (Some(store), None) => {
                    match self.stores.get(store) {
                        None => problem(at.clone(), format!("unknown store {store:?}")),
                        Some(s)
                            if s.backend == Backend::Gopass
                                && r.path.as_deref().is_some_and(|p| !store_path(p)) =>
                        {
                            problem(
                                at.clone(),
                                "path must be a store path (segments without `..`, `.` or a \
                                 leading `-`)"
                                    .into(),
                            );
                        }
                        Some(_) => {}
                    }
                    if r.path.is_none() {
                        problem(at.clone(), "needs path".into());
                    }
                }
                (None, Some(uri)) => match SecretUri::parse(uri, None) {
                    Ok(u) => {
                        if self.store_for_mount(u.mount()).is_none() {
                            problem(at.clone(), format!("no store has mount {:?}", u.mount()));
                        }
                    }
                    Err(e) => problem(at.clone(), format!("uri: {e}")),
                },
                _ => problem(at.clone(), "give either store + path, or uri".into()),
            }
            if !self.policies.contains_key(&r.policy) {
                problem(at, format!("unknown policy {:?}", r.policy));
            }
        }
        let produced: Vec<&str> = self
            .principals
            .iter()
            .map(|p| p.principal.as_str())
            .collect();
        for (name, p) in &self.policies {
            if let Some(g) = &p.grant
                && (g.ttl_secs == 0 || g.max_uses == 0 || g.purposes.is_empty())
            {
                problem(
                    format!("policies.{name}.grant"),
                    "ttl_secs and max_uses must be at least 1, with at least one purpose".into(),
                );
            }
            for principal in &p.allowed_principals {
                // Without rules every one-segment ID names its principal.
                if !self.principals.is_empty() && !produced.contains(&principal.as_str()) {
                    problem(
                        format!("policies.{name}"),
                        format!("principal {principal:?} is produced by no principal rule"),
                    );
                }
            }
        }
        // A grant's budget is per secret: refs naming one secret must agree
        // on it, or the more generous ref would lift the stricter one's limit.
        let mut granted: std::collections::BTreeMap<String, (&String, Option<&GrantPolicy>)> =
            std::collections::BTreeMap::new();
        for (name, r) in &self.refs {
            let (Some(secret), Some(policy)) = (self.reference(name), self.policies.get(&r.policy))
            else {
                continue;
            };
            let grant = policy.grant.as_ref();
            match granted.get(&secret) {
                Some((first, other)) if *other != grant => problem(
                    format!("refs.{name}"),
                    format!("names the same secret as refs.{first} under another grant policy"),
                ),
                Some(_) => {}
                None => {
                    granted.insert(secret, (name, grant));
                }
            }
        }
        if let Some(state) = &self.state {
            for message in state.redis.problems() {
                problem("state.redis".into(), message);
            }
        }
        for (i, rule) in self.principals.iter().enumerate() {
            if let Some(j) = self.principals[..i]
                .iter()
                .position(|e| covers(&e.pattern, &rule.pattern))
            {
                problem(
                    format!("principals[{i}]"),
                    format!(
                        "can never match: principals[{j}] ({}) matches first",
                        self.principals[j].pattern
                    ),
                );
            }
        }
        out
    }

    /// The store whose mount is `mount`.
    pub fn store_for_mount(&self, mount: &str) -> Option<(&String, &StoreConfig)> {
        self.stores
            .iter()
            .find(|(_, s)| s.mount.as_deref() == Some(mount))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_problems(state: &str) -> Vec<String> {
        let config: SecretsConfig =
            serde_json::from_str(&format!(r#"{{"state": {{"redis": {state}}}}}"#)).unwrap();
        config
            .problems()
            .into_iter()
            .map(|p| format!("{}: {}", p.at, p.message))
            .collect()
    }

    #[test]
    fn a_shared_state_names_what_is_wrong_with_it() {
        assert!(state_problems(r#"{"url": "redis://127.0.0.1:6379"}"#).is_empty());
        assert!(state_problems(r#"{"url": "rediss://r:6380/1", "ca_file": "/ca.pem"}"#).is_empty());
        assert_eq!(
            state_problems(r#"{"url": "http://r"}"#),
            ["state.redis: url must start with redis:// or rediss://"]
        );
        assert_eq!(
            state_problems(r#"{"url": "redis://:hunter2@r:6379"}"#),
            ["state.redis: url must not carry credentials: use username and password_file"]
        );
        assert_eq!(
            state_problems(r#"{"url": "redis://r", "ca_file": "/ca.pem", "timeout_ms": 0}"#),
            [
                "state.redis: ca_file needs a rediss:// url",
                "state.redis: timeout_ms must be at least 1"
            ]
        );
    }
}
