//! The filter's Envoy stats (shown by Envoy under `wasmcustom.`).

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// Every rejection code the core reports, for per-reason counters.
const REJECTION_CODES: [&str; 13] = [
    "bad_path",
    "missing_token",
    "malformed",
    "too_large",
    "bad_header",
    "bad_claims",
    "bad_subject",
    "unknown_identity",
    "wrong_audience",
    "expired",
    "not_yet_valid",
    "bad_signature",
    "crypto_error",
];

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
    pub fn verified(&self, cached: bool, backend: &str) {
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
    pub fn rejected(&self, code: &str, verified_by: Option<&str>) {
        if let Some((_, id)) = self.rejected.iter().find(|(c, _)| *c == code) {
            bump(*id);
        }
        match verified_by {
            Some("envoy") => bump(self.verify_native),
            Some(_) => bump(self.verify_rust),
            None => {}
        }
    }

    /// An authenticated caller was refused by route authorization.
    pub fn forbidden(&self) {
        bump(self.forbidden);
    }

    /// A request on an unauthenticated path.
    pub fn unauthenticated_path(&self) {
        bump(self.unauthenticated_path);
    }

    /// A token was attached (`reused`, or minted by `backend`).
    pub fn minted(&self, reused: bool, backend: &str) {
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

    /// A call to an unmapped destination.
    pub fn unmapped(&self) {
        bump(self.unmapped);
    }

    /// A request waited for the first identity.
    pub fn awaited_identity(&self) {
        bump(self.awaited_identity);
    }

    /// A request got 503: the identity was not confirmed recently enough.
    pub fn identity_stale(&self) {
        bump(self.identity_stale);
    }

    /// A request got 503 (no identity in time).
    pub fn unavailable(&self) {
        bump(self.unavailable);
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

    /// A transaction was opened and its credential handed to the app.
    pub fn transaction_opened(&self) {
        bump(self.txn_opened);
    }

    /// The shim's policy denied a transaction.
    pub fn transaction_denied(&self) {
        bump(self.txn_denied);
    }

    /// A transaction could not be opened (shim, broker or ledger failure).
    pub fn transaction_failed(&self) {
        bump(self.txn_failed);
    }

    /// A close was sent to the shim.
    pub fn transaction_closed(&self) {
        bump(self.txn_closed);
    }

    /// A request on a transaction route could not be mapped (400).
    pub fn transaction_unmappable(&self) {
        bump(self.txn_unmappable);
    }

    /// The caller had too many transactions open (429).
    pub fn transaction_limited(&self) {
        bump(self.txn_limited);
    }

    /// An egress secret was injected.
    pub fn egress_injected(&self) {
        bump(self.egress_injected);
    }

    /// The shim refused an egress secret (403).
    pub fn egress_denied(&self) {
        bump(self.egress_denied);
    }

    /// An egress secret was unavailable (503).
    pub fn egress_failed(&self) {
        bump(self.egress_failed);
    }
}
