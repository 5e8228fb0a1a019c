//! One HTTP stream: feeds its events to its exchange and carries out the
//! steps the exchange returns.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use ephemera_core::filter::note::Level;
use ephemera_core::filter::{
    Exchange, LocalReply, RequestView, ShimAnswer, Step, Turn, WorkerState,
};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::host;
use crate::worker::{StreamCell, Worker};

/// The request as Envoy holds it, read header by header on demand.
pub struct HostRequest;

impl RequestView for HostRequest {
    fn header(&self, name: &str) -> Option<Result<Cow<'_, str>, ()>> {
        host::request_header(name).map(|h| h.map(Cow::Owned))
    }

    fn header_values(&self, name: &str) -> Vec<String> {
        host::request_header_values(name)
    }

    fn cluster(&self) -> Option<String> {
        host::property(&["xds", "cluster_name"])
    }
}

/// Which callback a step is carried out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The stream's request headers: a forward continues.
    Headers,
    /// A later callback of the stream: the request is held, a forward resumes it.
    Held,
    /// The root context, acting for a held stream: calls it dispatches are
    /// answered to the root.
    Root,
}

/// Runs `event` on the stream's exchange with the worker's state; `None`
/// when either is busy (a re-entrant host callback).
pub fn with_exchange<T>(
    worker: &Worker,
    cell: &StreamCell,
    event: impl FnOnce(&mut Exchange, &mut WorkerState) -> T,
) -> Option<T> {
    let mut exchange = cell.exchange.try_borrow_mut().ok()?;
    let mut state = worker.state.try_borrow_mut().ok()?;
    Some(event(&mut exchange, &mut state))
}

/// Carries out a turn on the current (effective) stream: counts and logs
/// its notes, then takes its step.
pub fn apply(worker: &Worker, cell: &Rc<StreamCell>, turn: Turn, origin: Origin) -> Action {
    for note in turn.notes() {
        worker.stats.note(note, worker.filter.crypto_name());
        if let Some((level, line)) = note.log() {
            match level {
                Level::Info => log::info!("{line}"),
                Level::Warn => log::warn!("{line}"),
                Level::Error => log::error!("{line}"),
            }
        }
    }
    match turn.step {
        Step::Forward(edits) => {
            host::edit_request(&edits);
            if origin != Origin::Headers {
                host::resume_request();
            }
            Action::Continue
        }
        Step::Reply(reply) => {
            host::send_reply(&reply);
            Action::Pause
        }
        Step::Call(edits, call) => {
            host::edit_request(&edits);
            let shim = &worker.filter.config().shim;
            match host::call_shim(shim, &call.path(), &[], Some(&call.body())) {
                Ok(token) => {
                    if origin == Origin::Root
                        && let Ok(mut held) = worker.held.try_borrow_mut()
                    {
                        held.relayed.insert(token, Rc::downgrade(cell));
                    }
                    Action::Pause
                }
                Err(_) => answer(worker, cell, None, &[], origin),
            }
        }
        Step::AwaitIdentity { until_ms } => match worker.held.try_borrow_mut() {
            Ok(mut held) => {
                held.waiting.push((until_ms, Rc::downgrade(cell)));
                Action::Pause
            }
            Err(_) => unavailable(),
        },
    }
}

/// Feeds the shim's answer (`status` `None`: no answer) to the stream's
/// exchange and carries out what follows.
pub fn answer(
    worker: &Worker,
    cell: &Rc<StreamCell>,
    status: Option<u16>,
    body: &[u8],
    origin: Origin,
) -> Action {
    let now_ms = worker.now_ms();
    let turn = with_exchange(worker, cell, |exchange, state| {
        exchange.on_shim_answer(
            &worker.filter,
            state,
            ShimAnswer::Http { status, body },
            now_ms,
        )
    });
    match turn {
        Some(Some(turn)) => apply(worker, cell, turn, origin),
        Some(None) => Action::Pause,
        None => unavailable(),
    }
}

/// 503 on the current stream when its state cannot be reached.
fn unavailable() -> Action {
    host::send_reply(&LocalReply::unavailable());
    Action::Pause
}

/// One HTTP stream.
pub struct Stream {
    worker: Rc<Worker>,
    cell: Rc<StreamCell>,
}

impl Stream {
    /// A stream of `worker`.
    pub fn new(worker: Rc<Worker>, context_id: u32) -> Self {
        Self {
            worker,
            cell: Rc::new(StreamCell {
                context_id,
                exchange: RefCell::new(Exchange::new()),
            }),
        }
    }
}

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let (status, body) = host::call_answer(headers, body_size);
        answer(&self.worker, &self.cell, status, &body, Origin::Held);
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let worker = &self.worker;
        let now_ms = worker.now_ms();
        match with_exchange(worker, &self.cell, |exchange, state| {
            exchange.on_request(&worker.filter, state, &HostRequest, now_ms)
        }) {
            Some(turn) => apply(worker, &self.cell, turn, Origin::Headers),
            None => unavailable(),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Ok(mut exchange) = self.cell.exchange.try_borrow_mut() {
            let status = || host::response_header(":status").and_then(|s| s.parse().ok());
            for name in exchange.on_response(&self.worker.filter, status) {
                host::remove_response_header(name);
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let close = self
            .cell
            .exchange
            .try_borrow_mut()
            .ok()
            .and_then(|mut exchange| exchange.on_end());
        if let Ok(mut held) = self.worker.held.try_borrow_mut() {
            held.closes.extend(close);
            // A call the root relayed for this stream is cancelled with it.
            if !held.relayed.is_empty() {
                let this = Rc::as_ptr(&self.cell);
                held.relayed.retain(|_, cell| cell.as_ptr() != this);
            }
        }
    }
}
