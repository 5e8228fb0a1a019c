//! The filter's Envoy stats (shown by Envoy under `wasmcustom.`). Counters
//! are counted in the VM and handed to Envoy on the root's tick, so a
//! request costs no host call for them; gauges are set at once (they change
//! rarely).

use std::cell::Cell;

use ephemera_core::filter::Note;
use ephemera_core::filter::Rejection;
use ephemera_core::filter::note::REJECTION_CODES;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// Metric ids, defined once per root context, and the counts not yet flushed.
#[derive(Debug, Default)]
pub struct Stats {
    verified: Counter,
    cache_hits: Counter,
    verify_native: Counter,
    verify_rust: Counter,
    forbidden: Counter,
    rejected: Vec<(&'static str, Counter)>,
    unauthenticated_path: Counter,
    minted: Counter,
    mint_reused: Counter,
    mint_native: Counter,
    mint_rust: Counter,
    unmapped: Counter,
    awaited_identity: Counter,
    identity_stale: Counter,
    unavailable: Counter,
    identity_generation: Option<u32>,
    identity_reloads: Counter,
    reload_failures: Counter,
    crypto_native: Option<u32>,
    txn_opened: Counter,
    txn_denied: Counter,
    txn_failed: Counter,
    txn_closed: Counter,
    txn_unmappable: Counter,
    txn_limited: Counter,
    egress_injected: Counter,
    egress_denied: Counter,
    egress_failed: Counter,
    wimse_proved: Counter,
}

/// A counter: its metric id and the count not yet handed to Envoy.
#[derive(Debug, Default)]
struct Counter {
    id: Option<u32>,
    pending: Cell<u64>,
}

impl Counter {
    fn bump(&self) {
        self.pending.set(self.pending.get() + 1);
    }

    fn flush(&self) {
        let pending = self.pending.take();
        if let (Some(id), 1..) = (self.id, pending) {
            let _ = hostcalls::increment_metric(id, pending as i64);
        }
    }
}

fn counter(name: &str) -> Counter {
    Counter {
        id: hostcalls::define_metric(MetricType::Counter, name).ok(),
        pending: Cell::new(0),
    }
}

fn gauge(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Gauge, name).ok()
}

fn set(gauge: Option<u32>, value: u64) {
    if let Some(id) = gauge {
        let _ = hostcalls::record_metric(id, value);
    }
}

impl Stats {
    /// Counts a note of the core; `backend` is the signature backend's name.
    pub fn note(&self, note: &Note, backend: &str) {
        match note {
            Note::Verified { cached } => self.verified(*cached, backend),
            Note::Rejected(Rejection::IdentityStale) => self.identity_stale.bump(),
            Note::Rejected(rejection) => {
                self.rejected(rejection.code(), note.ran_crypto().then_some(backend))
            }
            Note::Forbidden(_) => self.forbidden.bump(),
            Note::Unauthenticated => self.unauthenticated_path.bump(),
            Note::BadPath => self.rejected("bad_path", None),
            Note::AwaitedIdentity => self.awaited_identity.bump(),
            Note::Unavailable => self.unavailable.bump(),
            Note::TransactionUnmappable(_) => self.txn_unmappable.bump(),
            Note::TransactionOpened => self.txn_opened.bump(),
            Note::TransactionDenied(_) => self.txn_denied.bump(),
            Note::TransactionLimited => self.txn_limited.bump(),
            Note::TransactionFailed(_) => self.txn_failed.bump(),
            Note::Minted { reused } => self.minted(*reused, backend),
            Note::Unmapped { .. } => self.unmapped.bump(),
            Note::Proved => self.wimse_proved.bump(),
            Note::MintFailed(_) | Note::NoWit => {}
            Note::EgressInjected => self.egress_injected.bump(),
            Note::EgressDenied(_) => self.egress_denied.bump(),
            Note::EgressFailed(..) => self.egress_failed.bump(),
        }
    }

    /// Defines the metrics under `ephemera.<direction>.`.
    pub fn define(direction: &str) -> Self {
        let n = |s: &str| format!("ephemera.{direction}.{s}");
        Self {
            verified: counter(&n("verified")),
            cache_hits: counter(&n("cache_hits")),
            verify_native: counter(&n("verify_native")),
            verify_rust: counter(&n("verify_rust")),
            forbidden: counter(&n("forbidden")),
            rejected: REJECTION_CODES
                .iter()
                .map(|code| (*code, counter(&n(&format!("rejected.{code}")))))
                .collect(),
            unauthenticated_path: counter(&n("unauthenticated_path")),
            minted: counter(&n("minted")),
            mint_reused: counter(&n("mint_reused")),
            mint_native: counter(&n("mint_native")),
            mint_rust: counter(&n("mint_rust")),
            unmapped: counter(&n("unmapped")),
            awaited_identity: counter(&n("awaited_identity")),
            identity_stale: counter(&n("identity_stale")),
            unavailable: counter(&n("unavailable")),
            identity_generation: gauge(&n("identity_generation")),
            identity_reloads: counter(&n("identity_reloads")),
            reload_failures: counter(&n("reload_failures")),
            crypto_native: gauge(&n("crypto_native")),
            txn_opened: counter(&n("transactions.opened")),
            txn_denied: counter(&n("transactions.denied")),
            txn_failed: counter(&n("transactions.failed")),
            txn_closed: counter(&n("transactions.closed")),
            txn_unmappable: counter(&n("transactions.unmappable")),
            txn_limited: counter(&n("transactions.limited")),
            egress_injected: counter(&n("egress.injected")),
            egress_denied: counter(&n("egress.denied")),
            egress_failed: counter(&n("egress.failed")),
            wimse_proved: counter(&n("wimse.proved")),
        }
    }

    /// A caller was verified (`cached`: by the cache; else by `backend`).
    fn verified(&self, cached: bool, backend: &str) {
        self.verified.bump();
        if cached {
            self.cache_hits.bump();
        } else if backend == "envoy" {
            self.verify_native.bump();
        } else {
            self.verify_rust.bump();
        }
    }

    /// A request was rejected with 401 for `code`.
    fn rejected(&self, code: &str, verified_by: Option<&str>) {
        if let Some((_, id)) = self.rejected.iter().find(|(c, _)| *c == code) {
            id.bump();
        }
        match verified_by {
            Some("envoy") => self.verify_native.bump(),
            Some(_) => self.verify_rust.bump(),
            None => {}
        }
    }

    /// A token was attached (`reused`, or minted by `backend`).
    fn minted(&self, reused: bool, backend: &str) {
        if reused {
            self.mint_reused.bump();
        } else {
            self.minted.bump();
            if backend == "envoy" {
                self.mint_native.bump();
            } else {
                self.mint_rust.bump();
            }
        }
    }

    /// Hands the counts since the last flush to Envoy (on the root's tick).
    pub fn flush(&self) {
        let counters = [
            &self.verified,
            &self.cache_hits,
            &self.verify_native,
            &self.verify_rust,
            &self.forbidden,
            &self.unauthenticated_path,
            &self.minted,
            &self.mint_reused,
            &self.mint_native,
            &self.mint_rust,
            &self.unmapped,
            &self.awaited_identity,
            &self.identity_stale,
            &self.unavailable,
            &self.identity_reloads,
            &self.reload_failures,
            &self.txn_opened,
            &self.txn_denied,
            &self.txn_failed,
            &self.txn_closed,
            &self.txn_unmappable,
            &self.txn_limited,
            &self.egress_injected,
            &self.egress_denied,
            &self.egress_failed,
            &self.wimse_proved,
        ];
        for counter in counters
            .into_iter()
            .chain(self.rejected.iter().map(|(_, c)| c))
        {
            counter.flush();
        }
    }

    /// A new identity was loaded.
    pub fn identity_loaded(&self, generation: u64) {
        self.identity_reloads.bump();
        set(self.identity_generation, generation);
    }

    /// A fetched identity was refused, or the fetch failed.
    pub fn reload_failed(&self) {
        self.reload_failures.bump();
    }

    /// Which backend signs and verifies (1: Envoy native, 0: pure Rust).
    pub fn crypto_backend(&self, native: bool) {
        set(self.crypto_native, u64::from(native));
    }

    /// A close was sent to the shim.
    pub fn transaction_closed(&self) {
        self.txn_closed.bump();
    }
}
