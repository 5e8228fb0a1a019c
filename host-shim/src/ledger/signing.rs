//! Ledger signatures: the last record of every durable batch carries an
//! Ed25519 signature over its hash, which chains back over every earlier
//! record. Verifying needs only the public key; forging, the private key,
//! which lives outside the ledger's directory.

use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// What a signature covers; each signs under its own context, so a
/// signature means nothing anywhere else.
#[derive(Debug, Clone, Copy)]
pub enum Signed {
    /// A record's hash (the head of a durable batch).
    Head,
    /// A checkpoint's `seq`, `head` and `time`.
    Checkpoint,
}

impl Signed {
    fn context(self) -> &'static [u8] {
        match self {
            Self::Head => b"ephemera-ledger-head-v1\0",
            Self::Checkpoint => b"ephemera-ledger-checkpoint-v1\0",
        }
    }
}

/// Prefix of a record's `sig`.
const PREFIX: &str = "ed25519:";

/// Why a ledger key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// Not a PKCS#8 (private) or SPKI (public) Ed25519 PEM.
    #[error("{0}: not an Ed25519 {1} key in PEM")]
    Format(PathBuf, &'static str),
    /// Readable by others than its owner.
    #[error("{0}: the ledger's signing key must be mode 0600 (it is {1:o})")]
    Mode(PathBuf, u32),
    /// In the ledger's own directory, where the ledger's writer could replace it.
    #[error("{0}: the ledger's signing key must live outside the ledger's directory {1}")]
    BesideLedger(PathBuf, PathBuf),
}

/// The writer's private key.
#[derive(Clone)]
pub struct LedgerKey(SigningKey);

impl std::fmt::Debug for LedgerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerKey(..)")
    }
}

/// A public key that checks ledger signatures.
#[derive(Debug, Clone)]
pub struct LedgerVerifier(VerifyingKey);

impl LedgerKey {
    /// Loads the key at `path` for the ledger file `ledger` (if the ledger
    /// is a file): 0600, and not in the ledger's directory.
    pub fn load(path: &Path, ledger: Option<&Path>) -> Result<Self, KeyError> {
        let meta = std::fs::metadata(path).map_err(|e| KeyError::Io(path.to_owned(), e))?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode(path.to_owned(), mode));
        }
        let dir_of = |p: &Path| {
            std::path::absolute(p)
                .ok()
                .and_then(|a| a.parent().map(Path::to_path_buf))
        };
        if let (Some(key_dir), Some(ledger_dir)) = (dir_of(path), ledger.and_then(dir_of))
            && key_dir == ledger_dir
        {
            return Err(KeyError::BesideLedger(path.to_owned(), ledger_dir));
        }
        let pem = std::fs::read_to_string(path).map_err(|e| KeyError::Io(path.to_owned(), e))?;
        SigningKey::from_pkcs8_pem(&pem)
            .map(Self)
            .map_err(|_| KeyError::Format(path.to_owned(), "private"))
    }

    /// Installs a key delivered readable by a group (a Kubernetes Secret
    /// volume is root-owned, 0440 for the pod's `fsGroup`) as a 0600 file of
    /// this user at `to`, once it parses as a key.
    pub fn install(from: &Path, to: &Path) -> Result<(), KeyError> {
        let pem = std::fs::read_to_string(from).map_err(|e| KeyError::Io(from.to_owned(), e))?;
        SigningKey::from_pkcs8_pem(&pem)
            .map_err(|_| KeyError::Format(from.to_owned(), "private"))?;
        crate::atomic_file::write(to, pem.as_bytes(), 0o600)
            .map_err(|e| KeyError::Io(to.to_owned(), e))
    }

    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// Writes the private key (0600, never overwriting) and the public key.
    pub fn write(&self, private: &Path, public: &Path) -> Result<(), KeyError> {
        fn io(p: &Path) -> impl Fn(std::io::Error) -> KeyError + '_ {
            move |e| KeyError::Io(p.to_owned(), e)
        }
        let pem = self
            .0
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| KeyError::Format(private.to_owned(), "private"))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(private)
            .map_err(io(private))?;
        std::io::Write::write_all(&mut file, pem.as_bytes()).map_err(io(private))?;
        file.sync_all().map_err(io(private))?;
        let public_pem = self
            .0
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| KeyError::Format(public.to_owned(), "public"))?;
        std::fs::write(public, public_pem).map_err(io(public))
    }

    /// The matching public key.
    pub fn verifier(&self) -> LedgerVerifier {
        LedgerVerifier(self.0.verifying_key())
    }

    /// The `sig` of a record whose hash is `hash`.
    pub fn sign(&self, hash: &str) -> String {
        self.sign_as(Signed::Head, hash)
    }

    /// A signature over `text` in the context `what`.
    pub fn sign_as(&self, what: Signed, text: &str) -> String {
        let signature = self.0.sign(&message(what, text));
        format!("{PREFIX}{}", hex::encode(signature.to_bytes()))
    }
}

impl LedgerVerifier {
    /// Reads a public key (SPKI PEM, as `ephemera ledger keygen` writes it).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|e| KeyError::Io(path.to_owned(), e))?;
        VerifyingKey::from_public_key_pem(&pem)
            .map(Self)
            .map_err(|_| KeyError::Format(path.to_owned(), "public"))
    }

    /// True when `sig` signs the record hash `hash`.
    pub fn verify(&self, hash: &str, sig: &str) -> bool {
        self.verify_as(Signed::Head, hash, sig)
    }

    /// True when `sig` signs `text` in the context `what`.
    pub fn verify_as(&self, what: Signed, text: &str, sig: &str) -> bool {
        let Some(bytes) = sig.strip_prefix(PREFIX).and_then(|h| hex::decode(h).ok()) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(&bytes) else {
            return false;
        };
        self.0
            .verify_strict(&message(what, text), &signature)
            .is_ok()
    }
}

/// Why a configured ledger has no usable signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeySetupError {
    /// The key file is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// No key file is configured and an unkeyed ledger was not asked for.
    #[error(
        "ledger {0}: no signing_key_file; without it whoever can write the ledger can rewrite \
         it unnoticed. Create one with `ephemera ledger keygen KEY PUB` (outside the ledger's \
         directory), or pass --insecure-unkeyed-ledger"
    )]
    Missing(String),
}

/// The signing key of the ledger `name` (kept in `file`, when it is a
/// file), from `key_file`; without one, `None` only when an unkeyed ledger
/// was asked for.
pub fn configured_key(
    name: &str,
    file: Option<&Path>,
    key_file: Option<&Path>,
    unkeyed: bool,
) -> Result<Option<LedgerKey>, KeySetupError> {
    match key_file {
        Some(key_file) => Ok(Some(LedgerKey::load(key_file, file)?)),
        None if unkeyed => {
            tracing::warn!(
                "ledger {name}: unkeyed (--insecure-unkeyed-ledger): whoever can write the \
                 ledger can rewrite it unnoticed"
            );
            Ok(None)
        }
        None => Err(KeySetupError::Missing(name.to_owned())),
    }
}

fn message(what: Signed, text: &str) -> Vec<u8> {
    [what.context(), text.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_signature_verifies_only_for_its_hash_and_its_key() {
        let key = LedgerKey::generate().unwrap();
        let other = LedgerKey::generate().unwrap();
        let sig = key.sign("abc");
        assert!(key.verifier().verify("abc", &sig));
        assert!(!key.verifier().verify("abd", &sig));
        assert!(!other.verifier().verify("abc", &sig));
        assert!(!key.verifier().verify("abc", "ed25519:zz"));
    }

    #[test]
    fn a_group_readable_delivered_key_is_installed_private_and_then_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (delivered, public) = (dir.path().join("secret.key"), dir.path().join("k.pub"));
        let key = LedgerKey::generate().unwrap();
        key.write(&delivered, &public).unwrap();
        std::fs::set_permissions(&delivered, std::fs::Permissions::from_mode(0o440)).unwrap();
        let ledger = dir.path().join("logs/ledger.jsonl");
        assert!(matches!(
            LedgerKey::load(&delivered, Some(&ledger)),
            Err(KeyError::Mode(_, 0o440))
        ));
        let installed = dir.path().join("installed.key");
        LedgerKey::install(&delivered, &installed).unwrap();
        let mode = std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = LedgerKey::load(&installed, Some(&ledger)).unwrap();
        assert!(key.verifier().verify("h", &loaded.sign("h")));
        std::fs::write(&delivered, "not a key").unwrap();
        assert!(matches!(
            LedgerKey::install(&delivered, &dir.path().join("other.key")),
            Err(KeyError::Format(..))
        ));
    }

    #[test]
    fn keys_round_trip_and_a_loose_or_misplaced_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&keys).unwrap();
        std::fs::create_dir_all(&logs).unwrap();
        let (private, public) = (keys.join("ledger.key"), keys.join("ledger.pub"));
        let key = LedgerKey::generate().unwrap();
        key.write(&private, &public).unwrap();
        assert!(key.write(&private, &public).is_err(), "never overwritten");
        let ledger = logs.join("ledger.jsonl");
        let loaded = LedgerKey::load(&private, Some(&ledger)).unwrap();
        let verifier = LedgerVerifier::load(&public).unwrap();
        assert!(verifier.verify("h", &loaded.sign("h")));

        let beside = logs.join("ledger.key");
        std::fs::copy(&private, &beside).unwrap();
        std::fs::set_permissions(&beside, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            LedgerKey::load(&beside, Some(&ledger)),
            Err(KeyError::BesideLedger(..))
        ));
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            LedgerKey::load(&private, Some(&ledger)),
            Err(KeyError::Mode(_, 0o640))
        ));
    }
}
