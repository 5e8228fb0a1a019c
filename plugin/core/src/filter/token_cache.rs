//! A bounded cache of verified tokens: least recently used entries go first,
//! every entry lapses with its token, and the whole cache is cleared when the
//! identity (bundle) changes.

use std::num::NonZeroUsize;

use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::spiffe_id::SpiffeId;

/// Default number of entries.
pub const DEFAULT_CACHE_SIZE: usize = 1024;

#[derive(Debug, Clone)]
struct Entry {
    caller: SpiffeId,
    /// Unix second from which the token no longer verifies.
    lapses_at: u64,
}

/// Verified tokens keyed by the SHA-256 of the whole token.
#[derive(Debug)]
pub struct TokenCache {
    entries: Option<LruCache<[u8; 32], Entry>>,
}

impl TokenCache {
    /// A cache of at most `capacity` entries; 0 disables caching.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: NonZeroUsize::new(capacity).map(LruCache::new),
        }
    }

    fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The caller of a cached, still valid token.
    pub fn get(&mut self, token: &str, now: u64) -> Option<SpiffeId> {
        let entries = self.entries.as_mut()?;
        let key = Self::key(token);
        match entries.get(&key) {
            Some(e) if now < e.lapses_at => Some(e.caller.clone()),
            Some(_) => {
                entries.pop(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token until `lapses_at` (exp plus leeway).
    pub fn insert(&mut self, token: &str, caller: SpiffeId, lapses_at: u64) {
        if let Some(entries) = self.entries.as_mut() {
            entries.put(Self::key(token), Entry { caller, lapses_at });
        }
    }

    /// Forgets everything (identity change, revocation).
    pub fn clear(&mut self) {
        if let Some(entries) = self.entries.as_mut() {
            entries.clear();
        }
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, LruCache::len)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn entries_lapse_with_their_token() {
        let mut c = TokenCache::new(4);
        c.insert("t", id("spiffe://e.org/a"), 100);
        assert_eq!(c.get("t", 99), Some(id("spiffe://e.org/a")));
        assert_eq!(c.get("t", 100), None);
        assert!(c.is_empty());
    }

    #[test]
    fn the_least_recently_used_entry_is_evicted_first() {
        let mut c = TokenCache::new(2);
        c.insert("a", id("spiffe://e.org/a"), 100);
        c.insert("b", id("spiffe://e.org/b"), 100);
        c.get("a", 0);
        c.insert("c", id("spiffe://e.org/c"), 100);
        assert!(c.get("b", 0).is_none());
        assert!(c.get("a", 0).is_some() && c.get("c", 0).is_some());
    }

    #[test]
    fn clearing_forgets_everything_and_zero_capacity_caches_nothing() {
        let mut c = TokenCache::new(2);
        c.insert("a", id("spiffe://e.org/a"), 100);
        c.clear();
        assert!(c.get("a", 0).is_none());
        let mut off = TokenCache::new(0);
        off.insert("a", id("spiffe://e.org/a"), 100);
        assert!(off.get("a", 0).is_none());
    }
}
