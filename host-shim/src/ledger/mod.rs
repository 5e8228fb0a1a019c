//! The audit ledger: append-only JSON lines, one record per transaction
//! event or secret read, each carrying the SHA-256 of its predecessor (a
//! hash chain), written durably with group commit, the last record of every
//! batch signed with the writer's Ed25519 key. The local file is the embedded default;
//! file ledgers can be shipped into one PostgreSQL table (postgres).

pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod file;
pub mod postgres;
pub mod record;
pub mod reference;
pub mod signing;

pub use chain::{ChainError, verify_lines};
pub use checkpoint::{Checkpoint, CheckpointError, Checkpointer};
pub use file::{DurableHead, FileLedger, LedgerError};
pub use record::{Entry, Event, LedgerRecord, SecretRead, Status, TransactionEvent};
pub use reference::HmacKey;
pub use signing::{KeyError, LedgerKey, LedgerVerifier};
