//! Proof `jti`s seen within their lifetime. A guard answers whether a
//! proof is used for the first time; the Envoy filter shares one among its
//! workers through a ring of buckets ([`admit`]), other hosts keep one in
//! memory ([`MemoryReplay`]).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::spiffe_id::SpiffeId;

/// Seconds in the ring: a second of `lapses_at` has its buckets, reused
/// after this many seconds, so no proof may live longer.
pub const RING_SECONDS: u64 = 128;
/// Buckets per second, chosen by the key's first byte: each write copies
/// one small bucket, and a second holds up to `SHARDS × MAX_PER_BUCKET`.
pub const SHARDS: u8 = 64;
/// Most proofs remembered per bucket.
pub const MAX_PER_BUCKET: usize = 4096;

/// A proof's identity in the cache: its sender and `jti`, hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayKey([u8; 16]);

impl ReplayKey {
    /// The key of `caller`'s proof `jti`.
    pub fn new(caller: &SpiffeId, jti: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(caller.as_str())
            .chain_update([0])
            .chain_update(jti)
            .finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        Self(key)
    }
}

/// Remembers proofs until they lapse.
pub trait ReplayGuard {
    /// True the first time `key` is presented; false for a replay. It is
    /// remembered until `lapses_at` (Unix seconds). `Err` names why the
    /// cache could not answer.
    fn first_use(&self, key: ReplayKey, lapses_at: u64, now: u64) -> Result<bool, String>;
}

/// One process's memory, bounded: lapsed entries go first, and a full
/// cache refuses rather than forgets.
#[derive(Debug)]
pub struct MemoryReplay {
    seen: Mutex<HashMap<ReplayKey, u64>>,
    capacity: usize,
}

impl MemoryReplay {
    /// A cache of at most `capacity` live proofs.
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            capacity,
        }
    }
}

impl Default for MemoryReplay {
    fn default() -> Self {
        Self::new(1 << 16)
    }
}

impl ReplayGuard for MemoryReplay {
    fn first_use(&self, key: ReplayKey, lapses_at: u64, now: u64) -> Result<bool, String> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| "replay cache poisoned".to_owned())?;
        if seen.get(&key).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, until| *until > now);
            if seen.len() >= self.capacity {
                return Err("replay cache full".into());
            }
        }
        seen.insert(key, lapses_at);
        Ok(true)
    }
}

/// The ring bucket proof `key`, lapsing at `lapses_at`, lives in.
pub fn bucket_name(lapses_at: u64, key: &ReplayKey) -> String {
    slot(lapses_at % RING_SECONDS, key.0[0] % SHARDS)
}

/// Every bucket of the ring.
pub fn bucket_names() -> impl Iterator<Item = String> {
    (0..RING_SECONDS).flat_map(|second| (0..SHARDS).map(move |shard| slot(second, shard)))
}

fn slot(second: u64, shard: u8) -> String {
    format!("ephemera.wpt.{second}.{shard}")
}

/// Why a bucket could not take a proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    /// The bytes are not a bucket.
    #[error("replay bucket is malformed")]
    Malformed,
    /// The bucket holds [`MAX_PER_BUCKET`] proofs.
    #[error("replay bucket is full")]
    Full,
}

/// Adds `key` to the bucket `stored` (as read; `None`: never written) for
/// proofs lapsing at `lapses_at`: the bytes to write back, or `None` for a
/// replay. A bucket left by another second of the ring is started afresh.
/// Layout: `lapses_at` as 8 bytes little-endian, then 16-byte keys.
pub fn admit(
    stored: Option<&[u8]>,
    key: ReplayKey,
    lapses_at: u64,
) -> Result<Option<Vec<u8>>, BucketError> {
    let current = match stored {
        Some(bytes) if !bytes.is_empty() => {
            if bytes.len() < 8 || (bytes.len() - 8) % 16 != 0 {
                return Err(BucketError::Malformed);
            }
            let (second, keys) = bytes.split_at(8);
            let second = u64::from_le_bytes(second.try_into().map_err(|_| BucketError::Malformed)?);
            (second == lapses_at).then_some(keys)
        }
        _ => None,
    };
    let keys = current.unwrap_or_default();
    if keys.chunks_exact(16).any(|k| k == key.0) {
        return Ok(None);
    }
    if keys.len() / 16 >= MAX_PER_BUCKET {
        return Err(BucketError::Full);
    }
    let mut bucket = Vec::with_capacity(8 + keys.len() + 16);
    bucket.extend_from_slice(&lapses_at.to_le_bytes());
    bucket.extend_from_slice(keys);
    bucket.extend_from_slice(&key.0);
    Ok(Some(bucket))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(jti: &str) -> ReplayKey {
        ReplayKey::new(
            &SpiffeId::parse("spiffe://example.org/orders").unwrap(),
            jti,
        )
    }

    #[test]
    fn a_bucket_takes_a_proof_once_and_forgets_it_with_its_second() {
        let first = admit(None, key("a"), 1000).unwrap().unwrap();
        let second = admit(Some(&first), key("b"), 1000).unwrap().unwrap();
        assert_eq!(admit(Some(&second), key("a"), 1000), Ok(None));
        assert_eq!(admit(Some(&second), key("b"), 1000), Ok(None));
        // The same slot one ring later: the old second's proofs are gone.
        let later = admit(Some(&second), key("a"), 1000 + RING_SECONDS).unwrap();
        assert_eq!(later.map(|b| b.len()), Some(8 + 16));
        assert_eq!(
            bucket_name(1000, &key("a")),
            bucket_name(1000 + RING_SECONDS, &key("a"))
        );
        assert!(bucket_names().any(|name| name == bucket_name(1000, &key("a"))));
        assert_eq!(
            bucket_names().count(),
            RING_SECONDS as usize * SHARDS as usize
        );
        assert_eq!(
            admit(Some(&[1, 2, 3]), key("a"), 1000),
            Err(BucketError::Malformed)
        );
    }

    #[test]
    fn the_same_jti_from_another_sender_is_another_proof() {
        let other = ReplayKey::new(&SpiffeId::parse("spiffe://example.org/x").unwrap(), "a");
        assert_ne!(other, key("a"));
    }

    #[test]
    fn memory_forgets_lapsed_proofs_and_refuses_when_full_of_live_ones() {
        let memory = MemoryReplay::new(2);
        assert_eq!(memory.first_use(key("a"), 10, 0), Ok(true));
        assert_eq!(memory.first_use(key("a"), 10, 5), Ok(false));
        assert_eq!(memory.first_use(key("b"), 10, 5), Ok(true));
        assert!(memory.first_use(key("c"), 10, 5).is_err());
        assert_eq!(memory.first_use(key("c"), 20, 11), Ok(true));
        assert_eq!(memory.first_use(key("a"), 20, 11), Ok(true));
    }
}
