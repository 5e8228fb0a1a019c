//! Outbound: attach a JWT-SVID minted for the one service being called.

use std::collections::HashMap;

use super::config::{OutboundConfig, Unmapped};
use super::disposition::{Disposition, LocalReply};
use super::edits::Edits;
use super::workload_identity::WorkloadIdentity;
use crate::crypto::Es256;
use crate::spiffe_id::SpiffeId;
use crate::token::MintError;
use crate::wimse::{CarriedTokens, WIT_HEADER, WPT_HEADER, create_wpt};

/// The parts of an outbound request the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct OutboundRequest<'a> {
    /// `:authority`.
    pub authority: Option<&'a str>,
    /// The upstream cluster Envoy routed to, when known.
    pub cluster: Option<&'a str>,
}

/// A call to a WIMSE destination: what its proof binds.
#[derive(Debug, Clone, Copy)]
pub struct WimseCall<'a> {
    /// `:authority`.
    pub authority: &'a str,
    /// `:path`.
    pub path: Option<&'a str>,
    /// The tokens the app's request carries.
    pub carried: CarriedTokens<'a>,
}

/// The outbound verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundVerdict {
    /// Attach this token.
    Attach {
        /// The destination.
        audience: SpiffeId,
        /// The token.
        token: String,
        /// True when a token minted earlier was reused.
        reused: bool,
    },
    /// Attach the workload's WIT and this proof (a WIMSE destination).
    Prove {
        /// The workload's WIT.
        wit: String,
        /// A proof for this request.
        proof: String,
    },
    /// A WIMSE destination, but the workload has no WIT (500).
    NoWit,
    /// No destination ID; sent on without a token (configured).
    PassUnmapped,
    /// No destination ID; refused (configured).
    RejectUnmapped,
    /// Minting failed.
    MintFailed(MintError),
    /// No identity loaded yet.
    AwaitIdentity,
}

/// Tokens minted per audience, reused within a window; cleared on identity change.
#[derive(Debug, Default)]
pub struct MintedTokens {
    by_audience: HashMap<SpiffeId, (String, u64)>,
}

impl MintedTokens {
    /// Forgets every token.
    pub fn clear(&mut self) {
        self.by_audience.clear();
    }
}

/// The outbound policy, built once from configuration.
#[derive(Debug, Clone)]
pub struct Outbound {
    config: OutboundConfig,
}

impl Outbound {
    /// A policy for `config` (host names already lower-cased by parsing).
    pub fn new(config: OutboundConfig) -> Self {
        Self { config }
    }

    /// The destination's SPIFFE ID: by host first, then by cluster.
    pub fn destination(&self, request: &OutboundRequest<'_>) -> Option<&SpiffeId> {
        let host = request
            .authority
            .map(|a| super::authority::host(a).to_ascii_lowercase());
        host.and_then(|h| self.config.hosts.get(&h))
            .or_else(|| request.cluster.and_then(|c| self.config.clusters.get(c)))
    }

    /// True when calls to `authority` carry WIMSE tokens.
    pub fn is_wimse(&self, authority: &str) -> bool {
        self.wimse_origin(authority).is_some()
    }

    fn wimse_origin(&self, authority: &str) -> Option<&str> {
        let host = super::authority::host(authority).to_ascii_lowercase();
        self.config
            .wimse
            .as_ref()?
            .origins
            .get(&host)
            .map(String::as_str)
    }

    /// Decides a call to a WIMSE destination ([`Outbound::is_wimse`]): the
    /// workload's WIT and a fresh proof aimed at the call's target URI (the
    /// destination's configured origin and the call's path, query dropped),
    /// binding the tokens the call carries.
    pub fn prove(
        &self,
        call: &WimseCall<'_>,
        identity: Option<&WorkloadIdentity>,
        now: u64,
        crypto: &dyn Es256,
    ) -> OutboundVerdict {
        let Some(identity) = identity else {
            return OutboundVerdict::AwaitIdentity;
        };
        let (Some(wimse), Some(origin), Some((wit, key))) = (
            &self.config.wimse,
            self.wimse_origin(call.authority),
            &identity.wimse.own,
        ) else {
            return OutboundVerdict::NoWit;
        };
        let path = call.path.unwrap_or("/");
        let path = path.split_once(['?', '#']).map_or(path, |(p, _)| p);
        let target = format!("{origin}{path}");
        match create_wpt(
            key,
            wit,
            &target,
            &call.carried,
            now,
            wimse.proof_ttl_secs,
            crypto,
        ) {
            Ok(proof) => OutboundVerdict::Prove {
                wit: wit.clone(),
                proof,
            },
            Err(e) => OutboundVerdict::MintFailed(e),
        }
    }

    /// Decides a request.
    pub fn decide(
        &self,
        request: &OutboundRequest<'_>,
        identity: Option<&WorkloadIdentity>,
        tokens: &mut MintedTokens,
        now: u64,
        crypto: &dyn Es256,
    ) -> OutboundVerdict {
        let Some(identity) = identity else {
            return OutboundVerdict::AwaitIdentity;
        };
        let Some(audience) = self.destination(request) else {
            return match self.config.unmapped {
                Unmapped::Pass => OutboundVerdict::PassUnmapped,
                Unmapped::Reject => OutboundVerdict::RejectUnmapped,
            };
        };
        if let Some((token, minted_at)) = tokens.by_audience.get(audience)
            && now >= *minted_at
            && now < minted_at.saturating_add(self.config.reuse_secs)
        {
            return OutboundVerdict::Attach {
                audience: audience.clone(),
                token: token.clone(),
                reused: true,
            };
        }
        match identity
            .minter
            .mint(audience, now, self.config.ttl_secs, None, crypto)
        {
            Ok(token) => {
                if self.config.reuse_secs > 0 {
                    tokens
                        .by_audience
                        .insert(audience.clone(), (token.clone(), now));
                }
                OutboundVerdict::Attach {
                    audience: audience.clone(),
                    token,
                    reused: false,
                }
            }
            Err(e) => OutboundVerdict::MintFailed(e),
        }
    }

    /// What the host does for a verdict.
    pub fn disposition(&self, verdict: &OutboundVerdict) -> Disposition {
        match verdict {
            OutboundVerdict::Attach { token, .. } => {
                let bearer = format!("Bearer {token}");
                Disposition::Forward(Edits::new([], [("authorization", bearer.as_str())]))
            }
            OutboundVerdict::Prove { wit, proof } => Disposition::Forward(Edits::new(
                [],
                [(WIT_HEADER, wit.as_str()), (WPT_HEADER, proof.as_str())],
            )),
            OutboundVerdict::NoWit => Disposition::Reply(LocalReply::internal()),
            OutboundVerdict::PassUnmapped => Disposition::Forward(Edits::default()),
            OutboundVerdict::RejectUnmapped => Disposition::Reply(LocalReply::forbidden()),
            OutboundVerdict::MintFailed(_) => Disposition::Reply(LocalReply::internal()),
            OutboundVerdict::AwaitIdentity => Disposition::AwaitIdentity,
        }
    }
}
