//! The transaction service: open (re-verify the caller, authorize, issue,
//! record durably, answer), close (revoke always, record), and a reaper for
//! transactions whose credential expired without a close.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ephemera_core::filter::WorkloadIdentity;
use ephemera_core::ipt::{CloseRequest, OpenRequest, OpenResponse, TransactionId, WimseProof};
use ephemera_core::token::malleability_free;
use ephemera_core::wimse::{
    CarriedTokens, MAX_PROOF_LEEWAY_SECS, MemoryReplay, ProofRequest, RING_SECONDS, ReplayGuard,
    ReplayKey, WimseError, verify_wit, verify_wpt,
};
use ephemera_core::{RustCrypto, SpiffeId, TokenVerifier, VerifyOptions};

use super::config::IptConfig;
use super::limit::{CallerLimit, Slot};
use super::policy;
use crate::brokers::{Broker, BrokerSetupError, Revocation};
use crate::clock::unix_now;
use crate::identity::IdentitySource;
use crate::ledger::checkpoint::CheckpointSetupError;
use crate::ledger::{Event, HmacKey, Ledger, LedgerError, TransactionEvent};

/// Why a transaction call failed; each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// Malformed request (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The caller token does not verify (401).
    #[error("caller not authenticated: {0}")]
    Unauthenticated(String),
    /// Policy denies (403).
    #[error("denied by policy")]
    Denied,
    /// The transaction id is in use (409).
    #[error("transaction id already in use")]
    Conflict,
    /// No such open transaction (404).
    #[error("no open transaction with that id")]
    NotFound,
    /// The caller has too many transactions open (429).
    #[error("too many open transactions for this caller")]
    TooMany,
    /// Broker, ledger or identity unavailable (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl TxError {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthenticated(_) => 401,
            Self::Denied => 403,
            Self::Conflict => 409,
            Self::NotFound => 404,
            Self::TooMany => 429,
            Self::Unavailable(_) => 503,
        }
    }

    /// Short code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Denied => "denied",
            Self::Conflict => "conflict",
            Self::NotFound => "not_found",
            Self::TooMany => "too_many",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

#[derive(Debug)]
struct OpenTxn {
    caller: SpiffeId,
    request: OpenRequest,
    issued_at: u64,
    expires_at: u64,
    started: Instant,
    revocation: Revocation,
    /// The caller's place under its limit, freed with this record.
    _slot: Slot,
}

/// A transaction id's state in the shim.
#[derive(Debug)]
enum Entry {
    /// Its credential is being issued and recorded; `closed` when a close
    /// arrived meanwhile (the filter stopped waiting), so it is revoked as
    /// soon as it exists.
    Opening { closed: bool },
    /// Issued, recorded and answered.
    Open(Box<OpenTxn>),
}

/// Holds an id as [`Entry::Opening`]; dropped before the open completes
/// (any failure), it frees the id.
struct Reservation<'a> {
    entries: &'a Mutex<HashMap<TransactionId, Entry>>,
    id: TransactionId,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Ok(mut entries) = self.entries.lock()
            && matches!(entries.get(&self.id), Some(Entry::Opening { .. }))
        {
            entries.remove(&self.id);
        }
    }
}

/// Why the transaction service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A broker cannot be built.
    #[error(transparent)]
    Broker(#[from] BrokerSetupError),
    /// The ledger's HMAC key file cannot be read.
    #[error("ledger hmac_key_file {}: {source}", path.display())]
    HmacKey {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The HMAC key is too short.
    #[error("ledger hmac_key_file {}: an HMAC key needs at least 16 bytes", .0.display())]
    ShortHmacKey(std::path::PathBuf),
    /// The ledger cannot be opened.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Its checkpoints cannot start.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointSetupError),
}

/// Open transactions and what they need.
pub struct Transactions {
    identity: Arc<IdentitySource>,
    brokers: HashMap<String, Broker>,
    rules: Vec<policy::Rule>,
    ledger: Ledger,
    hmac: Option<HmacKey>,
    entries: Mutex<HashMap<TransactionId, Entry>>,
    limit: CallerLimit,
    reap_interval: Duration,
    /// WIMSE proofs that opened a transaction.
    proofs: MemoryReplay,
    /// `open` records a previous run left without an end, until disarmed.
    orphans: Mutex<Vec<TransactionEvent>>,
    /// Ended transactions whose credential the provider has not yet taken
    /// back, with the end to record once it has.
    unrevoked: Mutex<Vec<(OpenTxn, Event, Option<String>)>>,
}

impl Transactions {
    /// Builds the service: brokers, and the opened `ledger`.
    pub fn new(
        config: IptConfig,
        identity: Arc<IdentitySource>,
        ledger: Ledger,
    ) -> Result<Self, SetupError> {
        let mut brokers = HashMap::new();
        for (name, c) in config.brokers {
            brokers.insert(name.clone(), Broker::new(&name, c)?);
        }
        let hmac = match &config.ledger.hmac_key_file {
            None => None,
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| SetupError::HmacKey {
                    path: path.clone(),
                    source,
                })?;
                Some(HmacKey::new(bytes).ok_or_else(|| SetupError::ShortHmacKey(path.clone()))?)
            }
        };
        Ok(Self {
            identity,
            brokers,
            rules: config.policy,
            ledger,
            hmac,
            entries: Mutex::new(HashMap::new()),
            limit: CallerLimit::new(config.max_open_per_caller),
            reap_interval: Duration::from_millis(config.reap_interval_ms.max(50)),
            proofs: MemoryReplay::default(),
            orphans: Mutex::new(Vec::new()),
            unrevoked: Mutex::new(Vec::new()),
        })
    }

    /// Takes on the transactions a previous run opened and never ended
    /// (found in the ledger): the reaper disarms and records each.
    pub fn with_orphans(self, orphans: Vec<TransactionEvent>) -> Self {
        if !orphans.is_empty() {
            tracing::warn!(
                "ledger: {} transactions were left open by the previous run; disarming them",
                orphans.len()
            );
        }
        Self {
            orphans: Mutex::new(orphans),
            ..self
        }
    }

    fn event(
        &self,
        kind: Event,
        caller: Option<&SpiffeId>,
        request: &OpenRequest,
    ) -> TransactionEvent {
        let mut e = TransactionEvent::new(kind, request.transaction_id.clone());
        e.caller = caller.map(ToString::to_string);
        e.resource = Some(request.resource.to_string());
        e.action = Some(request.action.to_string());
        e.broker = Some(request.broker.clone());
        if let Some(key) = &self.hmac {
            e.refs.insert(
                "caller_token".into(),
                // A token and its high-S twin are one token: one reference.
                key.reference(
                    "caller-token",
                    &match &request.wimse {
                        // A WIMSE caller's per-request credential is its proof.
                        Some(presented) => presented.wpt.clone(),
                        None => malleability_free(&request.token)
                            .unwrap_or_else(|| request.token.clone()),
                    },
                ),
            );
        }
        e
    }

    /// A WIMSE caller, verified again as the filter did: the WIT against the
    /// issuers and the bundle, the proof against it and its target; each
    /// proof opens at most one transaction.
    fn wimse_caller(
        &self,
        presented: &WimseProof,
        identity: &WorkloadIdentity,
    ) -> Result<SpiffeId, TxError> {
        let unauthenticated = |e: WimseError| TxError::Unauthenticated(e.to_string());
        let issuers = identity.wimse.issuers.as_ref().ok_or_else(|| {
            TxError::Unauthenticated("no WIT issuers for this workload's trust domain".into())
        })?;
        let now = unix_now();
        let leeway = VerifyOptions::default().leeway_secs;
        let wit = verify_wit(
            &presented.wit,
            issuers,
            &identity.bundle,
            now,
            leeway,
            &RustCrypto,
        )
        .map_err(unauthenticated)?;
        let other: Vec<(&str, &str)> = presented
            .other
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let understood: Vec<String> = presented.other.keys().cloned().collect();
        let proof = verify_wpt(
            &presented.wpt,
            &wit,
            &ProofRequest {
                target: &presented.target,
                wit: &presented.wit,
                carried: CarriedTokens {
                    access_token: presented.access_token.as_deref(),
                    txn_token: presented.txn_token.as_deref(),
                    other: &other,
                },
                understood: &understood,
                now,
                leeway_secs: MAX_PROOF_LEEWAY_SECS,
                max_lifetime_secs: RING_SECONDS - MAX_PROOF_LEEWAY_SECS,
            },
            &RustCrypto,
        )
        .map_err(unauthenticated)?;
        let key = ReplayKey::new(&wit.caller, &proof.jti);
        match self.proofs.first_use(key, proof.lapses_at, now) {
            Ok(true) => Ok(wit.caller),
            Ok(false) => Err(unauthenticated(WimseError::Replayed)),
            Err(why) => Err(TxError::Unavailable(why)),
        }
    }

    /// Opens a transaction.
    pub async fn open(&self, request: OpenRequest) -> Result<OpenResponse, TxError> {
        // Reserved first, so a close that arrives while this open is under
        // way (the filter stopped waiting) finds it.
        let reservation = {
            let mut entries = self
                .entries
                .lock()
                .map_err(|_| TxError::Unavailable("state poisoned".into()))?;
            if entries.contains_key(&request.transaction_id) {
                return Err(TxError::Conflict);
            }
            entries.insert(
                request.transaction_id.clone(),
                Entry::Opening { closed: false },
            );
            Reservation {
                entries: &self.entries,
                id: request.transaction_id.clone(),
            }
        };
        // Defence in depth: the shim trusts nobody on its socket.
        let served = self
            .identity
            .served()
            .ok_or_else(|| TxError::Unavailable("no identity loaded".into()))?;
        // The filter's audience (`inbound.audience`) when it has one: the
        // token must be for it, as the filter checked.
        let audience = request
            .audience
            .clone()
            .unwrap_or_else(|| served.identity.id().clone());
        let caller = match &request.wimse {
            Some(presented) => self.wimse_caller(presented, &served.identity)?,
            None => {
                let verifier = TokenVerifier::new(audience, VerifyOptions::default());
                verifier
                    .verify(
                        &request.token,
                        &served.identity.bundle,
                        unix_now(),
                        &RustCrypto,
                    )
                    .map_err(|e| TxError::Unauthenticated(e.to_string()))?
                    .caller
            }
        };
        let broker = self
            .brokers
            .get(&request.broker)
            .ok_or_else(|| TxError::BadRequest(format!("unknown broker {:?}", request.broker)))?;
        if !policy::allows(
            &self.rules,
            &caller,
            &request.resource,
            &request.action,
            &request.broker,
        ) {
            let mut e = self.event(Event::Deny, Some(&caller), &request);
            e.error = Some("denied by policy".into());
            if let Err(err) = self.ledger.append(e).await {
                tracing::error!("ledger: cannot record a denial: {err}");
            }
            return Err(TxError::Denied);
        }
        let Some(slot) = self.limit.take(&caller) else {
            tracing::warn!("ipt: 429: {caller} has too many open transactions");
            return Err(TxError::TooMany);
        };
        let issued_at = unix_now();
        let issued = match broker
            .issue(
                request.transaction_id.as_str(),
                &request.resource,
                &request.action,
            )
            .await
        {
            Ok(issued) => issued,
            Err(err) => {
                let mut e = self.event(Event::Fail, Some(&caller), &request);
                e.error = Some(format!("issue failed: {err}"));
                if let Err(ledger_err) = self.ledger.append(e).await {
                    tracing::error!("ledger: cannot record a failed issue: {ledger_err}");
                }
                return Err(TxError::Unavailable(err.to_string()));
            }
        };
        let mut e = self.event(Event::Open, Some(&caller), &request);
        e.issued_at = Some(issued_at);
        e.blast_radius = Some(issued.blast_radius.clone());
        e.revocation = Some(issued.revocation.describe());
        if let Err(err) = self.ledger.append(e).await {
            // Unaudited means unissued: take it back and refuse.
            if let Err(revoke_err) = broker.revoke(&issued.revocation).await {
                tracing::error!("revoking an unrecorded credential failed: {revoke_err}");
            }
            return Err(TxError::Unavailable(format!("ledger: {err}")));
        }
        let scope = format!("{}:{}", request.action, request.resource);
        let response = OpenResponse {
            transaction_id: request.transaction_id.clone(),
            credential: issued
                .credential
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                .collect(),
            expires_at: issued.expires_at,
            scope,
            blast_radius: issued.blast_radius,
        };
        let txn = OpenTxn {
            caller,
            request,
            issued_at,
            expires_at: issued.expires_at,
            started: Instant::now(),
            revocation: issued.revocation,
            _slot: slot,
        };
        {
            let mut entries = self
                .entries
                .lock()
                .map_err(|_| TxError::Unavailable("state poisoned".into()))?;
            let id = &txn.request.transaction_id;
            if !matches!(entries.get(id), Some(Entry::Opening { closed: true })) {
                entries.insert(id.clone(), Entry::Open(Box::new(txn)));
                return Ok(response);
            }
        }
        // Closed while it was opening (the filter stopped waiting): nobody
        // will use the credential.
        drop(reservation);
        self.finish(txn, Event::Fail, Some("closed while opening".into()))
            .await;
        Err(TxError::Unavailable("closed while opening".into()))
    }

    /// Closes a transaction: revokes (always), then records. A transaction
    /// still opening is marked, and revoked the moment it is open.
    pub async fn close(
        &self,
        transaction_id: &TransactionId,
        close: CloseRequest,
    ) -> Result<(), TxError> {
        let txn = {
            let mut entries = self
                .entries
                .lock()
                .map_err(|_| TxError::Unavailable("state poisoned".into()))?;
            match entries.remove(transaction_id) {
                Some(Entry::Open(txn)) => *txn,
                Some(Entry::Opening { .. }) => {
                    entries.insert(transaction_id.clone(), Entry::Opening { closed: true });
                    return Ok(());
                }
                None => return Err(TxError::NotFound),
            }
        };
        let failure = close
            .outcome
            .is_failure()
            .then(|| format!("{:?}", close.outcome));
        self.finish(
            txn,
            if failure.is_some() {
                Event::Fail
            } else {
                Event::Close
            },
            failure,
        )
        .await;
        Ok(())
    }

    /// Revokes, then records the transaction's end. A revocation the
    /// provider cannot take now is tried again on every reaper tick until
    /// the credential's TTL ends it; only then is the end recorded, so the
    /// record says how the credential was taken back.
    async fn finish(&self, txn: OpenTxn, kind: Event, error: Option<String>) {
        let revoked = match self.brokers.get(&txn.request.broker) {
            Some(broker) => broker
                .revoke(&txn.revocation)
                .await
                .map_err(|e| e.to_string()),
            None => Err("broker no longer configured".into()),
        };
        // A close whose revocation failed is a failure.
        let (kind, error) = match revoked {
            Ok(()) => (kind, error),
            Err(r) if txn.expires_at > unix_now() => {
                tracing::warn!(
                    "transaction {}: revocation failed, retrying until its TTL: {r}",
                    txn.request.transaction_id
                );
                if let Ok(mut unrevoked) = self.unrevoked.lock() {
                    unrevoked.push((txn, kind, error));
                }
                return;
            }
            Err(r) => (
                if kind == Event::Close {
                    Event::Fail
                } else {
                    kind
                },
                Some(match error {
                    Some(e) => format!("{e}; revocation failed until the TTL ended it: {r}"),
                    None => format!("revocation failed until the TTL ended it: {r}"),
                }),
            ),
        };
        let mut e = self.event(kind, Some(&txn.caller), &txn.request);
        e.issued_at = Some(txn.issued_at);
        e.closed_at = Some(unix_now());
        e.duration_ms = Some(txn.started.elapsed().as_millis() as u64);
        e.revocation = Some(txn.revocation.describe());
        e.error = error;
        if let Err(err) = self.ledger.append(e).await {
            tracing::error!("ledger: cannot record the end of a transaction: {err}");
        }
    }

    /// Tries again the revocations that failed.
    async fn retry_revocations(&self) {
        let unrevoked = match self.unrevoked.lock() {
            Ok(mut unrevoked) => std::mem::take(&mut *unrevoked),
            Err(_) => return,
        };
        for (txn, kind, error) in unrevoked {
            Box::pin(self.finish(txn, kind, error)).await;
        }
    }

    /// Revokes and records every transaction whose credential has expired.
    pub async fn reap(&self) {
        let now = unix_now();
        let expired: Vec<OpenTxn> = match self.entries.lock() {
            Ok(mut entries) => {
                let ids: Vec<TransactionId> = entries
                    .iter()
                    .filter(|(_, e)| matches!(e, Entry::Open(t) if t.expires_at <= now))
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter()
                    .filter_map(|id| match entries.remove(id) {
                        Some(Entry::Open(txn)) => Some(*txn),
                        _ => None,
                    })
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        for txn in expired {
            self.finish(
                txn,
                Event::Expire,
                Some("credential expired without a close".into()),
            )
            .await;
        }
    }

    /// Disarms the credentials of orphaned transactions and records each
    /// as failed; one whose broker or ledger is down is tried again on the
    /// next tick.
    async fn disarm_orphans(&self) {
        let orphans = match self.orphans.lock() {
            Ok(mut orphans) => std::mem::take(&mut *orphans),
            Err(_) => return,
        };
        let mut left = Vec::new();
        for open in orphans {
            let id = open.transaction_id.clone();
            let disarmed = match open.broker.as_deref().map(|b| (b, self.brokers.get(b))) {
                Some((_, Some(broker))) => broker
                    .disarm(&id, open.revocation.as_deref())
                    .await
                    .map_err(|e| e.to_string()),
                Some((name, None)) => Ok(format!(
                    "none, broker {name} no longer configured; ttl backstop"
                )),
                None => Ok("none, the open record names no broker; ttl backstop".into()),
            };
            let revocation = match disarmed {
                Ok(revocation) => revocation,
                Err(why) => {
                    tracing::warn!("transaction {id}: cannot disarm yet: {why}");
                    left.push(open);
                    continue;
                }
            };
            let mut e = open.clone();
            e.event = Event::Fail;
            e.closed_at = Some(unix_now());
            e.revocation = Some(revocation);
            e.error = Some("orphaned: the shim stopped before the transaction ended".into());
            if let Err(err) = self.ledger.append(e).await {
                tracing::error!("ledger: cannot record a disarmed orphan: {err}");
                left.push(open);
            }
        }
        if let Ok(mut orphans) = self.orphans.lock() {
            orphans.extend(left);
        }
    }

    /// Runs the reaper forever.
    pub async fn run_reaper(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.reap_interval);
        loop {
            tick.tick().await;
            self.disarm_orphans().await;
            self.retry_revocations().await;
            self.reap().await;
        }
    }
}
