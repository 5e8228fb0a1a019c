//! Brokers issue an ephemeral credential scoped to exactly one resource and
//! one action, and revoke it when the transaction ends.

pub mod database;
pub mod openbao;
pub mod sts;

use std::collections::BTreeMap;

use ephemera_core::ipt::{Action, Resource};
use serde::Deserialize;

use crate::sensitive::Sensitive;

/// Why a broker could not issue or revoke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The provider could not be reached.
    #[error("{broker}: provider unreachable: {reason}")]
    Unavailable {
        /// The broker.
        broker: String,
        /// Why.
        reason: String,
    },
    /// The provider refused the request.
    #[error("{broker}: provider refused ({status}): {reason}")]
    Refused {
        /// The broker.
        broker: String,
        /// HTTP status.
        status: u16,
        /// The provider's message (never credential material).
        reason: String,
    },
    /// The provider issued something other than what was asked; it was revoked.
    #[error("{broker}: issued credential does not match the request: {reason}")]
    Mismatch {
        /// The broker.
        broker: String,
        /// What differed.
        reason: String,
    },
    /// No role is configured for this resource and action.
    #[error("{broker}: no role for {action} on {resource}")]
    NoRole {
        /// The broker.
        broker: String,
        /// The resource.
        resource: String,
        /// The action.
        action: String,
    },
    /// The broker cannot express this action.
    #[error("{broker}: action {action} is not supported")]
    UnsupportedAction {
        /// The broker.
        broker: String,
        /// The action.
        action: String,
    },
}

/// How an issued credential is taken back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// OpenBao/Vault: revoke the token by accessor, delete its policy.
    OpenBao {
        /// The token's accessor.
        accessor: String,
        /// The per-transaction policy.
        policy: String,
    },
    /// OpenBao/Vault leases (the database secrets engine): revoke the lease.
    Lease {
        /// The lease (not a credential: revoking it needs a token).
        lease_id: String,
    },
    /// The provider cannot revoke (AWS STS): the TTL is the backstop.
    TtlBackstop,
}

impl Revocation {
    /// How the ledger describes it.
    pub fn describe(&self) -> String {
        match self {
            Self::OpenBao { .. } => "revoked by accessor, policy deleted".into(),
            Self::Lease { lease_id } => format!("lease {lease_id} revoked"),
            Self::TtlBackstop => "none, ttl backstop".into(),
        }
    }

    /// The lease a [`Revocation::Lease`] description names.
    pub fn recorded_lease(described: &str) -> Option<&str> {
        described
            .strip_prefix("lease ")?
            .strip_suffix(" revoked")
            .filter(|lease| !lease.is_empty())
    }
}

/// An issued credential.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Credential fields for the app, by name.
    pub credential: BTreeMap<String, Sensitive>,
    /// Unix seconds it expires.
    pub expires_at: u64,
    /// What a stolen copy exposes.
    pub blast_radius: String,
    /// How it is revoked.
    pub revocation: Revocation,
}

/// A configured broker.
#[derive(Debug, Clone)]
pub enum Broker {
    /// OpenBao / Vault tokens bound to one path.
    OpenBao(openbao::OpenBaoBroker),
    /// AWS STS sessions with a one-statement policy.
    Sts(sts::StsBroker),
    /// Database users from OpenBao/Vault's database secrets engine.
    Database(database::DatabaseBroker),
}

/// A broker's configuration (`kind` selects the provider).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BrokerConfig {
    /// OpenBao or Vault.
    #[serde(alias = "vault")]
    OpenBao(openbao::OpenBaoConfig),
    /// AWS STS.
    Sts(sts::StsConfig),
    /// OpenBao/Vault's database secrets engine.
    Database(database::DatabaseConfig),
}

/// Why a configured broker cannot be built; each names the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerSetupError {
    /// The shim's own token file gives no token.
    #[error("broker {broker}: {source}")]
    TokenFile {
        /// The broker.
        broker: String,
        /// Why.
        source: crate::provider::openbao::TokenFileError,
    },
    /// A field has a value the broker cannot use.
    #[error("broker {broker}: {field} {problem}")]
    Field {
        /// The broker.
        broker: String,
        /// The field, e.g. `roles."postgres://orders/invoices".read`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A limit that must be positive is zero.
    #[error("broker {broker}: ttl_secs and num_uses must be positive")]
    ZeroLimit {
        /// The broker.
        broker: String,
    },
    /// An STS session shorter than STS allows.
    #[error("broker {broker}: duration_secs {duration_secs} is below STS's minimum of {minimum}")]
    ShortSession {
        /// The broker.
        broker: String,
        /// As configured.
        duration_secs: u64,
        /// STS's minimum.
        minimum: u64,
    },
    /// A credential the broker signs with is not in the environment.
    #[error("broker {broker}: {variable} is not set")]
    MissingCredential {
        /// The broker.
        broker: String,
        /// The environment variable.
        variable: &'static str,
    },
    /// The provider's HTTP client.
    #[error("broker {broker}: {source}")]
    Client {
        /// The broker.
        broker: String,
        /// Why.
        source: crate::provider::http::ClientError,
    },
}

impl Broker {
    /// Builds a broker named `name` from its configuration.
    pub fn new(name: &str, config: BrokerConfig) -> Result<Self, BrokerSetupError> {
        match config {
            BrokerConfig::OpenBao(c) => openbao::OpenBaoBroker::new(name, c).map(Self::OpenBao),
            BrokerConfig::Sts(c) => sts::StsBroker::new(name, c).map(Self::Sts),
            BrokerConfig::Database(c) => database::DatabaseBroker::new(name, c).map(Self::Database),
        }
    }

    /// Issues a credential for exactly `action` on `resource`.
    pub async fn issue(
        &self,
        transaction_id: &str,
        resource: &Resource,
        action: &Action,
    ) -> Result<Issued, BrokerError> {
        match self {
            Self::OpenBao(b) => b.issue(transaction_id, resource, action).await,
            Self::Sts(b) => b.issue(transaction_id, resource, action).await,
            Self::Database(b) => b.issue(resource, action).await,
        }
    }

    /// Takes a credential back (a no-op where the provider cannot).
    pub async fn revoke(&self, revocation: &Revocation) -> Result<(), BrokerError> {
        match (self, revocation) {
            (Self::OpenBao(b), Revocation::OpenBao { accessor, policy }) => {
                b.revoke(accessor, policy).await
            }
            (Self::Database(b), Revocation::Lease { lease_id }) => b.revoke(lease_id).await,
            (_, Revocation::TtlBackstop) => Ok(()),
            (broker, _) => Err(BrokerError::Mismatch {
                broker: broker.name().to_owned(),
                reason: "revocation handle of another broker".into(),
            }),
        }
    }

    /// Takes back, after a restart, the credential of a transaction the
    /// previous run opened and never ended; `recorded` is the revocation
    /// its `open` record describes. Answers what was done, for the ledger.
    pub async fn disarm(
        &self,
        transaction_id: &str,
        recorded: Option<&str>,
    ) -> Result<String, BrokerError> {
        match self {
            Self::OpenBao(b) => b
                .disarm(transaction_id)
                .await
                .map(|()| "policy deleted after a restart".into()),
            Self::Database(b) => match recorded.and_then(Revocation::recorded_lease) {
                Some(lease) => b
                    .revoke(lease)
                    .await
                    .map(|()| format!("lease {lease} revoked after a restart")),
                None => Ok("none, the open record names no lease; ttl backstop".into()),
            },
            Self::Sts(_) => Ok(Revocation::TtlBackstop.describe()),
        }
    }

    /// The broker's name.
    pub fn name(&self) -> &str {
        match self {
            Self::OpenBao(b) => b.name(),
            Self::Sts(b) => b.name(),
            Self::Database(b) => b.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_lease_is_read_back_from_its_description() {
        let lease = "database/creds/orders-invoices-read/AbC123";
        let described = Revocation::Lease {
            lease_id: lease.into(),
        }
        .describe();
        assert_eq!(Revocation::recorded_lease(&described), Some(lease));
        for other in [
            Revocation::TtlBackstop.describe(),
            "lease  revoked".into(),
            String::new(),
        ] {
            assert_eq!(Revocation::recorded_lease(&other), None, "{other:?}");
        }
    }
}
