//! The filter's Envoy stats (shown by Envoy under `wasmcustom.`).

use ephemera_core::filter::Note;
use ephemera_core::filter::Rejection;
use ephemera_core::filter::note::REJECTION_CODES;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// Metric ids, defined once per root context.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    verified: u32,
    cache_hits: u32,
    verify_native: u32,
    verify_rust: u32,
    forbidden: u32,
    rejected: Vec<(&'static str, u32)>,
    unauthenticated_path: u32,
    minted: u32,
    mint_reused: u32,
    mint_native: u32,
    mint_rust: u32,
    unmapped: u32,
    awaited_identity: u32,
    identity_stale: u32,
    unavailable: u32,
    identity_generation: u32,
    identity_reloads: u32,
    reload_failures: u32,
    crypto_native: u32,
    txn_opened: u32,
    txn_denied: u32,
    txn_failed: u32,
    txn_closed: u32,
    txn_unmappable: u32,
    txn_limited: u32,
    egress_injected: u32,
    egress_denied: u32,
    egress_failed: u32,
}

fn counter(name: &str) -> u32 {
    hostcalls::define_metric(MetricType::Counter, name).unwrap_or(u32::MAX)
}

fn gauge(name: &str) -> u32 {
    hostcalls::define_metric(MetricType::Gauge, name).unwrap_or(u32::MAX)
}

fn bump(id: u32) {
    if id != u32::MAX {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

fn set(id: u32, value: u64) {
    if id != u32::MAX {
        let _ = hostcalls::record_metric(id, value);
    }
}

impl Stats {
    /// Counts a note of the core; `backend` is the signature backend's name.
    pub fn note(&self, note: &Note, backend: &str) {
        match note {
            Note::Verified { cached } => self.verified(*cached, backend),
            Note::Rejected(Rejection::IdentityStale) => bump(self.identity_stale),
            Note::Rejected(rejection) => {
                self.rejected(rejection.code(), note.ran_crypto().then_some(backend))
            }
            Note::Forbidden(_) => bump(self.forbidden),
            Note::Unauthenticated => bump(self.unauthenticated_path),
            Note::BadPath => self.rejected("bad_path", None),
            Note::AwaitedIdentity => bump(self.awaited_identity),
            Note::Unavailable => bump(self.unavailable),
            Note::TransactionUnmappable(_) => bump(self.txn_unmappable),
            Note::TransactionOpened => bump(self.txn_opened),
            Note::TransactionDenied(_) => bump(self.txn_denied),
            Note::TransactionLimited => bump(self.txn_limited),
            Note::TransactionFailed(_) => bump(self.txn_failed),
            Note::Minted { reused } => self.minted(*reused, backend),
            Note::Unmapped { .. } => bump(self.unmapped),
            Note::MintFailed(_) => {}
            Note::EgressInjected => bump(self.egress_injected),
            Note::EgressDenied(_) => bump(self.egress_denied),
            Note::EgressFailed(..) => bump(self.egress_failed),
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
        }
    }

    /// A caller was verified (`cached`: by the cache; else by `backend`).
    fn verified(&self, cached: bool, backend: &str) {
        bump(self.verified);
        if cached {
            bump(self.cache_hits);
        } else if backend == "envoy" {
            bump(self.verify_native);
        } else {
            bump(self.verify_rust);
        }
    }

    /// A request was rejected with 401 for `code`.
    fn rejected(&self, code: &str, verified_by: Option<&str>) {
        if let Some((_, id)) = self.rejected.iter().find(|(c, _)| *c == code) {
            bump(*id);
        }
        match verified_by {
            Some("envoy") => bump(self.verify_native),
            Some(_) => bump(self.verify_rust),
            None => {}
        }
    }

    /// A token was attached (`reused`, or minted by `backend`).
    fn minted(&self, reused: bool, backend: &str) {
        if reused {
            bump(self.mint_reused);
        } else {
            bump(self.minted);
            bump(if backend == "envoy" {
                self.mint_native
            } else {
                self.mint_rust
            });
        }
    }

    /// A new identity was loaded.
    pub fn identity_loaded(&self, generation: u64) {
        bump(self.identity_reloads);
        set(self.identity_generation, generation);
    }

    /// A fetched identity was refused, or the fetch failed.
    pub fn reload_failed(&self) {
        bump(self.reload_failures);
    }

    /// Which backend signs and verifies (1: Envoy native, 0: pure Rust).
    pub fn crypto_backend(&self, native: bool) {
        set(self.crypto_native, u64::from(native));
    }

    /// A close was sent to the shim.
    pub fn transaction_closed(&self) {
        bump(self.txn_closed);
    }
}
