//! The root context: configuration, the crypto self-test, and identity
//! refresh — one fetcher per Envoy (a lease in shared data), every worker
//! picking the published identity up from shared data.

use std::rc::Rc;
use std::time::Duration;

use ephemera_core::filter::{CryptoChoice, FilterConfig, WorkloadIdentity};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use crate::host;
use crate::native_crypto;
use crate::stats::Stats;
use crate::stream::{Stream, handle, reply_unavailable};
use crate::worker::{Backend, Worker};

/// Shared data key of the published identity document.
const IDENTITY_KEY: &str = "ephemera.identity";
/// Shared data key of the published identity's version (small; read every tick).
const VERSION_KEY: &str = "ephemera.identity.version";
/// Shared data key of the fetch lease: `<holder>:<expires ms>`.
const LEASE_KEY: &str = "ephemera.fetch_lease";
/// Tick period: how often shared data is checked and waiting streams expire.
const TICK: Duration = Duration::from_millis(100);

/// The root context of one filter instance on one worker.
pub struct Root {
    context_id: u32,
    instance: u64,
    worker: Option<Rc<Worker>>,
    /// The identity fetch in flight: (call token, deadline ms).
    call: Option<(u32, u64)>,
    next_fetch_ms: u64,
    failing: bool,
    /// Version of a shared identity that was refused (reported once).
    refused_version: Option<Vec<u8>>,
}

impl Root {
    /// A fresh, unconfigured root.
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            refused_version: None,
            // Distinguishes lease holders; a failed draw only risks a shared lease.
            instance: getrandom::u64().unwrap_or_default(),
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
        let backend = match config.crypto {
            CryptoChoice::Rust => Backend::Rust,
            CryptoChoice::Auto => match native_crypto::self_test() {
                Ok(()) => Backend::Envoy,
                Err(e) => {
                    log::warn!("ephemera: native crypto unavailable ({e}); using pure Rust");
                    Backend::Rust
                }
            },
        };
        let stats = Stats::define(direction);
        stats.crypto_backend(matches!(backend, Backend::Envoy));
        log::info!(
            "ephemera: {direction} filter configured (crypto: {})",
            match backend {
                Backend::Envoy => "envoy native",
                Backend::Rust => "pure rust",
            }
        );
        self.worker = Some(Worker::new(config, backend, stats));
        Ok(())
    }

    /// Picks up an identity another root published.
    fn sync_from_shared(&mut self, worker: &Worker) {
        let (Some(version), _) = host::shared_get(VERSION_KEY) else {
            return;
        };
        if worker.version().as_deref().map(str::as_bytes) == Some(version.as_slice())
            || self.refused_version.as_ref() == Some(&version)
        {
            return;
        }
        let (Some(doc), _) = host::shared_get(IDENTITY_KEY) else {
            return;
        };
        match WorkloadIdentity::from_json(&doc) {
            Ok(identity) => self.install(worker, identity),
            Err(e) => {
                worker.stats.reload_failed();
                log::error!("ephemera: shared identity refused: {e}");
                self.refused_version = Some(version);
            }
        }
    }

    fn install(&self, worker: &Worker, identity: WorkloadIdentity) {
        log::info!(
            "ephemera: identity {} generation {} in force",
            identity.id(),
            identity.generation
        );
        worker.install(identity);
        let waiting = worker
            .state
            .try_borrow_mut()
            .map(|mut s| std::mem::take(&mut s.waiting))
            .unwrap_or_default();
        for (context_id, _) in waiting {
            if host::set_effective_context(context_id) {
                handle(worker, context_id, true);
            }
        }
        // Later calls (the next fetch) must belong to the root, not to the
        // last stream resumed.
        host::set_effective_context(self.context_id);
    }

    /// Takes or renews the fetch lease; true when this root holds it.
    fn lease(&self, now_ms: u64, lease_ms: u64) -> bool {
        let (value, cas) = host::shared_get(LEASE_KEY);
        if let Some(value) = value {
            let text = String::from_utf8_lossy(&value);
            if let Some((holder, expires)) = text.split_once(':') {
                let held_by_other = holder != format!("{:016x}", self.instance);
                let live = expires.parse::<u64>().is_ok_and(|e| e > now_ms);
                if held_by_other && live {
                    return false;
                }
            }
        }
        // Longer than a fetch may take, so two fetches never overlap.
        let lease = format!("{:016x}:{}", self.instance, now_ms + lease_ms);
        host::shared_set(LEASE_KEY, lease.as_bytes(), cas)
    }

    fn maybe_fetch(&mut self, worker: &Worker, now_ms: u64) {
        let shim = &worker.config.shim;
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
        if !self.lease(now_ms, shim.timeout_ms + 2 * shim.poll_ms) {
            return;
        }
        let etag = worker.version().map(|v| format!("\"{v}\""));
        let mut headers = vec![
            (":method", "GET"),
            (":path", "/v1/identity"),
            (":authority", shim.authority.as_str()),
        ];
        if let Some(etag) = etag.as_deref() {
            headers.push(("if-none-match", etag));
        }
        host::set_effective_context(self.context_id);
        let deadline = now_ms + shim.timeout_ms + 1000;
        self.call = host::dispatch(
            &shim.cluster,
            headers,
            Duration::from_millis(shim.timeout_ms),
        )
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

    fn expire_waiting(&self, worker: &Worker, now_ms: u64) {
        let expired: Vec<u32> = match worker.state.try_borrow_mut() {
            Ok(mut state) => {
                let (gone, keep): (Vec<_>, Vec<_>) = state
                    .waiting
                    .drain(..)
                    .partition(|(_, deadline)| *deadline <= now_ms);
                state.waiting = keep;
                gone.into_iter().map(|(id, _)| id).collect()
            }
            Err(_) => Vec::new(),
        };
        for context_id in expired {
            if host::set_effective_context(context_id) {
                reply_unavailable(worker);
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
            // An open dispatched while resuming a stream, or a close.
            if let Some(worker) = self.worker.clone()
                && !crate::ipt::open_response(&worker, token, headers, body_size)
            {
                let status = host::call_status(headers);
                if !matches!(status.as_deref(), Some("204" | "404")) {
                    log::warn!("ephemera ipt: the shim answered a close with {status:?}");
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
                        if worker.version().as_deref() != Some(identity.version.as_str()) {
                            host::shared_set(IDENTITY_KEY, &body, None);
                            host::shared_set(VERSION_KEY, identity.version.as_bytes(), None);
                            self.install(&worker, identity);
                        }
                    }
                    Err(e) => self.fetch_failed(&worker, &format!("identity refused: {e}")),
                }
            }
            Some("304") => self.failing = false,
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
        self.sync_from_shared(&worker);
        self.maybe_fetch(&worker, now_ms);
        self.expire_waiting(&worker, now_ms);
        crate::ipt::send_closes(&worker);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(Stream::new(worker, context_id)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
