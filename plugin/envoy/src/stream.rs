//! Per-request handling: read the request, ask the core, apply the outcome.

use std::rc::Rc;

use ephemera_core::filter::egress::{self, EgressDecision};
use ephemera_core::filter::inbound::bearer_token;
use ephemera_core::filter::{
    InboundRequest, InboundVerdict, LocalReply, OutboundRequest, OutboundVerdict, Outcome,
    TransactionMapping,
};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::host;
use crate::worker::{Policy, Worker};

/// Decides the current (effective) stream and applies the outcome. `resumed`
/// is true when the stream was paused waiting for an identity.
pub fn handle(worker: &Worker, context_id: u32, resumed: bool) -> Action {
    let now_ms = host::now_ms();
    let now = now_ms / 1000;
    let outcome = match &worker.policy {
        Policy::Inbound(policy) => {
            let path = host::request_header_text(":path").unwrap_or_default();
            let authorization = host::request_header("authorization");
            let request = InboundRequest {
                path: &path,
                authorization: authorization.as_ref().map(|r| r.as_deref().map_err(|_| ())),
            };
            let verdict = {
                let Ok(mut state) = worker.state.try_borrow_mut() else {
                    return reply_unavailable(worker);
                };
                let identity = state.identity.clone();
                let stale = identity.is_some()
                    && now_ms.saturating_sub(state.confirmed_ms)
                        > worker.config.shim.max_identity_age_ms;
                policy.decide(
                    &request,
                    identity.as_deref(),
                    stale,
                    &mut state.cache,
                    now,
                    worker.crypto(),
                )
            };
            record_inbound(worker, &verdict);
            let outcome = policy.outcome(&verdict);
            if matches!(verdict, InboundVerdict::Allowed { .. })
                && !policy.transactions().is_empty()
            {
                let method = host::request_header_text(":method").unwrap_or_default();
                let fold_case = !policy.config().case_sensitive;
                match policy.transactions().map(
                    &path,
                    &method,
                    fold_case,
                    host::request_header_values,
                ) {
                    TransactionMapping::None => {}
                    TransactionMapping::Unmappable(reason) => {
                        worker.stats.transaction_unmappable();
                        // The reason names configuration: logged, not sent.
                        log::info!("ephemera ipt: 400: {reason}");
                        let reply = LocalReply::bad_request();
                        host::send_reply(reply.status, &reply.headers, &reply.body);
                        return Action::Pause;
                    }
                    TransactionMapping::Plan(plan) => {
                        let token = authorization
                            .as_ref()
                            .and_then(|a| a.as_deref().ok())
                            .and_then(bearer_token)
                            .map(str::to_owned)
                            .unwrap_or_default();
                        apply_headers(&outcome);
                        return crate::ipt::open(worker, context_id, plan, token);
                    }
                }
            }
            outcome
        }
        Policy::Outbound(policy) => {
            let authority = host::request_header_text(":authority");
            let method = host::request_header_text(":method").unwrap_or_default();
            match egress::decide(
                &worker.config.outbound.secrets,
                authority.as_deref(),
                &method,
            ) {
                EgressDecision::NotEgress => {}
                EgressDecision::Refuse(reply) => {
                    host::send_reply(reply.status, &reply.headers, &reply.body);
                    return Action::Pause;
                }
                EgressDecision::Inject(index, rule) => {
                    return crate::egress::start(worker, context_id, index, rule);
                }
            }
            let cluster = if worker.config.outbound.clusters.is_empty() {
                None
            } else {
                host::property(&["xds", "cluster_name"])
            };
            let request = OutboundRequest {
                authority: authority.as_deref(),
                cluster: cluster.as_deref(),
            };
            let verdict = {
                let Ok(mut state) = worker.state.try_borrow_mut() else {
                    return reply_unavailable(worker);
                };
                let identity = state.identity.clone();
                policy.decide(
                    &request,
                    identity.as_deref(),
                    &mut state.minted,
                    now,
                    worker.crypto(),
                )
            };
            record_outbound(worker, &verdict);
            policy.outcome(&verdict)
        }
    };
    match outcome {
        outcome @ Outcome::Forward { .. } => {
            apply_headers(&outcome);
            if resumed {
                host::resume_request();
            }
            Action::Continue
        }
        Outcome::Reply(reply) => {
            host::send_reply(reply.status, &reply.headers, &reply.body);
            Action::Pause
        }
        Outcome::AwaitIdentity if resumed => reply_unavailable(worker),
        Outcome::AwaitIdentity => {
            worker.stats.awaited_identity();
            let deadline = now_ms.saturating_add(worker.config.startup_wait_ms);
            if let Ok(mut state) = worker.state.try_borrow_mut() {
                state.waiting.push((context_id, deadline));
                Action::Pause
            } else {
                reply_unavailable(worker)
            }
        }
    }
}

/// Applies a forward's header changes to the current stream.
fn apply_headers(outcome: &Outcome) {
    if let Outcome::Forward { remove, set } = outcome {
        for name in remove {
            host::remove_request_header(name);
        }
        for (name, value) in set {
            host::set_request_header(name, value);
        }
    }
}

/// 503 on the current stream.
pub fn reply_unavailable(worker: &Worker) -> Action {
    worker.stats.unavailable();
    let reply = ephemera_core::filter::LocalReply::unavailable();
    host::send_reply(reply.status, &reply.headers, &reply.body);
    Action::Pause
}

fn record_inbound(worker: &Worker, verdict: &InboundVerdict) {
    let backend = worker.crypto().name();
    match verdict {
        InboundVerdict::Allowed { cached, .. } => worker.stats.verified(*cached, backend),
        InboundVerdict::Rejected(ephemera_core::filter::Rejection::IdentityStale) => {
            worker.stats.identity_stale();
            log::warn!(
                "ephemera inbound: 503: the identity in force is older than shim.max_identity_age_ms"
            );
        }
        InboundVerdict::Rejected(rejection) => {
            let ran_crypto = matches!(
                rejection,
                ephemera_core::filter::Rejection::Verify(ephemera_core::VerifyError::Invalid(
                    ephemera_core::InvalidToken::SignatureMismatch
                ))
            );
            worker
                .stats
                .rejected(rejection.code(), ran_crypto.then_some(backend));
            let detail = match rejection {
                ephemera_core::filter::Rejection::Verify(e) => e.to_string(),
                other => other.code().to_owned(),
            };
            log::info!("ephemera inbound: 401 ({}): {detail}", rejection.code());
        }
        InboundVerdict::Forbidden { caller } => {
            worker.stats.forbidden();
            log::info!("ephemera inbound: 403: {caller} is not allowed on this route");
        }
        InboundVerdict::Unauthenticated => worker.stats.unauthenticated_path(),
        InboundVerdict::BadPath => {
            worker.stats.rejected("bad_path", None);
            log::info!("ephemera inbound: 400: path is not in normal form");
        }
        InboundVerdict::AwaitIdentity => {}
    }
}

fn record_outbound(worker: &Worker, verdict: &OutboundVerdict) {
    match verdict {
        OutboundVerdict::Attach { reused, .. } => {
            worker.stats.minted(*reused, worker.crypto().name())
        }
        OutboundVerdict::PassUnmapped => worker.stats.unmapped(),
        OutboundVerdict::RejectUnmapped => {
            worker.stats.unmapped();
            log::info!("ephemera outbound: 403: destination has no SPIFFE ID mapping");
        }
        OutboundVerdict::MintFailed(e) => log::error!("ephemera outbound: 500: cannot mint: {e}"),
        OutboundVerdict::AwaitIdentity => {}
    }
}

/// One HTTP stream.
pub struct Stream {
    worker: Rc<Worker>,
    context_id: u32,
}

impl Stream {
    /// A stream of `worker`.
    pub fn new(worker: Rc<Worker>, context_id: u32) -> Self {
        Self { worker, context_id }
    }
}

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if !crate::egress::response(&self.worker, token, headers, body_size) {
            crate::ipt::open_response(&self.worker, token, headers, body_size);
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        handle(&self.worker, self.context_id, false)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        crate::ipt::response_headers(&self.worker, self.context_id);
        Action::Continue
    }

    fn on_log(&mut self) {
        crate::ipt::stream_ended(&self.worker, self.context_id);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Ok(mut state) = self.worker.state.try_borrow_mut() {
            state.waiting.retain(|(id, _)| *id != self.context_id);
        }
    }
}
