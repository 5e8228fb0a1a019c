//! The OpenBao/Vault connection: one HTTP client (so one connection pool)
//! per server and trust, shared by the broker, the KV stores and the ledger
//! checkpoints, each calling with its own token; and token files that are
//! re-read when they change, so an agent (Vault Agent, a CSI driver) can
//! rotate a token without restarting the shim.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use super::http::{ClientError, client};
use crate::sensitive::Sensitive;

/// One OpenBao/Vault server, reached through a shared client.
#[derive(Debug)]
pub struct OpenBao {
    address: String,
    http: reqwest::Client,
}

impl OpenBao {
    /// The connection to `address` (trusting only `ca_file`'s CAs when
    /// given); every caller naming the same server and trust shares it.
    pub fn shared(address: &str, ca_file: Option<&Path>) -> Result<Arc<Self>, ClientError> {
        type Key = (String, Option<PathBuf>);
        static SHARED: OnceLock<Mutex<HashMap<Key, Arc<OpenBao>>>> = OnceLock::new();
        let address = address.trim_end_matches('/');
        let key = (address.to_owned(), ca_file.map(Path::to_path_buf));
        let mut shared = SHARED
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(connection) = shared.get(&key) {
            return Ok(connection.clone());
        }
        let connection = Arc::new(Self {
            address: key.0.clone(),
            // Each call sets its own timeout.
            http: client(address, ca_file, None)?,
        });
        shared.insert(key, connection.clone());
        Ok(connection)
    }

    /// A request to `/v1/<path>` under `token`, given up after `timeout`.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &Sensitive,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/v1/{path}", self.address))
            .header("X-Vault-Token", token.expose())
            .timeout(timeout)
    }
}

/// Why a token file gave no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It cannot be read.
    #[error("token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It holds only whitespace.
    #[error("token file {path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// A file holding a token, read again whenever its inode, size or
/// modification time changes.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    read: Mutex<Option<(Stamp, Sensitive)>>,
}

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    modified_ns: i128,
}

impl TokenFile {
    /// The token file at `path`; one per path in the process.
    pub fn shared(path: &Path) -> Arc<Self> {
        static SHARED: OnceLock<Mutex<HashMap<PathBuf, Arc<TokenFile>>>> = OnceLock::new();
        let mut shared = SHARED
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shared
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                Arc::new(Self {
                    path: path.to_path_buf(),
                    read: Mutex::new(None),
                })
            })
            .clone()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The token the file holds now.
    pub fn token(&self) -> Result<Sensitive, TokenFileError> {
        let read_error = |source| TokenFileError::Read {
            path: self.path.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(read_error)?;
        let stamp = Stamp {
            inode: meta.ino(),
            len: meta.len(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        };
        let mut read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, token)) = read.as_ref()
            && *seen == stamp
        {
            return Ok(token.clone());
        }
        let text = std::fs::read_to_string(&self.path).map_err(read_error)?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenFileError::Empty {
                path: self.path.clone(),
            });
        }
        let token = Sensitive::new(token);
        *read = Some((stamp, token.clone()));
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_token_file_is_read_again_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s.first\n").unwrap();
        let file = TokenFile::shared(&path);
        assert_eq!(file.token().unwrap().expose(), "s.first");
        // An agent's rotation: a new file renamed over the old one.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "s.second").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(file.token().unwrap().expose(), "s.second");
        assert!(Arc::ptr_eq(&file, &TokenFile::shared(&path)));
        std::fs::write(&path, " \n").unwrap();
        assert!(matches!(file.token(), Err(TokenFileError::Empty { .. })));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(file.token(), Err(TokenFileError::Read { .. })));
    }

    #[test]
    fn callers_naming_one_server_and_trust_share_one_client() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let a = OpenBao::shared("http://127.0.0.1:8200/", None).unwrap();
        let b = OpenBao::shared("http://127.0.0.1:8200", None).unwrap();
        let c = OpenBao::shared("http://127.0.0.1:8201", None).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
