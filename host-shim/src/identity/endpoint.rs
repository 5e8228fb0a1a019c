//! Federated trust domains' bundles fetched from SPIFFE bundle endpoints
//! (`https_web` profile): HTTPS with the platform's or the configured CAs,
//! refreshed at the bundle's `spiffe_refresh_hint` (default 5 min). A
//! `spiffe_sequence` lower than the last accepted one is refused; a domain
//! whose endpoint has not answered for max(2 × hint, 10 min) is dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ephemera_core::{Bundle, SpiffeId};

use crate::identity::source::IdentitySource;
use crate::provider::http;

/// Refresh period of a bundle without `spiffe_refresh_hint`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// The shortest refresh period honoured.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// The longest wait before retrying a failed fetch.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// The largest bundle document read.
const MAX_BYTES: usize = 1024 * 1024;

/// How long a fetched bundle is used without a successful refresh.
pub fn stale_after(refresh: Duration) -> Duration {
    (refresh * 2).max(Duration::from_secs(600))
}

/// A federated trust domain's bundle endpoint, `TRUST_DOMAIN=https://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpoint {
    /// The trust domain it speaks for.
    pub trust_domain: String,
    /// The endpoint's URL.
    pub url: String,
}

/// Why a `TRUST_DOMAIN=URL` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not `TRUST_DOMAIN=https://…`.
    #[error("{0:?} is not TRUST_DOMAIN=https://HOST/PATH (the https_web profile)")]
    Form(String),
}

impl std::str::FromStr for BundleEndpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let form = || EndpointError::Form(s.to_owned());
        let (domain, url) = s.split_once('=').ok_or_else(form)?;
        if !url.starts_with("https://") || url.len() == "https://".len() {
            return Err(form());
        }
        SpiffeId::parse(&format!("spiffe://{domain}")).map_err(|_| form())?;
        Ok(Self {
            trust_domain: domain.to_owned(),
            url: url.to_owned(),
        })
    }
}

/// Why one fetch was not taken.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Request(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("bundle larger than {MAX_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    Bundle(ephemera_core::BundleError),
    #[error("spiffe_sequence went backwards ({got} after {had}): refused")]
    Backwards { had: u64, got: u64 },
}

/// Fetches `endpoint` for the rest of the process, handing each accepted
/// bundle to `source`.
pub async fn follow(
    endpoint: BundleEndpoint,
    ca_file: Option<PathBuf>,
    source: Arc<IdentitySource>,
) {
    let client = match http::client(
        &endpoint.url,
        ca_file.as_deref(),
        Some(Duration::from_secs(10)),
    ) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("bundle endpoint of {}: {e}", endpoint.trust_domain);
            return;
        }
    };
    let mut sequence = None;
    let mut refresh = DEFAULT_REFRESH;
    loop {
        let wait = match fetch(&client, &endpoint, sequence).await {
            Ok((text, bundle)) => {
                sequence = bundle.sequence().or(sequence);
                refresh = bundle
                    .refresh_hint()
                    .map_or(DEFAULT_REFRESH, Duration::from_secs)
                    .max(MIN_REFRESH);
                source.fetched_bundle(&endpoint.trust_domain, text, stale_after(refresh));
                refresh
            }
            Err(e) => {
                tracing::warn!("bundle endpoint of {}: {e}", endpoint.trust_domain);
                refresh.min(MAX_RETRY)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

async fn fetch(
    client: &reqwest::Client,
    endpoint: &BundleEndpoint,
    had: Option<u64>,
) -> Result<(String, Bundle), FetchError> {
    let mut response = client
        .get(&endpoint.url)
        .send()
        .await
        .map_err(|e| FetchError::Request(http::describe(&e)))?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Request(http::describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body)
        .map_err(|_| FetchError::Bundle(ephemera_core::BundleError::WrongType("document")))?;
    let bundle = Bundle::parse_central_issuer(text.as_bytes(), &endpoint.trust_domain)
        .map_err(FetchError::Bundle)?;
    if let (Some(had), Some(got)) = (had, bundle.sequence())
        && got < had
    {
        return Err(FetchError::Backwards { had, got });
    }
    Ok((text, bundle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_https_urls_of_a_trust_domain() {
        let e: BundleEndpoint = "other.org=https://bundles.other.org/jwks".parse().unwrap();
        assert_eq!(e.trust_domain, "other.org");
        for bad in [
            "other.org=http://x/jwks",
            "other.org=https://",
            "https://x",
            "Other.Org=https://x/",
        ] {
            assert!(bad.parse::<BundleEndpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bundle_is_kept_for_twice_its_refresh_hint_and_at_least_ten_minutes() {
        assert_eq!(
            stale_after(Duration::from_secs(1)),
            Duration::from_secs(600)
        );
        assert_eq!(
            stale_after(Duration::from_secs(3600)),
            Duration::from_secs(7200)
        );
    }
}
