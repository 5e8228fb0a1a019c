//! The workload's identity as the shim serves it to the filter: its SPIFFE ID,
//! the trust bundle and its signing key, under a version.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bundle::{Bundle, BundleError, BundleFormat};
use crate::keys::{KeyError, PrivateKey};
use crate::spiffe_id::SpiffeId;
use crate::token::Minter;
use crate::wimse::{IssuersError, WitIssuers};

/// How the document names its bundle format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BundleFormatName {
    /// A spiffile v1 bundle.
    Spiffile,
    /// A standard SPIFFE JWKS read in central-issuer mode.
    SpiffeJwks,
}

/// The wire document of `GET /v1/identity` on the shim.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityDocument {
    /// Content version (also the HTTP ETag).
    pub version: String,
    /// Increases with every change the shim accepts.
    pub generation: u64,
    /// The workload's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// Format of `bundle`.
    pub bundle_format: BundleFormatName,
    /// The bundle document, verbatim.
    pub bundle: String,
    /// The workload's private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The bundles of federated trust domains, each kept apart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub federated: Vec<FederatedBundle>,
    /// The trust domain's WIT issuers (`wit-issuers.json`), verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wit_issuers: Option<String>,
    /// The workload's own Workload Identity Token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wit: Option<String>,
    /// The WIT's proof key, PKCS#8 PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wit_key_pem: Option<String>,
}

/// One federated trust domain's bundle, as the identity document carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedBundle {
    /// The trust domain it speaks for.
    pub trust_domain: String,
    /// Format of `bundle`: a spiffile bundle, or a standard SPIFFE bundle
    /// whose keys sign for any ID of the domain.
    pub bundle_format: BundleFormatName,
    /// The bundle document, verbatim.
    pub bundle: String,
}

impl FederatedBundle {
    /// Parses the bundle; it must speak for its configured trust domain.
    pub fn parse(&self) -> Result<Bundle, BundleError> {
        let bundle = match self.bundle_format {
            BundleFormatName::Spiffile => Bundle::parse_spiffile(self.bundle.as_bytes())?,
            BundleFormatName::SpiffeJwks => {
                Bundle::parse_central_issuer(self.bundle.as_bytes(), &self.trust_domain)?
            }
        };
        if bundle.trust_domain() != self.trust_domain {
            return Err(BundleError::WrongTrustDomain {
                expected: self.trust_domain.clone(),
                found: bundle.trust_domain().to_owned(),
            });
        }
        Ok(bundle)
    }
}

impl fmt::Debug for IdentityDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityDocument")
            .field("version", &self.version)
            .field("generation", &self.generation)
            .field("spiffe_id", &self.spiffe_id)
            .field("bundle_format", &self.bundle_format)
            .finish_non_exhaustive()
    }
}

/// Why an identity document was refused (the last good one stays in force).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityDocError {
    /// Not the document's JSON shape.
    #[error("identity document is malformed: {0}")]
    Malformed(String),
    /// The bundle inside is invalid.
    #[error("identity bundle is invalid: {0}")]
    Bundle(#[from] BundleError),
    /// A federated trust domain's bundle is invalid.
    #[error("bundle of federated trust domain {0:?} is invalid: {1}")]
    Federated(String, BundleError),
    /// The key inside is invalid.
    #[error("identity key is invalid: {0}")]
    Key(#[from] KeyError),
    /// The WIT issuers document is invalid.
    #[error("{0}")]
    WitIssuers(#[from] IssuersError),
    /// The WIT's proof key is invalid.
    #[error("WIT proof key is invalid: {0}")]
    WitKey(KeyError),
    /// A WIT without its proof key, or a proof key without a WIT.
    #[error("wit and wit_key_pem come together")]
    WitIncomplete,
}

/// A loaded identity: everything needed to verify and mint, parsed once.
#[derive(Debug, Clone)]
pub struct WorkloadIdentity {
    /// Content version.
    pub version: String,
    /// Change counter.
    pub generation: u64,
    /// The trust bundle.
    pub bundle: Bundle,
    /// Mints as this workload.
    pub minter: Minter,
    /// WIMSE: the issuers WITs are checked against, and the workload's own
    /// WIT with its proof key.
    pub wimse: WimseMaterial,
}

/// A workload's WIMSE material.
#[derive(Debug, Clone, Default)]
pub struct WimseMaterial {
    /// The trust domain's WIT issuers and proof key bindings.
    pub issuers: Option<WitIssuers>,
    /// The workload's WIT and the key its proofs are signed with.
    pub own: Option<(String, PrivateKey)>,
}

impl WorkloadIdentity {
    /// Parses and validates a document.
    pub fn from_document(doc: &IdentityDocument) -> Result<Self, IdentityDocError> {
        let format = match doc.bundle_format {
            BundleFormatName::Spiffile => BundleFormat::Spiffile,
            BundleFormatName::SpiffeJwks => BundleFormat::CentralIssuer {
                trust_domain: doc.spiffe_id.trust_domain().to_owned(),
            },
        };
        let federated = doc
            .federated
            .iter()
            .map(|f| {
                f.parse()
                    .map_err(|e| IdentityDocError::Federated(f.trust_domain.clone(), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bundle = Bundle::parse(doc.bundle.as_bytes(), &format)?.federate(federated)?;
        let key = PrivateKey::from_pkcs8_pem(&doc.key_pem)?;
        let issuers = doc
            .wit_issuers
            .as_deref()
            .map(|text| WitIssuers::parse(text.as_bytes()))
            .transpose()?;
        let own = match (&doc.wit, &doc.wit_key_pem) {
            (Some(wit), Some(pem)) => Some((
                wit.clone(),
                PrivateKey::from_pkcs8_pem(pem).map_err(IdentityDocError::WitKey)?,
            )),
            (None, None) => None,
            _ => return Err(IdentityDocError::WitIncomplete),
        };
        Ok(Self {
            version: doc.version.clone(),
            generation: doc.generation,
            bundle,
            minter: Minter::new(doc.spiffe_id.clone(), key),
            wimse: WimseMaterial { issuers, own },
        })
    }

    /// Parses the JSON wire form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, IdentityDocError> {
        let doc: IdentityDocument = serde_json::from_slice(bytes)
            .map_err(|e| IdentityDocError::Malformed(e.to_string()))?;
        Self::from_document(&doc)
    }

    /// The workload's SPIFFE ID.
    pub fn id(&self) -> &SpiffeId {
        self.minter.id()
    }
}
