//! Database credentials from OpenBao/Vault's database secrets engine: one
//! operator-defined role per (resource, action), e.g. `SELECT` on one table,
//! read from `<mount>/creds/<role>` for each transaction — a database user
//! that exists for that transaction only — and its lease revoked at close.
//! The shim never writes SQL: the role's creation and revocation statements
//! are the operator's (the revocation statements should end the user's open
//! sessions; `VALID UNTIL` alone does not).

use std::collections::BTreeMap;

use ephemera_core::ipt::{Action, Resource};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::Value;

use super::openbao::Session;
use super::{BrokerError, BrokerSetupError, Issued, Revocation};
use crate::clock::unix_now;
use crate::sensitive::Sensitive;

/// Configuration of a database credentials broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Server address, e.g. `http://127.0.0.1:8200`.
    pub address: String,
    /// File holding the shim's own token (may read `<mount>/creds/<role>`
    /// for the roles below and revoke their leases); re-read when it
    /// changes.
    pub token_file: std::path::PathBuf,
    /// Where the database secrets engine is mounted.
    #[serde(default = "default_mount")]
    pub mount: String,
    /// The engine's role for each resource and action, e.g.
    /// `{"postgres://orders/invoices": {read: orders-invoices-read}}`.
    pub roles: BTreeMap<Resource, BTreeMap<String, String>>,
    /// A connection string handed to the app as the `dsn` field, with
    /// `{username}` and `{password}` filled in (percent-encoded), e.g.
    /// `postgresql://{username}:{password}@db:5432/orders`.
    #[serde(default)]
    pub dsn: Option<String>,
    /// Longest lease accepted; a role issuing longer ones is refused.
    #[serde(default = "default_max_ttl")]
    pub max_ttl_secs: u64,
    /// Request timeout, milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// PEM CAs trusted for an `https://` address instead of the platform's.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// What a URI's userinfo must escape: all but RFC 3986's unreserved
/// characters.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn default_mount() -> String {
    "database".into()
}
fn default_max_ttl() -> u64 {
    300
}
fn default_timeout() -> u64 {
    2000
}

/// A database credentials broker.
#[derive(Debug, Clone)]
pub struct DatabaseBroker {
    session: Session,
    config: DatabaseConfig,
    /// `config.roles` with its actions parsed once: (resource, action, role).
    roles: Vec<(Resource, Action, String)>,
}

/// A mount or role name: letters, digits, `-`, `_`, `.` (and `/` between
/// segments of a mount), so it cannot leave its place in an API path.
fn is_path_name(text: &str, slashes: bool) -> bool {
    !text.is_empty()
        && text.split('/').all(|segment| {
            !segment.is_empty()
                && !matches!(segment, "." | "..")
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        && (slashes || !text.contains('/'))
}

impl DatabaseBroker {
    /// Builds the broker; its token file must hold a token now.
    pub fn new(name: &str, config: DatabaseConfig) -> Result<Self, BrokerSetupError> {
        let field = |field: String, problem: &str| BrokerSetupError::Field {
            broker: name.to_owned(),
            field,
            problem: problem.to_owned(),
        };
        if !is_path_name(&config.mount, true) {
            return Err(field("mount".into(), "must be a path of plain names"));
        }
        if config.roles.is_empty() {
            return Err(field("roles".into(), "must name at least one role"));
        }
        let mut roles = Vec::new();
        for (resource, actions) in &config.roles {
            for (action, role) in actions {
                let here = format!("roles.{:?}.{action}", resource.as_str());
                let Ok(parsed) = Action::parse(action) else {
                    return Err(field(here, "is not an action"));
                };
                if !is_path_name(role, false) {
                    return Err(field(here, "must be a plain role name"));
                }
                roles.push((resource.clone(), parsed, role.clone()));
            }
        }
        if let Some(dsn) = &config.dsn
            && !(dsn.contains("{username}") && dsn.contains("{password}"))
        {
            return Err(field(
                "dsn".into(),
                "must contain {username} and {password}",
            ));
        }
        if config.max_ttl_secs == 0 {
            return Err(field("max_ttl_secs".into(), "must be positive"));
        }
        let session = Session::new(
            name,
            &config.address,
            &config.token_file,
            config.ca_file.as_deref(),
            config.timeout_ms,
        )?;
        Ok(Self {
            session,
            config,
            roles,
        })
    }

    /// The broker's name.
    pub fn name(&self) -> &str {
        self.session.name()
    }

    fn role(&self, resource: &Resource, action: &Action) -> Option<&str> {
        self.roles
            .iter()
            .find(|(r, a, _)| r == resource && a == action)
            .map(|(_, _, role)| role.as_str())
    }

    /// Reads fresh credentials from the role for `action` on `resource`;
    /// checks the lease.
    pub async fn issue(&self, resource: &Resource, action: &Action) -> Result<Issued, BrokerError> {
        let role = self
            .role(resource, action)
            .ok_or_else(|| BrokerError::NoRole {
                broker: self.name().to_owned(),
                resource: resource.to_string(),
                action: action.to_string(),
            })?;
        let prefix = format!("{}/creds/{role}", self.config.mount);
        let read = self
            .session
            .call(reqwest::Method::GET, &prefix, None)
            .await?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let lease_id = text(&read["lease_id"]);
        let username = text(&read["data"]["username"]);
        let password = Sensitive::new(text(&read["data"]["password"]));
        let lease_secs = read["lease_duration"].as_u64().unwrap_or(0);
        let problem = if !lease_id.starts_with(&format!("{prefix}/")) {
            Some("no lease of the role in the response".to_owned())
        } else if username.is_empty() || password.expose().is_empty() {
            Some("no username and password in the response".to_owned())
        } else if lease_secs == 0 || lease_secs > self.config.max_ttl_secs {
            Some(format!(
                "lease of {lease_secs} s, not 1-{} s",
                self.config.max_ttl_secs
            ))
        } else {
            None
        };
        if let Some(reason) = problem {
            if !lease_id.is_empty() {
                let _ = self.revoke(&lease_id).await;
            }
            return Err(BrokerError::Mismatch {
                broker: self.name().to_owned(),
                reason,
            });
        }
        let mut credential = BTreeMap::new();
        if let Some(dsn) = &self.config.dsn {
            let dsn = dsn
                .replace(
                    "{username}",
                    &utf8_percent_encode(&username, USERINFO).to_string(),
                )
                .replace(
                    "{password}",
                    &utf8_percent_encode(password.expose(), USERINFO).to_string(),
                );
            credential.insert("dsn".to_owned(), Sensitive::new(dsn));
        }
        credential.insert("password".to_owned(), password);
        credential.insert("username".to_owned(), Sensitive::new(username));
        Ok(Issued {
            credential,
            expires_at: unix_now() + lease_secs,
            blast_radius: format!(
                "one database user from role {role} ({action} on {resource}), at most {lease_secs} s"
            ),
            revocation: Revocation::Lease { lease_id },
        })
    }

    /// Revokes the lease, which runs the role's revocation statements; an
    /// unknown or already revoked lease is not an error.
    pub async fn revoke(&self, lease_id: &str) -> Result<(), BrokerError> {
        self.session
            .call(
                reqwest::Method::PUT,
                &format!("sys/leases/revoke/{lease_id}"),
                None,
            )
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_and_role_names_cannot_leave_their_place_in_a_path() {
        assert!(is_path_name("database", true));
        assert!(is_path_name("db/prod", true));
        assert!(is_path_name("orders-invoices-read", false));
        assert!(!is_path_name("db/prod", false));
        assert!(!is_path_name("../sys", true));
        assert!(!is_path_name("a//b", true));
        assert!(!is_path_name("role?x=1", false));
        assert!(!is_path_name("", false));
    }

    fn config(yaml: &str) -> DatabaseConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn a_bad_field_is_refused_by_name_before_anything_is_read() {
        let base = "address: http://127.0.0.1:1\ntoken_file: /nonexistent\n";
        let cases = [
            (
                "roles: { \"postgres://orders/invoices\": { read: \"../sys\" } }",
                "broker db: roles.\"postgres://orders/invoices\".read must be a plain role name",
            ),
            (
                "roles: { \"postgres://orders/invoices\": { \"re ad\": r } }",
                "broker db: roles.\"postgres://orders/invoices\".re ad is not an action",
            ),
            ("roles: {}", "broker db: roles must name at least one role"),
            (
                "roles: { \"postgres://o/t\": { read: r } }\ndsn: \"postgresql://{username}@h/d\"",
                "broker db: dsn must contain {username} and {password}",
            ),
            (
                "roles: { \"postgres://o/t\": { read: r } }\nmount: \"a/../b\"",
                "broker db: mount must be a path of plain names",
            ),
        ];
        for (yaml, expected) in cases {
            let err = DatabaseBroker::new("db", config(&format!("{base}{yaml}"))).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }
}
