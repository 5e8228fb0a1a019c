//! The root context: configuration, the crypto self-test, and identity
//! refresh. Every worker fetches the identity from the shim itself: the
//! document holds the private key, and proxy-wasm shared data is readable by
//! every other Wasm plugin on the same Envoy, so it never goes there.

use std::rc::Rc;
use std::time::Duration;

use ephemera_core::filter::{CryptoChoice, FilterConfig, WorkloadIdentity};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use ephemera_core::{Es256, RustCrypto};

use crate::host;
use crate::native_crypto::{self, EnvoyCrypto};
use crate::stats::Stats;
use crate::stream::{self, HostRequest, Origin, Stream};
use crate::worker::{StreamCell, Worker};

/// Tick period: how often fetches are due and waiting streams expire.
const TICK: Duration = Duration::from_millis(100);

/// The root context of one filter instance on one worker.
pub struct Root {
    context_id: u32,
    worker: Option<Rc<Worker>>,
    /// The identity fetch in flight: (call token, deadline ms).
    call: Option<(u32, u64)>,
    next_fetch_ms: u64,
    failing: bool,
}

impl Root {
    /// A fresh, unconfigured root.
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            worker: None,
            call: None,
            next_fetch_ms: 0,
            failing: false,
        }
    }

    fn configure(&mut self, bytes: &[u8]) -> Result<(), String> {
        let config = FilterConfig::parse(bytes).map_err(|e| e.to_string())?;
        let direction = match config.direction {
            ephemera_core::filter::Direction::Inbound => "inbound",
            ephemera_core::filter::Direction::Outbound => "outbound",
        };
        let crypto: &'static dyn Es256 = match config.crypto {
            CryptoChoice::Rust => &RustCrypto,
            CryptoChoice::Auto => match native_crypto::self_test() {
                Ok(()) => &EnvoyCrypto,
                Err(e) => {
                    log::warn!("ephemera: native crypto unavailable ({e}); using pure Rust");
                    &RustCrypto
                }
            },
        };
        let native = crypto.name() == EnvoyCrypto.name();
        let stats = Stats::define(direction);
        stats.crypto_backend(native);
        log::info!(
            "ephemera: {direction} filter configured (crypto: {})",
            if native { "envoy native" } else { "pure rust" }
        );
        self.worker = Some(Worker::new(config, crypto, stats, host::now_ms()));
        Ok(())
    }

    fn install(&self, worker: &Worker, identity: WorkloadIdentity) {
        log::info!(
            "ephemera: identity {} generation {} in force",
            identity.id(),
            identity.generation
        );
        let generation = identity.generation;
        if let Ok(mut state) = worker.state.try_borrow_mut() {
            state.install(identity);
        }
        worker.stats.identity_loaded(generation);
        let waiting = worker
            .held
            .try_borrow_mut()
            .map(|mut held| std::mem::take(&mut held.waiting))
            .unwrap_or_default();
        let now_ms = host::now_ms();
        for cell in waiting.into_iter().filter_map(|(_, cell)| cell.upgrade()) {
            if !host::set_effective_context(cell.context_id) {
                continue;
            }
            let turn = stream::with_exchange(worker, &cell, |exchange, state| {
                exchange.on_identity(&worker.filter, state, &HostRequest, now_ms)
            })
            .flatten();
            if let Some(turn) = turn {
                stream::apply(worker, &cell, turn, Origin::Root);
            }
        }
        // Later calls (the next fetch) must belong to the root, not to the
        // last stream resumed.
        host::set_effective_context(self.context_id);
    }

    fn maybe_fetch(&mut self, worker: &Worker, now_ms: u64) {
        let shim = &worker.filter.config().shim;
        if let Some((_, deadline)) = self.call {
            if now_ms < deadline {
                return;
            }
            // The host never answered (e.g. the call was cancelled): give up on it.
            self.call = None;
            self.fetch_failed(worker, "identity fetch got no answer");
        }
        if now_ms < self.next_fetch_ms {
            return;
        }
        self.next_fetch_ms = now_ms + shim.poll_ms;
        let etag = worker.version().map(|v| format!("\"{v}\""));
        let extra: Vec<(&str, &str)> = etag
            .as_deref()
            .map(|e| ("if-none-match", e))
            .into_iter()
            .collect();
        host::set_effective_context(self.context_id);
        let deadline = now_ms + shim.timeout_ms + 1000;
        self.call = host::call_shim(shim, "/v1/identity", &extra, None)
            .ok()
            .map(|token| (token, deadline));
        if self.call.is_none() {
            self.fetch_failed(worker, "cannot dispatch to the shim cluster");
        }
    }

    fn fetch_failed(&mut self, worker: &Worker, why: &str) {
        worker.stats.reload_failed();
        if !self.failing {
            log::warn!("ephemera: identity refresh failing, keeping the last good identity: {why}");
        }
        self.failing = true;
    }

    /// Answers 503 to the streams whose wait for the identity ran out.
    fn expire_waiting(&self, worker: &Worker, now_ms: u64) {
        let expired: Vec<_> = match worker.held.try_borrow_mut() {
            Ok(mut held) => {
                let (gone, keep) = std::mem::take(&mut held.waiting)
                    .into_iter()
                    .partition(|(deadline, _)| *deadline <= now_ms);
                held.waiting = keep;
                gone
            }
            Err(_) => Vec::new(),
        };
        for cell in expired.into_iter().filter_map(|(_, cell)| cell.upgrade()) {
            let turn = cell
                .exchange
                .try_borrow_mut()
                .ok()
                .and_then(|mut exchange| exchange.on_identity_timeout());
            if let Some(turn) = turn
                && host::set_effective_context(cell.context_id)
            {
                stream::apply(worker, &cell, turn, Origin::Root);
            }
        }
        host::set_effective_context(self.context_id);
    }

    /// Hands the answer to a call dispatched for a resumed stream to it.
    fn relay(
        &self,
        worker: &Worker,
        cell: &std::rc::Rc<StreamCell>,
        headers: usize,
        body_size: usize,
    ) {
        let (status, body) = host::call_answer(headers, body_size);
        if host::set_effective_context(cell.context_id) {
            stream::answer(worker, cell, status, &body, Origin::Root);
        }
        host::set_effective_context(self.context_id);
    }

    /// Sends the closes of ended streams.
    fn send_closes(&self, worker: &Worker) {
        let closes = worker
            .held
            .try_borrow_mut()
            .map(|mut held| std::mem::take(&mut held.closes))
            .unwrap_or_default();
        let shim = &worker.filter.config().shim;
        for close in closes {
            match host::call_shim(shim, &close.path(), &[], Some(&close.body())) {
                Ok(_) => worker.stats.transaction_closed(),
                // The shim's reaper revokes it when the credential expires.
                Err(status) => log::warn!(
                    "ephemera ipt: cannot send a close ({status:?}); the shim will reap it"
                ),
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if self.call.map(|(t, _)| t) != Some(token) {
            let Some(worker) = self.worker.clone() else {
                return;
            };
            // A call of a stream the root resumed, or a close.
            let relayed = worker
                .held
                .try_borrow_mut()
                .ok()
                .and_then(|mut held| held.relayed.remove(&token));
            match relayed {
                Some(cell) => {
                    if let Some(cell) = cell.upgrade() {
                        self.relay(&worker, &cell, headers, body_size);
                    }
                }
                None => {
                    let status = host::call_status(headers);
                    if !matches!(status.as_deref(), Some("204" | "404")) {
                        log::warn!("ephemera ipt: the shim answered a close with {status:?}");
                    }
                }
            }
            return;
        }
        self.call = None;
        let Some(worker) = self.worker.clone() else {
            return;
        };
        let status = host::call_status(headers);
        match status.as_deref() {
            Some("200") => {
                let body = host::call_response_body(body_size);
                match WorkloadIdentity::from_json(&body) {
                    Ok(identity) => {
                        self.failing = false;
                        if let Ok(mut state) = worker.state.try_borrow_mut() {
                            state.confirm(host::now_ms());
                        }
                        if worker.version().as_deref() != Some(identity.version.as_str()) {
                            self.install(&worker, identity);
                        }
                    }
                    Err(e) => self.fetch_failed(&worker, &format!("identity refused: {e}")),
                }
            }
            Some("304") => {
                self.failing = false;
                if let Ok(mut state) = worker.state.try_borrow_mut() {
                    state.confirm(host::now_ms());
                }
            }
            Some(other) => self.fetch_failed(&worker, &format!("shim answered {other}")),
            None => self.fetch_failed(&worker, "shim unreachable or timed out"),
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(Some(bytes)) => bytes,
            _ => Vec::new(),
        };
        match self.configure(&bytes) {
            Ok(()) => {
                let _ = hostcalls::set_tick_period(TICK);
                true
            }
            Err(e) => {
                log::error!("ephemera: refusing to start: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(worker) = self.worker.clone() else {
            return;
        };
        let now_ms = host::now_ms();
        worker.tick(now_ms);
        self.maybe_fetch(&worker, now_ms);
        self.expire_waiting(&worker, now_ms);
        self.send_closes(&worker);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(Stream::new(worker, context_id)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
