//! Resolution: name → ref → principal → policy (deny here, before any
//! backend I/O) → store → location.

use super::config::{Backend, GrantPolicy, RefConfig, SecretsConfig};
use crate::secrets::grants::GrantError;
use crate::secrets::uri::SecretUri;
use crate::spiffe_id::SpiffeId;

/// Why a secret was not resolved. Distinct cases, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No ref by that name.
    #[error("unknown secret {0:?}")]
    UnknownSecret(String),
    /// The caller's principal is not admitted by the ref's policy.
    #[error("{caller} is not authorized for secret {secret:?}")]
    NotAuthorized {
        /// The secret.
        secret: String,
        /// The caller.
        caller: SpiffeId,
    },
    /// The ref's store or location is not usable (configuration).
    #[error("secret {0:?} is misconfigured: {1}")]
    Misconfigured(String, String),
    /// The store could not be reached: nothing was read.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// The value was read but its audit record could not be written, so
    /// it is not released.
    #[error("audit unavailable: the secret was not released")]
    AuditUnavailable,
    /// No secret at that location (or that version does not exist).
    #[error("secret not found")]
    NotFound,
    /// The pinned version was deleted (soft delete).
    #[error("secret version deleted")]
    VersionDeleted,
    /// The pinned version was destroyed.
    #[error("secret version destroyed")]
    VersionDestroyed,
    /// The secret has no such field.
    #[error("secret has no field {0:?}")]
    FieldMissing(String),
    /// The shared enforcement state (replay, grants) could not be reached
    /// or lost what it held: a read that needs it is not decided.
    #[error("state store unavailable: {0}")]
    StateUnavailable(String),
    /// The enforcement point refused the read (grant, replay, binding).
    #[error("refused: {0}")]
    Refused(#[from] GrantError),
}

impl ResolveError {
    /// The reason as the audit ledger records it: the kind of failure and
    /// the grant's word, never a store's own message, a path or a field.
    pub fn audit_reason(&self) -> String {
        match self {
            Self::Misconfigured(name, _) => format!("secret {name:?} is misconfigured"),
            Self::StoreUnavailable(_) => "store unavailable".into(),
            Self::StateUnavailable(_) => "state store unavailable".into(),
            Self::FieldMissing(_) => "secret has no such field".into(),
            other => other.to_string(),
        }
    }
}

/// Where the value is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An environment variable.
    Env {
        /// Its name.
        var: String,
    },
    /// A file below a directory (confinement is checked at read time).
    File {
        /// The directory.
        dir: String,
        /// The relative path.
        path: String,
    },
    /// A password store entry, read with `<binary> show <path>`.
    Gopass {
        /// The program (`gopass` or `pass`).
        binary: String,
        /// The store directory, when not the environment's.
        store_dir: Option<String>,
        /// The GnuPG home, when not the environment's.
        gnupg_home: Option<String>,
        /// `<root>/<path>` in the store.
        path: String,
        /// A `key: value` line to read instead of the first line.
        field: Option<String>,
    },
    /// A KVv2 secret.
    Kv2 {
        /// Server address.
        address: String,
        /// The shim's token file.
        token_file: String,
        /// KV mount.
        mount: String,
        /// Path below the mount.
        path: String,
        /// Field, if one.
        field: Option<String>,
        /// Version pin.
        version: Option<u64>,
    },
}

/// A decided resolution: authorized, with the location to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The secret's name.
    pub name: String,
    /// The caller's principal.
    pub principal: String,
    /// The store's name.
    pub store: String,
    /// Where to read.
    pub location: Location,
    /// A stable reference for audit (canonical URI where one exists).
    pub reference: String,
    /// Cache lifetime the ref allows.
    pub cache_ttl_secs: Option<u64>,
    /// The grant reads go through, if the policy asks for one.
    pub grant: Option<GrantPolicy>,
}

impl SecretsConfig {
    /// The principal of a verified caller: the first matching rule; without
    /// rules, the one segment of a `spiffe://<td>/<name>` caller.
    pub fn principal_of<'a>(&'a self, caller: &'a SpiffeId) -> Option<&'a str> {
        if self.principals.is_empty() {
            let name = caller.path().strip_prefix('/')?;
            return (!name.is_empty() && !name.contains('/')).then_some(name);
        }
        self.principals
            .iter()
            .find(|r| r.pattern.matches(caller))
            .map(|r| r.principal.as_str())
    }

    /// Decides whether `caller` may read `name`, and from where. Pure: no
    /// backend is consulted, so a denial costs the backend nothing.
    pub fn plan(&self, name: &str, caller: &SpiffeId) -> Result<Plan, ResolveError> {
        let r = self
            .refs
            .get(name)
            .ok_or_else(|| ResolveError::UnknownSecret(name.to_owned()))?;
        let not_authorized = || ResolveError::NotAuthorized {
            secret: name.to_owned(),
            caller: caller.clone(),
        };
        let principal = self.principal_of(caller).ok_or_else(not_authorized)?;
        let policy = self.policies.get(&r.policy).ok_or_else(|| {
            ResolveError::Misconfigured(name.into(), format!("unknown policy {:?}", r.policy))
        })?;
        if !policy.allowed_principals.iter().any(|p| p == principal) {
            return Err(not_authorized());
        }
        let (store, location, reference) = self.locate(name, r)?;
        Ok(Plan {
            name: name.to_owned(),
            principal: principal.to_owned(),
            store,
            location,
            reference,
            cache_ttl_secs: r.cache_ttl_secs,
            grant: policy.grant.clone(),
        })
    }

    /// The audit reference (canonical URI where one exists) of a secret,
    /// whoever asks; `None` for an unknown or misconfigured name. Pure.
    pub fn reference(&self, name: &str) -> Option<String> {
        let r = self.refs.get(name)?;
        self.locate(name, r).ok().map(|(_, _, reference)| reference)
    }

    /// Store name, location and reference of a ref. Pure.
    fn locate(
        &self,
        name: &str,
        r: &RefConfig,
    ) -> Result<(String, Location, String), ResolveError> {
        let misconfigured = |why: String| ResolveError::Misconfigured(name.to_owned(), why);
        let (store_name, store, path, field, version) = match (&r.store, &r.uri) {
            (Some(s), None) => {
                let store = self
                    .stores
                    .get(s)
                    .ok_or_else(|| misconfigured(format!("unknown store {s:?}")))?;
                let path = r
                    .path
                    .clone()
                    .ok_or_else(|| misconfigured("no path".into()))?;
                (s.clone(), store, path, r.field.clone(), r.version)
            }
            (None, Some(uri)) => {
                let uri = SecretUri::parse(uri, None).map_err(|e| misconfigured(e.to_string()))?;
                let (s, store) = self.store_for_mount(uri.mount()).ok_or_else(|| {
                    misconfigured(format!("no store has mount {:?}", uri.mount()))
                })?;
                let field = uri.field().map(str::to_owned).or_else(|| r.field.clone());
                (
                    s.clone(),
                    store,
                    uri.path(),
                    field,
                    uri.version().or(r.version),
                )
            }
            _ => return Err(misconfigured("give either store + path, or uri".into())),
        };
        let missing = |what: &str| misconfigured(format!("store {store_name:?} has no {what}"));
        let (location, reference) = match store.backend {
            Backend::Env => {
                let var = format!("{}{}", store.prefix.clone().unwrap_or_default(), path);
                (Location::Env { var: var.clone() }, format!("env:{var}"))
            }
            Backend::File => {
                let dir = store.dir.clone().ok_or_else(|| missing("dir"))?;
                let mount = store.mount.clone().unwrap_or_else(|| store_name.clone());
                let uri = SecretUri::parse(&format!("file://{mount}/{path}"), None)
                    .map_err(|e| misconfigured(e.to_string()))?;
                (Location::File { dir, path }, uri.to_string())
            }
            Backend::Gopass => {
                let root = store.root.clone().ok_or_else(|| missing("root"))?;
                let full = format!("{}/{path}", root.trim_end_matches('/'));
                if !super::config::store_path(&full) {
                    return Err(misconfigured(format!("{full:?} is not a store path")));
                }
                // No canonical URI scheme exists for a password store:
                // grants and audit key on this reference instead.
                let mut reference = format!("gopass:{full}");
                if let Some(f) = &field {
                    reference.push_str(&format!("#{f}"));
                }
                let location = Location::Gopass {
                    binary: store.binary.clone().unwrap_or_else(|| "gopass".into()),
                    store_dir: store.store_dir.clone(),
                    gnupg_home: store.gnupg_home.clone(),
                    path: full,
                    field,
                };
                (location, reference)
            }
            Backend::Openbao | Backend::Vault => {
                let mount = store.mount.clone().ok_or_else(|| missing("mount"))?;
                let scheme = if store.backend == Backend::Openbao {
                    "openbao+kv2"
                } else {
                    "hashicorp+kv2"
                };
                let mut text = format!("{scheme}://{mount}/{path}");
                if let Some(f) = &field {
                    text.push_str(&format!("#{f}"));
                }
                if let Some(v) = version {
                    text.push_str(&format!("?version={v}"));
                }
                let uri =
                    SecretUri::parse(&text, None).map_err(|e| misconfigured(e.to_string()))?;
                (
                    Location::Kv2 {
                        address: store.address.clone().ok_or_else(|| missing("address"))?,
                        token_file: store
                            .token_file
                            .clone()
                            .ok_or_else(|| missing("token_file"))?,
                        mount,
                        path: uri.path(),
                        field,
                        version,
                    },
                    uri.to_string(),
                )
            }
        };
        Ok((store_name, location, reference))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
      "stores": {"red": {"backend": "openbao", "address": "http://127.0.0.1:8200", "mount": "secret", "token_file": "/t"},
                 "files": {"backend": "file", "dir": "/run/secrets", "mount": "creds"}},
      "refs": {"databento_api_key": {"store": "red", "path": "marketdata/databento/api_key", "field": "key", "policy": "marketdata_access"},
               "db": {"uri": "openbao+kv2://secret/app/db#password?version=2", "policy": "marketdata_access"},
               "cert": {"store": "files", "path": "tls/cert.pem", "policy": "marketdata_access"}},
      "policies": {"marketdata_access": {"allowed_principals": ["marketdata", "research"]}},
      "principals": [{"match": "spiffe://example.org/marketdata/*", "principal": "marketdata"},
                     {"match": "spiffe://example.org/research", "principal": "research"}]
    }"#;

    fn config() -> SecretsConfig {
        serde_json::from_str(CONFIG).unwrap()
    }

    /// An mxm-secrets configuration: a gopass store, no principal rules.
    const MXM: &str = r#"{
      "stores": {"red": {"backend": "gopass", "root": "mxm/red"}},
      "refs": {"api": {"store": "red", "path": "marketdata/api", "policy": "p"},
               "api_user": {"store": "red", "path": "marketdata/api", "field": "user", "policy": "p"}},
      "policies": {"p": {"allowed_principals": ["marketdata"]}}
    }"#;

    #[test]
    fn without_principal_rules_a_one_segment_id_names_its_principal() {
        let c: SecretsConfig = serde_json::from_str(MXM).unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let caller = |s: &str| SpiffeId::parse(s).unwrap();
        let plan = c.plan("api", &caller("spiffe://e.org/marketdata")).unwrap();
        assert_eq!(plan.principal, "marketdata");
        assert_eq!(plan.reference, "gopass:mxm/red/marketdata/api");
        assert!(matches!(
            &plan.location,
            Location::Gopass { binary, path, field: None, .. } if binary == "gopass" && path == "mxm/red/marketdata/api"
        ));
        assert_eq!(
            c.reference("api_user").as_deref(),
            Some("gopass:mxm/red/marketdata/api#user")
        );
        for other in [
            "spiffe://e.org/team/marketdata",
            "spiffe://e.org/research",
            "spiffe://e.org",
        ] {
            assert!(
                matches!(
                    c.plan("api", &caller(other)),
                    Err(ResolveError::NotAuthorized { .. })
                ),
                "{other}"
            );
        }
    }

    #[test]
    fn a_password_store_path_has_no_empty_dot_or_option_segments() {
        use crate::secrets::config::store_path;
        for good in ["mxm/red", "a", "a/b.c/d-e", "x/.hidden"] {
            assert!(store_path(good), "{good}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "a/./b", "a/../b", "-x", "a/--help", "a/b\nc",
        ] {
            assert!(!store_path(bad), "{bad:?}");
        }
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn an_admitted_caller_gets_a_plan_with_a_canonical_reference() {
        let plan = config()
            .plan(
                "databento_api_key",
                &id("spiffe://example.org/marketdata/feed"),
            )
            .unwrap();
        assert_eq!(plan.principal, "marketdata");
        assert_eq!(
            plan.reference,
            "openbao+kv2://secret/marketdata/databento/api_key#key"
        );
        let db = config()
            .plan("db", &id("spiffe://example.org/research"))
            .unwrap();
        assert_eq!(
            db.reference,
            "openbao+kv2://secret/app/db#password?version=2"
        );
        assert!(matches!(
            db.location,
            Location::Kv2 {
                version: Some(2),
                ..
            }
        ));
        assert_eq!(
            config()
                .plan("cert", &id("spiffe://example.org/research"))
                .unwrap()
                .reference,
            "file://creds/tls/cert.pem"
        );
    }

    #[test]
    fn unknown_names_and_unadmitted_callers_are_distinct_errors() {
        assert_eq!(
            config().plan("nope", &id("spiffe://example.org/research")),
            Err(ResolveError::UnknownSecret("nope".into()))
        );
        for caller in [
            "spiffe://example.org/ops",
            "spiffe://example.org/research/sub",
        ] {
            assert!(
                matches!(
                    config().plan("db", &id(caller)),
                    Err(ResolveError::NotAuthorized { .. })
                ),
                "{caller}"
            );
        }
    }

    #[test]
    fn every_configuration_problem_is_reported_at_once() {
        let bad: SecretsConfig = serde_json::from_str(
            r#"{
          "stores": {"v": {"backend": "vault"},
                     "f": {"backend": "file", "dir": "/d", "mount": "m"}},
          "refs": {"a": {"store": "missing", "path": "x", "policy": "nope"},
                   "b": {"uri": "openbao+kv2://other/x", "policy": "p"},
                   "c": {"policy": "p"},
                   "d": {"store": "f", "path": "s", "policy": "strict"},
                   "e": {"uri": "file://m/s", "policy": "open"}},
          "policies": {"p": {"allowed_principals": ["ghost"], "grant": {"ttl_secs": 0}},
                       "strict": {"allowed_principals": ["team"], "grant": {"ttl_secs": 9}},
                       "open": {"allowed_principals": ["team"]}},
          "principals": [{"match": "spiffe://e.org/team/*", "principal": "team"},
                         {"match": "spiffe://e.org/team/a", "principal": "a"}]
        }"#,
        )
        .unwrap();
        let problems: Vec<String> = bad.problems().iter().map(ToString::to_string).collect();
        let expected = [
            "stores.v: openbao/vault stores need address, mount and token_file",
            "refs.a: unknown store \"missing\"",
            "refs.a: unknown policy \"nope\"",
            "refs.b: no store has mount \"other\"",
            "refs.c: give either store + path, or uri",
            "policies.p.grant: ttl_secs and max_uses must be at least 1, with at least one purpose",
            "policies.p: principal \"ghost\" is produced by no principal rule",
            "refs.e: names the same secret as refs.d under another grant policy",
            "principals[1]: can never match: principals[0] (spiffe://e.org/team/*) matches first",
        ];
        assert_eq!(problems, expected);
        assert!(config().problems().is_empty(), "{:?}", config().problems());
    }
}
