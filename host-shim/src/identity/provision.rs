//! Provisioning roots in the spiffile layout:
//! `<root>/bundle.json`, `<root>/services/<name>/{id,key.pem}`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ephemera_core::{BundleDocument, BundleError, KeyError, PrivateKey, SpiffeId, SpiffeIdError};

use crate::atomic_file;
pub use crate::identity::files::{BUNDLE_FILE, ID_FILE, KEY_FILE};
use crate::identity::files::{ENV_BUNDLE_FILE, ENV_ID_FILE, ENV_KEY_FILE};
use crate::identity::store::Change;

/// The directory of per-service material in a root.
pub const SERVICES_DIR: &str = "services";

/// Why a provisioning operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The bundle change could not be published (the bundle file has it;
    /// no key was written: run the command again).
    #[error("publishing the bundle change failed: {0}")]
    Publish(String),
    /// `init` on a root that already has a bundle.
    #[error("already initialized: {0}")]
    AlreadyInitialized(PathBuf),
    /// The root has no (readable) bundle.
    #[error("cannot read bundle {path}: {source}")]
    ReadBundle {
        /// The bundle path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The bundle is not a valid spiffile document.
    #[error("bundle {path} is invalid: {source}")]
    InvalidBundle {
        /// The bundle path.
        path: PathBuf,
        /// What is wrong.
        source: BundleError,
    },
    /// The service name does not make a valid SPIFFE ID.
    #[error("service name {name:?} does not make a valid SPIFFE ID: {source}")]
    BadName {
        /// The name given.
        name: String,
        /// Why.
        source: SpiffeIdError,
    },
    /// `rotate` of a service that has no key.
    #[error("unknown service {name:?}: {path} does not exist")]
    UnknownService {
        /// The name given.
        name: String,
        /// The missing key file.
        path: PathBuf,
    },
    /// Key generation or encoding failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A file could not be written or removed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Carries a root's bundle change elsewhere (a bundle store) after the
/// bundle file is written and before any key is: bundle before key.
pub type Publisher = Box<dyn Fn(&BundleDocument, &Change) -> Result<(), String> + Send + Sync>;

/// A provisioning root.
pub struct Root {
    dir: PathBuf,
    publisher: Option<Publisher>,
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Root")
            .field("dir", &self.dir)
            .field("publishes", &self.publisher.is_some())
            .finish()
    }
}

impl Root {
    /// A root at `dir` (not touched until an operation runs).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            publisher: None,
        }
    }

    /// The same root, publishing every bundle change through `publisher`.
    pub fn publishing(self, publisher: Publisher) -> Self {
        Self {
            publisher: Some(publisher),
            ..self
        }
    }

    /// Publishes the whole bundle as it is now.
    pub fn publish_all(&self) -> Result<(), ProvisionError> {
        let _lock = self.lock()?;
        let doc = self.read_bundle()?;
        self.publish(&doc, &Change::Whole)
    }

    fn publish(&self, doc: &BundleDocument, change: &Change) -> Result<(), ProvisionError> {
        match &self.publisher {
            Some(publish) => publish(doc, change).map_err(ProvisionError::Publish),
            None => Ok(()),
        }
    }

    /// The bundle file.
    pub fn bundle_path(&self) -> PathBuf {
        self.dir.join(BUNDLE_FILE)
    }

    /// A service's directory.
    pub fn service_dir(&self, name: &str) -> PathBuf {
        self.dir.join(SERVICES_DIR).join(name)
    }

    /// Creates the root with an empty bundle; refuses an initialized root.
    pub fn init(&self, trust_domain: &str) -> Result<(), ProvisionError> {
        let doc =
            BundleDocument::new(trust_domain).map_err(|source| ProvisionError::InvalidBundle {
                path: self.bundle_path(),
                source,
            })?;
        if self.bundle_path().exists() {
            return Err(ProvisionError::AlreadyInitialized(self.bundle_path()));
        }
        let services = self.dir.join(SERVICES_DIR);
        fs::create_dir_all(&services).map_err(|source| ProvisionError::Write {
            path: services,
            source,
        })?;
        self.write_bundle(&doc)
    }

    /// Generates a key for a service and binds it in the bundle; a service
    /// that already has a key keeps it.
    pub fn add(&self, name: &str) -> Result<SpiffeId, ProvisionError> {
        let _lock = self.lock()?;
        let mut doc = self.read_bundle()?;
        let id = service_id(&doc, name)?;
        let dir = self.service_dir(name);
        if dir.join(KEY_FILE).exists() {
            return Ok(id);
        }
        fs::create_dir_all(&dir).map_err(|source| ProvisionError::Write {
            path: dir.clone(),
            source,
        })?;
        let key = PrivateKey::generate()?;
        write_file(&dir.join(ID_FILE), format!("{id}\n").as_bytes(), 0o644)?;
        doc.identities
            .insert(id.to_string(), jwk_set(vec![jwk_value(&key)]));
        self.write_bundle(&doc)?;
        self.publish(&doc, &Change::Put { id: id.to_string() })?;
        write_file(&dir.join(KEY_FILE), key.to_pkcs8_pem()?.as_bytes(), 0o600)?;
        Ok(id)
    }

    /// Replaces a service's key. The new key goes first in the bundle; the
    /// old ones stay for overlap unless `drop_old`. The bundle is written
    /// before the key so peers learn the new key before it signs anything.
    pub fn rotate(&self, name: &str, drop_old: bool) -> Result<SpiffeId, ProvisionError> {
        let _lock = self.lock()?;
        let mut doc = self.read_bundle()?;
        let id = service_id(&doc, name)?;
        let key_path = self.service_dir(name).join(KEY_FILE);
        if !key_path.exists() {
            return Err(ProvisionError::UnknownService {
                name: name.to_owned(),
                path: key_path,
            });
        }
        let key = PrivateKey::generate()?;
        let new = jwk_value(&key);
        let mut keys = vec![new.clone()];
        if !drop_old {
            let old = doc.identities.get(id.as_str()).map(|s| s.keys.clone());
            keys.extend(
                old.unwrap_or_default()
                    .into_iter()
                    .filter(|k| k["kid"] != new["kid"]),
            );
        }
        doc.identities.insert(id.to_string(), jwk_set(keys));
        self.write_bundle(&doc)?;
        self.publish(&doc, &Change::Put { id: id.to_string() })?;
        write_file(&key_path, key.to_pkcs8_pem()?.as_bytes(), 0o600)?;
        Ok(id)
    }

    /// Revokes a service: drops it from the bundle and deletes its files.
    pub fn remove(&self, name: &str) -> Result<SpiffeId, ProvisionError> {
        let _lock = self.lock()?;
        let mut doc = self.read_bundle()?;
        let id = service_id(&doc, name)?;
        doc.identities.remove(id.as_str());
        self.write_bundle(&doc)?;
        self.publish(&doc, &Change::Remove { id: id.to_string() })?;
        let dir = self.service_dir(name);
        for file in [ID_FILE, KEY_FILE] {
            remove_if_present(&dir.join(file))?;
        }
        if dir.exists() {
            fs::remove_dir(&dir).map_err(|source| ProvisionError::Write { path: dir, source })?;
        }
        Ok(id)
    }

    /// The three environment variables pointing a workload at its material.
    pub fn env(&self, name: &str) -> Result<[(&'static str, PathBuf); 3], ProvisionError> {
        let doc = self.read_bundle()?;
        service_id(&doc, name)?;
        let dir = absolute(&self.service_dir(name));
        Ok([
            (ENV_ID_FILE, dir.join(ID_FILE)),
            (ENV_KEY_FILE, dir.join(KEY_FILE)),
            (ENV_BUNDLE_FILE, absolute(&self.bundle_path())),
        ])
    }

    /// Serializes read-modify-write of the bundle between concurrent
    /// provisioners (a lost `remove` would undo a revocation).
    fn lock(&self) -> Result<fs::File, ProvisionError> {
        let path = self.dir.join(".lock");
        let write_error = |source| ProvisionError::Write {
            path: path.clone(),
            source,
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(write_error)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| write_error(e.into()))?;
        Ok(file)
    }

    fn read_bundle(&self) -> Result<BundleDocument, ProvisionError> {
        let path = self.bundle_path();
        let bytes = fs::read(&path).map_err(|source| ProvisionError::ReadBundle {
            path: path.clone(),
            source,
        })?;
        BundleDocument::parse(&bytes)
            .map_err(|source| ProvisionError::InvalidBundle { path, source })
    }

    fn write_bundle(&self, doc: &BundleDocument) -> Result<(), ProvisionError> {
        write_file(&self.bundle_path(), doc.to_json().as_bytes(), 0o644)
    }
}

fn service_id(doc: &BundleDocument, name: &str) -> Result<SpiffeId, ProvisionError> {
    SpiffeId::from_parts(&doc.trust_domain, name).map_err(|source| ProvisionError::BadName {
        name: name.to_owned(),
        source,
    })
}

fn jwk_value(key: &PrivateKey) -> serde_json::Value {
    serde_json::to_value(key.public_key().jwk()).unwrap_or_default()
}

fn jwk_set(keys: Vec<serde_json::Value>) -> ephemera_core::bundle::JwkSet {
    ephemera_core::bundle::JwkSet { keys }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ProvisionError> {
    atomic_file::write(path, bytes, mode).map_err(|source| ProvisionError::Write {
        path: path.to_owned(),
        source,
    })
}

fn remove_if_present(path: &Path) -> Result<(), ProvisionError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ProvisionError::Write {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
