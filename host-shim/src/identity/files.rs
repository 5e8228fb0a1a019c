//! Where a workload's identity material lives (the spiffile environment
//! variables) and how it is read.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ephemera_core::{
    Bundle, BundleError, BundleFormat, KeyError, PrivateKey, SpiffeId, SpiffeIdError,
};

/// A service's ID file name (in `SPIFFILE_DIR` or a provisioning root).
pub const ID_FILE: &str = "id";
/// A service's key file name.
pub const KEY_FILE: &str = "key.pem";
/// The bundle's file name.
pub const BUNDLE_FILE: &str = "bundle.json";
/// A service's Workload Identity Token file name.
pub const WIT_FILE: &str = "wit.jwt";
/// A service's WIT proof key file name.
pub const WIT_KEY_FILE: &str = "wit-key.pem";
/// The trust domain's WIT issuers file name (beside the bundle).
pub const WIT_ISSUERS_FILE: &str = "wit-issuers.json";

/// Directory shorthand holding `id`, `key.pem` and `bundle.json`.
pub const ENV_DIR: &str = "SPIFFILE_DIR";
/// The workload's SPIFFE ID file.
pub const ENV_ID_FILE: &str = "SPIFFILE_ID_FILE";
/// The workload's private key file (PKCS#8 PEM).
pub const ENV_KEY_FILE: &str = "SPIFFILE_KEY_FILE";
/// The trust bundle file.
pub const ENV_BUNDLE_FILE: &str = "SPIFFILE_BUNDLE_FILE";
/// The workload's Workload Identity Token (optional).
pub const ENV_WIT_FILE: &str = "SPIFFILE_WIT_FILE";
/// The WIT's proof key (optional; with the WIT).
pub const ENV_WIT_KEY_FILE: &str = "SPIFFILE_WIT_KEY_FILE";
/// The trust domain's WIT issuers (optional).
pub const ENV_WIT_ISSUERS_FILE: &str = "SPIFFILE_WIT_ISSUERS_FILE";

/// Why identity material could not be located or read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Neither the explicit variables nor the directory are set.
    #[error(
        "identity not configured: set {ENV_DIR}, or {ENV_ID_FILE} + {ENV_KEY_FILE} + {ENV_BUNDLE_FILE} (missing: {0})"
    )]
    NotConfigured(&'static str),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The ID file does not hold a SPIFFE ID.
    #[error("{path} does not hold a valid SPIFFE ID: {source}")]
    Id {
        /// The file.
        path: PathBuf,
        /// Why.
        source: SpiffeIdError,
    },
    /// The key file is not a usable key.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        source: KeyError,
    },
    /// The bundle file is not a usable bundle.
    #[error("{path}: {source}")]
    Bundle {
        /// The file.
        path: PathBuf,
        /// Why.
        source: BundleError,
    },
}

/// The three identity files of a workload, and its WIMSE files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPaths {
    /// The SPIFFE ID file.
    pub id: PathBuf,
    /// The private key file.
    pub key: PathBuf,
    /// The bundle file.
    pub bundle: PathBuf,
    /// The WIMSE files, each read only while it exists.
    pub wimse: WimsePaths,
}

/// Where a workload's WIMSE material lives; absent files mean none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WimsePaths {
    /// The workload's WIT.
    pub wit: Option<PathBuf>,
    /// The WIT's proof key.
    pub wit_key: Option<PathBuf>,
    /// The trust domain's WIT issuers.
    pub wit_issuers: Option<PathBuf>,
}

impl IdentityPaths {
    /// Resolves the paths from the process environment.
    pub fn from_env() -> Result<Self, IdentityError> {
        Self::from_lookup(|name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }

    /// Resolves the paths from a variable lookup: each explicit variable wins
    /// over the `SPIFFILE_DIR` shorthand.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<PathBuf>) -> Result<Self, IdentityError> {
        let dir = lookup(ENV_DIR);
        let pick = |var: &'static str, file: &str| {
            lookup(var)
                .or_else(|| dir.as_ref().map(|d| d.join(file)))
                .ok_or(IdentityError::NotConfigured(var))
        };
        let optional =
            |var: &str, file: &str| lookup(var).or_else(|| dir.as_ref().map(|d| d.join(file)));
        Ok(Self {
            id: pick(ENV_ID_FILE, ID_FILE)?,
            key: pick(ENV_KEY_FILE, KEY_FILE)?,
            bundle: pick(ENV_BUNDLE_FILE, BUNDLE_FILE)?,
            wimse: WimsePaths {
                wit: optional(ENV_WIT_FILE, WIT_FILE),
                wit_key: optional(ENV_WIT_KEY_FILE, WIT_KEY_FILE),
                wit_issuers: optional(ENV_WIT_ISSUERS_FILE, WIT_ISSUERS_FILE),
            },
        })
    }
}

/// A federated trust domain's bundle file, `TRUST_DOMAIN=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedFile {
    /// The trust domain the bundle speaks for.
    pub trust_domain: String,
    /// The bundle file.
    pub path: PathBuf,
}

/// Why a `TRUST_DOMAIN=PATH` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederatedFileError {
    /// No `=`.
    #[error("{0:?} is not TRUST_DOMAIN=PATH")]
    Form(String),
    /// The trust domain is not a valid name.
    #[error("{0:?}: {1}")]
    TrustDomain(String, ephemera_core::SpiffeIdError),
}

impl std::str::FromStr for FederatedFile {
    type Err = FederatedFileError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (domain, path) = s
            .split_once('=')
            .filter(|(d, p)| !d.is_empty() && !p.is_empty())
            .ok_or_else(|| FederatedFileError::Form(s.to_owned()))?;
        SpiffeId::parse(&format!("spiffe://{domain}"))
            .map_err(|e| FederatedFileError::TrustDomain(domain.to_owned(), e))?;
        Ok(Self {
            trust_domain: domain.to_owned(),
            path: path.into(),
        })
    }
}

/// Reads a SPIFFE ID file (one line; trailing whitespace ignored).
pub fn read_id(path: &Path) -> Result<SpiffeId, IdentityError> {
    let text = read_text(path)?;
    SpiffeId::parse(text.trim_end()).map_err(|source| IdentityError::Id {
        path: path.to_owned(),
        source,
    })
}

/// Reads a PKCS#8 PEM private key file.
pub fn read_key(path: &Path) -> Result<PrivateKey, IdentityError> {
    let text = read_text(path)?;
    PrivateKey::from_pkcs8_pem(&text).map_err(|source| IdentityError::Key {
        path: path.to_owned(),
        source,
    })
}

/// Reads a bundle file in the given format.
pub fn read_bundle(path: &Path, format: &BundleFormat) -> Result<Bundle, IdentityError> {
    let bytes = fs::read(path).map_err(|source| IdentityError::Read {
        path: path.to_owned(),
        source,
    })?;
    Bundle::parse(&bytes, format).map_err(|source| IdentityError::Bundle {
        path: path.to_owned(),
        source,
    })
}

/// Reads a text file that may not exist.
pub fn read_optional(path: Option<&Path>) -> Result<Option<String>, IdentityError> {
    let Some(path) = path else { return Ok(None) };
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_text(path: &Path) -> Result<String, IdentityError> {
    fs::read_to_string(path).map_err(|source| IdentityError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<PathBuf> {
        let map: HashMap<String, PathBuf> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn explicit_variables_win_over_the_directory() {
        let paths = IdentityPaths::from_lookup(lookup(&[
            (ENV_DIR, "/d"),
            (ENV_KEY_FILE, "/elsewhere/k.pem"),
        ]))
        .unwrap();
        assert_eq!(paths.id, PathBuf::from("/d/id"));
        assert_eq!(paths.key, PathBuf::from("/elsewhere/k.pem"));
        assert_eq!(paths.bundle, PathBuf::from("/d/bundle.json"));
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = IdentityPaths::from_lookup(lookup(&[(ENV_ID_FILE, "/i"), (ENV_KEY_FILE, "/k")]))
            .unwrap_err();
        assert!(err.to_string().contains(ENV_BUNDLE_FILE), "{err}");
    }
}
