//! Identity-Per-Transaction in the filter: open the transaction at the shim
//! before the request goes on, hand the credential to the app, and have the
//! root context close it when the stream ends.

use ephemera_core::filter::transaction::new_transaction_id;
use ephemera_core::filter::{LocalReply, TransactionPlan, TransactionRoutes};
use ephemera_core::ipt::{CloseRequest, OpenResponse, TransactionOutcome};
use proxy_wasm::types::Action;

use crate::host;
use crate::stream::reply_unavailable;
use crate::worker::{OpenTxn, PendingOpen, Policy, Worker};

/// Dispatches the open for a plan; the request stays paused until the answer.
pub fn open(worker: &Worker, context_id: u32, plan: TransactionPlan, token: String) -> Action {
    let Some(transaction_id) = new_transaction_id() else {
        log::error!("ephemera ipt: no randomness for a transaction id");
        return reply_unavailable(worker);
    };
    let request = TransactionRoutes::open_request(
        &plan,
        transaction_id.clone(),
        token,
        worker.config.inbound.audience.as_ref(),
    );
    let Ok(body) = serde_json::to_vec(&request) else {
        return reply_unavailable(worker);
    };
    let shim = &worker.config.shim;
    let call = host::call_shim(shim, "/v1/transactions", &[], Some(&body));
    match call {
        Ok(token) => {
            if let Ok(mut state) = worker.state.try_borrow_mut() {
                state.pending_opens.insert(
                    token,
                    PendingOpen {
                        context_id,
                        plan,
                        transaction_id,
                    },
                );
            }
            Action::Pause
        }
        Err(status) => {
            worker.stats.transaction_failed();
            log::warn!("ephemera ipt: 503: cannot reach the shim ({status:?})");
            reply_unavailable(worker)
        }
    }
}

/// Handles the shim's answer to an open; false when `token` is not an open.
pub fn open_response(worker: &Worker, token: u32, headers: usize, body_size: usize) -> bool {
    let Some(pending) = worker
        .state
        .try_borrow_mut()
        .ok()
        .and_then(|mut s| s.pending_opens.remove(&token))
    else {
        return false;
    };
    let Policy::Inbound(policy) = &worker.policy else {
        return true;
    };
    let status = host::call_status(headers);
    let body = host::call_response_body(body_size);
    // Only a refusal (4xx) says for sure that nothing was opened: after a
    // timeout (Envoy's own 504), no answer or a 5xx the shim may still
    // finish the open. Whatever the request cannot use is closed.
    let maybe_open = !status.as_deref().is_some_and(|s| s.starts_with('4'));
    if !host::set_effective_context(pending.context_id) {
        // The stream is gone.
        if maybe_open {
            queue_close(worker, pending.transaction_id, TransactionOutcome::Aborted);
        }
        return true;
    }
    match status.as_deref() {
        Some("200") => {
            let credential = serde_json::from_slice::<OpenResponse>(&body)
                .ok()
                .and_then(|r| policy.transactions().credential_for_app(&pending.plan, &r));
            match credential {
                Some(headers) => {
                    for (name, value) in &headers {
                        host::set_request_header(name, value);
                    }
                    if let Ok(mut state) = worker.state.try_borrow_mut() {
                        state.open_txns.insert(
                            pending.context_id,
                            OpenTxn {
                                transaction_id: pending.transaction_id,
                                status: None,
                            },
                        );
                    }
                    worker.stats.transaction_opened();
                    host::resume_request();
                }
                None => {
                    log::error!(
                        "ephemera ipt: 503: the shim's credential lacks a configured field"
                    );
                    queue_close(worker, pending.transaction_id, TransactionOutcome::Aborted);
                    worker.stats.transaction_failed();
                    reply_unavailable(worker);
                }
            }
        }
        Some("403") => {
            worker.stats.transaction_denied();
            log::info!(
                "ephemera ipt: 403: the shim's policy denies {}",
                pending.plan.resource
            );
            let reply = LocalReply::forbidden();
            host::send_reply(reply.status, &reply.headers, &reply.body);
        }
        Some("429") => {
            worker.stats.transaction_limited();
            log::info!("ephemera ipt: 429: the caller has too many transactions open");
            let reply = LocalReply::too_many_requests();
            host::send_reply(reply.status, &reply.headers, &reply.body);
        }
        other => {
            worker.stats.transaction_failed();
            log::warn!("ephemera ipt: 503: transaction not opened (shim answered {other:?})");
            if maybe_open {
                queue_close(worker, pending.transaction_id, TransactionOutcome::Aborted);
            }
            reply_unavailable(worker);
        }
    }
    true
}

/// Records the upstream status and strips credential headers from the response.
pub fn response_headers(worker: &Worker, context_id: u32) {
    let Policy::Inbound(policy) = &worker.policy else {
        return;
    };
    if policy.transactions().is_empty() {
        return;
    }
    for name in policy.transactions().credential_headers() {
        host::remove_response_header(name);
    }
    let status = host::response_header(":status").and_then(|s| s.parse().ok());
    if let Ok(mut state) = worker.state.try_borrow_mut()
        && let Some(txn) = state.open_txns.get_mut(&context_id)
    {
        txn.status = status;
    }
}

/// The stream ended: queue its transaction (open or still opening) for closing.
pub fn stream_ended(worker: &Worker, context_id: u32) {
    let Ok(mut state) = worker.state.try_borrow_mut() else {
        return;
    };
    if let Some(txn) = state.open_txns.remove(&context_id) {
        let outcome = match txn.status {
            Some(status) => TransactionOutcome::Responded { status },
            None => TransactionOutcome::Aborted,
        };
        state.closes.push((txn.transaction_id, outcome));
    }
    let opening: Vec<u32> = state
        .pending_opens
        .iter()
        .filter(|(_, p)| p.context_id == context_id)
        .map(|(token, _)| *token)
        .collect();
    for token in opening {
        if let Some(p) = state.pending_opens.remove(&token) {
            state
                .closes
                .push((p.transaction_id, TransactionOutcome::Aborted));
        }
    }
}

fn queue_close(worker: &Worker, transaction_id: String, outcome: TransactionOutcome) {
    if let Ok(mut state) = worker.state.try_borrow_mut() {
        state.closes.push((transaction_id, outcome));
    }
}

/// Sends the queued closes (root context, on its tick).
pub fn send_closes(worker: &Worker) {
    let closes = worker
        .state
        .try_borrow_mut()
        .map(|mut s| std::mem::take(&mut s.closes))
        .unwrap_or_default();
    let shim = &worker.config.shim;
    for (transaction_id, outcome) in closes {
        let path = format!("/v1/transactions/{transaction_id}/close");
        let Ok(body) = serde_json::to_vec(&CloseRequest { outcome }) else {
            continue;
        };
        match host::call_shim(shim, &path, &[], Some(&body)) {
            Ok(_) => worker.stats.transaction_closed(),
            // The shim's reaper revokes it when the credential expires.
            Err(status) => {
                log::warn!("ephemera ipt: cannot send a close ({status:?}); the shim will reap it")
            }
        }
    }
}
