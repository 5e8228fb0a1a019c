//! The hit path: a request whose token the worker already verified is
//! decided without one heap allocation (the host's own header reads aside).

// Counting allocations takes a global allocator, an unsafe trait.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{Request, bundle, id};
use ephemera_core::filter::exchange::{Exchange, Filter, Step, WorkerState};
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

/// Allocations made while deciding `request` a second time, after its
/// token was verified once.
fn allocations_of_a_cache_hit(config: &str, path: &str) -> usize {
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
    });
    worker.confirm(NOW_MS);
    let token = Minter::new(id(ORDERS), orders)
        .mint(&id(BILLING), NOW_MS / 1000, 60, None, &RustCrypto)
        .unwrap();
    let request = Request(vec![
        (":method", "GET".into()),
        (":path", path.into()),
        ("authorization", format!("Bearer {token}")),
    ]);
    let first = Exchange::new().on_request(&filter, &mut worker, &request, NOW_MS);
    assert_eq!(
        first.notes().next(),
        Some(&Note::Verified { cached: false })
    );

    let before = ALLOCATIONS.with(Cell::get);
    let mut exchange = Exchange::new();
    let turn = exchange.on_request(&filter, &mut worker, &request, NOW_MS);
    let allocations = ALLOCATIONS.with(Cell::get) - before;
    assert_eq!(turn.notes().next(), Some(&Note::Verified { cached: true }));
    let Step::Forward(edits) = &turn.step else {
        panic!("forwarded: {turn:?}");
    };
    assert_eq!(&*edits.set[0].1, ORDERS);
    allocations
}

#[test]
fn a_cache_hit_allocates_nothing() {
    let config = r#"{"direction": "inbound"}"#;
    assert_eq!(allocations_of_a_cache_hit(config, "/orders/1"), 0);
}

#[test]
fn a_cache_hit_under_route_rules_allocates_nothing() {
    let config = r#"{"direction": "inbound", "inbound": {"routes": [
        {"path": "/admin/*", "allow": ["spiffe://example.org/ops"]},
        {"path": "/orders/*", "allow": ["spiffe://example.org/orders"]}]}}"#;
    assert_eq!(allocations_of_a_cache_hit(config, "/orders/1"), 0);
}
