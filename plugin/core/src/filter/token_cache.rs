//! A bounded cache of verified tokens: least recently used entries go first,
//! every entry lapses with its token, and the whole cache is cleared when the
//! identity (bundle) changes.
//!
//! Entries are keyed on the token's bytes, hashed with a fast hasher seeded
//! at random per cache and compared in full: a caller holding its own key
//! can mint as many tokens as it likes, but cannot aim them at one bucket it
//! does not know, nor make another caller's token answer for its own.

use std::num::NonZeroUsize;

use foldhash::fast::FixedState;
use lru::LruCache;

use crate::spiffe_id::SpiffeId;

/// Default number of entries.
pub const DEFAULT_CACHE_SIZE: usize = 1024;
/// Default bound on the bytes of cached tokens (a token may reach 8 KiB).
pub const DEFAULT_CACHE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
struct Entry {
    caller: SpiffeId,
    /// Unix second from which the token no longer verifies.
    lapses_at: u64,
}

/// A hasher with a fresh random seed; `None` without randomness.
pub(super) fn seeded_hasher() -> Option<FixedState> {
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).ok()?;
    Some(FixedState::with_seed(u64::from_le_bytes(seed)))
}

/// Verified tokens keyed by their bytes.
#[derive(Debug)]
pub struct TokenCache {
    entries: Option<LruCache<Box<str>, Entry, FixedState>>,
    /// Bytes of the tokens held.
    bytes: usize,
    max_bytes: usize,
}

impl TokenCache {
    /// A cache of at most `capacity` entries holding at most `max_bytes`
    /// of tokens; either 0 disables caching, as does a host without
    /// randomness for the seed.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        let entries = NonZeroUsize::new(capacity)
            .filter(|_| max_bytes > 0)
            .zip(seeded_hasher())
            .map(|(cap, hasher)| LruCache::with_hasher(cap, hasher));
        Self {
            entries,
            bytes: 0,
            max_bytes,
        }
    }

    /// The caller of a cached, still valid token.
    pub fn get(&mut self, token: &str, now: u64) -> Option<SpiffeId> {
        let entries = self.entries.as_mut()?;
        match entries.get(token) {
            Some(e) if now < e.lapses_at => Some(e.caller.clone()),
            Some(_) => {
                entries.pop(token);
                self.bytes -= token.len();
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token until `lapses_at` (exp plus leeway).
    /// A token larger than the whole byte bound is not cached.
    pub fn insert(&mut self, token: &str, caller: SpiffeId, lapses_at: u64) {
        let Some(entries) = self.entries.as_mut() else {
            return;
        };
        if token.len() > self.max_bytes {
            return;
        }
        let entry = Entry { caller, lapses_at };
        if let Some(old) = entries.peek_mut(token) {
            *old = entry;
            return;
        }
        while self.bytes + token.len() > self.max_bytes {
            match entries.pop_lru() {
                Some((key, _)) => self.bytes -= key.len(),
                None => break,
            }
        }
        if let Some((key, _)) = entries.push(token.into(), entry) {
            self.bytes -= key.len();
        }
        self.bytes += token.len();
    }

    /// Forgets everything (identity change, revocation).
    pub fn clear(&mut self) {
        if let Some(entries) = self.entries.as_mut() {
            entries.clear();
        }
        self.bytes = 0;
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, LruCache::len)
    }

    /// Bytes of the tokens held.
    pub fn bytes(&self) -> usize {
        self.bytes
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
        let mut c = TokenCache::new(4, 1024);
        c.insert("t", id("spiffe://e.org/a"), 100);
        assert_eq!(c.get("t", 99), Some(id("spiffe://e.org/a")));
        assert_eq!(c.get("t", 100), None);
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn the_least_recently_used_entry_is_evicted_first() {
        let mut c = TokenCache::new(2, 1024);
        c.insert("a", id("spiffe://e.org/a"), 100);
        c.insert("b", id("spiffe://e.org/b"), 100);
        c.get("a", 0);
        c.insert("c", id("spiffe://e.org/c"), 100);
        assert!(c.get("b", 0).is_none());
        assert!(c.get("a", 0).is_some() && c.get("c", 0).is_some());
        assert_eq!(c.bytes(), 2);
    }

    #[test]
    fn the_byte_bound_evicts_least_recently_used_tokens_and_refuses_giants() {
        let mut c = TokenCache::new(100, 10);
        c.insert("aaaa", id("spiffe://e.org/a"), 100);
        c.insert("bbbb", id("spiffe://e.org/b"), 100);
        c.get("aaaa", 0);
        c.insert("cccc", id("spiffe://e.org/c"), 100);
        assert!(c.get("bbbb", 0).is_none(), "least recently used went first");
        assert!(c.get("aaaa", 0).is_some() && c.get("cccc", 0).is_some());
        assert_eq!(c.bytes(), 8);
        c.insert(&"x".repeat(11), id("spiffe://e.org/x"), 100);
        assert_eq!(
            (c.len(), c.bytes()),
            (2, 8),
            "a token over the bound is not cached"
        );
        c.insert("aaaa", id("spiffe://e.org/a"), 200);
        assert_eq!(
            (c.len(), c.bytes()),
            (2, 8),
            "a refreshed entry is counted once"
        );
    }

    #[test]
    fn only_the_exact_token_answers() {
        let mut c = TokenCache::new(4, 1024);
        c.insert("header.claims.sig", id("spiffe://e.org/a"), 100);
        for other in [
            "header.claims.sig2",
            "header.claims.si",
            "HEADER.claims.sig",
            "",
        ] {
            assert!(c.get(other, 0).is_none(), "{other}");
        }
    }

    #[test]
    fn every_cache_hashes_with_its_own_random_seed() {
        use std::hash::BuildHasher as _;
        let hashes: std::collections::BTreeSet<u64> = (0..4)
            .map(|_| seeded_hasher().unwrap().hash_one("token"))
            .collect();
        assert_eq!(
            hashes.len(),
            4,
            "the same token hashes differently per cache"
        );
    }

    #[test]
    fn clearing_forgets_everything_and_zero_capacity_caches_nothing() {
        let mut c = TokenCache::new(2, 1024);
        c.insert("a", id("spiffe://e.org/a"), 100);
        c.clear();
        assert!(c.get("a", 0).is_none());
        assert_eq!(c.bytes(), 0);
        for mut off in [TokenCache::new(0, 1024), TokenCache::new(2, 0)] {
            off.insert("a", id("spiffe://e.org/a"), 100);
            assert!(off.get("a", 0).is_none());
        }
    }
}
