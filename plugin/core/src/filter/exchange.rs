//! One request's life. The host reports events — the request's headers, the
//! identity arriving, the shim's answer, the upstream's response, the end —
//! and the exchange answers each with the one step the host takes next:
//! forward (with header edits), reply locally, call the shim and wait, or
//! wait for the identity. Nothing here performs I/O.
//!
//! Inbound: verify the caller → open a transaction at the shim when a
//! transaction route covers the request → forward with the caller (and the
//! credential) → strip credential headers from the response → close the
//! transaction when the stream ends, however it ends.
//!
//! Outbound: inject an egress secret (cached, or resolved at the shim) for
//! an egress host; otherwise attach a token minted for the destination.

use super::config::FilterConfig;
use super::disposition::{Disposition, LocalReply};
use super::edits::{Edits, Text};
use super::egress::{self, EgressDecision, SecretCache};
use super::inbound::{Inbound, InboundRequest, InboundVerdict, WimseRequest, bearer_token};
use super::note::{Note, OpenFailure};
use super::outbound::{MintedTokens, Outbound, OutboundRequest, WimseCall};
use super::token_cache::TokenCache;
use super::transaction::{TransactionMapping, TransactionPlan, TransactionRoutes};
use super::wit_cache::WitCache;
use super::workload_identity::WorkloadIdentity;
use crate::crypto::Es256;
use crate::ipt::{CloseRequest, OpenRequest, OpenResponse, StreamEnd, TransactionId, WimseProof};
use crate::secrets::wire::{ResolveRequest, ResolveResponse};
use crate::wimse::{
    CarriedTokens, MemoryReplay, ReplayGuard, TXN_TOKEN_HEADER, WIT_HEADER, WPT_HEADER,
};
use std::borrow::Cow;

/// The shim's path for opening transactions.
pub const OPEN_PATH: &str = "/v1/transactions";
/// The shim's path for resolving secrets.
pub const RESOLVE_PATH: &str = "/v1/secrets/resolve";

/// A request as the host shows it, read lazily: a decision that needs two
/// headers costs two reads.
pub trait RequestView {
    /// A header: `None` absent, `Some(Err(()))` present but not UTF-8.
    /// Borrowed where the host can lend it.
    fn header(&self, name: &str) -> Option<Result<Cow<'_, str>, ()>>;
    /// Every value of a header, in order.
    fn header_values(&self, name: &str) -> Vec<String>;
    /// The upstream cluster, when the host knows it.
    fn cluster(&self) -> Option<String>;
}

/// A configured filter: its configuration, the decisions of its direction
/// and the signature backend, fixed at configure time.
pub struct Filter {
    config: FilterConfig,
    side: Side,
    crypto: &'static dyn Es256,
    replay: Box<dyn ReplayGuard>,
}

enum Side {
    Inbound(Box<Inbound>),
    Outbound(Outbound),
}

impl Filter {
    /// A filter for `config`, signing and verifying with `crypto`.
    pub fn new(config: FilterConfig, crypto: &'static dyn Es256) -> Self {
        let side = match config.direction {
            super::Direction::Inbound => {
                Side::Inbound(Box::new(Inbound::new(config.inbound.clone())))
            }
            super::Direction::Outbound => Side::Outbound(Outbound::new(config.outbound.clone())),
        };
        Self {
            config,
            side,
            crypto,
            replay: Box::new(MemoryReplay::default()),
        }
    }

    /// The same filter, remembering WIMSE proofs in `replay` (shared by
    /// every worker of the host) instead of its own memory.
    pub fn with_replay(self, replay: Box<dyn ReplayGuard>) -> Self {
        Self { replay, ..self }
    }

    /// The configuration.
    pub fn config(&self) -> &FilterConfig {
        &self.config
    }

    /// The signature backend's name (`envoy`, `rust`).
    pub fn crypto_name(&self) -> &'static str {
        self.crypto.name()
    }

    fn transactions(&self) -> Option<&TransactionRoutes> {
        match &self.side {
            Side::Inbound(inbound) => Some(inbound.transactions()),
            Side::Outbound(_) => None,
        }
    }
}

/// What outlives a request on one worker: the identity in force, when the
/// shim last confirmed it, and the caches.
#[derive(Debug)]
pub struct WorkerState {
    identity: Option<WorkloadIdentity>,
    confirmed_ms: u64,
    cache: TokenCache,
    wits: WitCache,
    minted: MintedTokens,
    secrets: SecretCache,
}

impl WorkerState {
    /// An empty state for `config`.
    pub fn new(config: &FilterConfig) -> Self {
        Self {
            identity: None,
            confirmed_ms: 0,
            cache: TokenCache::new(config.inbound.cache_size, config.inbound.cache_bytes),
            wits: WitCache::default(),
            minted: MintedTokens::default(),
            secrets: SecretCache::default(),
        }
    }

    /// Puts `identity` in force and forgets everything decided under the old one.
    pub fn install(&mut self, identity: WorkloadIdentity) {
        self.identity = Some(identity);
        self.cache.clear();
        self.wits.clear();
        self.minted.clear();
        self.secrets.clear();
    }

    /// Records that the shim confirmed the identity in force at `now_ms`.
    pub fn confirm(&mut self, now_ms: u64) {
        self.confirmed_ms = now_ms;
    }

    /// The identity in force.
    pub fn identity(&self) -> Option<&WorkloadIdentity> {
        self.identity.as_ref()
    }
}

/// A call to the shim, in its API's vocabulary. Hosts that speak HTTP send
/// [`ShimCall::path`] with [`ShimCall::body`] as a JSON `POST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimCall {
    /// `POST /v1/transactions`.
    Open(OpenRequest),
    /// `POST /v1/transactions/{id}/close`.
    Close(TransactionId, CloseRequest),
    /// `POST /v1/secrets/resolve`.
    Resolve(ResolveRequest),
}

impl ShimCall {
    /// The path it is sent to.
    pub fn path(&self) -> String {
        match self {
            Self::Open(_) => OPEN_PATH.to_owned(),
            Self::Close(id, _) => format!("{OPEN_PATH}/{id}/close"),
            Self::Resolve(_) => RESOLVE_PATH.to_owned(),
        }
    }

    /// The JSON body; it may carry a token, so it is never logged.
    pub fn body(&self) -> Vec<u8> {
        let body = match self {
            Self::Open(open) => serde_json::to_vec(open),
            Self::Close(_, close) => serde_json::to_vec(close),
            Self::Resolve(resolve) => serde_json::to_vec(resolve),
        };
        // These types always serialize.
        body.unwrap_or_default()
    }
}

/// The shim's answer to a [`ShimCall`]: as HTTP, or typed by a host that
/// speaks the shim's API directly.
#[derive(Debug, Clone)]
pub enum ShimAnswer<'a> {
    /// An HTTP answer: the status (`None`: none came) and the body.
    Http {
        /// The status.
        status: Option<u16>,
        /// The body.
        body: &'a [u8],
    },
    /// A transaction was opened.
    Opened(OpenResponse),
    /// A secret was resolved.
    Resolved(ResolveResponse),
    /// Refused with this 4xx status (403: denied, 429: too many open,
    /// 404: unknown): nothing happened.
    Refused(u16),
    /// No answer, or a failure: what was asked may have happened.
    Failed(Option<u16>),
}

/// An answer as the exchange weighs it.
enum Weighed<T> {
    /// Done; the result, if it has the expected shape.
    Done(Option<T>),
    /// A 4xx: nothing happened.
    Refused(u16),
    /// No answer or a failure: it may have happened.
    Failed(Option<u16>),
}

fn weigh<T: serde::de::DeserializeOwned>(
    answer: ShimAnswer<'_>,
    typed: impl FnOnce(ShimAnswer<'_>) -> Option<T>,
) -> Weighed<T> {
    match answer {
        ShimAnswer::Http {
            status: Some(200),
            body,
        } => Weighed::Done(serde_json::from_slice(body).ok()),
        ShimAnswer::Http {
            status: Some(status),
            ..
        }
        | ShimAnswer::Refused(status)
            if (400..500).contains(&status) =>
        {
            Weighed::Refused(status)
        }
        ShimAnswer::Http { status, .. } | ShimAnswer::Failed(status) => Weighed::Failed(status),
        ShimAnswer::Refused(status) => Weighed::Failed(Some(status)),
        typed_answer => Weighed::Done(typed(typed_answer)),
    }
}

/// What the host does next with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Apply the edits and send the request on (resuming it if paused).
    Forward(Edits),
    /// Answer locally; nothing goes upstream.
    Reply(LocalReply),
    /// Apply the edits, make the call, and hold the request until the
    /// shim's answer is fed back with [`Exchange::on_shim_answer`].
    Call(Edits, ShimCall),
    /// Hold the request until the identity arrives
    /// ([`Exchange::on_identity`]) or `until_ms` passes
    /// ([`Exchange::on_identity_timeout`]).
    AwaitIdentity {
        /// The deadline, Unix ms.
        until_ms: u64,
    },
}

/// A step and what happened on the way to it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Turn {
    /// The step.
    pub step: Step,
    /// At most two notes, in order.
    pub notes: [Option<Note>; 2],
}

impl Turn {
    fn new(step: Step, note: Option<Note>) -> Self {
        Self {
            step,
            notes: [note, None],
        }
    }

    fn and(mut self, note: Note) -> Self {
        if self.notes[0].is_none() {
            self.notes[0] = Some(note);
        } else {
            self.notes[1] = Some(note);
        }
        self
    }

    /// The notes.
    pub fn notes(&self) -> impl Iterator<Item = &Note> {
        self.notes.iter().flatten()
    }
}

/// Where a request is in its life.
#[derive(Debug, Default)]
enum State {
    /// Nothing decided yet.
    #[default]
    New,
    /// Held for the first identity.
    AwaitingIdentity,
    /// Held for the shim's answer to a transaction open.
    Opening {
        transaction_id: TransactionId,
        plan: TransactionPlan,
    },
    /// Held for the shim's answer to an egress secret.
    Resolving { rule: usize },
    /// Sent on with a transaction open; `status` once the upstream answered.
    Open {
        transaction_id: TransactionId,
        status: Option<u16>,
    },
    /// Sent on, or answered locally; `close` names a transaction the shim
    /// may have opened although the request could not use it.
    Settled { close: Option<TransactionId> },
    /// Ended.
    Ended,
}

/// One request's life on one filter.
#[derive(Debug, Default)]
pub struct Exchange {
    state: State,
}

impl Exchange {
    /// A request that has not been seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// True while the request is held for the shim's answer.
    pub fn awaits_shim(&self) -> bool {
        matches!(self.state, State::Opening { .. } | State::Resolving { .. })
    }

    /// The request's headers arrived.
    pub fn on_request(
        &mut self,
        filter: &Filter,
        worker: &mut WorkerState,
        request: &impl RequestView,
        now_ms: u64,
    ) -> Turn {
        match &filter.side {
            Side::Inbound(inbound) => self.inbound(filter, inbound, worker, request, now_ms),
            Side::Outbound(outbound) => self.outbound(filter, outbound, worker, request, now_ms),
        }
    }

    /// The identity arrived while the request was held for it: decides it
    /// now. `None` when the request was not waiting.
    pub fn on_identity(
        &mut self,
        filter: &Filter,
        worker: &mut WorkerState,
        request: &impl RequestView,
        now_ms: u64,
    ) -> Option<Turn> {
        matches!(self.state, State::AwaitingIdentity)
            .then(|| self.on_request(filter, worker, request, now_ms))
    }

    /// The wait for the identity ran out: 503. `None` when the request was
    /// not waiting.
    pub fn on_identity_timeout(&mut self) -> Option<Turn> {
        matches!(self.state, State::AwaitingIdentity).then(|| self.unavailable(Note::Unavailable))
    }

    /// The shim answered the call of the last [`Step::Call`]. `None` when
    /// the request was not waiting for one.
    pub fn on_shim_answer(
        &mut self,
        filter: &Filter,
        worker: &mut WorkerState,
        answer: ShimAnswer<'_>,
        now_ms: u64,
    ) -> Option<Turn> {
        match std::mem::replace(&mut self.state, State::Ended) {
            State::Opening {
                transaction_id,
                plan,
            } => Some(self.opened(filter, transaction_id, &plan, answer)),
            State::Resolving { rule } => Some(self.resolved(filter, worker, rule, answer, now_ms)),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The upstream answered; `status` reads its `:status` (only when a
    /// transaction needs it). Returns the response headers to remove:
    /// credentials never travel back to the client.
    pub fn on_response<'f, S: FnOnce() -> Option<u16>>(
        &mut self,
        filter: &'f Filter,
        status: S,
    ) -> impl Iterator<Item = &'f str> + use<'f, S> {
        if let State::Open { status: seen, .. } = &mut self.state {
            *seen = status();
        }
        filter
            .transactions()
            .into_iter()
            .flat_map(TransactionRoutes::credential_headers)
    }

    /// The stream ended, answered or not. Returns the close of the
    /// request's transaction, if it has one open or possibly opening: the
    /// host sends it even though the stream is gone.
    pub fn on_end(&mut self) -> Option<ShimCall> {
        let (transaction_id, outcome) = match std::mem::replace(&mut self.state, State::Ended) {
            State::Open {
                transaction_id,
                status,
            } => (
                transaction_id,
                status.map_or(StreamEnd::Aborted, |status| StreamEnd::Responded { status }),
            ),
            State::Opening { transaction_id, .. }
            | State::Settled {
                close: Some(transaction_id),
            } => (transaction_id, StreamEnd::Aborted),
            _ => return None,
        };
        Some(ShimCall::Close(transaction_id, CloseRequest { outcome }))
    }

    fn inbound(
        &mut self,
        filter: &Filter,
        inbound: &Inbound,
        worker: &mut WorkerState,
        request: &impl RequestView,
        now_ms: u64,
    ) -> Turn {
        let path = inbound
            .reads_path()
            .then(|| request.header(":path").and_then(Result::ok))
            .flatten();
        let authorization = request.header("authorization");
        let authorization = authorization.as_ref().map(|a| a.as_deref().map_err(|_| ()));
        let stale = worker.identity.is_some()
            && now_ms.saturating_sub(worker.confirmed_ms) > filter.config.shim.max_identity_age_ms;
        let (verdict, wimse) = if inbound.accepts_wimse() && request.header(WIT_HEADER).is_some() {
            wimse_verdict(
                filter,
                inbound,
                worker,
                request,
                path.as_deref(),
                stale,
                now_ms,
            )
        } else {
            let verdict = inbound.decide(
                &InboundRequest {
                    path: path.as_deref(),
                    authorization,
                },
                worker.identity.as_ref(),
                stale,
                &mut worker.cache,
                now_ms / 1000,
                filter.crypto,
            );
            (verdict, None)
        };
        let note = Note::inbound(&verdict);
        let disposition = inbound.disposition(&verdict);
        if !matches!(verdict, InboundVerdict::Allowed { .. }) || inbound.transactions().is_empty() {
            return self.settle(disposition, note, filter, now_ms);
        }
        let method = request
            .header(":method")
            .and_then(Result::ok)
            .unwrap_or_default();
        let plan = match inbound.transactions().map(
            path.as_deref().unwrap_or_default(),
            &method,
            !inbound.config().case_sensitive,
            |name| request.header_values(name),
        ) {
            TransactionMapping::None => return self.settle(disposition, note, filter, now_ms),
            TransactionMapping::Unmappable(reason) => {
                self.state = State::Settled { close: None };
                return Turn::new(Step::Reply(LocalReply::bad_request()), note)
                    .and(Note::TransactionUnmappable(reason));
            }
            TransactionMapping::Plan(plan) => plan,
        };
        let Some(transaction_id) = TransactionId::generate() else {
            return self
                .unavailable(Note::TransactionFailed(OpenFailure::NoRandomness))
                .with_first(note);
        };
        let token = authorization
            .and_then(Result::ok)
            .and_then(bearer_token)
            .unwrap_or_default()
            .to_owned();
        let open = TransactionRoutes::open_request(
            &plan,
            transaction_id.clone(),
            token,
            filter.config.inbound.audience.as_ref(),
            wimse,
        );
        let Disposition::Forward(edits) = disposition else {
            return self.settle(disposition, note, filter, now_ms);
        };
        self.state = State::Opening {
            transaction_id,
            plan,
        };
        Turn::new(Step::Call(edits, ShimCall::Open(open)), note)
    }

    fn outbound(
        &mut self,
        filter: &Filter,
        outbound: &Outbound,
        worker: &mut WorkerState,
        request: &impl RequestView,
        now_ms: u64,
    ) -> Turn {
        let authority = request.header(":authority").and_then(Result::ok);
        let method = request
            .header(":method")
            .and_then(Result::ok)
            .unwrap_or_default();
        let rules = &filter.config.outbound.secrets;
        match egress::decide(rules, authority.as_deref(), &method) {
            EgressDecision::NotEgress => {}
            EgressDecision::Refuse(reply) => {
                self.state = State::Settled { close: None };
                return Turn::new(Step::Reply(reply), None);
            }
            EgressDecision::Inject(rule, spec) => {
                if let Some(secret) = worker.secrets.get(rule, now_ms) {
                    self.state = State::Settled { close: None };
                    return Turn::new(
                        Step::Forward(inject(spec, secret)),
                        Some(Note::EgressInjected),
                    );
                }
                self.state = State::Resolving { rule };
                let resolve = ShimCall::Resolve(ResolveRequest::egress(&spec.secret));
                return Turn::new(Step::Call(Edits::default(), resolve), None);
            }
        }
        if let Some(authority) = authority.as_deref().filter(|a| outbound.is_wimse(a)) {
            let path = request.header(":path").and_then(Result::ok);
            let authorization = request.header("authorization").and_then(Result::ok);
            let txn_token = request.header(TXN_TOKEN_HEADER).and_then(Result::ok);
            let call = WimseCall {
                authority,
                path: path.as_deref(),
                carried: CarriedTokens {
                    access_token: authorization.as_deref().and_then(bearer_token),
                    txn_token: txn_token.as_deref(),
                    other: &[],
                },
            };
            let verdict = outbound.prove(
                &call,
                worker.identity.as_ref(),
                now_ms / 1000,
                filter.crypto,
            );
            let disposition = outbound.disposition(&verdict);
            return self.settle(disposition, Note::outbound(&verdict), filter, now_ms);
        }
        let cluster = if filter.config.outbound.clusters.is_empty() {
            None
        } else {
            request.cluster()
        };
        let verdict = outbound.decide(
            &OutboundRequest {
                authority: authority.as_deref(),
                cluster: cluster.as_deref(),
            },
            worker.identity.as_ref(),
            &mut worker.minted,
            now_ms / 1000,
            filter.crypto,
        );
        self.settle(
            outbound.disposition(&verdict),
            Note::outbound(&verdict),
            filter,
            now_ms,
        )
    }

    /// The shim's answer to a transaction open.
    fn opened(
        &mut self,
        filter: &Filter,
        transaction_id: TransactionId,
        plan: &TransactionPlan,
        answer: ShimAnswer<'_>,
    ) -> Turn {
        let weighed = weigh(answer, |typed| match typed {
            ShimAnswer::Opened(response) => Some(response),
            _ => None,
        });
        // Only a refusal (4xx) says for sure that nothing was opened: after
        // a timeout, no answer or a failure the shim may still finish it.
        let (failure, close) = match weighed {
            Weighed::Done(response) => {
                let credential = response
                    .zip(filter.transactions())
                    .and_then(|(response, routes)| routes.credential_for_app(plan, &response));
                if let Some(set) = credential {
                    self.state = State::Open {
                        transaction_id,
                        status: None,
                    };
                    let set = set.into_iter().map(|(k, v)| (Text::from(k), Text::from(v)));
                    let forward = Step::Forward(Edits {
                        remove: Default::default(),
                        set: set.collect(),
                    });
                    return Turn::new(forward, Some(Note::TransactionOpened));
                }
                (OpenFailure::CredentialIncomplete, Some(transaction_id))
            }
            Weighed::Refused(403) => {
                self.state = State::Settled { close: None };
                let denied = Note::TransactionDenied(plan.resource.clone());
                return Turn::new(Step::Reply(LocalReply::forbidden()), Some(denied));
            }
            Weighed::Refused(429) => {
                self.state = State::Settled { close: None };
                let limited = Some(Note::TransactionLimited);
                return Turn::new(Step::Reply(LocalReply::too_many_requests()), limited);
            }
            Weighed::Refused(status) => (OpenFailure::ShimAnswered(status), None),
            Weighed::Failed(status) => (
                status.map_or(OpenFailure::ShimUnreachable, OpenFailure::ShimAnswered),
                Some(transaction_id),
            ),
        };
        self.state = State::Settled { close };
        reply_unavailable(Note::TransactionFailed(failure))
    }

    /// The shim's answer to an egress secret.
    fn resolved(
        &mut self,
        filter: &Filter,
        worker: &mut WorkerState,
        rule: usize,
        answer: ShimAnswer<'_>,
        now_ms: u64,
    ) -> Turn {
        self.state = State::Settled { close: None };
        let weighed = weigh(answer, |typed| match typed {
            ShimAnswer::Resolved(response) => Some(response),
            _ => None,
        });
        let Some(spec) = filter.config.outbound.secrets.get(rule) else {
            return reply_unavailable(Note::EgressFailed(String::new(), None));
        };
        let failed = |status| reply_unavailable(Note::EgressFailed(spec.secret.clone(), status));
        match weighed {
            Weighed::Done(Some(resolved)) => {
                let edits = inject(spec, &resolved.value);
                if let Some(ttl) = resolved.cache_ttl_secs.filter(|t| *t > 0) {
                    let until = now_ms.saturating_add(ttl.saturating_mul(1000));
                    worker.secrets.put(rule, resolved.value, until);
                }
                Turn::new(Step::Forward(edits), Some(Note::EgressInjected))
            }
            Weighed::Done(None) => failed(Some(200)),
            Weighed::Refused(403) => {
                let mut reply = LocalReply::forbidden();
                reply.body = format!(
                    "egress secret {:?} is not authorized for this workload\n",
                    spec.secret
                );
                let denied = Note::EgressDenied(spec.secret.clone());
                Turn::new(Step::Reply(reply), Some(denied))
            }
            Weighed::Refused(status) => failed(Some(status)),
            Weighed::Failed(status) => failed(status),
        }
    }

    /// Turns a decided disposition into the step, moving to its state.
    fn settle(
        &mut self,
        disposition: Disposition,
        note: Option<Note>,
        filter: &Filter,
        now_ms: u64,
    ) -> Turn {
        match disposition {
            Disposition::Forward(edits) => {
                self.state = State::Settled { close: None };
                Turn::new(Step::Forward(edits), note)
            }
            Disposition::Reply(reply) => {
                self.state = State::Settled { close: None };
                Turn::new(Step::Reply(reply), note)
            }
            // Decided again after the identity arrived, and still none.
            Disposition::AwaitIdentity if matches!(self.state, State::AwaitingIdentity) => {
                self.unavailable(Note::Unavailable)
            }
            Disposition::AwaitIdentity => {
                self.state = State::AwaitingIdentity;
                Turn::new(
                    Step::AwaitIdentity {
                        until_ms: now_ms.saturating_add(filter.config.startup_wait_ms),
                    },
                    Some(Note::AwaitedIdentity),
                )
            }
        }
    }

    fn unavailable(&mut self, note: Note) -> Turn {
        self.state = State::Settled { close: None };
        reply_unavailable(note)
    }
}

impl Turn {
    /// Puts `note` before the turn's own note.
    fn with_first(mut self, note: Option<Note>) -> Self {
        if note.is_some() {
            self.notes = [note, self.notes[0].take()];
        }
        self
    }
}

/// Decides a WIMSE caller from every value of its token headers and the
/// tokens its proof must bind; an admitted caller's presentation comes
/// along for the shim to verify again (transaction routes).
fn wimse_verdict(
    filter: &Filter,
    inbound: &Inbound,
    worker: &mut WorkerState,
    request: &impl RequestView,
    path: Option<&str>,
    stale: bool,
    now_ms: u64,
) -> (InboundVerdict, Option<WimseProof>) {
    let wits = request.header_values(WIT_HEADER);
    let proofs = request.header_values(WPT_HEADER);
    let authorization = request.header("authorization").and_then(Result::ok);
    let access_token = authorization.as_deref().and_then(bearer_token);
    let txn_token = request.header(TXN_TOKEN_HEADER).and_then(Result::ok);
    let understood = inbound
        .config()
        .wimse
        .iter()
        .flat_map(|w| w.other_tokens.iter());
    let values: Vec<(&str, String)> = understood
        .filter_map(|name| Some((name.as_str(), request.header(name)?.ok()?.into_owned())))
        .collect();
    let other: Vec<(&str, &str)> = values.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let verdict = inbound.decide_wimse(
        &WimseRequest {
            path,
            wits: &wits,
            proofs: &proofs,
            carried: CarriedTokens {
                access_token,
                txn_token: txn_token.as_deref(),
                other: &other,
            },
        },
        worker.identity.as_ref(),
        stale,
        &mut worker.wits,
        now_ms / 1000,
        filter.crypto,
        filter.replay.as_ref(),
    );
    let presented = match (&verdict, wits.as_slice(), proofs.as_slice()) {
        (InboundVerdict::Allowed { .. }, [wit], [wpt]) => Some(WimseProof {
            wit: wit.clone(),
            wpt: wpt.clone(),
            target: inbound
                .wimse_target(path.unwrap_or_default())
                .unwrap_or_default(),
            access_token: access_token.map(str::to_owned),
            txn_token: txn_token.as_deref().map(str::to_owned),
            other: values
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect(),
        }),
        _ => None,
    };
    (verdict, presented)
}

fn reply_unavailable(note: Note) -> Turn {
    Turn::new(Step::Reply(LocalReply::unavailable()), Some(note))
}

/// The edits that put an egress rule's secret on the request, replacing any
/// value the app supplied.
fn inject(rule: &egress::EgressRule, secret: &str) -> Edits {
    let header = rule.header();
    Edits::new([header], [(header, rule.value(secret).as_str())])
}
