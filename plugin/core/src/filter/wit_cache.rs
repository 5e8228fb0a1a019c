//! Verified Workload Identity Tokens of one worker. A WIT lives for hours
//! and comes with every proof, so its signature is checked once per WIT
//! while the identity in force stays: the cache is cleared with every new
//! identity (bundle, issuers, bindings), so a removal or a new proof key
//! takes effect as for uncached WITs. Proofs are never cached.

use std::num::NonZeroUsize;
use std::sync::Arc;

use foldhash::fast::FixedState;
use lru::LruCache;

use super::token_cache::seeded_hasher;
use crate::wimse::{MAX_WIT_BYTES, VerifiedWit};

/// Entries per worker: one per calling workload is enough.
pub const WIT_CACHE_SIZE: usize = 64;

/// A verified WIT and the Unix second it lapses.
type Entry = (Arc<VerifiedWit>, u64);

/// Verified WITs keyed by their text, each until it lapses.
#[derive(Debug)]
pub struct WitCache {
    entries: Option<LruCache<Box<str>, Entry, FixedState>>,
}

impl Default for WitCache {
    fn default() -> Self {
        Self::new(WIT_CACHE_SIZE)
    }
}

impl WitCache {
    /// A cache of at most `capacity` WITs (0, or a host without randomness
    /// for the seed: none).
    pub fn new(capacity: usize) -> Self {
        let entries = NonZeroUsize::new(capacity)
            .zip(seeded_hasher())
            .map(|(cap, hasher)| LruCache::with_hasher(cap, hasher));
        Self { entries }
    }

    /// The verified WIT, while it has not lapsed.
    pub fn get(&mut self, wit: &str, now: u64) -> Option<Arc<VerifiedWit>> {
        let entries = self.entries.as_mut()?;
        match entries.get(wit) {
            Some((verified, lapses_at)) if now < *lapses_at => Some(Arc::clone(verified)),
            Some(_) => {
                entries.pop(wit);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified WIT until `lapses_at` (exp plus leeway).
    pub fn insert(&mut self, wit: &str, verified: Arc<VerifiedWit>, lapses_at: u64) {
        if let Some(entries) = self.entries.as_mut()
            && wit.len() <= MAX_WIT_BYTES
        {
            entries.put(wit.into(), (verified, lapses_at));
        }
    }

    /// Forgets everything (identity change).
    pub fn clear(&mut self) {
        if let Some(entries) = self.entries.as_mut() {
            entries.clear();
        }
    }
}
