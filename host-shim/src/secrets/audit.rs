//! The secrets audit ledger: one [`SecretRead`] record per decision, the
//! secret named only by an HMAC (tenant salt) of its canonical URI.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ephemera_core::SpiffeId;
use ephemera_core::secrets::{ResolveError, SecretsConfig};

use crate::ledger::checkpoint::CheckpointSetupError;
use crate::ledger::signing::{KeySetupError, configured_key};
use crate::ledger::{Checkpointer, Event, FileLedger, HmacKey, LedgerError, SecretRead};

/// Why the audit ledger cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The salt file cannot be read.
    #[error("audit salt_file {path}: {source}")]
    Salt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The salt is too short to hide anything.
    #[error("audit salt_file {0}: a salt needs at least 16 bytes")]
    ShortSalt(PathBuf),
    /// The signing key is missing or unusable.
    #[error(transparent)]
    Key(#[from] KeySetupError),
    /// Checkpoints are configured without a signing key.
    #[error("{0}: a checkpoint needs signing_key_file")]
    CheckpointWithoutKey(PathBuf),
    /// The ledger file cannot be opened.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Checkpointing cannot start.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointSetupError),
}

/// A fresh read id: 128 random bits, hex.
fn read_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

/// Audit of secret decisions: a ledger and the tenant's HMAC salt.
pub struct Audit {
    ledger: FileLedger,
    tenant: String,
    salt: HmacKey,
    checkpointer: Option<Arc<Checkpointer>>,
}

impl Audit {
    /// Opens the audit ledger of a configuration, if it has one; without a
    /// signing key only when `unkeyed` was asked for.
    pub fn open(config: &SecretsConfig, unkeyed: bool) -> Result<Option<Self>, AuditError> {
        let Some(a) = &config.audit else {
            return Ok(None);
        };
        let salt_path = PathBuf::from(&a.salt_file);
        let salt = std::fs::read(&salt_path).map_err(|source| AuditError::Salt {
            path: salt_path.clone(),
            source,
        })?;
        let salt = HmacKey::new(salt).ok_or(AuditError::ShortSalt(salt_path))?;
        let path = Path::new(&a.ledger);
        let key = configured_key(
            &path.display().to_string(),
            Some(path),
            a.signing_key_file.as_deref().map(Path::new),
            unkeyed,
        )?;
        if a.checkpoint.is_some() && key.is_none() {
            return Err(AuditError::CheckpointWithoutKey(path.to_path_buf()));
        }
        let checkpoint = a.checkpoint.as_ref().zip(key.clone());
        let (ledger, _) = FileLedger::open(path, key)?;
        let checkpointer = checkpoint
            .map(|(config, key)| Checkpointer::start(ledger.clone(), key, config))
            .transpose()?;
        Ok(Some(Self {
            ledger,
            tenant: a.tenant.clone(),
            salt,
            checkpointer,
        }))
    }

    /// Records the outcome of `caller`'s read of `name`; an error means the
    /// read must not be released ([`ResolveError::AuditUnavailable`]).
    pub async fn record(
        &self,
        config: &SecretsConfig,
        name: &str,
        caller: &SpiffeId,
        outcome: Result<(), &ResolveError>,
    ) -> Result<(), ResolveError> {
        let event = match outcome {
            Ok(()) => Event::Allow,
            Err(
                ResolveError::UnknownSecret(_)
                | ResolveError::NotAuthorized { .. }
                | ResolveError::Refused(_),
            ) => Event::Deny,
            Err(_) => Event::Error,
        };
        let reference = config
            .reference(name)
            .unwrap_or_else(|| format!("name:{name}"));
        let read = SecretRead {
            event,
            read_id: read_id().ok_or(ResolveError::AuditUnavailable)?,
            caller: caller.to_string(),
            error: outcome.err().map(ResolveError::audit_reason),
            refs: [
                ("tenant".to_owned(), self.tenant.clone()),
                (
                    "secret".to_owned(),
                    self.salt.reference(&self.tenant, &reference),
                ),
            ]
            .into(),
        };
        self.ledger.append(read).await.map(drop).map_err(|err| {
            // An unaudited release is no release.
            tracing::error!("secrets audit: {err}");
            ResolveError::AuditUnavailable
        })
    }

    /// Checkpoints the ledger's head now, if it is checkpointed and moved.
    pub async fn flush(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.flush().await;
        }
    }
}
