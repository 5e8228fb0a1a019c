//! Signed checkpoints of a ledger's durable head, kept where the ledger's
//! writer can add but never overwrite or delete one (a create-only OpenBao
//! KV v2 path). A ledger cut back at a batch boundary still verifies on its
//! own; against its newest checkpoint it fails `ledger verify --checkpoint`.

use std::sync::Arc;
use std::time::Duration;

use ephemera_core::secrets::CheckpointConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::file::{DurableHead, FileLedger};
use super::signing::{LedgerKey, LedgerVerifier, Signed};
use crate::clock::unix_now;
use crate::provider::http::{ClientError, describe};
use crate::provider::openbao::{OpenBao, TokenFile, TokenFileError};

/// The writer's signed statement that its ledger held `seq` records ending
/// in `head` at `time` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Records in the ledger.
    pub seq: u64,
    /// The hash of record `seq`.
    pub head: String,
    /// When it was taken.
    pub time: u64,
    /// `ed25519:<hex>` over `seq`, `head` and `time`.
    pub sig: String,
}

/// Why a ledger does not match a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Not a checkpoint document.
    #[error("not a checkpoint: {0}")]
    Format(String),
    /// Not signed by the writer's key.
    #[error("the checkpoint's signature is not the writer's")]
    Signature,
    /// The ledger is shorter than the checkpoint says it was.
    #[error(
        "the ledger ends at seq {ends}, before the checkpoint at seq {seq}: records were cut off"
    )]
    Truncated {
        /// The ledger's last seq.
        ends: u64,
        /// The checkpoint's.
        seq: u64,
    },
    /// Record `seq` is not the one the checkpoint signed.
    #[error("record {seq} is not the one the checkpoint signed: the ledger was rewritten")]
    Rewritten {
        /// The checkpoint's seq.
        seq: u64,
    },
}

impl Checkpoint {
    fn text(seq: u64, head: &str, time: u64) -> String {
        format!("{seq}\0{head}\0{time}")
    }

    /// A checkpoint of `head`, signed with `key`.
    pub fn sign(key: &LedgerKey, head: &DurableHead, time: u64) -> Self {
        Self {
            seq: head.seq,
            head: head.hash.clone(),
            time,
            sig: key.sign_as(Signed::Checkpoint, &Self::text(head.seq, &head.hash, time)),
        }
    }

    /// Reads a checkpoint document: bare, or as an OpenBao/Vault KV v2 read
    /// answer (`bao kv get -format=json`, the checkpoint under `data.data`).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| CheckpointError::Format(e.to_string()))?;
        let document = match value.pointer("/data/data") {
            Some(inner) => inner.clone(),
            None => value,
        };
        serde_json::from_value(document).map_err(|e| CheckpointError::Format(e.to_string()))
    }

    /// Checks the checkpoint's signature and that the ledger (its chain
    /// already verified) still holds record `seq` with hash `head`.
    pub fn check(&self, verifier: &LedgerVerifier, ledger: &str) -> Result<(), CheckpointError> {
        let text = Self::text(self.seq, &self.head, self.time);
        if !verifier.verify_as(Signed::Checkpoint, &text, &self.sig) {
            return Err(CheckpointError::Signature);
        }
        let Some(index) = usize::try_from(self.seq)
            .ok()
            .and_then(|s| s.checked_sub(1))
        else {
            return Ok(());
        };
        let Some(line) = ledger.lines().nth(index) else {
            return Err(CheckpointError::Truncated {
                ends: ledger.lines().count() as u64,
                seq: self.seq,
            });
        };
        let hash = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|r| r.get("hash").and_then(Value::as_str).map(str::to_owned));
        if hash.as_deref() != Some(self.head.as_str()) {
            return Err(CheckpointError::Rewritten { seq: self.seq });
        }
        Ok(())
    }
}

/// Why a checkpoint could not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached.
    #[error("checkpoint store unreachable: {0}")]
    Unavailable(String),
    /// The store refused the write.
    #[error("checkpoint store refused ({status}): {reason}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The store's message.
        reason: String,
    },
}

/// Why checkpointing cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointSetupError {
    /// `interval_secs` is zero.
    #[error("checkpoint interval_secs must be positive")]
    ZeroInterval,
    /// The token file gives no token.
    #[error("checkpoint: {0}")]
    Token(#[from] TokenFileError),
    /// The store's client cannot be built.
    #[error("checkpoint: {0}")]
    Client(#[from] ClientError),
}

/// How long a checkpoint write may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// A create-only OpenBao/Vault KV v2 folder of checkpoints.
pub struct CheckpointStore {
    folder: String,
    token: Arc<TokenFile>,
    server: Arc<OpenBao>,
}

impl CheckpointStore {
    /// A store for `config`; its token file must hold a token now.
    pub fn new(config: &CheckpointConfig) -> Result<Self, CheckpointSetupError> {
        let token = TokenFile::shared(std::path::Path::new(&config.token_file));
        token.token()?;
        let server = OpenBao::shared(
            &config.address,
            config.ca_file.as_deref().map(std::path::Path::new),
        )?;
        Ok(Self {
            folder: format!(
                "{}/data/{}",
                config.mount.trim_matches('/'),
                config.path.trim_matches('/')
            ),
            token,
            server,
        })
    }

    /// Adds `checkpoint` as a new key `<seq>` (zero-padded, so keys sort by
    /// seq), only if no key of that name exists (`cas: 0`).
    pub async fn put(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let token = self
            .token
            .token()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let path = format!("{}/{:020}", self.folder, checkpoint.seq);
        let response = self
            .server
            .request(reqwest::Method::POST, &path, &token, TIMEOUT)
            .json(&json!({ "options": { "cas": 0 }, "data": checkpoint }))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(StoreError::Refused {
            status: status.as_u16(),
            reason: body
                .get("errors")
                .map_or_else(|| "no details".to_owned(), Value::to_string),
        })
    }
}

/// Writes a checkpoint whenever the ledger's durable head has moved: every
/// `interval_secs`, and once more at shutdown ([`Checkpointer::flush`]).
pub struct Checkpointer {
    ledger: FileLedger,
    key: LedgerKey,
    store: CheckpointStore,
    /// The last seq checkpointed (at start: the recovered head, whose
    /// checkpoint, if any, an earlier run wrote).
    done: tokio::sync::Mutex<u64>,
}

impl Checkpointer {
    /// Starts checkpointing `ledger` (runs inside the runtime).
    pub fn start(
        ledger: FileLedger,
        key: LedgerKey,
        config: &CheckpointConfig,
    ) -> Result<Arc<Self>, CheckpointSetupError> {
        if config.interval_secs == 0 {
            return Err(CheckpointSetupError::ZeroInterval);
        }
        let store = CheckpointStore::new(config)?;
        let done = ledger.durable_head().seq;
        let this = Arc::new(Self {
            ledger,
            key,
            store,
            done: tokio::sync::Mutex::new(done),
        });
        let every = Duration::from_secs(config.interval_secs);
        let running = this.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                running.flush().await;
            }
        });
        Ok(this)
    }

    /// Checkpoints the durable head if it moved since the last checkpoint.
    pub async fn flush(&self) {
        let mut done = self.done.lock().await;
        let head = self.ledger.durable_head();
        if head.seq <= *done {
            return;
        }
        let checkpoint = Checkpoint::sign(&self.key, &head, unix_now());
        match self.store.put(&checkpoint).await {
            Ok(()) => *done = head.seq,
            // With a create-only policy an existing key is refused (403, or
            // 400 for `cas`): a checkpoint for a seq this run has not reached
            // before means the ledger was cut back and grew again.
            Err(e @ StoreError::Refused { .. }) => tracing::error!(
                "ledger {}: checkpoint of seq {} refused ({e}); if one already exists there, \
                 the ledger was cut back since it was taken",
                self.ledger.path().display(),
                head.seq
            ),
            Err(e) => tracing::warn!(
                "ledger {}: checkpoint of seq {} not written ({e}); retrying",
                self.ledger.path().display(),
                head.seq
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::{Event, GENESIS_HASH, LedgerRecord, TransactionEvent};

    fn ledger(n: u64) -> (String, Vec<String>) {
        ledger_of(n, Event::Open)
    }

    /// `n` records of `event`: the text and each record's hash.
    fn ledger_of(n: u64, event: Event) -> (String, Vec<String>) {
        let mut prev = GENESIS_HASH.to_owned();
        let mut hashes = Vec::new();
        let text = (1..=n)
            .map(|seq| {
                let r = LedgerRecord::seal(
                    seq,
                    seq,
                    &prev,
                    TransactionEvent::new(event, format!("tx-{seq}")),
                );
                prev = r.hash.clone();
                hashes.push(r.hash.clone());
                serde_json::to_string(&r).unwrap() + "\n"
            })
            .collect();
        (text, hashes)
    }

    fn at(seq: u64, hashes: &[String]) -> DurableHead {
        DurableHead {
            seq,
            hash: hashes[usize::try_from(seq).unwrap() - 1].clone(),
        }
    }

    #[test]
    fn a_ledger_cut_back_before_its_checkpoint_fails_and_one_rewritten_after_fails_too() {
        let key = LedgerKey::generate().unwrap();
        let (text, hashes) = ledger(5);
        let checkpoint = Checkpoint::sign(&key, &at(4, &hashes), 100);
        assert_eq!(checkpoint.check(&key.verifier(), &text), Ok(()));

        let cut: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert_eq!(
            checkpoint.check(&key.verifier(), &cut),
            Err(CheckpointError::Truncated { ends: 3, seq: 4 })
        );

        let (other, _) = ledger_of(5, Event::Close);
        assert_eq!(
            checkpoint.check(&key.verifier(), &other),
            Err(CheckpointError::Rewritten { seq: 4 })
        );
    }

    #[test]
    fn a_checkpoint_verifies_only_with_the_writers_key_and_its_own_fields() {
        let key = LedgerKey::generate().unwrap();
        let (text, hashes) = ledger(3);
        let mut checkpoint = Checkpoint::sign(&key, &at(3, &hashes), 100);
        let other = LedgerKey::generate().unwrap();
        assert_eq!(
            checkpoint.check(&other.verifier(), &text),
            Err(CheckpointError::Signature)
        );
        checkpoint.seq = 2;
        assert_eq!(
            checkpoint.check(&key.verifier(), &text),
            Err(CheckpointError::Signature)
        );
        // A record head signature is no checkpoint signature.
        let forged = Checkpoint {
            seq: 3,
            head: hashes[2].clone(),
            time: 0,
            sig: key.sign(&hashes[2]),
        };
        assert_eq!(
            forged.check(&key.verifier(), &text),
            Err(CheckpointError::Signature)
        );
    }

    #[test]
    fn a_checkpoint_reads_bare_or_as_a_kv_answer_and_nothing_else() {
        let key = LedgerKey::generate().unwrap();
        let (_, hashes) = ledger(1);
        let checkpoint = Checkpoint::sign(&key, &at(1, &hashes), 7);
        let bare = serde_json::to_string(&checkpoint).unwrap();
        let kv =
            json!({"request_id": "r", "data": {"data": checkpoint, "metadata": {"version": 1}}});
        assert_eq!(Checkpoint::parse(&bare), Ok(checkpoint.clone()));
        assert_eq!(Checkpoint::parse(&kv.to_string()), Ok(checkpoint));
        assert!(matches!(
            Checkpoint::parse(r#"{"seq": 1}"#),
            Err(CheckpointError::Format(_))
        ));
    }
}
