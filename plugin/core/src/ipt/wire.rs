//! The shim's transaction API as the filter speaks it (JSON).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::action::Action;
use super::resource::Resource;
use super::transaction_id::TransactionId;
use crate::SpiffeId;

/// `POST /v1/transactions`: open a transaction.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// Chosen by the filter.
    pub transaction_id: TransactionId,
    /// The caller's JWT-SVID, re-verified by the shim; empty for a WIMSE
    /// caller ([`OpenRequest::wimse`]).
    pub token: String,
    /// The one resource.
    pub resource: Resource,
    /// The one action.
    pub action: Action,
    /// Which configured broker issues the credential.
    pub broker: String,
    /// The `aud` the filter verified the token for (`inbound.audience`);
    /// absent: the workload's own ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<SpiffeId>,
    /// A WIMSE caller's tokens, re-verified by the shim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wimse: Option<Box<WimseProof>>,
}

/// A WIMSE caller's presentation as the filter verified it: the shim
/// verifies it again and takes each proof once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WimseProof {
    /// The Workload Identity Token.
    pub wit: String,
    /// The Workload Proof Token.
    pub wpt: String,
    /// The target URI the filter verified the proof for.
    pub target: String,
    /// The access token the request carried (`ath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// The Txn-Token the request carried (`tth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_token: Option<String>,
    /// Other bound tokens the request carried, by header name (`oth`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, String>,
}

impl fmt::Debug for WimseProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WimseProof")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for OpenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenRequest")
            .field("transaction_id", &self.transaction_id)
            .field("resource", &self.resource)
            .field("action", &self.action)
            .field("broker", &self.broker)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The answer to an open: the credential for the app.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenResponse {
    /// The transaction.
    pub transaction_id: TransactionId,
    /// Credential fields by name (`token`; `access_key_id`, …). Secret.
    pub credential: BTreeMap<String, String>,
    /// Unix seconds the credential expires.
    pub expires_at: u64,
    /// `action:resource`.
    pub scope: String,
    /// What a stolen credential would expose.
    pub blast_radius: String,
}

impl fmt::Debug for OpenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenResponse")
            .field("transaction_id", &self.transaction_id)
            .field("credential", &self.credential.keys().collect::<Vec<_>>())
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// How a transaction's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum StreamEnd {
    /// The upstream answered with this status.
    Responded {
        /// HTTP status.
        status: u16,
    },
    /// The stream ended without a response (client abort, timeout, reset).
    Aborted,
}

impl StreamEnd {
    /// True for outcomes the ledger records as `fail` (5xx or no response).
    pub fn is_failure(self) -> bool {
        match self {
            Self::Responded { status } => status >= 500,
            Self::Aborted => true,
        }
    }
}

/// `POST /v1/transactions/{id}/close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// How the stream ended.
    pub outcome: StreamEnd,
}
