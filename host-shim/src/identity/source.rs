//! The workload identity the shim serves: read from the three files (the
//! bundle from a bundle store instead, when one is configured), validated
//! as the filter would, versioned by content, and replaced only by a new
//! valid set (a malformed new bundle or key keeps the last good one).

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ephemera_core::filter::workload_identity::BundleFormatName;
use ephemera_core::filter::workload_identity::FederatedBundle;
use ephemera_core::filter::{IdentityDocument, WorkloadIdentity};
use sha2::{Digest, Sha256};

use crate::identity::files::{FederatedFile, IdentityError, IdentityPaths, read_id, read_optional};

/// The identity currently served.
#[derive(Debug, Clone)]
pub struct Served {
    /// Content version (ETag).
    pub version: String,
    /// Change counter, from 1.
    pub generation: u64,
    /// The identity document as JSON, ready to send.
    pub document: Arc<Vec<u8>>,
    /// The same identity, parsed (for verifying callers in the shim).
    pub identity: Arc<WorkloadIdentity>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files are unchanged.
    Unchanged,
    /// A new version is served.
    Changed {
        /// Its generation.
        generation: u64,
    },
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A file could not be read or parsed.
    #[error(transparent)]
    Files(#[from] IdentityError),
    /// The set does not make a usable identity.
    #[error("identity refused: {0}")]
    Invalid(String),
    /// The bundle store has not delivered a revision yet.
    #[error("no bundle revision from the bundle store yet")]
    NoRevision,
}

/// The bundle as a store delivers it, and when the store last confirmed it
/// is the newest.
#[derive(Debug)]
struct Stored {
    newest: RwLock<Option<(i64, String)>>,
    confirmed: RwLock<Option<Instant>>,
    max_age: Duration,
}

/// A federated domain's bundle from its bundle endpoint.
#[derive(Debug)]
struct Fetched {
    bundle: String,
    at: Instant,
    stale_after: Duration,
}

/// Reads, validates and serves the identity files.
#[derive(Debug)]
pub struct IdentitySource {
    paths: IdentityPaths,
    format: BundleFormatName,
    federated: Vec<(BundleFormatName, FederatedFile)>,
    fetched: RwLock<BTreeMap<String, Fetched>>,
    served: RwLock<Option<Served>>,
    stored: Option<Stored>,
    /// Version of the last refused file set, so it is reported once.
    refused: RwLock<Option<String>>,
    reload_failures: AtomicU64,
    wit_expiry_warnings: AtomicU64,
    wit_warned: RwLock<Option<Instant>>,
    /// The generation served, announced to [`Self::subscribe`]rs.
    changes: tokio::sync::watch::Sender<u64>,
    /// How long a new key waits in the bundle before it signs.
    key_activation: Duration,
    /// The file set whose new key waits, and since when.
    waiting_key: RwLock<Option<(String, Instant)>>,
}

/// How long a rotated key is published before it signs, unless configured:
/// longer than a bundle takes to reach this node's verifiers (the file
/// watch, the filter's identity poll).
pub const DEFAULT_KEY_ACTIVATION: Duration = Duration::from_secs(2);

impl IdentitySource {
    /// A source over `paths`; nothing is read until [`Self::reload`].
    pub fn new(paths: IdentityPaths, format: BundleFormatName) -> Self {
        Self {
            paths,
            format,
            federated: Vec::new(),
            fetched: RwLock::new(BTreeMap::new()),
            served: RwLock::new(None),
            stored: None,
            refused: RwLock::new(None),
            reload_failures: AtomicU64::new(0),
            wit_expiry_warnings: AtomicU64::new(0),
            wit_warned: RwLock::new(None),
            changes: tokio::sync::watch::Sender::new(0),
            key_activation: DEFAULT_KEY_ACTIVATION,
            waiting_key: RwLock::new(None),
        }
    }

    /// This source with rotated keys signing only `delay` after they were
    /// first seen, while the bundle still binds the key they replace: the
    /// bundle naming the new key reaches verifiers before any token it
    /// signed. Zero signs at once.
    pub fn activating_keys_after(mut self, delay: Duration) -> Self {
        self.key_activation = delay;
        self
    }

    /// This source with federated trust domains' bundle files, read (and
    /// watched) with the identity files.
    pub fn federating(mut self, federated: Vec<(BundleFormatName, FederatedFile)>) -> Self {
        self.federated = federated;
        self
    }

    /// Takes a bundle `trust_domain`'s endpoint answered, used until
    /// `stale_after` passes without another, and serves it if valid.
    pub fn fetched_bundle(&self, trust_domain: &str, bundle: String, stale_after: Duration) {
        if let Ok(mut fetched) = self.fetched.write() {
            let at = Instant::now();
            fetched.insert(
                trust_domain.to_owned(),
                Fetched {
                    bundle,
                    at,
                    stale_after,
                },
            );
        }
        match self.reload() {
            Ok(Reload::Changed { generation }) => {
                tracing::info!(
                    "bundle of {trust_domain} fetched: identity generation {generation} served"
                );
            }
            Ok(Reload::Unchanged) => {}
            Err(e) => tracing::error!(
                "bundle of {trust_domain} refused, keeping the last good identity: {e}"
            ),
        }
    }

    /// Every file the identity is read from.
    pub fn files(&self) -> Vec<&std::path::Path> {
        let own = [&self.paths.id, &self.paths.key, &self.paths.bundle];
        let wimse = &self.paths.wimse;
        own.into_iter()
            .chain(
                [&wimse.wit, &wimse.wit_key, &wimse.wit_issuers]
                    .into_iter()
                    .flatten(),
            )
            .chain(self.federated.iter().map(|(_, f)| &f.path))
            .map(std::path::PathBuf::as_path)
            .collect()
    }

    /// Wakes on every new identity generation.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A source whose bundle comes from a bundle store
    /// ([`crate::identity::store`]) instead of the bundle file; nothing is
    /// served until the store delivers a revision, nor once it has not
    /// confirmed one for `max_age`.
    pub fn with_store(paths: IdentityPaths, format: BundleFormatName, max_age: Duration) -> Self {
        Self {
            stored: Some(Stored {
                newest: RwLock::new(None),
                confirmed: RwLock::new(None),
                max_age,
            }),
            ..Self::new(paths, format)
        }
    }

    /// Takes a new revision from the store and serves it if valid.
    pub fn store_revision(&self, revision: i64, bundle: String) -> Result<(), ReloadError> {
        if let Some(stored) = &self.stored
            && let Ok(mut newest) = stored.newest.write()
        {
            *newest = Some((revision, bundle));
        }
        self.reload().map(drop)
    }

    /// The store answered: its newest revision is the one in force.
    pub fn store_confirmed(&self) {
        if let Some(stored) = &self.stored
            && let Ok(mut confirmed) = stored.confirmed.write()
        {
            *confirmed = Some(Instant::now());
        }
    }

    /// How long ago the store last confirmed the bundle: `None` without a
    /// store, [`Duration::MAX`] before its first answer.
    pub fn unconfirmed_for(&self) -> Option<Duration> {
        let stored = self.stored.as_ref()?;
        let confirmed = stored.confirmed.read().ok().and_then(|c| *c);
        Some(confirmed.map_or(Duration::MAX, |at| at.elapsed()))
    }

    /// The identity served now, if any: none while a bundle store has not
    /// confirmed its bundle for longer than its maximum age (a revocation
    /// may be pending).
    pub fn served(&self) -> Option<Served> {
        if let (Some(stored), Some(age)) = (&self.stored, self.unconfirmed_for())
            && age > stored.max_age
        {
            return None;
        }
        self.served.read().ok().and_then(|s| s.clone())
    }

    /// The key `current` signs with, when `next` replaces it while its
    /// bundle still binds it to this workload (a rotation keeping the old
    /// key) and new keys wait before they sign.
    fn key_to_keep(&self, current: &Served, next: &WorkloadIdentity) -> Option<String> {
        let old = current.identity.minter.key();
        let kept = self.key_activation > Duration::ZERO
            && current.identity.id() == next.id()
            && old.public_key().kid() != next.minter.key().public_key().kid()
            && next
                .bundle
                .keys_for(next.id())
                .is_some_and(|keys| keys.iter().any(|k| k.kid() == old.public_key().kid()));
        if !kept {
            return None;
        }
        old.to_pkcs8_pem().ok()
    }

    /// How many reloads were refused.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// The served WIT's expiry, Unix seconds, if the workload has one.
    pub fn wit_expires_at(&self) -> Option<u64> {
        let served = self.served()?;
        let (wit, _) = served.identity.wimse.own.as_ref()?;
        ephemera_core::wimse::unverified_times(wit).map(|(_, exp)| exp)
    }

    /// Warns (and counts) when the served WIT is in the last quarter of its
    /// lifetime or past it, at most once per `every`.
    pub fn check_wit_expiry(&self, now: u64, every: Duration) {
        let Some(served) = self.served() else { return };
        let Some((wit, _)) = served.identity.wimse.own.as_ref() else {
            return;
        };
        let Some((iat, exp)) = ephemera_core::wimse::unverified_times(wit) else {
            return;
        };
        if now.saturating_add(exp.saturating_sub(iat) / 4) < exp {
            return;
        }
        let due = self
            .wit_warned
            .read()
            .ok()
            .and_then(|w| *w)
            .is_none_or(|at| at.elapsed() >= every);
        if !due {
            return;
        }
        if let Ok(mut warned) = self.wit_warned.write() {
            *warned = Some(Instant::now());
        }
        self.wit_expiry_warnings.fetch_add(1, Ordering::Relaxed);
        if exp <= now {
            tracing::error!(
                "the workload's WIT expired {} s ago: renew it (ephemera identity wit)",
                now - exp
            );
        } else {
            tracing::warn!(
                "the workload's WIT expires in {} s: renew it (ephemera identity wit)",
                exp - now
            );
        }
    }

    /// How many WIT expiry warnings were given.
    pub fn wit_expiry_warnings(&self) -> u64 {
        self.wit_expiry_warnings.load(Ordering::Relaxed)
    }

    /// Re-reads the files; serves them if they changed and are valid.
    pub fn reload(&self) -> Result<Reload, ReloadError> {
        let result = self.try_reload();
        if result.is_err() {
            self.reload_failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn try_reload(&self) -> Result<Reload, ReloadError> {
        let id = read_id(&self.paths.id)?;
        let read = |path: &std::path::Path| {
            fs::read_to_string(path).map_err(|source| IdentityError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let bundle = match &self.stored {
            Some(stored) => stored
                .newest
                .read()
                .ok()
                .and_then(|n| n.as_ref().map(|(_, bundle)| bundle.clone()))
                .ok_or(ReloadError::NoRevision)?,
            None => read(&self.paths.bundle)?,
        };
        let key_pem = read(&self.paths.key)?;
        let federated = self
            .federated
            .iter()
            .map(|(format, file)| {
                Ok(FederatedBundle {
                    trust_domain: file.trust_domain.clone(),
                    bundle_format: *format,
                    bundle: read(&file.path)?,
                })
            })
            .collect::<Result<Vec<_>, IdentityError>>()?;
        let mut federated = federated;
        if let Ok(fetched) = self.fetched.read() {
            // A domain whose endpoint has been silent too long is dropped.
            federated.extend(
                fetched
                    .iter()
                    .filter(|(_, f)| f.at.elapsed() < f.stale_after)
                    .map(|(domain, f)| FederatedBundle {
                        trust_domain: domain.clone(),
                        bundle_format: BundleFormatName::SpiffeJwks,
                        bundle: f.bundle.clone(),
                    }),
            );
        }
        let wimse = &self.paths.wimse;
        // One line; the header it goes into takes no line break.
        let wit = read_optional(wimse.wit.as_deref())?.map(|w| w.trim().to_owned());
        let wit_key_pem = read_optional(wimse.wit_key.as_deref())?;
        let wit_issuers = read_optional(wimse.wit_issuers.as_deref())?;
        let mut hash = Sha256::new();
        for part in [id.as_str(), "\0", &bundle, "\0", &key_pem] {
            hash.update(part.as_bytes());
        }
        for part in [&wit, &wit_key_pem, &wit_issuers] {
            hash.update(b"\0");
            hash.update(part.as_deref().unwrap_or("-").as_bytes());
        }
        for f in &federated {
            for part in ["\0", &f.trust_domain, "\0", &f.bundle] {
                hash.update(part.as_bytes());
            }
        }
        let version = hex::encode(&hash.finalize()[..12]);
        let current = self.served.read().ok().and_then(|s| s.clone());
        let refused_before = self
            .refused
            .read()
            .ok()
            .is_some_and(|r| r.as_deref() == Some(&version));
        if refused_before || current.as_ref().is_some_and(|s| s.version == version) {
            return Ok(Reload::Unchanged);
        }
        let waited = self.waiting_key.read().ok().and_then(|w| {
            w.as_ref()
                .filter(|(v, _)| *v == version)
                .map(|(_, at)| at.elapsed())
        });
        if waited.is_some_and(|w| w < self.key_activation) {
            // Its new key still waits; the rest is served already.
            return Ok(Reload::Unchanged);
        }
        let generation = current.as_ref().map_or(1, |s| s.generation + 1);
        let mut doc = IdentityDocument {
            version: version.clone(),
            generation,
            spiffe_id: id,
            bundle_format: self.format,
            bundle,
            key_pem,
            federated,
            wit_issuers,
            wit,
            wit_key_pem,
        };
        // Exactly the filter's validation: what we serve, it will accept.
        let mut identity = WorkloadIdentity::from_document(&doc).map_err(|e| {
            if let Ok(mut refused) = self.refused.write() {
                *refused = Some(doc.version.clone());
            }
            ReloadError::Invalid(e.to_string())
        })?;
        if waited.is_none()
            && let Some(previous) = current
                .as_ref()
                .and_then(|c| self.key_to_keep(c, &identity))
        {
            // The new bundle now, the new key once it has had time to
            // reach every verifier.
            tracing::info!(
                "a new key for {}: published now, signing in {} ms",
                identity.id(),
                self.key_activation.as_millis()
            );
            if let Ok(mut waiting) = self.waiting_key.write() {
                *waiting = Some((version.clone(), Instant::now()));
            }
            doc.key_pem = previous;
            doc.version = format!("{version}-previous-key");
            identity = WorkloadIdentity::from_document(&doc)
                .map_err(|e| ReloadError::Invalid(e.to_string()))?;
        }
        let version = doc.version.clone();
        let federated = identity.bundle.federated().iter();
        for bundle in std::iter::once(&identity.bundle).chain(federated) {
            for warning in bundle.warnings() {
                tracing::warn!("{}: {warning}", bundle.trust_domain());
            }
        }
        let own_key = identity.minter.key().public_key().kid();
        let bound = identity
            .bundle
            .keys_for(identity.id())
            .is_some_and(|keys| keys.iter().any(|k| k.kid() == own_key));
        if !bound {
            tracing::warn!(
                "the key in {} is not bound to {} in the bundle: peers will reject the tokens it mints",
                self.paths.key.display(),
                identity.id()
            );
        }
        let document = serde_json::to_vec(&doc).map_err(|e| ReloadError::Invalid(e.to_string()))?;
        if let Ok(mut served) = self.served.write() {
            *served = Some(Served {
                version,
                generation,
                document: Arc::new(document),
                identity: Arc::new(identity),
            });
        }
        self.changes.send_replace(generation);
        Ok(Reload::Changed { generation })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::provision::Root;

    fn orders(dir: &std::path::Path) -> Root {
        let root = Root::new(dir.join("root"));
        root.init("example.org").unwrap();
        root.add("orders").unwrap();
        root
    }

    fn source(root: &Root, activation: Duration) -> IdentitySource {
        let env = root.env("orders").unwrap();
        let paths = IdentityPaths::from_lookup(|name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, path)| path.clone())
        })
        .unwrap();
        IdentitySource::new(paths, BundleFormatName::Spiffile).activating_keys_after(activation)
    }

    /// (the key that signs, the keys the bundle binds to the workload)
    fn keys(source: &IdentitySource) -> (String, Vec<String>) {
        let served = source.served().unwrap();
        let identity = &served.identity;
        let bound = identity.bundle.keys_for(identity.id()).unwrap_or_default();
        (
            identity.minter.key().public_key().kid().to_owned(),
            bound.iter().map(|k| k.kid().to_owned()).collect(),
        )
    }

    #[test]
    fn a_rotated_key_is_published_at_once_and_signs_only_after_its_wait() {
        let dir = tempfile::tempdir().unwrap();
        let root = orders(dir.path());
        let source = source(&root, Duration::from_millis(300));
        source.reload().unwrap();
        let (old, _) = keys(&source);
        root.rotate("orders", false).unwrap();

        assert!(matches!(source.reload(), Ok(Reload::Changed { .. })));
        let (signing, bound) = keys(&source);
        assert_eq!(signing, old, "the old key still signs");
        assert_eq!(bound.len(), 2, "the bundle with the new key is served");
        assert_eq!(source.reload().unwrap(), Reload::Unchanged);

        std::thread::sleep(Duration::from_millis(350));
        assert!(matches!(source.reload(), Ok(Reload::Changed { .. })));
        let (signing, _) = keys(&source);
        assert_eq!(signing, bound[0], "the new key signs after its wait");
        assert_eq!(source.reload().unwrap(), Reload::Unchanged);
    }

    #[test]
    fn a_key_dropped_from_the_bundle_stops_signing_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = orders(dir.path());
        let source = source(&root, Duration::from_secs(60));
        source.reload().unwrap();
        let (old, _) = keys(&source);
        root.rotate("orders", true).unwrap();
        source.reload().unwrap();
        let (signing, bound) = keys(&source);
        assert_ne!(signing, old);
        assert_eq!(bound, [signing]);
    }

    #[test]
    fn without_a_wait_a_rotated_key_signs_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = orders(dir.path());
        let source = source(&root, Duration::ZERO);
        source.reload().unwrap();
        let (old, _) = keys(&source);
        root.rotate("orders", false).unwrap();
        source.reload().unwrap();
        assert_ne!(keys(&source).0, old);
    }
}
