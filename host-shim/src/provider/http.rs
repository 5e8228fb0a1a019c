//! HTTP clients for providers (OpenBao/Vault, STS): rustls (ring) with the
//! platform's trust store, or only the CAs a `ca_file` names; no redirects,
//! so a credential-bearing request never follows one elsewhere.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a provider client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is neither `http://` nor `https://`.
    #[error("address {0:?} must start with http:// or https://")]
    Scheme(String),
    /// A CA file was given for a plain-HTTP address.
    #[error("ca_file needs an https:// address")]
    CaWithoutTls,
    /// The CA file cannot be read.
    #[error("ca_file {0}: {1}")]
    CaFile(PathBuf, std::io::Error),
    /// The CA file holds no PEM certificate.
    #[error("ca_file {0}: no PEM certificate")]
    CaFormat(PathBuf),
    /// The TLS client could not be set up.
    #[error("tls client: {0}")]
    Build(String),
}

/// A client for `address`; with `ca_file`, only its certificates are
/// trusted; with `timeout`, every request is given up after it.
pub fn client(
    address: &str,
    ca_file: Option<&Path>,
    timeout: Option<Duration>,
) -> Result<reqwest::Client, ClientError> {
    let tls = if address.starts_with("https://") {
        true
    } else if address.starts_with("http://") {
        false
    } else {
        return Err(ClientError::Scheme(address.to_owned()));
    };
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .https_only(tls);
    if let Some(path) = ca_file {
        if !tls {
            return Err(ClientError::CaWithoutTls);
        }
        let pem = std::fs::read(path).map_err(|e| ClientError::CaFile(path.to_owned(), e))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|certs| !certs.is_empty())
            .ok_or_else(|| ClientError::CaFormat(path.to_owned()))?;
        builder = builder.tls_certs_only(certs);
    }
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder
        .build()
        .map_err(|e| ClientError::Build(describe(&e)))
}

/// A request error and its causes (e.g. `invalid peer certificate:
/// UnknownIssuer`), without the URL.
pub fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut cause = error.source();
    while let Some(next) = cause {
        let part = next.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_is_refused_for_plain_http_and_unknown_schemes_are_refused() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            client("http://x", Some(ca.path()), Some(Duration::from_secs(1))),
            Err(ClientError::CaWithoutTls)
        ));
        assert!(matches!(
            client("ftp://x", None, Some(Duration::from_secs(1))),
            Err(ClientError::Scheme(_))
        ));
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_a_clear_error() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), "not a certificate").unwrap();
        let error = client("https://x", Some(ca.path()), Some(Duration::from_secs(1))).unwrap_err();
        assert!(matches!(error, ClientError::CaFormat(_)), "{error}");
    }
}
