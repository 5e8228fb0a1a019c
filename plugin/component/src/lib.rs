//! ephemera's filter as a WASI component (`ephemera:filter/filter`): the
//! core's decisions behind the world's hooks, with the host's identity,
//! broker, ledger and secrets services in place of the shim's HTTP API.
//! The decisions are the core's; this crate translates types, keeps
//! per-stream state, and sequences a transaction as the shim does behind
//! its API: issue, record `open` (or revoke and refuse), and at the end
//! revoke and record `close` or `fail`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use ephemera_core::filter::config::Unmapped;
use ephemera_core::filter::egress::{self, EgressDecision};
use ephemera_core::filter::{
    Direction, FilterConfig, Inbound, InboundRequest, InboundVerdict, LocalReply, Outbound,
    OutboundRequest, OutboundVerdict, Outcome, Rejection, TransactionMapping,
};
use ephemera_core::ipt::TransactionId;
use ephemera_core::ipt::wire::{OpenResponse, Outcome as StreamOutcome};
use ephemera_core::token::MintError;
use ephemera_core::{CryptoError, SpiffeId};

/// Bindings generated from `wit/filter.wit`.
#[allow(unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({ world: "filter", path: "../../wit", pub_export_macro: true });
}

use bindings::ephemera::filter::{broker, identity, ledger, secrets};
use bindings::exports::ephemera::filter::http_filter::{
    Guest, HeaderChanges, LocalReply as WitReply, Request, Verdict,
};

/// An open transaction of a stream.
struct Transaction {
    id: String,
    caller: SpiffeId,
    status: Option<u16>,
}

/// The configured filter.
struct Filter {
    config: FilterConfig,
    inbound: Inbound,
    outbound: Outbound,
    transactions: HashMap<u64, Transaction>,
}

thread_local! {
    static FILTER: RefCell<Option<Filter>> = const { RefCell::new(None) };
}

struct Component;

fn reply(r: LocalReply) -> Verdict {
    Verdict::Reply(WitReply {
        status: r.status,
        headers: r.headers,
        body: r.body,
    })
}

fn verdict(outcome: Outcome) -> Verdict {
    match outcome {
        Outcome::Forward { remove, set } => Verdict::Forward(HeaderChanges { remove, set }),
        Outcome::Reply(r) => reply(r),
        // Host calls are synchronous: no identity now means none to wait for.
        Outcome::AwaitIdentity => reply(LocalReply::unavailable()),
    }
}

fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn workload() -> Option<SpiffeId> {
    identity::workload().and_then(|id| SpiffeId::parse(&id).ok())
}

fn rejection(r: identity::Rejection) -> Rejection {
    match r {
        identity::Rejection::Unavailable(why) => Rejection::Undecided(why),
        identity::Rejection::Malformed(why) => Rejection::Refused(format!("malformed: {why}")),
        identity::Rejection::Untrusted(why) => Rejection::Refused(format!("untrusted: {why}")),
        identity::Rejection::Expired => Rejection::Refused("expired".into()),
        identity::Rejection::WrongAudience => Rejection::Refused("wrong audience".into()),
    }
}

impl Filter {
    fn inbound(&mut self, stream: u64, request: &Request) -> Verdict {
        let authorization = header(request, "authorization");
        let verdict = self.inbound.decide_with(
            &InboundRequest {
                path: &request.path,
                authorization: authorization.map(Ok),
            },
            workload().as_ref(),
            |token, audience| match identity::verify(token, audience.as_str()) {
                Ok(caller) => SpiffeId::parse(&caller.id)
                    .map(|id| (id, false))
                    .map_err(|e| Rejection::Refused(e.to_string())),
                Err(r) => Err(rejection(r)),
            },
        );
        let outcome = self.inbound.outcome(&verdict);
        let InboundVerdict::Allowed { caller, .. } = verdict else {
            return self::verdict(outcome);
        };
        let plan = match self.inbound.transactions().map(
            &request.path,
            &request.method,
            !self.inbound.config().case_sensitive,
            |name| {
                request
                    .headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
                    .collect()
            },
        ) {
            TransactionMapping::None => return self::verdict(outcome),
            // The reason names configuration: it is not the client's to read.
            TransactionMapping::Unmappable(_) => return reply(LocalReply::bad_request()),
            TransactionMapping::Plan(plan) => plan,
        };
        let Some(transaction_id) = TransactionId::generate() else {
            return reply(LocalReply::unavailable());
        };
        let id = transaction_id.to_string();
        let token = authorization
            .and_then(ephemera_core::filter::inbound::bearer_token)
            .unwrap_or_default();
        let scope = broker::Scope {
            resource: plan.resource.to_string(),
            action: plan.action.to_string(),
            broker: plan.broker.clone(),
        };
        let credential = match broker::issue(&id, token, &scope) {
            Ok(c) => c,
            Err(broker::BrokerError::Denied(_)) => return reply(LocalReply::forbidden()),
            // The host may still finish the issue: revoke whatever it made.
            Err(broker::BrokerError::Unavailable(_)) => {
                broker::revoke(&id);
                return reply(LocalReply::unavailable());
            }
        };
        let issued = OpenResponse {
            transaction_id,
            credential: credential.fields.into_iter().collect::<BTreeMap<_, _>>(),
            expires_at: credential.expires_at,
            scope: format!("{}:{}", scope.action, scope.resource),
            blast_radius: credential.blast_radius,
        };
        let headers = self
            .inbound
            .transactions()
            .credential_for_app(&plan, &issued);
        let recorded = ledger::append(&ledger::Event {
            kind: ledger::Kind::Open,
            transaction: id.clone(),
            caller: Some(caller.to_string()),
            scope: Some(issued.scope.clone()),
        });
        // No credential reaches the app unaudited or incomplete.
        let (Some(headers), Ok(())) = (headers, recorded) else {
            broker::revoke(&id);
            return reply(LocalReply::unavailable());
        };
        self.transactions.insert(
            stream,
            Transaction {
                id,
                caller,
                status: None,
            },
        );
        match outcome {
            Outcome::Forward { remove, mut set } => {
                set.extend(headers);
                Verdict::Forward(HeaderChanges { remove, set })
            }
            other => self::verdict(other),
        }
    }

    fn outbound(&self, request: &Request) -> Verdict {
        let authority = request.authority.as_deref();
        let rule = match egress::decide(&self.config.outbound.secrets, authority, &request.method) {
            EgressDecision::NotEgress => None,
            EgressDecision::Refuse(r) => return reply(r),
            EgressDecision::Inject(_, rule) => Some(rule),
        };
        if let Some(rule) = rule {
            return match secrets::resolve(&rule.secret) {
                Ok(resolved) => Verdict::Forward(HeaderChanges {
                    remove: vec![rule.header().to_owned()],
                    set: vec![(rule.header().to_owned(), rule.value(&resolved.value))],
                }),
                Err(secrets::SecretError::NotAuthorized(_)) => {
                    let mut r = LocalReply::forbidden();
                    r.body = format!(
                        "egress secret {:?} is not authorized for this workload\n",
                        rule.secret
                    );
                    reply(r)
                }
                Err(_) => reply(LocalReply::unavailable()),
            };
        }
        if workload().is_none() {
            return reply(LocalReply::unavailable());
        }
        let target = OutboundRequest {
            authority,
            cluster: request.cluster.as_deref(),
        };
        let decided = match self.outbound.destination(&target) {
            None => match self.config.outbound.unmapped {
                Unmapped::Pass => OutboundVerdict::PassUnmapped,
                Unmapped::Reject => OutboundVerdict::RejectUnmapped,
            },
            Some(audience) => {
                let ttl = u32::try_from(self.config.outbound.ttl_secs).unwrap_or(u32::MAX);
                match identity::mint(audience.as_str(), ttl) {
                    Ok(token) => OutboundVerdict::Attach {
                        audience: audience.clone(),
                        token,
                        reused: false,
                    },
                    Err(reason) => OutboundVerdict::MintFailed(MintError::Crypto(CryptoError {
                        backend: "host",
                        reason,
                    })),
                }
            }
        };
        verdict(self.outbound.outcome(&decided))
    }
}

impl Guest for Component {
    fn configure(config: String) -> Result<(), String> {
        let config = FilterConfig::parse(config.as_bytes()).map_err(|e| e.to_string())?;
        let filter = Filter {
            inbound: Inbound::new(config.inbound.clone()),
            outbound: Outbound::new(config.outbound.clone()),
            config,
            transactions: HashMap::new(),
        };
        FILTER.with(|f| *f.borrow_mut() = Some(filter));
        Ok(())
    }

    fn on_request(stream: u64, request: Request) -> Verdict {
        FILTER.with(|f| match f.borrow_mut().as_mut() {
            None => reply(LocalReply::unavailable()),
            Some(filter) => match filter.config.direction {
                Direction::Inbound => filter.inbound(stream, &request),
                Direction::Outbound => filter.outbound(&request),
            },
        })
    }

    fn on_response(stream: u64, status: u16) -> Vec<String> {
        FILTER.with(|f| {
            let mut f = f.borrow_mut();
            let Some(filter) = f.as_mut() else {
                return Vec::new();
            };
            if let Some(t) = filter.transactions.get_mut(&stream) {
                t.status = Some(status);
            }
            filter
                .inbound
                .transactions()
                .credential_headers()
                .map(str::to_owned)
                .collect()
        })
    }

    fn on_end(stream: u64) {
        let Some(t) = FILTER.with(|f| {
            f.borrow_mut()
                .as_mut()
                .and_then(|filter| filter.transactions.remove(&stream))
        }) else {
            return;
        };
        broker::revoke(&t.id);
        let outcome = t
            .status
            .map_or(StreamOutcome::Aborted, |status| StreamOutcome::Responded {
                status,
            });
        let kind = if outcome.is_failure() {
            ledger::Kind::Fail
        } else {
            ledger::Kind::Close
        };
        // The broker has revoked the credential; a lost close record is
        // reported by the host's ledger, not retried here.
        let _ = ledger::append(&ledger::Event {
            kind,
            transaction: t.id,
            caller: Some(t.caller.to_string()),
            scope: None,
        });
    }
}

/// The component's exports.
#[allow(unsafe_code)]
mod exported {
    use super::Component;
    crate::bindings::export!(Component with_types_in crate::bindings);
}
