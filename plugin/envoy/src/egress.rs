//! Egress secret injection: calls to a configured external host carry a
//! secret resolved by the shim; the app's own value for that header is
//! replaced, and nothing goes upstream without the secret.

use ephemera_core::filter::LocalReply;
use ephemera_core::filter::egress::EgressRule;
use proxy_wasm::types::Action;
use serde::Deserialize;

use crate::host;
use crate::stream::reply_unavailable;
use crate::worker::Worker;

#[derive(Deserialize)]
struct Resolved {
    value: String,
    cache_ttl_secs: Option<u64>,
}

fn inject(rule: &EgressRule, secret: &str) {
    host::remove_request_header(rule.header());
    host::set_request_header(rule.header(), &rule.value(secret));
}

/// Injects from the cache, or asks the shim and pauses the request.
pub fn start(worker: &Worker, context_id: u32, index: usize, rule: &EgressRule) -> Action {
    let now = host::now_ms();
    let cached = worker.state.try_borrow().ok().and_then(|s| {
        s.secret_cache
            .get(&index)
            .filter(|(_, until)| *until > now)
            .map(|(v, _)| v.clone())
    });
    if let Some(secret) = cached {
        inject(rule, &secret);
        worker.stats.egress_injected();
        return Action::Continue;
    }
    let shim = &worker.config.shim;
    let Ok(body) = serde_json::to_vec(&serde_json::json!({ "name": rule.secret })) else {
        return reply_unavailable(worker);
    };
    match host::call_shim(shim, "/v1/secrets/resolve", &[], Some(&body)) {
        Ok(token) => {
            if let Ok(mut state) = worker.state.try_borrow_mut() {
                state.pending_secrets.insert(token, (context_id, index));
            }
            Action::Pause
        }
        Err(_) => {
            worker.stats.egress_failed();
            reply_unavailable(worker)
        }
    }
}

/// Handles the shim's answer; false when `token` is not a secret lookup.
pub fn response(worker: &Worker, token: u32, headers: usize, body_size: usize) -> bool {
    let Some((context_id, index)) = worker
        .state
        .try_borrow_mut()
        .ok()
        .and_then(|mut s| s.pending_secrets.remove(&token))
    else {
        return false;
    };
    let Some(rule) = worker.config.outbound.secrets.get(index) else {
        return true;
    };
    let status = host::call_status(headers);
    let body = host::call_response_body(body_size);
    if !host::set_effective_context(context_id) {
        return true;
    }
    match status.as_deref() {
        Some("200") => match serde_json::from_slice::<Resolved>(&body) {
            Ok(resolved) => {
                if let Some(ttl) = resolved.cache_ttl_secs.filter(|t| *t > 0)
                    && let Ok(mut state) = worker.state.try_borrow_mut()
                {
                    let until = host::now_ms() + ttl * 1000;
                    state
                        .secret_cache
                        .insert(index, (resolved.value.clone(), until));
                }
                inject(rule, &resolved.value);
                worker.stats.egress_injected();
                host::resume_request();
            }
            Err(_) => {
                worker.stats.egress_failed();
                reply_unavailable(worker);
            }
        },
        Some("403") => {
            worker.stats.egress_denied();
            log::info!(
                "ephemera egress: 403: this workload may not use secret {:?}",
                rule.secret
            );
            let mut reply = LocalReply::forbidden();
            reply.body = format!(
                "egress secret {:?} is not authorized for this workload\n",
                rule.secret
            );
            host::send_reply(reply.status, &reply.headers, &reply.body);
        }
        other => {
            worker.stats.egress_failed();
            log::warn!(
                "ephemera egress: 503: secret {:?} unavailable (shim answered {other:?})",
                rule.secret
            );
            reply_unavailable(worker);
        }
    }
    true
}
