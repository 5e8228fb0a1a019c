//! The audit ledger: append-only JSON lines, one record per transaction
//! event or secret read, each carrying the SHA-256 of its predecessor (a
//! hash chain), written durably with group commit, the last record of every
//! batch signed with the writer's Ed25519 key. The local file is the embedded default;
//! a shim can write into one PostgreSQL table shared by many
//! (`postgres_writer`), and file ledgers can be shipped into it (`postgres`).

pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod file;
pub mod postgres;
pub mod postgres_writer;
pub mod record;
pub mod reference;
pub mod signing;

pub use chain::{ChainError, verify_lines};
pub use checkpoint::{Checkpoint, CheckpointError, Checkpointer};
pub use file::{DurableHead, FileLedger, LedgerError};
pub use record::{Entry, Event, LedgerRecord, SecretRead, Status, TransactionEvent};
pub use reference::HmacKey;
pub use signing::{KeyError, LedgerKey, LedgerVerifier};

/// Where a shim's transaction records go.
#[derive(Debug, Clone)]
pub enum Ledger {
    /// A local file.
    File(FileLedger),
    /// A PostgreSQL table shared with other shims.
    Postgres(postgres_writer::PostgresLedger),
}

impl Ledger {
    /// Appends an entry; resolves once it is durable.
    pub async fn append(&self, entry: impl Into<Entry>) -> Result<LedgerRecord, LedgerError> {
        match self {
            Self::File(l) => l.append(entry).await,
            Self::Postgres(l) => l.append(entry).await,
        }
    }
}
