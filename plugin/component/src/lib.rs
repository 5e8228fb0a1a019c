//! ephemera's filter as a WASI component (`ephemera:filter/filter`). Each
//! stream's life is the core's exchange: this crate asks it for a step,
//! performs the step through the world's imports (the shim's API: identity,
//! transactions, secrets), and feeds the answer back. It issues, records and
//! revokes nothing itself.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use ephemera_core::filter::edits::Edits;
use ephemera_core::filter::workload_identity::{
    BundleFormatName, FederatedBundle, IdentityDocument,
};
use ephemera_core::filter::{
    Exchange, Filter, FilterConfig, LocalReply, RequestView, ShimAnswer, ShimCall, Step,
    WorkerState, WorkloadIdentity,
};
use ephemera_core::ipt::{OpenResponse, StreamEnd};
use ephemera_core::secrets::wire::ResolveResponse;
use ephemera_core::{RustCrypto, SpiffeId};

/// Bindings generated from `wit/filter.wit`.
#[allow(unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({ world: "filter", path: "../../wit", pub_export_macro: true });
}

use bindings::ephemera::filter::{identity, secrets, transactions};
use bindings::exports::ephemera::filter::http_filter::{
    Guest, HeaderChanges, LocalReply as WitReply, Request, Verdict,
};

/// The configured filter, what outlives a request, and each live stream.
struct Component {
    filter: Filter,
    worker: WorkerState,
    streams: HashMap<u64, Exchange>,
}

thread_local! {
    static COMPONENT: RefCell<Option<Component>> = const { RefCell::new(None) };
}

/// A request as the host passed it.
struct HostRequest<'r>(&'r Request);

impl RequestView for HostRequest<'_> {
    fn header(&self, name: &str) -> Option<Result<Cow<'_, str>, ()>> {
        let r = self.0;
        let value = match name {
            ":method" => Some(r.method.as_str()),
            ":path" => Some(r.path.as_str()),
            ":authority" => r.authority.as_deref(),
            _ => r
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
        };
        value.map(|v| Ok(Cow::Borrowed(v)))
    }

    fn header_values(&self, name: &str) -> Vec<String> {
        self.0
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn cluster(&self) -> Option<String> {
        self.0.cluster.clone()
    }
}

fn format_name(format: identity::BundleFormat) -> BundleFormatName {
    match format {
        identity::BundleFormat::Spiffile => BundleFormatName::Spiffile,
        identity::BundleFormat::SpiffeJwks => BundleFormatName::SpiffeJwks,
    }
}

fn reply(r: LocalReply) -> Verdict {
    Verdict::Reply(WitReply {
        status: r.status,
        headers: r.headers,
        body: r.body,
    })
}

/// Performs a shim call through the world's imports.
fn call(call: ShimCall) -> ShimAnswer<'static> {
    match call {
        ShimCall::Open(open) => {
            let request = transactions::OpenRequest {
                transaction_id: open.transaction_id.to_string(),
                token: open.token,
                resource: open.resource.to_string(),
                action: open.action.to_string(),
                broker: open.broker,
                audience: open.audience.map(|a| a.to_string()),
                wimse: open.wimse.map(|w| transactions::WimseProof {
                    wit: w.wit,
                    wpt: w.wpt,
                    target: w.target,
                    access_token: w.access_token,
                    txn_token: w.txn_token,
                    other: w.other.into_iter().collect(),
                }),
            };
            match transactions::open(&request) {
                Ok(r) => match ephemera_core::ipt::TransactionId::parse(&r.transaction_id) {
                    Ok(transaction_id) => ShimAnswer::Opened(OpenResponse {
                        transaction_id,
                        credential: r.credential.into_iter().collect(),
                        expires_at: r.expires_at,
                        scope: r.scope,
                        blast_radius: r.blast_radius,
                    }),
                    // An answer for no transaction: it may still have opened one.
                    Err(_) => ShimAnswer::Failed(Some(200)),
                },
                Err(transactions::OpenError::Refused(status)) => ShimAnswer::Refused(status),
                Err(transactions::OpenError::Failed(status)) => ShimAnswer::Failed(status),
            }
        }
        ShimCall::Close(id, close) => {
            let outcome = match close.outcome {
                StreamEnd::Responded { status } => transactions::StreamEnd::Responded(status),
                StreamEnd::Aborted => transactions::StreamEnd::Aborted,
            };
            transactions::close(id.as_str(), outcome);
            ShimAnswer::Failed(None)
        }
        ShimCall::Resolve(resolve) => {
            let request = secrets::ResolveRequest {
                name: resolve.name,
                purpose: resolve.purpose,
            };
            match secrets::resolve(&request) {
                Ok(r) => ShimAnswer::Resolved(ResolveResponse {
                    value: r.value,
                    cache_ttl_secs: r.cache_ttl_secs,
                }),
                Err(secrets::ResolveError::Refused(status)) => ShimAnswer::Refused(status),
                Err(secrets::ResolveError::Failed(status)) => ShimAnswer::Failed(status),
            }
        }
    }
}

impl Component {
    /// Takes the host's identity when it is new; the last good one stays.
    fn refresh_identity(&mut self, now_ms: u64) {
        let Some(doc) = identity::current() else {
            return;
        };
        let current = self.worker.identity().map(|i| i.version.as_str());
        if current != Some(doc.version.as_str()) {
            let Ok(spiffe_id) = SpiffeId::parse(&doc.spiffe_id) else {
                return;
            };
            let doc = IdentityDocument {
                version: doc.version,
                generation: doc.generation,
                spiffe_id,
                bundle_format: format_name(doc.bundle_format),
                bundle: doc.bundle,
                key_pem: doc.key_pem,
                federated: doc
                    .federated
                    .into_iter()
                    .map(|f| FederatedBundle {
                        trust_domain: f.trust_domain,
                        bundle_format: format_name(f.bundle_format),
                        bundle: f.bundle,
                    })
                    .collect(),
                wit_issuers: doc.wit_issuers,
                wit: doc.wit,
                wit_key_pem: doc.wit_key_pem,
            };
            match WorkloadIdentity::from_document(&doc) {
                Ok(identity) => self.worker.install(identity),
                Err(_) => return,
            }
        }
        self.worker.confirm(now_ms);
    }

    /// Runs a stream's exchange until it forwards or replies.
    fn decide(&mut self, stream: u64, request: &Request, now_ms: u64) -> Verdict {
        self.refresh_identity(now_ms);
        let view = HostRequest(request);
        let mut exchange = Exchange::new();
        let mut turn = exchange.on_request(&self.filter, &mut self.worker, &view, now_ms);
        let mut edits = Edits::default();
        let verdict = loop {
            match turn.step {
                Step::Forward(last) => {
                    let Edits { remove, set } = edits.then(last);
                    break Verdict::Forward(HeaderChanges {
                        remove: remove.iter().map(|name| name.to_string()).collect(),
                        set: set
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    });
                }
                Step::Reply(r) => break reply(r),
                Step::Call(before, shim_call) => {
                    edits = edits.then(before);
                    let answer = call(shim_call);
                    turn = match exchange.on_shim_answer(
                        &self.filter,
                        &mut self.worker,
                        answer,
                        now_ms,
                    ) {
                        Some(next) => next,
                        None => break reply(LocalReply::unavailable()),
                    };
                }
                // Host calls are synchronous: no identity now is none to wait for.
                Step::AwaitIdentity { .. } => match exchange.on_identity_timeout() {
                    Some(next) => turn = next,
                    None => break reply(LocalReply::unavailable()),
                },
            }
        };
        self.streams.insert(stream, exchange);
        verdict
    }
}

impl Guest for Component {
    fn configure(config: String) -> Result<(), String> {
        let config = FilterConfig::parse(config.as_bytes()).map_err(|e| e.to_string())?;
        let worker = WorkerState::new(&config);
        let component = Component {
            filter: Filter::new(config, &RustCrypto),
            worker,
            streams: HashMap::new(),
        };
        COMPONENT.with(|c| *c.borrow_mut() = Some(component));
        Ok(())
    }

    fn on_request(stream: u64, request: Request, now_ms: u64) -> Verdict {
        COMPONENT.with(|c| match c.borrow_mut().as_mut() {
            None => reply(LocalReply::unavailable()),
            Some(component) => component.decide(stream, &request, now_ms),
        })
    }

    fn on_response(stream: u64, status: u16) -> Vec<String> {
        COMPONENT.with(|c| {
            let mut c = c.borrow_mut();
            let Some(component) = c.as_mut() else {
                return Vec::new();
            };
            let Some(exchange) = component.streams.get_mut(&stream) else {
                return Vec::new();
            };
            exchange
                .on_response(&component.filter, || Some(status))
                .map(str::to_owned)
                .collect()
        })
    }

    fn on_end(stream: u64) {
        let close = COMPONENT.with(|c| {
            c.borrow_mut()
                .as_mut()
                .and_then(|component| component.streams.remove(&stream))
                .and_then(|mut exchange| exchange.on_end())
        });
        if let Some(close) = close {
            call(close);
        }
    }
}

/// The component's exports.
#[allow(unsafe_code)]
mod exported {
    use super::Component;
    crate::bindings::export!(Component with_types_in crate::bindings);
}
