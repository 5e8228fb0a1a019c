//! The bundle kept in PostgreSQL, so that `identity add|rotate|remove` on one
//! node reaches every shim within about a second. Each revision is a whole
//! spiffile bundle, numbered from 1; a publisher applies its one change to
//! the newest revision under a transaction-scoped advisory lock (so two
//! nodes' changes never overwrite each other) and notifies the channel on
//! commit. Shims `LISTEN` for the wake-up and also ask for "anything newer
//! than revision N" every second, so a missed notification (or a dropped
//! connection) never means a missed revocation. Each answer, even "nothing
//! newer", confirms the bundle; a shim that cannot confirm stops vouching
//! for its identity (see [`IdentitySource`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ephemera_core::BundleDocument;
use tokio_postgres::AsyncMessage;

use super::IdentitySource;
use crate::ledger::postgres::{PostgresError, Target, table_name};

/// The table of bundle revisions.
pub const TABLE: &str = "ephemera_bundle";
/// The notification channel publishers notify on commit.
pub const CHANNEL: &str = "ephemera_bundle";
/// How often a shim asks for newer revisions besides notifications.
pub const POLL: Duration = Duration::from_secs(1);
/// Longest the shim vouches for its identity to the filter without the
/// store's confirmation; past it the filter's own `max_identity_age_ms`
/// runs from (about) the last confirmed revision.
pub const VOUCH_WINDOW: Duration = Duration::from_secs(3);
/// Longest a connect or a query may take.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Arbitrary key of the advisory lock publishers take.
const PUBLISH_LOCK: i64 = 0x6570_6865_6d65_7261;

/// Where the bundle is kept.
#[derive(Debug, Clone)]
pub struct BundleStore {
    /// `postgres://user@host:port/db` (no password in the URL).
    pub url: String,
    /// A file holding the role's password.
    pub password_file: Option<PathBuf>,
    /// PEM CAs trusted instead of the platform's (TLS required).
    pub ca_file: Option<PathBuf>,
}

/// What a publisher changes in the newest revision.
#[derive(Debug, Clone)]
pub enum Change {
    /// The identity's keys are now these (an addition or a rotation).
    Put {
        /// The SPIFFE ID.
        id: String,
    },
    /// The identity is revoked.
    Remove {
        /// The SPIFFE ID.
        id: String,
    },
    /// The whole local bundle becomes the newest revision.
    Whole,
}

/// Why a revision could not be published or followed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL refused or could not be reached.
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    /// PostgreSQL answered with an error.
    #[error("postgres: {}", crate::ledger::postgres::describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// The password file cannot be read.
    #[error("{}: {source}", path.display())]
    Password {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The newest revision is not a bundle of this trust domain.
    #[error("revision {revision}: {reason}")]
    Revision {
        /// The revision.
        revision: i64,
        /// What is wrong with it.
        reason: String,
    },
    /// No answer in time.
    #[error("postgres: no answer within {} ms", TIMEOUT.as_millis())]
    Timeout,
}

/// The SQL that creates the table: shims (`reader`) read it, publishers
/// (`publisher`) add revisions; nobody updates or deletes.
pub fn schema(reader: &str, publisher: &str) -> Result<String, PostgresError> {
    let reader = table_name(reader)?;
    let publisher = table_name(publisher)?;
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (\n  revision bigint PRIMARY KEY CHECK (revision > 0),\n  \
         bundle text NOT NULL,\n  change text NOT NULL,\n  at timestamptz NOT NULL DEFAULT now()\n);\n\
         REVOKE ALL ON {TABLE} FROM PUBLIC;\nGRANT SELECT ON {TABLE} TO {reader};\n\
         GRANT SELECT, INSERT ON {TABLE} TO {publisher};\n"
    ))
}

async fn client(store: &BundleStore) -> Result<tokio_postgres::Client, StoreError> {
    let (client, _) = open(store).await?;
    Ok(client)
}

/// Connects; the connection's notifications arrive on the receiver.
async fn open(
    store: &BundleStore,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<()>,
    ),
    StoreError,
> {
    let password = match &store.password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| StoreError::Password {
                    path: path.clone(),
                    source,
                })?
                .trim_end()
                .to_owned(),
        ),
        None => None,
    };
    let (client, mut connection) = tokio::time::timeout(
        TIMEOUT,
        crate::ledger::postgres::open(Target {
            url: &store.url,
            password: password.as_deref(),
            ca_file: store.ca_file.as_deref(),
            timeout: TIMEOUT,
        }),
    )
    .await
    .map_err(|_| StoreError::Timeout)??;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    let _ = tx.send(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!("bundle store connection closed: {e}");
                    break;
                }
                None => break,
            }
        }
    });
    Ok((client, rx))
}

/// Applies `change` (made to `local`, the provisioning root's bundle) to
/// the newest revision and commits it as the next one; returns its number.
/// An empty table starts from `local`.
pub async fn publish(
    store: &BundleStore,
    local: &BundleDocument,
    change: &Change,
) -> Result<i64, StoreError> {
    let mut client = client(store).await?;
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&PUBLISH_LOCK])
        .await?;
    let newest = transaction
        .query_opt(
            &format!("SELECT revision, bundle FROM {TABLE} ORDER BY revision DESC LIMIT 1"),
            &[],
        )
        .await?;
    let (revision, mut doc) = match newest {
        Some(row) => {
            let revision: i64 = row.get(0);
            let text: String = row.get(1);
            let doc = BundleDocument::parse(text.as_bytes()).map_err(|e| StoreError::Revision {
                revision,
                reason: e.to_string(),
            })?;
            (revision, doc)
        }
        None => (0, local.clone()),
    };
    if doc.trust_domain != local.trust_domain {
        return Err(StoreError::Revision {
            revision,
            reason: format!(
                "trust domain {} is not the root's {}",
                doc.trust_domain, local.trust_domain
            ),
        });
    }
    let described = match change {
        Change::Put { id } => {
            if let Some(keys) = local.identities.get(id) {
                doc.identities.insert(id.clone(), keys.clone());
            }
            format!("put {id}")
        }
        Change::Remove { id } => {
            doc.identities.remove(id);
            format!("remove {id}")
        }
        Change::Whole => {
            doc = local.clone();
            "whole".to_owned()
        }
    };
    let next = revision + 1;
    transaction
        .execute(
            &format!("INSERT INTO {TABLE} (revision, bundle, change) VALUES ($1, $2, $3)"),
            &[&next, &doc.to_json(), &described],
        )
        .await?;
    transaction
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &next.to_string()])
        .await?;
    transaction.commit().await?;
    Ok(next)
}

/// Follows the newest revision into `source` until the process ends:
/// reconnecting after any failure, waking on notifications and every
/// [`POLL`].
pub async fn follow(store: BundleStore, source: Arc<IdentitySource>) {
    let mut revision = 0i64;
    let mut backoff = Duration::from_millis(100);
    loop {
        match follow_once(&store, &source, &mut revision).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(
                "bundle store: {e}; revision {revision} in force, reconnecting in {} ms",
                backoff.as_millis()
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(POLL);
    }
}

async fn follow_once(
    store: &BundleStore,
    source: &IdentitySource,
    revision: &mut i64,
) -> Result<(), StoreError> {
    let (client, mut notified) = open(store).await?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    let newer = client
        .prepare(&format!(
            "SELECT revision, bundle FROM {TABLE} WHERE revision > $1 ORDER BY revision DESC LIMIT 1"
        ))
        .await?;
    loop {
        let row = tokio::time::timeout(TIMEOUT, client.query_opt(&newer, &[&*revision]))
            .await
            .map_err(|_| StoreError::Timeout)??;
        if let Some(row) = row {
            let next: i64 = row.get(0);
            let bundle: String = row.get(1);
            match source.store_revision(next, bundle) {
                Ok(()) => {
                    tracing::info!("bundle revision {next} in force (was {revision})");
                    *revision = next;
                }
                Err(e) => {
                    return Err(StoreError::Revision {
                        revision: next,
                        reason: e.to_string(),
                    });
                }
            }
        }
        source.store_confirmed();
        tokio::select! {
            woke = notified.recv() => {
                if woke.is_none() {
                    return Ok(());
                }
                while notified.try_recv().is_ok() {}
            }
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shims_read_and_publishers_add_nobody_rewrites() {
        let sql = schema("ephemera_shim", "ephemera_publisher").unwrap();
        assert!(sql.contains("GRANT SELECT ON ephemera_bundle TO ephemera_shim;"));
        assert!(sql.contains("GRANT SELECT, INSERT ON ephemera_bundle TO ephemera_publisher;"));
        assert!(!sql.contains("UPDATE") && !sql.contains("DELETE"));
        assert!(schema("x; DROP TABLE t", "p").is_err());
    }
}
