//! One root context's state, shared with its streams: configuration, the
//! loaded identity, the verified-token cache and minted tokens.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use ephemera_core::filter::TransactionPlan;
use ephemera_core::filter::{
    FilterConfig, Inbound, MintedTokens, Outbound, TokenCache, WorkloadIdentity,
};
use ephemera_core::ipt::TransactionOutcome;
use ephemera_core::{Es256, RustCrypto};

use crate::native_crypto::EnvoyCrypto;
use crate::stats::Stats;

/// Which decisions this filter instance makes.
#[derive(Debug)]
pub enum Policy {
    /// Verify callers.
    Inbound(Inbound),
    /// Mint for destinations.
    Outbound(Outbound),
}

/// The signature backend chosen at configure time.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    /// Envoy's BoringSSL through foreign functions.
    Envoy,
    /// Pure Rust.
    Rust,
}

/// Mutable per-worker state.
#[derive(Debug)]
pub struct State {
    /// The identity in force, if any has arrived.
    pub identity: Option<Rc<WorkloadIdentity>>,
    /// When the shim last confirmed it (200 or 304), ms.
    pub confirmed_ms: u64,
    /// Verified tokens.
    pub cache: TokenCache,
    /// Minted tokens for reuse.
    pub minted: MintedTokens,
    /// Streams waiting for the first identity: (context id, deadline ms).
    pub waiting: Vec<(u32, u64)>,
    /// Transaction opens in flight, by call token.
    pub pending_opens: HashMap<u32, PendingOpen>,
    /// Open transactions, by stream context id.
    pub open_txns: HashMap<u32, OpenTxn>,
    /// Transactions to close at the shim (sent by the root context).
    pub closes: Vec<(String, TransactionOutcome)>,
    /// Egress secret lookups in flight: call token → (stream, rule index).
    pub pending_secrets: HashMap<u32, (u32, usize)>,
    /// Egress secrets a ref allows caching: rule index → (value, until ms).
    pub secret_cache: HashMap<usize, (String, u64)>,
}

/// A transaction open waiting for the shim.
#[derive(Debug)]
pub struct PendingOpen {
    /// The stream.
    pub context_id: u32,
    /// What it is scoped to.
    pub plan: TransactionPlan,
    /// Its id.
    pub transaction_id: String,
}

/// An open transaction of a stream.
#[derive(Debug)]
pub struct OpenTxn {
    /// Its id.
    pub transaction_id: String,
    /// The upstream's status, once it answered.
    pub status: Option<u16>,
}

/// A configured filter instance on one worker.
#[derive(Debug)]
pub struct Worker {
    /// The configuration, parsed once.
    pub config: FilterConfig,
    /// The decisions.
    pub policy: Policy,
    /// The signature backend.
    pub backend: Backend,
    /// Metric ids.
    pub stats: Stats,
    /// Mutable state.
    pub state: RefCell<State>,
}

impl Worker {
    /// Builds the worker for a parsed configuration.
    pub fn new(config: FilterConfig, backend: Backend, stats: Stats) -> Rc<Self> {
        let policy = match config.direction {
            ephemera_core::filter::Direction::Inbound => {
                Policy::Inbound(Inbound::new(config.inbound.clone()))
            }
            ephemera_core::filter::Direction::Outbound => {
                Policy::Outbound(Outbound::new(config.outbound.clone()))
            }
        };
        let cache = TokenCache::new(config.inbound.cache_size);
        Rc::new(Self {
            config,
            policy,
            backend,
            stats,
            state: RefCell::new(State {
                identity: None,
                confirmed_ms: 0,
                cache,
                minted: MintedTokens::default(),
                waiting: Vec::new(),
                pending_opens: HashMap::new(),
                open_txns: HashMap::new(),
                closes: Vec::new(),
                pending_secrets: HashMap::new(),
                secret_cache: HashMap::new(),
            }),
        })
    }

    /// The backend as the core takes it.
    pub fn crypto(&self) -> &'static dyn Es256 {
        match self.backend {
            Backend::Envoy => &EnvoyCrypto,
            Backend::Rust => &RustCrypto,
        }
    }

    /// Installs a new identity: swaps it in and forgets every cached token.
    pub fn install(&self, identity: WorkloadIdentity) {
        let generation = identity.generation;
        if let Ok(mut state) = self.state.try_borrow_mut() {
            state.identity = Some(Rc::new(identity));
            state.cache.clear();
            state.minted.clear();
            state.secret_cache.clear();
        }
        self.stats.identity_loaded(generation);
    }

    /// Records that the shim confirmed the identity in force at `now_ms`.
    pub fn confirmed(&self, now_ms: u64) {
        if let Ok(mut state) = self.state.try_borrow_mut() {
            state.confirmed_ms = now_ms;
        }
    }

    /// The version of the identity in force.
    pub fn version(&self) -> Option<String> {
        self.state
            .try_borrow()
            .ok()
            .and_then(|s| s.identity.as_ref().map(|i| i.version.clone()))
    }
}
