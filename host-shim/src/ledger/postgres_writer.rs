//! The shim writing its ledger straight into the PostgreSQL table that
//! `ledger schema` creates: its own chain under its writer name, records
//! sealed and signed exactly as in a file, each batch one `INSERT`
//! acknowledged only once PostgreSQL has committed it (durable with the
//! default `synchronous_commit`). Appends queued while a commit is in flight
//! go into the next one (group commit).
//!
//! Fail closed: while PostgreSQL is unreachable every append fails and the
//! writer reconnects on the next one, reading its chain's head back from
//! the table (a batch whose answer was lost may have committed). A table
//! holding fewer of this writer's records than were acknowledged lost them
//! (deleted, or restored from an older backup): appends stop until an
//! operator looks.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio_postgres::{Client, Statement};

use super::chain::ChainHead;
use super::file::LedgerError;
use super::postgres::{Target, connect, table_name};
use super::record::{Entry, LedgerRecord};
use super::signing::LedgerKey;

/// Most records written in one `INSERT`.
const MAX_BATCH: usize = 4096;

/// Where the shim writes its ledger in PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresLedgerConfig {
    /// `postgres://user@host:port/db` (libpq-style URL, no password).
    pub url: String,
    /// The table `ephemera ledger schema` created.
    #[serde(default = "default_table")]
    pub table: String,
    /// This shim's chain in the table; unique per shim. Default: the host
    /// name (a pod's name in Kubernetes).
    #[serde(default)]
    pub writer: Option<String>,
    /// A file holding the role's password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM CAs trusted instead of the platform's; TLS is then required
    /// (without it, TLS is used when the server offers it, and
    /// `sslmode=require` in the URL requires it).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Longest a connect or a commit may take, milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_table() -> String {
    "ephemera_ledger".into()
}
fn default_timeout() -> u64 {
    5000
}

struct Append {
    entry: Entry,
    reply: tokio::sync::oneshot::Sender<Result<LedgerRecord, LedgerError>>,
}

/// A ledger writer on a PostgreSQL table.
#[derive(Clone)]
pub struct PostgresLedger {
    tx: tokio::sync::mpsc::UnboundedSender<Append>,
    place: String,
    commits: Arc<AtomicU64>,
}

impl std::fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresLedger({})", self.place)
    }
}

/// The host name, the default writer.
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

impl PostgresLedger {
    /// Starts the writer (on the current Tokio runtime) and connects once:
    /// a refused table or role is an error now; PostgreSQL being down is
    /// not (appends fail until it is back).
    pub async fn start(
        config: &PostgresLedgerConfig,
        key: Option<LedgerKey>,
    ) -> Result<Self, LedgerError> {
        let table = table_name(&config.table)
            .map_err(|e| LedgerError::Database {
                place: format!("table {:?}", config.table),
                reason: e.to_string(),
            })?
            .to_owned();
        let writer = config.writer.clone().unwrap_or_else(host_name);
        let place = format!("postgres table {table}, writer {writer:?}");
        let commits = Arc::new(AtomicU64::new(0));
        let mut task = Writer {
            config: config.clone(),
            insert_sql: format!(
                "INSERT INTO {table} (writer, seq, hash, record) SELECT $1, s, h, r \
                 FROM unnest($2::bigint[], $3::text[], $4::text[]) AS u(s, h, r)"
            ),
            head_sql: format!(
                "SELECT seq, hash FROM {table} WHERE writer = $1 ORDER BY seq DESC LIMIT 1"
            ),
            writer,
            place: place.clone(),
            key,
            connection: None,
            acknowledged: ChainHead::default(),
            commits: commits.clone(),
        };
        match task.connected().await {
            Ok(_) => tracing::info!(
                "ledger {place}: {} records so far",
                task.acknowledged.records
            ),
            Err(e @ LedgerError::Database { .. }) => return Err(e),
            Err(e) => tracing::warn!("{e}; appends fail until it is reachable"),
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(task.run(rx));
        Ok(Self { tx, place, commits })
    }

    /// Appends an entry; resolves once PostgreSQL has committed it.
    pub async fn append(&self, entry: impl Into<Entry>) -> Result<LedgerRecord, LedgerError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let closed = || LedgerError::Unreachable {
            place: self.place.clone(),
            reason: "the writer stopped".into(),
        };
        self.tx
            .send(Append {
                entry: entry.into(),
                reply,
            })
            .map_err(|_| closed())?;
        answer.await.unwrap_or_else(|_| Err(closed()))
    }

    /// How many batches were committed.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

struct Connection {
    client: Client,
    insert: Statement,
}

struct Writer {
    config: PostgresLedgerConfig,
    insert_sql: String,
    head_sql: String,
    writer: String,
    place: String,
    key: Option<LedgerKey>,
    connection: Option<Connection>,
    /// The head of what PostgreSQL acknowledged.
    acknowledged: ChainHead,
    commits: Arc<AtomicU64>,
}

impl Writer {
    async fn run(mut self, mut rx: tokio::sync::mpsc::UnboundedReceiver<Append>) {
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let outcome = self.write(&batch).await;
            for (i, append) in batch.drain(..).enumerate() {
                let _ = append.reply.send(match &outcome {
                    Ok(records) => Ok(records[i].clone()),
                    Err(e) => Err(e.clone()),
                });
            }
        }
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> LedgerError {
        LedgerError::Unreachable {
            place: self.place.clone(),
            reason: reason.to_string(),
        }
    }

    /// An error PostgreSQL answered (a refused statement) or a lost
    /// connection.
    fn failed(&self, e: &tokio_postgres::Error) -> LedgerError {
        match e.as_db_error() {
            Some(db) => LedgerError::Database {
                place: self.place.clone(),
                reason: format!("{} ({})", db.message(), db.code().code()),
            },
            None => self.unreachable(super::postgres::describe(e)),
        }
    }

    /// The live connection, reconnecting (and reading the chain's head
    /// back) when there is none.
    async fn connected(&mut self) -> Result<&Connection, LedgerError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.client.is_closed())
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            let timeout = Duration::from_millis(self.config.timeout_ms);
            let password = match &self.config.password_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| self.unreachable(format!("{}: {e}", path.display())))?
                        .trim_end()
                        .to_owned(),
                ),
                None => None,
            };
            let setup = async {
                let client = connect(Target {
                    url: &self.config.url,
                    password: password.as_deref(),
                    ca_file: self.config.ca_file.as_deref(),
                    timeout,
                })
                .await
                .map_err(|e| match e {
                    super::postgres::PostgresError::Database(e) => self.failed(&e),
                    other => self.unreachable(other),
                })?;
                let head = client
                    .query_opt(&self.head_sql, &[&self.writer])
                    .await
                    .map_err(|e| self.failed(&e))?;
                let insert = client
                    .prepare(&self.insert_sql)
                    .await
                    .map_err(|e| self.failed(&e))?;
                Ok::<_, LedgerError>((client, head, insert))
            };
            let (client, head, insert) = tokio::time::timeout(timeout, setup)
                .await
                .map_err(|_| self.unreachable("no answer within timeout_ms"))??;
            let table_head = match head {
                Some(row) => ChainHead {
                    records: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                    hash: row.get(1),
                    ..ChainHead::default()
                },
                None => ChainHead::default(),
            };
            if table_head.records < self.acknowledged.records {
                return Err(LedgerError::Database {
                    place: self.place.clone(),
                    reason: format!(
                        "the table holds {} of this writer's records, {} were acknowledged: \
                         records were removed; not appending",
                        table_head.records, self.acknowledged.records
                    ),
                });
            }
            self.acknowledged = table_head;
            self.connection = Some(Connection { client, insert });
        }
        self.connection
            .as_ref()
            .ok_or_else(|| self.unreachable("not connected"))
    }

    /// Seals, signs and commits a batch.
    async fn write(&mut self, batch: &[Append]) -> Result<Vec<LedgerRecord>, LedgerError> {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        self.connected().await?;
        let at_ms = crate::clock::unix_now_ms();
        let mut head = self.acknowledged.clone();
        let last = batch.len().saturating_sub(1);
        let mut records = Vec::with_capacity(batch.len());
        let (mut seqs, mut hashes, mut lines) = (Vec::new(), Vec::new(), Vec::new());
        for (i, append) in batch.iter().enumerate() {
            let mut record =
                LedgerRecord::seal(head.records + 1, at_ms, &head.hash, append.entry.clone());
            if i == last {
                record.sig = self.key.as_ref().map(|k| k.sign(&record.hash));
            }
            head.records += 1;
            head.hash.clone_from(&record.hash);
            seqs.push(i64::try_from(head.records).unwrap_or(i64::MAX));
            hashes.push(record.hash.clone());
            lines.push(serde_json::to_string(&record).unwrap_or_default());
            records.push(record);
        }
        let Some(connection) = &self.connection else {
            return Err(self.unreachable("not connected"));
        };
        let inserted = tokio::time::timeout(
            timeout,
            connection
                .client
                .execute(&connection.insert, &[&self.writer, &seqs, &hashes, &lines]),
        )
        .await;
        let error = match inserted {
            Ok(Ok(n)) if n == batch.len() as u64 => {
                self.acknowledged = head;
                self.commits.fetch_add(1, Ordering::Relaxed);
                return Ok(records);
            }
            Ok(Ok(n)) => self.unreachable(format!("{n} of {} rows inserted", batch.len())),
            Ok(Err(e)) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                LedgerError::Database {
                    place: self.place.clone(),
                    reason: format!(
                        "seq {} of this writer is taken: another shim writes as {:?}",
                        self.acknowledged.records + 1,
                        self.writer
                    ),
                }
            }
            Ok(Err(e)) => self.failed(&e),
            Err(_) => self.unreachable("no commit within timeout_ms"),
        };
        // Whether the batch committed is read back on reconnect.
        self.connection = None;
        Err(error)
    }
}
