//! Ledger records: one per transaction event or secret read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::canonical;

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// A credential was issued; the transaction is open.
    Open,
    /// The transaction ended and its credential was revoked.
    Close,
    /// The transaction failed (issue, revoke, or upstream failure).
    Fail,
    /// Policy denied the transaction; nothing was issued.
    Deny,
    /// The transaction was never closed and its credential expired.
    Expire,
    /// A secret was released to an authorized caller.
    Allow,
    /// A secret could not be read (store or lookup error).
    Error,
}

/// The transaction's state after the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// In progress.
    Open,
    /// Ended normally.
    Closed,
    /// Ended in failure.
    Failed,
    /// Refused.
    Denied,
    /// Reaped after expiry.
    Expired,
    /// Released.
    Allowed,
}

impl Event {
    /// The status an event leaves its transaction in.
    pub fn status(self) -> Status {
        match self {
            Self::Open => Status::Open,
            Self::Close => Status::Closed,
            Self::Fail => Status::Failed,
            Self::Deny => Status::Denied,
            Self::Expire => Status::Expired,
            Self::Allow => Status::Allowed,
            Self::Error => Status::Failed,
        }
    }
}

/// What a caller appends. Never holds credential material: sensitive
/// identifiers go in `refs` as HMAC references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionEvent {
    /// The event.
    pub event: Event,
    /// The transaction (UUID v4).
    pub transaction_id: String,
    /// The verified caller's SPIFFE ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// The one resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The one action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The broker that issued (or would have issued) the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Unix seconds the credential was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<u64>,
    /// Unix seconds the transaction ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<u64>,
    /// What a stolen credential would expose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blast_radius: Option<String>,
    /// How the credential was (or cannot be) revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<String>,
    /// What went wrong (never secret material).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Transaction duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// HMAC references to sensitive identifiers, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refs: BTreeMap<String, String>,
}

impl TransactionEvent {
    /// An event with only its kind and transaction set.
    pub fn new(event: Event, transaction_id: impl Into<String>) -> Self {
        Self {
            event,
            transaction_id: transaction_id.into(),
            caller: None,
            resource: None,
            action: None,
            broker: None,
            issued_at: None,
            closed_at: None,
            blast_radius: None,
            revocation: None,
            error: None,
            duration_ms: None,
            refs: BTreeMap::new(),
        }
    }
}

/// One secret read (`POST /v1/secrets/resolve`, `ephemera secrets get`):
/// `allow`, `deny` or `error`. Never holds the value; the secret is named
/// only by an HMAC reference in `refs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRead {
    /// `allow`, `deny` or `error`.
    pub event: Event,
    /// This read (128 random bits, hex), so its record can be cited.
    pub read_id: String,
    /// The verified caller's SPIFFE ID.
    pub caller: String,
    /// Why it was not released (never secret material).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// HMAC references to sensitive identifiers, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refs: BTreeMap<String, String>,
}

/// What a record is about: a transaction (`transaction_id`) or a secret
/// read (`read_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Entry {
    /// An IPT transaction's event.
    Transaction(TransactionEvent),
    /// A secret read.
    SecretRead(SecretRead),
}

impl Entry {
    /// The event.
    pub fn event(&self) -> Event {
        match self {
            Self::Transaction(e) => e.event,
            Self::SecretRead(r) => r.event,
        }
    }
}

impl From<TransactionEvent> for Entry {
    fn from(event: TransactionEvent) -> Self {
        Self::Transaction(event)
    }
}

impl From<SecretRead> for Entry {
    fn from(read: SecretRead) -> Self {
        Self::SecretRead(read)
    }
}

/// A record as stored: the event, its place in the chain, and the hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// Position in the ledger, from 1.
    pub seq: u64,
    /// Unix milliseconds the record was written.
    pub at_ms: u64,
    /// The transaction's status after this event.
    pub status: Status,
    /// What happened.
    #[serde(flatten)]
    pub entry: Entry,
    /// `hash` of the previous record ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// SHA-256 (hex) of this record's canonical JSON without `hash` and `sig`.
    pub hash: String,
    /// On the last record of each durable batch: the writer's Ed25519
    /// signature over `hash` (and so over the chain up to here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl LedgerRecord {
    /// Builds the record following `prev_hash` and seals it.
    pub fn seal(seq: u64, at_ms: u64, prev_hash: &str, entry: impl Into<Entry>) -> Self {
        let entry = entry.into();
        let mut record = Self {
            seq,
            at_ms,
            status: entry.event().status(),
            entry,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
            sig: None,
        };
        let value = serde_json::to_value(&record).unwrap_or(Value::Null);
        record.hash = hash_of(&value);
        record
    }
}

/// The hash of a record given as JSON: SHA-256 of its canonical form
/// without the `hash` and `sig` members.
pub fn hash_of(record: &Value) -> String {
    let mut copy = record.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("hash");
        map.remove("sig");
    }
    let digest = Sha256::digest(canonical::to_string(&copy).as_bytes());
    hex::encode(digest)
}
