//! OpenBao / Vault: a per-transaction ACL policy for exactly one path and the
//! capabilities of one action, and a token holding only that policy
//! (no default policy, short TTL, limited uses, not renewable), created
//! through a token role so the shim's own token needs no `sudo`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ephemera_core::ipt::{Action, Resource};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{BrokerError, BrokerSetupError, Issued, Revocation};
use crate::clock::unix_now;
use crate::provider::http::describe;
use crate::provider::openbao::{OpenBao, TokenFile};
use crate::sensitive::Sensitive;

/// Configuration of an OpenBao/Vault broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenBaoConfig {
    /// Server address, e.g. `http://127.0.0.1:8200`.
    pub address: String,
    /// File holding the shim's own (non-root) token; re-read when it
    /// changes.
    pub token_file: std::path::PathBuf,
    /// Token role used to create transaction tokens.
    #[serde(default = "default_role")]
    pub role: String,
    /// Lifetime of transaction tokens, seconds.
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
    /// Uses allowed per transaction token.
    #[serde(default = "default_uses")]
    pub num_uses: u32,
    /// Request timeout, milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// PEM CAs trusted for an `https://` address instead of the platform's.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_role() -> String {
    "ephemera".into()
}
fn default_ttl() -> u64 {
    60
}
fn default_uses() -> u32 {
    3
}
fn default_timeout() -> u64 {
    2000
}

/// An OpenBao/Vault broker.
#[derive(Debug, Clone)]
pub struct OpenBaoBroker {
    session: Session,
    config: OpenBaoConfig,
}

/// A broker's authenticated client of one OpenBao/Vault server, with the
/// shim's own token.
#[derive(Debug, Clone)]
pub(super) struct Session {
    name: String,
    token: Arc<TokenFile>,
    server: Arc<OpenBao>,
    timeout: Duration,
}

impl Session {
    /// Connects broker `name`; its token file must hold a token now.
    pub(super) fn new(
        name: &str,
        address: &str,
        token_file: &std::path::Path,
        ca_file: Option<&std::path::Path>,
        timeout_ms: u64,
    ) -> Result<Self, BrokerSetupError> {
        let broker = || name.to_owned();
        let token = TokenFile::shared(token_file);
        token
            .token()
            .map_err(|source| BrokerSetupError::TokenFile {
                broker: broker(),
                source,
            })?;
        let server =
            OpenBao::shared(address, ca_file).map_err(|source| BrokerSetupError::Client {
                broker: broker(),
                source,
            })?;
        Ok(Self {
            name: name.to_owned(),
            token,
            server,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// The broker's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// One API call; a non-2xx answer is `Refused` with the server's
    /// `errors`.
    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BrokerError> {
        let unavailable = |reason| BrokerError::Unavailable {
            broker: self.name.clone(),
            reason,
        };
        let token = self.token.token().map_err(|e| unavailable(e.to_string()))?;
        let mut request = self.server.request(method, path, &token, self.timeout);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(describe(&e)))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let errors = value
                .get("errors")
                .map_or_else(|| "no details".to_owned(), Value::to_string);
            return Err(BrokerError::Refused {
                broker: self.name.clone(),
                status: status.as_u16(),
                reason: format!("{path}: {errors}"),
            });
        }
        Ok(value)
    }
}

/// The capabilities an action needs on its one path.
fn capabilities(action: &Action) -> Option<&'static [&'static str]> {
    Some(match action {
        Action::Read => &["read"],
        Action::Write => &["create", "update"],
        Action::Delete => &["delete"],
        Action::Tag => &["patch"],
        Action::Other(other) => match other.as_str() {
            "list" => &["list"],
            "patch" => &["patch"],
            _ => return None,
        },
    })
}

/// The one policy of a transaction's token.
fn policy_name(transaction_id: &str) -> String {
    format!("ephemera-{transaction_id}")
}

/// The policy document for one path and its capabilities.
pub fn policy_document(resource: &Resource, action: &Action) -> Option<String> {
    let caps: Vec<String> = capabilities(action)?
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect();
    // Resource validation excludes quotes, braces, globs and whitespace, so
    // the path cannot escape its string or widen to a pattern.
    Some(format!(
        "path \"{}\" {{\n  capabilities = [{}]\n}}\n",
        resource,
        caps.join(", ")
    ))
}

impl OpenBaoBroker {
    /// Builds the broker; its token file must hold a token now.
    pub fn new(name: &str, config: OpenBaoConfig) -> Result<Self, BrokerSetupError> {
        if config.ttl_secs == 0 || config.num_uses == 0 {
            return Err(BrokerSetupError::ZeroLimit {
                broker: name.to_owned(),
            });
        }
        let session = Session::new(
            name,
            &config.address,
            &config.token_file,
            config.ca_file.as_deref(),
            config.timeout_ms,
        )?;
        Ok(Self { session, config })
    }

    /// The broker's name.
    pub fn name(&self) -> &str {
        self.session.name()
    }

    /// Creates the policy and the token; checks what came back.
    pub async fn issue(
        &self,
        transaction_id: &str,
        resource: &Resource,
        action: &Action,
    ) -> Result<Issued, BrokerError> {
        let document =
            policy_document(resource, action).ok_or_else(|| BrokerError::UnsupportedAction {
                broker: self.session.name().to_owned(),
                action: action.to_string(),
            })?;
        let policy = policy_name(transaction_id);
        self.session
            .call(
                reqwest::Method::PUT,
                &format!("sys/policies/acl/{policy}"),
                Some(json!({ "policy": document })),
            )
            .await?;
        let ttl = format!("{}s", self.config.ttl_secs);
        let created = self
            .session
            .call(
                reqwest::Method::POST,
                &format!("auth/token/create/{}", self.config.role),
                Some(json!({
                    "policies": [policy],
                    "no_default_policy": true,
                    "ttl": ttl,
                    "explicit_max_ttl": ttl,
                    "num_uses": self.config.num_uses,
                    "renewable": false,
                    "display_name": "ephemera",
                    "meta": { "transaction_id": transaction_id },
                })),
            )
            .await;
        let created = match created {
            Ok(v) => v,
            Err(e) => {
                let _ = self.delete_policy(&policy).await;
                return Err(e);
            }
        };
        let auth = &created["auth"];
        let accessor = auth["accessor"].as_str().unwrap_or_default().to_owned();
        let token = auth["client_token"].as_str().unwrap_or_default().to_owned();
        let policies: Vec<&str> = auth["policies"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let warnings = created["warnings"].as_array().map_or(0, Vec::len);
        let problem = if token.is_empty() || accessor.is_empty() {
            Some("no token in the response".to_owned())
        } else if policies != [policy.as_str()] {
            Some(format!("token policies are {policies:?}, not [{policy:?}]"))
        } else if warnings > 0 {
            Some(format!("the server warned: {}", created["warnings"]))
        } else if auth["renewable"].as_bool() != Some(false) {
            Some("token is renewable".to_owned())
        } else {
            None
        };
        if let Some(reason) = problem {
            if !accessor.is_empty() {
                let _ = self.revoke(&accessor, &policy).await;
            } else {
                let _ = self.delete_policy(&policy).await;
            }
            return Err(BrokerError::Mismatch {
                broker: self.session.name().to_owned(),
                reason,
            });
        }
        let caps = capabilities(action).unwrap_or_default().join(",");
        Ok(Issued {
            credential: BTreeMap::from([("token".to_owned(), Sensitive::new(token))]),
            expires_at: unix_now() + self.config.ttl_secs,
            blast_radius: format!(
                "single OpenBao path {resource}, capabilities [{caps}], at most {} uses, at most {} s",
                self.config.num_uses, self.config.ttl_secs
            ),
            revocation: Revocation::OpenBao { accessor, policy },
        })
    }

    async fn delete_policy(&self, policy: &str) -> Result<(), BrokerError> {
        self.session
            .call(
                reqwest::Method::DELETE,
                &format!("sys/policies/acl/{policy}"),
                None,
            )
            .await
            .map(drop)
    }

    /// Disarms the token of a transaction whose accessor is lost (the shim
    /// restarted): deleting its one policy leaves it no capability.
    pub async fn disarm(&self, transaction_id: &str) -> Result<(), BrokerError> {
        self.delete_policy(&policy_name(transaction_id)).await
    }

    /// Revokes the token by accessor, then deletes its policy.
    pub async fn revoke(&self, accessor: &str, policy: &str) -> Result<(), BrokerError> {
        let revoked = match self
            .session
            .call(
                reqwest::Method::POST,
                "auth/token/revoke-accessor",
                Some(json!({ "accessor": accessor })),
            )
            .await
        {
            // Its uses ran out or it expired: the token is already gone.
            Err(BrokerError::Refused {
                status: 400,
                reason,
                ..
            }) if reason.contains("token not found") => Ok(Value::Null),
            other => other,
        };
        let deleted = self.delete_policy(policy).await;
        revoked.and(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_one_path_and_the_actions_capabilities_only() {
        let r = Resource::parse("secret/data/orders/a").unwrap();
        assert_eq!(
            policy_document(&r, &Action::Read).unwrap(),
            "path \"secret/data/orders/a\" {\n  capabilities = [\"read\"]\n}\n"
        );
        assert!(
            policy_document(&r, &Action::Write)
                .unwrap()
                .contains("[\"create\", \"update\"]")
        );
        assert!(policy_document(&r, &Action::parse("s3:GetObject").unwrap()).is_none());
    }
}
