//! The file ledger: one writer thread owns the file; concurrent appends are
//! batched into one write and one `fdatasync` (group commit), and each caller
//! is answered only once its record is durable. On open, a torn last line (a
//! crash mid-write) is detected and truncated; any other damage refuses the
//! file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{SystemTime, UNIX_EPOCH};

use super::chain::{ChainError, ChainHead, check_line};
use super::record::{LedgerRecord, TransactionEvent};

/// Most records written in one batch.
const MAX_BATCH: usize = 4096;

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
    /// An earlier write failed; nothing more is appended until a restart
    /// recovers the file.
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
}

struct Append {
    event: TransactionEvent,
    reply: tokio::sync::oneshot::Sender<Result<LedgerRecord, LedgerError>>,
}

/// A durable, hash-chained JSON-lines ledger.
#[derive(Clone)]
pub struct FileLedger {
    tx: mpsc::Sender<Append>,
    path: PathBuf,
    syncs: Arc<AtomicU64>,
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

/// Reads and verifies an existing ledger, truncating a torn last line.
fn recover(path: &Path) -> Result<(ChainHead, Recovery), LedgerError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error(path, e)),
    };
    let mut head = ChainHead::default();
    let mut good_len = 0usize;
    let mut offset = 0usize;
    let mut line_no = 0usize;
    while offset < bytes.len() {
        line_no += 1;
        let end = bytes[offset..].iter().position(|&b| b == b'\n');
        let (line, next) = match end {
            Some(i) => (&bytes[offset..offset + i], offset + i + 1),
            None => (&bytes[offset..], bytes.len()),
        };
        let complete = end.is_some();
        let mut advanced = head.clone();
        let checked = std::str::from_utf8(line)
            .map_err(|e| ChainError {
                line: line_no,
                reason: e.to_string(),
            })
            .and_then(|text| check_line(&mut advanced, line_no, text));
        match checked {
            Ok(()) if complete => {
                head = advanced;
                good_len = next;
            }
            Err(error) if next < bytes.len() => {
                return Err(LedgerError::Damaged {
                    path: path.to_owned(),
                    error,
                });
            }
            // The last line, cut short by a crash (no newline, or not a
            // record): it was never acknowledged, so it is dropped.
            _ => break,
        }
        offset = next;
    }
    let truncated = (bytes.len() - good_len) as u64;
    if truncated > 0 {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io_error(path, e))?;
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
        },
    ))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl FileLedger {
    /// Opens (creating) the ledger at `path`, recovering it first.
    pub fn open(path: &Path) -> Result<(Self, Recovery), LedgerError> {
        let (head, recovery) = recover(path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io_error(path, e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(path, e))?;
        }
        let (tx, rx) = mpsc::channel();
        let syncs = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            file,
            path: path.to_owned(),
            head,
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
            },
            recovery,
        ))
    }

    /// Appends an event; resolves once it is durable.
    pub async fn append(&self, event: TransactionEvent) -> Result<LedgerRecord, LedgerError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(Append { event, reply })
            .map_err(|_| LedgerError::Closed(self.path.clone()))?;
        answer
            .await
            .unwrap_or(Err(LedgerError::Closed(self.path.clone())))
    }

    /// Appends from a thread outside any async runtime.
    pub fn append_blocking(&self, event: TransactionEvent) -> Result<LedgerRecord, LedgerError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(Append { event, reply })
            .map_err(|_| LedgerError::Closed(self.path.clone()))?;
        answer
            .blocking_recv()
            .unwrap_or(Err(LedgerError::Closed(self.path.clone())))
    }

    /// How many `fdatasync`s the ledger has done (one per batch).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

struct Writer {
    file: File,
    path: PathBuf,
    head: ChainHead,
    broken: bool,
    syncs: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Append>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.write_batch(batch);
        }
    }

    fn write_batch(&mut self, batch: Vec<Append>) {
        if self.broken {
            for a in batch {
                let _ = a.reply.send(Err(LedgerError::Closed(self.path.clone())));
            }
            return;
        }
        let at_ms = now_ms();
        let mut head = self.head.clone();
        let mut text = String::new();
        let mut sealed = Vec::with_capacity(batch.len());
        for a in batch {
            let record = LedgerRecord::seal(head.records + 1, at_ms, &head.hash, a.event.clone());
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
                self.head = head;
                for (reply, record) in sealed {
                    let _ = reply.send(Ok(record));
                }
            }
            Err(e) => {
                // How much reached the disk is unknown: stop appending; the
                // next open truncates a torn tail and re-verifies the chain.
                self.broken = true;
                tracing::error!(
                    "ledger {} write failed: {e}; closed for appends",
                    self.path.display()
                );
                for (reply, _) in sealed {
                    let _ = reply.send(Err(io_error(&self.path, &e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::chain::verify_lines;
    use crate::ledger::record::Event;

    fn event(i: usize) -> TransactionEvent {
        TransactionEvent::new(Event::Open, format!("tx-{i}"))
    }

    #[test]
    fn appends_are_chained_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let (ledger, rec) = FileLedger::open(&path).unwrap();
        assert_eq!(rec.records, 0);
        for i in 0..3 {
            assert_eq!(ledger.append_blocking(event(i)).unwrap().seq, i as u64 + 1);
        }
        drop(ledger);
        let (ledger, rec) = FileLedger::open(&path).unwrap();
        assert_eq!(
            rec,
            Recovery {
                records: 3,
                truncated_bytes: 0
            }
        );
        assert_eq!(ledger.append_blocking(event(9)).unwrap().seq, 4);
        assert_eq!(
            verify_lines(&std::fs::read_to_string(&path).unwrap())
                .unwrap()
                .records,
            4
        );
    }

    #[test]
    fn a_torn_last_line_is_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let (ledger, _) = FileLedger::open(&path).unwrap();
        ledger.append_blocking(event(1)).unwrap();
        ledger.append_blocking(event(2)).unwrap();
        drop(ledger);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":3,"at_ms":1,"status":"op"#).unwrap();
        let (ledger, rec) = FileLedger::open(&path).unwrap();
        assert_eq!(rec.records, 2);
        assert!(rec.truncated_bytes > 0);
        assert_eq!(ledger.append_blocking(event(3)).unwrap().seq, 3);
        assert_eq!(
            verify_lines(&std::fs::read_to_string(&path).unwrap())
                .unwrap()
                .records,
            3
        );
    }

    #[test]
    fn damage_before_the_last_line_refuses_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let (ledger, _) = FileLedger::open(&path).unwrap();
        for i in 0..3 {
            ledger.append_blocking(event(i)).unwrap();
        }
        drop(ledger);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replacen("tx-1", "tx-X", 1);
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            FileLedger::open(&path),
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
        let (ledger, _) = FileLedger::open(&path).unwrap();
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
            verify_lines(&std::fs::read_to_string(&path).unwrap())
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
}
