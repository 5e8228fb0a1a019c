//! The hit path: a request whose token the worker already verified is
//! decided without one heap allocation (the host's own header reads aside),
//! and, when no rule looks at the path, with one header read and two edits:
//! the token removed and the caller set (setting replaces any forged copy).

// Counting allocations takes a global allocator, an unsafe trait.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::{Cell, RefCell};

use common::{Request, bundle, id};
use ephemera_core::filter::edits::Edits;
use ephemera_core::filter::exchange::{Exchange, Filter, RequestView, Step, WorkerState};
use ephemera_core::filter::note::Note;
use ephemera_core::filter::{FilterConfig, WorkloadIdentity};
use ephemera_core::{Minter, PrivateKey, RustCrypto};

/// Counts this thread's allocations.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is forwarded to `System` unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

const BILLING: &str = "spiffe://example.org/billing";
const ORDERS: &str = "spiffe://example.org/orders";
const NOW_MS: u64 = 1_900_000_000_000;

/// A request that records which headers the decision read.
struct Recording {
    request: Request,
    read: RefCell<Vec<&'static str>>,
}

impl RequestView for Recording {
    fn header(&self, name: &str) -> Option<Result<Cow<'_, str>, ()>> {
        let known = [":path", ":method", "authorization", "x-ephemera-caller"];
        let name_read = known.into_iter().find(|k| *k == name).unwrap_or("other");
        self.read.borrow_mut().push(name_read);
        self.request.header(name)
    }
    fn header_values(&self, name: &str) -> Vec<String> {
        self.request.header_values(name)
    }
    fn cluster(&self) -> Option<String> {
        None
    }
}

/// What deciding a request a second time, after its token was verified
/// once, cost: allocations, the headers read and the edits made.
struct Hit {
    allocations: usize,
    read: Vec<&'static str>,
    edits: Edits,
}

fn cache_hit(config: &str, path: &str) -> Hit {
    let (billing, orders) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    let filter = Filter::new(FilterConfig::parse(config.as_bytes()).unwrap(), &RustCrypto);
    let mut worker = WorkerState::new(filter.config());
    worker.install(WorkloadIdentity {
        version: "v1".into(),
        generation: 1,
        bundle: bundle(&[(BILLING, &[&billing]), (ORDERS, &[&orders])]),
        minter: Minter::new(id(BILLING), billing),
        wimse: Default::default(),
    });
    worker.confirm(NOW_MS);
    let token = Minter::new(id(ORDERS), orders)
        .mint(&id(BILLING), NOW_MS / 1000, 60, None, &RustCrypto)
        .unwrap();
    let request = Recording {
        request: Request(vec![
            (":method", "GET".into()),
            (":path", path.into()),
            ("authorization", format!("Bearer {token}")),
        ]),
        read: RefCell::new(Vec::with_capacity(16)),
    };
    let first = Exchange::new().on_request(&filter, &mut worker, &request, NOW_MS);
    assert_eq!(
        first.notes().next(),
        Some(&Note::Verified { cached: false })
    );
    request.read.borrow_mut().clear();

    let before = ALLOCATIONS.with(Cell::get);
    let mut exchange = Exchange::new();
    let turn = exchange.on_request(&filter, &mut worker, &request, NOW_MS);
    let allocations = ALLOCATIONS.with(Cell::get) - before;
    assert_eq!(turn.notes().next(), Some(&Note::Verified { cached: true }));
    let Step::Forward(edits) = turn.step else {
        panic!("forwarded: {turn:?}");
    };
    assert_eq!(&*edits.set[0].1, ORDERS);
    Hit {
        allocations,
        read: request.read.into_inner(),
        edits,
    }
}

#[test]
fn without_path_rules_a_cache_hit_reads_one_header_and_makes_two_edits() {
    let hit = cache_hit(r#"{"direction": "inbound"}"#, "/orders/1");
    assert_eq!(hit.read, ["authorization"]);
    let removed: Vec<&str> = hit.edits.remove.iter().map(|n| &**n).collect();
    let set: Vec<&str> = hit.edits.set.iter().map(|(n, _)| &**n).collect();
    assert_eq!(
        (removed, set),
        (vec!["authorization"], vec!["x-ephemera-caller"])
    );
}

#[test]
fn with_path_rules_the_path_is_read_and_checked() {
    let config = r#"{"direction": "inbound", "inbound": {"unauthenticated": ["/healthz"]}}"#;
    assert_eq!(
        cache_hit(config, "/orders/1").read,
        [":path", "authorization"]
    );
}

#[test]
fn a_cache_hit_allocates_nothing() {
    let config = r#"{"direction": "inbound"}"#;
    assert_eq!(cache_hit(config, "/orders/1").allocations, 0);
}

#[test]
fn a_cache_hit_under_route_rules_allocates_nothing() {
    let config = r#"{"direction": "inbound", "inbound": {"routes": [
        {"path": "/admin/*", "allow": ["spiffe://example.org/ops"]},
        {"path": "/orders/*", "allow": ["spiffe://example.org/orders"]}]}}"#;
    assert_eq!(cache_hit(config, "/orders/1").allocations, 0);
}
