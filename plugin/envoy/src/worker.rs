//! One root context's state, shared with its streams: the configured
//! filter, its stats, what outlives a request (identity and caches), and
//! the few things the root does for streams.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use ephemera_core::Es256;
use ephemera_core::filter::{Exchange, Filter, FilterConfig, ShimCall, WorkerState};

use crate::replay::SharedReplay;
use crate::stats::Stats;

/// A stream's exchange, reachable by the root while the stream waits.
pub struct StreamCell {
    /// The stream's context id.
    pub context_id: u32,
    /// Its life.
    pub exchange: RefCell<Exchange>,
}

/// What the root context does on behalf of streams.
#[derive(Default)]
pub struct Held {
    /// Streams waiting for the first identity, each with its deadline (ms).
    pub waiting: Vec<(u64, Weak<StreamCell>)>,
    /// Calls dispatched while the root resumed a stream: the host answers
    /// them to the root, which hands the answer on (a stream that is gone
    /// has already closed its transaction).
    pub relayed: HashMap<u32, Weak<StreamCell>>,
    /// Transaction closes of ended streams, sent on the root's next tick.
    pub closes: Vec<ShimCall>,
}

/// A configured filter instance on one worker.
pub struct Worker {
    /// The filter, configured once.
    pub filter: Filter,
    /// Metric ids.
    pub stats: Stats,
    /// Identity and caches.
    pub state: RefCell<WorkerState>,
    /// Waiting streams, relayed calls, closes.
    pub held: RefCell<Held>,
    /// Unix ms as of the root's last tick: requests read this clock rather
    /// than the host's, so it lags by at most one tick.
    clock_ms: Cell<u64>,
}

impl Worker {
    /// Builds the worker for a parsed configuration.
    pub fn new(
        config: FilterConfig,
        crypto: &'static dyn Es256,
        stats: Stats,
        now_ms: u64,
    ) -> Rc<Self> {
        let state = WorkerState::new(&config);
        let wimse = config.inbound.wimse.is_some();
        let mut filter = Filter::new(config, crypto);
        if wimse {
            SharedReplay::prepare();
            filter = filter.with_replay(Box::new(SharedReplay));
        }
        Rc::new(Self {
            filter,
            stats,
            state: RefCell::new(state),
            held: RefCell::new(Held::default()),
            clock_ms: Cell::new(now_ms),
        })
    }

    /// Unix ms as of the last tick.
    pub fn now_ms(&self) -> u64 {
        self.clock_ms.get()
    }

    /// Moves the clock to `now_ms` (the root's tick) and hands the counts
    /// since the last tick to Envoy.
    pub fn tick(&self, now_ms: u64) {
        self.clock_ms.set(now_ms);
        self.stats.flush();
    }

    /// The version of the identity in force.
    pub fn version(&self) -> Option<String> {
        self.state
            .try_borrow()
            .ok()
            .and_then(|s| s.identity().map(|i| i.version.clone()))
    }
}
