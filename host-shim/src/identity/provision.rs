//! Provisioning roots in the spiffile layout:
//! `<root>/bundle.json`, `<root>/services/<name>/{id,key.pem}`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ephemera_core::{BundleDocument, BundleError, KeyError, PrivateKey, SpiffeId, SpiffeIdError};

use crate::atomic_file;
pub use crate::identity::files::{
    BUNDLE_FILE, ID_FILE, KEY_FILE, WIT_FILE, WIT_ISSUERS_FILE, WIT_KEY_FILE,
};
use crate::identity::files::{
    ENV_BUNDLE_FILE, ENV_ID_FILE, ENV_KEY_FILE, ENV_WIT_FILE, ENV_WIT_ISSUERS_FILE,
    ENV_WIT_KEY_FILE,
};
use crate::identity::store::Change;
use ephemera_core::wimse::{IssuersDocument, IssuersError, issue_wit};
use ephemera_core::{MintError, RustCrypto};

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
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The WIT issuer key inside the provisioning root, where every
    /// workload's material lives.
    #[error("the WIT issuer key {0} must live outside the provisioning root")]
    IssuerKeyInRoot(PathBuf),
    /// The issuer key is not listed in `wit-issuers.json`.
    #[error(
        "the WIT issuer key {0} is not in wit-issuers.json: run `ephemera identity wit-issuer` first"
    )]
    UnknownIssuerKey(PathBuf),
    /// `wit-issuers.json` cannot be used.
    #[error("{path}: {source}")]
    Issuers {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: IssuersError,
    },
    /// The WIT could not be signed.
    #[error("cannot issue the WIT: {0}")]
    Wit(#[from] MintError),
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

    /// Revokes a service: drops it from the bundle (and its WIT proof key
    /// binding) and deletes its files.
    pub fn remove(&self, name: &str) -> Result<SpiffeId, ProvisionError> {
        let _lock = self.lock()?;
        let mut doc = self.read_bundle()?;
        let id = service_id(&doc, name)?;
        doc.identities.remove(id.as_str());
        self.write_bundle(&doc)?;
        self.publish(&doc, &Change::Remove { id: id.to_string() })?;
        if let Some(mut issuers) = self.read_issuers()?
            && issuers.bindings.remove(id.as_str()).is_some()
        {
            self.write_issuers(&issuers)?;
        }
        let dir = self.service_dir(name);
        for file in [ID_FILE, KEY_FILE, WIT_FILE, WIT_KEY_FILE] {
            remove_if_present(&dir.join(file))?;
        }
        if dir.exists() {
            fs::remove_dir(&dir).map_err(|source| ProvisionError::Write { path: dir, source })?;
        }
        Ok(id)
    }

    /// The environment variables pointing a workload at its material: the
    /// three identity files and the WIMSE ones (read while they exist).
    pub fn env(&self, name: &str) -> Result<[(&'static str, PathBuf); 6], ProvisionError> {
        let doc = self.read_bundle()?;
        service_id(&doc, name)?;
        let dir = absolute(&self.service_dir(name));
        Ok([
            (ENV_ID_FILE, dir.join(ID_FILE)),
            (ENV_KEY_FILE, dir.join(KEY_FILE)),
            (ENV_BUNDLE_FILE, absolute(&self.bundle_path())),
            (ENV_WIT_FILE, dir.join(WIT_FILE)),
            (ENV_WIT_KEY_FILE, dir.join(WIT_KEY_FILE)),
            (ENV_WIT_ISSUERS_FILE, absolute(&self.issuers_path())),
        ])
    }

    /// The trust domain's WIT issuers file.
    pub fn issuers_path(&self) -> PathBuf {
        self.dir.join(WIT_ISSUERS_FILE)
    }

    /// Makes `key_file` (outside the root; generated when absent, 0600) a
    /// WIT issuer of the root's trust domain: its public key goes first in
    /// `wit-issuers.json`, earlier issuers stay for overlap. Returns its kid.
    pub fn wit_issuer(&self, key_file: &Path) -> Result<String, ProvisionError> {
        let _lock = self.lock()?;
        let key = self.issuer_key(key_file, true)?;
        let doc = self.read_bundle()?;
        let mut issuers = self
            .read_issuers()?
            .unwrap_or_else(|| IssuersDocument::new(&doc.trust_domain));
        let kid = key.public_key().kid().to_owned();
        let known = issuers.keys.iter().any(|k| k["kid"] == kid.as_str());
        if !known {
            issuers.keys.insert(0, jwk_value(&key));
            self.write_issuers(&issuers)?;
        }
        Ok(kid)
    }

    /// Issues `name` a WIT for `ttl_secs`, signed by the issuer key in
    /// `key_file`, bound to the service's proof key (`wit-key.pem`, made
    /// when absent or `new_proof_key`). The binding is written before the
    /// key and the WIT: a WIT bound to an older key stops verifying.
    pub fn issue_wit(
        &self,
        name: &str,
        key_file: &Path,
        ttl_secs: u64,
        new_proof_key: bool,
    ) -> Result<SpiffeId, ProvisionError> {
        let _lock = self.lock()?;
        let issuer = self.issuer_key(key_file, false)?;
        let doc = self.read_bundle()?;
        let id = service_id(&doc, name)?;
        let dir = self.service_dir(name);
        if !doc.identities.contains_key(id.as_str()) {
            return Err(ProvisionError::UnknownService {
                name: name.to_owned(),
                path: dir.join(KEY_FILE),
            });
        }
        let mut issuers = self
            .read_issuers()?
            .ok_or_else(|| ProvisionError::UnknownIssuerKey(key_file.to_owned()))?;
        let kid = issuer.public_key().kid();
        if !issuers.keys.iter().any(|k| k["kid"] == kid) {
            return Err(ProvisionError::UnknownIssuerKey(key_file.to_owned()));
        }
        let key_path = dir.join(WIT_KEY_FILE);
        let proof_key = match fs::read_to_string(&key_path) {
            Ok(pem) if !new_proof_key => PrivateKey::from_pkcs8_pem(&pem)?,
            _ => PrivateKey::generate()?,
        };
        issuers
            .bindings
            .insert(id.to_string(), proof_key.public_key().jwk().thumbprint());
        self.write_issuers(&issuers)?;
        let now = crate::clock::unix_now();
        let wit = issue_wit(
            &issuer,
            &id,
            proof_key.public_key(),
            now,
            ttl_secs,
            &RustCrypto,
        )?;
        write_file(&key_path, proof_key.to_pkcs8_pem()?.as_bytes(), 0o600)?;
        write_file(&dir.join(WIT_FILE), format!("{wit}\n").as_bytes(), 0o600)?;
        Ok(id)
    }

    /// Reads (or, when `create`, makes) the issuer key, which must live
    /// outside the root.
    fn issuer_key(&self, key_file: &Path, create: bool) -> Result<PrivateKey, ProvisionError> {
        let inside = |path: &Path| {
            let root = fs::canonicalize(&self.dir).unwrap_or_else(|_| absolute(&self.dir));
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            let parent = parent.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            fs::canonicalize(&parent)
                .unwrap_or_else(|_| absolute(&parent))
                .starts_with(root)
        };
        if inside(key_file) {
            return Err(ProvisionError::IssuerKeyInRoot(key_file.to_owned()));
        }
        match fs::read_to_string(key_file) {
            Ok(pem) => Ok(PrivateKey::from_pkcs8_pem(&pem)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                let key = PrivateKey::generate()?;
                write_file(key_file, key.to_pkcs8_pem()?.as_bytes(), 0o600)?;
                Ok(key)
            }
            Err(source) => Err(ProvisionError::Read {
                path: key_file.to_owned(),
                source,
            }),
        }
    }

    fn read_issuers(&self) -> Result<Option<IssuersDocument>, ProvisionError> {
        let path = self.issuers_path();
        match fs::read(&path) {
            Ok(bytes) => IssuersDocument::parse(&bytes)
                .map(Some)
                .map_err(|source| ProvisionError::Issuers { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ProvisionError::Read { path, source }),
        }
    }

    fn write_issuers(&self, doc: &IssuersDocument) -> Result<(), ProvisionError> {
        write_file(&self.issuers_path(), doc.to_json().as_bytes(), 0o644)
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

#[cfg(test)]
mod tests {
    use super::*;
    use ephemera_core::wimse::WitIssuers;

    fn root_with(dir: &Path, services: &[&str]) -> Root {
        let root = Root::new(dir.join("root"));
        root.init("example.org").unwrap();
        for s in services {
            root.add(s).unwrap();
        }
        root
    }

    fn bound_key(root: &Root, id: &str) -> Option<String> {
        let issuers = WitIssuers::parse(&fs::read(root.issuers_path()).unwrap()).unwrap();
        issuers
            .binding(&SpiffeId::parse(id).unwrap())
            .map(str::to_owned)
    }

    #[test]
    fn the_wit_issuer_key_lives_outside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = root_with(dir.path(), &[]);
        let inside = dir.path().join("root/issuer.pem");
        assert!(matches!(
            root.wit_issuer(&inside),
            Err(ProvisionError::IssuerKeyInRoot(_))
        ));
        assert!(!inside.exists());
        let outside = dir.path().join("issuer.pem");
        let kid = root.wit_issuer(&outside).unwrap();
        let mode = fs::metadata(&outside).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // Idempotent: the same key is listed once.
        assert_eq!(root.wit_issuer(&outside).unwrap(), kid);
        let doc = IssuersDocument::parse(&fs::read(root.issuers_path()).unwrap()).unwrap();
        assert_eq!(doc.keys.len(), 1);
    }

    #[test]
    fn a_wit_is_bound_to_the_services_proof_key_until_a_new_one_or_removal() {
        let dir = tempfile::tempdir().unwrap();
        let root = root_with(dir.path(), &["orders"]);
        let issuer = dir.path().join("issuer.pem");
        let stranger = dir.path().join("stranger.pem");
        PrivateKey::generate()
            .and_then(|k| k.to_pkcs8_pem())
            .map(|pem| fs::write(&stranger, pem))
            .unwrap()
            .unwrap();
        assert!(matches!(
            root.issue_wit("orders", &stranger, 3600, false),
            Err(ProvisionError::UnknownIssuerKey(_))
        ));
        root.wit_issuer(&issuer).unwrap();
        assert!(matches!(
            root.issue_wit("nobody", &issuer, 3600, false),
            Err(ProvisionError::UnknownService { .. })
        ));
        let orders = "spiffe://example.org/orders";
        root.issue_wit("orders", &issuer, 3600, false).unwrap();
        let first = bound_key(&root, orders).unwrap();
        // Renewal keeps the proof key; a new one replaces the binding.
        root.issue_wit("orders", &issuer, 3600, false).unwrap();
        assert_eq!(bound_key(&root, orders).unwrap(), first);
        root.issue_wit("orders", &issuer, 3600, true).unwrap();
        assert_ne!(bound_key(&root, orders).unwrap(), first);
        root.remove("orders").unwrap();
        assert_eq!(bound_key(&root, orders), None);
        assert!(!root.service_dir("orders").join(WIT_FILE).exists());
    }
}
