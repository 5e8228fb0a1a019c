//! A bound on each caller's concurrently open transactions: every open
//! costs a broker policy, a credential and a durable ledger record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use ephemera_core::SpiffeId;

/// Counts open transactions per caller against a limit.
#[derive(Debug, Clone)]
pub struct CallerLimit {
    max: usize,
    counts: Arc<Mutex<HashMap<SpiffeId, usize>>>,
}

/// One caller's place among its open transactions, held from the open's
/// start until its record is dropped (closed, failed or expired).
#[derive(Debug)]
pub struct Slot {
    caller: SpiffeId,
    counts: Arc<Mutex<HashMap<SpiffeId, usize>>>,
}

impl CallerLimit {
    /// At most `max` open transactions per caller.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            counts: Arc::default(),
        }
    }

    /// A slot for `caller`, or `None` when it has `max` open already.
    pub fn take(&self, caller: &SpiffeId) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(caller.clone()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            caller: caller.clone(),
            counts: Arc::clone(&self.counts),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.caller) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_at_most_max_slots_and_a_dropped_slot_frees_its_place() {
        let limit = CallerLimit::new(2);
        let a: SpiffeId = "spiffe://example.org/a".parse().unwrap();
        let b: SpiffeId = "spiffe://example.org/b".parse().unwrap();
        let first = limit.take(&a).unwrap();
        let _second = limit.take(&a).unwrap();
        assert!(limit.take(&a).is_none(), "a third is refused");
        assert!(limit.take(&b).is_some(), "others are not affected");
        drop(first);
        assert!(
            limit.take(&a).is_some(),
            "a closed transaction frees its place"
        );
    }
}
