//! The file ledger: one writer thread owns the file (0600, under an
//! exclusive lock); concurrent appends are batched into one write and one
//! `fdatasync` (group commit), the batch's last record signed, and each
//! caller is answered only once its record is durable. The writer counts
//! how many appends were in flight around its last sync; when fewer than
//! that are queued, it waits up to half a sync for the writers it just
//! answered to come back, so their records share the next sync. A lone
//! writer never waits. A failed write is cut
//! back to the last durable length before the next. On open, a final line
//! without its newline (a crash mid-write) is truncated; any other damage
//! refuses the file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::chain::{ChainError, ChainHead, check_line};
use super::record::{Entry, Event, LedgerRecord, TransactionEvent};
use super::signing::LedgerKey;

/// Most records written in one batch.
const MAX_BATCH: usize = 4096;
/// Longest a batch waits for more appends, however slow the disk.
const MAX_GATHER: Duration = Duration::from_millis(2);

/// Why the ledger cannot take a record.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    /// The file could not be opened, read or written.
    #[error("ledger {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The existing file's chain is broken before its last line.
    #[error("ledger {path} is damaged at {error}; refusing to append")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Where and how.
        error: ChainError,
    },
    /// Another process (a second shim) holds the ledger.
    #[error("ledger {0} is in use by another process; one writer at a time")]
    InUse(PathBuf),
    /// The ledger's database cannot be reached (appends fail until it can).
    #[error("ledger {place}: unreachable: {reason}")]
    Unreachable {
        /// The table and writer.
        place: String,
        /// Why.
        reason: String,
    },
    /// The ledger's database refused, or its table lost records.
    #[error("ledger {place}: {reason}")]
    Database {
        /// The table and writer.
        place: String,
        /// Why.
        reason: String,
    },
    /// An earlier write failed and could not be cut back; nothing more is
    /// appended until a restart recovers the file.
    #[error("ledger {0} failed earlier and is closed for appends")]
    Closed(PathBuf),
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records in the file.
    pub records: u64,
    /// Bytes of a torn last line that were truncated.
    pub truncated_bytes: u64,
    /// The file's length after recovery.
    pub length: u64,
    /// Transactions whose `open` has no later record: a previous run
    /// stopped before they ended, and their credentials may still work.
    pub unfinished: Vec<TransactionEvent>,
}

struct Append {
    entry: Entry,
    reply: Reply,
}

/// Where an append's outcome goes.
type Reply = tokio::sync::oneshot::Sender<Result<LedgerRecord, LedgerError>>;

/// The last durable record: its `seq` and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableHead {
    /// Records in the file (the last one's `seq`).
    pub seq: u64,
    /// The last record's hash.
    pub hash: String,
}

/// A durable, hash-chained JSON-lines ledger.
#[derive(Clone)]
pub struct FileLedger {
    tx: mpsc::Sender<Append>,
    path: PathBuf,
    syncs: Arc<AtomicU64>,
    head: tokio::sync::watch::Receiver<DurableHead>,
}

impl std::fmt::Debug for FileLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileLedger({})", self.path.display())
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Reads and verifies the locked ledger: a final line without its newline
/// is a torn write and is truncated; a broken complete line, or (with a key)
/// records no signature covers, refuse the file.
fn recover(
    file: &mut File,
    path: &Path,
    key: Option<&LedgerKey>,
) -> Result<(ChainHead, Recovery), LedgerError> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    let verifier = key.map(LedgerKey::verifier);
    let damaged = |error| LedgerError::Damaged {
        path: path.to_owned(),
        error,
    };
    let mut head = ChainHead::default();
    let mut good_len = 0usize;
    let mut open = std::collections::BTreeMap::new();
    for (index, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let Some(line) = line.strip_suffix(b"\n") else {
            // The last line, cut short by a crash: never acknowledged.
            break;
        };
        let line_no = index + 1;
        let record = std::str::from_utf8(line)
            .map_err(|e| ChainError {
                line: line_no,
                reason: e.to_string(),
            })
            .and_then(|text| check_line(&mut head, line_no, text, verifier.as_ref()))
            .map_err(damaged)?;
        if let Ok(event) = serde_json::from_value::<TransactionEvent>(record) {
            if event.event == Event::Open {
                open.insert(event.transaction_id.clone(), event);
            } else {
                open.remove(&event.transaction_id);
            }
        }
        good_len += line.len() + 1;
    }
    if verifier.is_some() && head.signed < head.records {
        return Err(damaged(ChainError {
            line: usize::try_from(head.signed + 1).unwrap_or(usize::MAX),
            reason: format!(
                "{} records from here on carry no signature of this key (appended without \
                 it, or written unkeyed)",
                head.records - head.signed
            ),
        }));
    }
    let truncated = (bytes.len() - good_len) as u64;
    if truncated > 0 {
        file.set_len(good_len as u64)
            .map_err(|e| io_error(path, e))?;
        file.sync_all().map_err(|e| io_error(path, e))?;
    }
    let records = head.records;
    Ok((
        head,
        Recovery {
            records,
            truncated_bytes: truncated,
            length: good_len as u64,
            unfinished: open.into_values().collect(),
        },
    ))
}

impl FileLedger {
    /// Opens (creating, 0600) and locks the ledger at `path`, recovering it
    /// first; with `key`, every batch is signed and the existing records
    /// must be signed by it.
    pub fn open(path: &Path, key: Option<LedgerKey>) -> Result<(Self, Recovery), LedgerError> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io_error(path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LedgerError::InUse(path.to_owned())),
            Err(TryLockError::Error(e)) => return Err(io_error(path, e)),
        }
        let (head, recovery) = recover(&mut file, path, key.as_ref())?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(path, e))?;
        }
        let (tx, rx) = mpsc::channel();
        let syncs = Arc::new(AtomicU64::new(0));
        let (durable, head_rx) = tokio::sync::watch::channel(DurableHead {
            seq: head.records,
            hash: head.hash.clone(),
        });
        let writer = Writer {
            durable,
            file,
            path: path.to_owned(),
            head,
            durable_len: recovery.length,
            key,
            broken: false,
            syncs: syncs.clone(),
        };
        std::thread::Builder::new()
            .name("ephemera-ledger".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| io_error(path, e))?;
        Ok((
            Self {
                tx,
                path: path.to_owned(),
                syncs,
                head: head_rx,
            },
            recovery,
        ))
    }

    /// Appends an entry; resolves once it is durable.
    pub async fn append(&self, entry: impl Into<Entry>) -> Result<LedgerRecord, LedgerError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let entry = entry.into();
        self.tx
            .send(Append { entry, reply })
            .map_err(|_| LedgerError::Closed(self.path.clone()))?;
        answer
            .await
            .unwrap_or(Err(LedgerError::Closed(self.path.clone())))
    }

    /// Appends from a thread outside any async runtime.
    pub fn append_blocking(&self, entry: impl Into<Entry>) -> Result<LedgerRecord, LedgerError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let entry = entry.into();
        self.tx
            .send(Append { entry, reply })
            .map_err(|_| LedgerError::Closed(self.path.clone()))?;
        answer
            .blocking_recv()
            .unwrap_or(Err(LedgerError::Closed(self.path.clone())))
    }

    /// How many `fdatasync`s the ledger has done (one per batch).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// The last durable record.
    pub fn durable_head(&self) -> DurableHead {
        self.head.borrow().clone()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Moves what is queued in `rx` into `batch`, up to [`MAX_BATCH`].
fn drain(rx: &mpsc::Receiver<Append>, batch: &mut Vec<Append>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
}

struct Writer {
    durable: tokio::sync::watch::Sender<DurableHead>,
    file: File,
    path: PathBuf,
    head: ChainHead,
    /// The file's length after the last durable batch.
    durable_len: u64,
    key: Option<LedgerKey>,
    broken: bool,
    syncs: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Append>) {
        let mut queued: Vec<Append> = Vec::new();
        // Appends in flight around the last sync, and how long it took.
        let (mut in_flight, mut last_sync) = (1, Duration::ZERO);
        loop {
            if queued.is_empty() {
                match rx.recv() {
                    Ok(first) => queued.push(first),
                    Err(_) => return,
                }
            }
            drain(&rx, &mut queued);
            let deadline = Instant::now() + (last_sync / 2).min(MAX_GATHER);
            while queued.len() < in_flight.min(MAX_BATCH) {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(next) => queued.push(next),
                    Err(_) => break,
                }
            }
            let batch = std::mem::take(&mut queued);
            let size = batch.len();
            let started = Instant::now();
            let outcomes = self.write_batch(batch);
            last_sync = started.elapsed();
            // What arrived during the sync was in flight with the batch
            // (counted before the answers let its writers send again).
            drain(&rx, &mut queued);
            in_flight = size + queued.len();
            for (reply, outcome) in outcomes {
                let _ = reply.send(outcome);
            }
        }
    }

    /// Writes and syncs a batch; returns each append's outcome, to be sent.
    fn write_batch(
        &mut self,
        batch: Vec<Append>,
    ) -> Vec<(Reply, Result<LedgerRecord, LedgerError>)> {
        if self.broken {
            return batch
                .into_iter()
                .map(|a| (a.reply, Err(LedgerError::Closed(self.path.clone()))))
                .collect();
        }
        let at_ms = crate::clock::unix_now_ms();
        let mut head = self.head.clone();
        let mut text = String::new();
        let mut sealed = Vec::with_capacity(batch.len());
        let last = batch.len().saturating_sub(1);
        for (i, a) in batch.into_iter().enumerate() {
            let mut record =
                LedgerRecord::seal(head.records + 1, at_ms, &head.hash, a.entry.clone());
            if i == last {
                record.sig = self.key.as_ref().map(|k| k.sign(&record.hash));
            }
            head.records += 1;
            head.hash = record.hash.clone();
            text.push_str(&serde_json::to_string(&record).unwrap_or_default());
            text.push('\n');
            sealed.push((a.reply, record));
        }
        let written = self
            .file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data());
        self.syncs.fetch_add(1, Ordering::Relaxed);
        match written {
            Ok(()) => {
                self.durable.send_replace(DurableHead {
                    seq: head.records,
                    hash: head.hash.clone(),
                });
                self.head = head;
                self.durable_len += text.len() as u64;
                sealed
                    .into_iter()
                    .map(|(reply, record)| (reply, Ok(record)))
                    .collect()
            }
            Err(e) => {
                // Part of the batch may sit in the file: cut it back so no
                // partial line stays mid-file; if that fails too, stop.
                let cut = self
                    .file
                    .set_len(self.durable_len)
                    .and_then(|()| self.file.sync_all());
                if let Err(cut_error) = cut {
                    self.broken = true;
                    tracing::error!(
                        "ledger {} write failed ({e}) and cannot be cut back ({cut_error}); \
                         closed for appends",
                        self.path.display()
                    );
                } else {
                    tracing::error!(
                        "ledger {} write failed ({e}); the batch was cut back",
                        self.path.display()
                    );
                }
                sealed
                    .into_iter()
                    .map(|(reply, _)| (reply, Err(io_error(&self.path, &e))))
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::chain::verify_lines;
    use crate::ledger::record::{Event, TransactionEvent};

    /// Opens again once the previous writer thread has let go of the file
    /// (it does so when its last handle is dropped).
    fn reopen(path: &Path, key: Option<LedgerKey>) -> Result<(FileLedger, Recovery), LedgerError> {
        for _ in 0..200 {
            if File::open(path)
                .and_then(|f| f.try_lock().map_err(std::io::Error::from))
                .is_ok()
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        FileLedger::open(path, key)
    }

    fn event(i: usize) -> TransactionEvent {
        TransactionEvent::new(Event::Open, format!("tx-{i}"))
    }

    /// A closed ledger of three unkeyed records: its directory and path.
    fn three_records() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let (ledger, _) = FileLedger::open(&path, None).unwrap();
        for i in 0..3 {
            ledger.append_blocking(event(i)).unwrap();
        }
        (dir, path)
    }

    #[test]
    fn reopening_names_the_transactions_opened_and_never_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let (ledger, _) = FileLedger::open(&path, None).unwrap();
        for i in 0..4 {
            ledger.append_blocking(event(i)).unwrap();
        }
        for (i, end) in [(0, Event::Close), (2, Event::Fail), (9, Event::Deny)] {
            ledger
                .append_blocking(TransactionEvent::new(end, format!("tx-{i}")))
                .unwrap();
        }
        drop(ledger);
        let (_ledger, rec) = reopen(&path, None).unwrap();
        let ids: Vec<_> = rec
            .unfinished
            .iter()
            .map(|e| e.transaction_id.as_str())
            .collect();
        assert_eq!(ids, ["tx-1", "tx-3"]);
    }

    #[test]
    fn appends_are_chained_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let (ledger, rec) = FileLedger::open(&path, None).unwrap();
        assert_eq!(rec.records, 0);
        for i in 0..3 {
            assert_eq!(ledger.append_blocking(event(i)).unwrap().seq, i as u64 + 1);
        }
        drop(ledger);
        let (ledger, rec) = reopen(&path, None).unwrap();
        assert_eq!(
            rec,
            Recovery {
                records: 3,
                truncated_bytes: 0,
                length: std::fs::metadata(&path).unwrap().len(),
                unfinished: (0..3).map(event).collect(),
            }
        );
        assert_eq!(ledger.append_blocking(event(9)).unwrap().seq, 4);
        assert_eq!(
            verify_lines(&std::fs::read_to_string(&path).unwrap(), None)
                .unwrap()
                .records,
            4
        );
    }

    #[test]
    fn a_torn_last_line_is_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let (ledger, _) = FileLedger::open(&path, None).unwrap();
        ledger.append_blocking(event(1)).unwrap();
        ledger.append_blocking(event(2)).unwrap();
        drop(ledger);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":3,"at_ms":1,"status":"op"#).unwrap();
        let (ledger, rec) = reopen(&path, None).unwrap();
        assert_eq!(rec.records, 2);
        assert!(rec.truncated_bytes > 0);
        assert_eq!(ledger.append_blocking(event(3)).unwrap().seq, 3);
        assert_eq!(
            verify_lines(&std::fs::read_to_string(&path).unwrap(), None)
                .unwrap()
                .records,
            3
        );
    }

    #[test]
    fn damage_before_the_last_line_refuses_the_file() {
        let (_dir, path) = three_records();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replacen("tx-1", "tx-X", 1);
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            reopen(&path, None),
            Err(LedgerError::Damaged {
                error: ChainError { line: 2, .. },
                ..
            })
        ));
    }

    #[test]
    fn concurrent_appends_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let (ledger, _) = FileLedger::open(&path, None).unwrap();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let ledger = ledger.clone();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        ledger.append_blocking(event(t * 100 + i)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            verify_lines(&std::fs::read_to_string(&path).unwrap(), None)
                .unwrap()
                .records,
            320
        );
        assert!(
            ledger.syncs() < 320,
            "batched: {} syncs for 320 records",
            ledger.syncs()
        );
    }

    #[test]
    fn a_complete_last_line_that_does_not_verify_is_damage_not_a_torn_write() {
        let (_dir, path) = three_records();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("tx-2", "tx-X", 1)).unwrap();
        let Err(LedgerError::Damaged { error, .. }) = reopen(&path, None) else {
            panic!("an edited last record was accepted");
        };
        assert_eq!(error.line, 3);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text.replacen("tx-2", "tx-X", 1),
            "nothing was cut"
        );
    }

    #[test]
    fn one_writer_at_a_time_and_the_file_is_owner_only() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let (first, _) = FileLedger::open(&path, None).unwrap();
        first.append_blocking(event(1)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // The lock is per open file: a second open in this very process
        // stands for a second shim.
        assert!(matches!(
            FileLedger::open(&path, None),
            Err(LedgerError::InUse(_))
        ));
    }

    #[test]
    fn batches_are_signed_and_another_key_refuses_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let key = LedgerKey::generate().unwrap();
        let verifier = key.verifier();
        let (ledger, _) = FileLedger::open(&path, Some(key)).unwrap();
        for i in 0..3 {
            ledger.append_blocking(event(i)).unwrap();
        }
        drop(ledger);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(verify_lines(&text, Some(&verifier)).unwrap().records, 3);
        assert!(text.lines().all(|l| l.contains("\"sig\":\"ed25519:")));
        let other = LedgerKey::generate().unwrap();
        assert!(matches!(
            reopen(&path, Some(other)),
            Err(LedgerError::Damaged { .. })
        ));
    }
}
