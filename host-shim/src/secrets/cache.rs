//! Resolved values kept for as long as their ref allows (`cache_ttl_secs`),
//! by reference, in this process only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sensitive::Sensitive;

/// Values by reference, each with the instant it lapses.
#[derive(Default)]
pub struct ValueCache(Mutex<HashMap<String, (Sensitive, Instant)>>);

impl ValueCache {
    /// The value kept for `reference`, if it has not lapsed.
    pub fn get(&self, reference: &str) -> Option<Sensitive> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, until)| *until > Instant::now());
        map.get(reference).map(|(v, _)| v.clone())
    }

    /// Keeps `value` for `reference` for `ttl_secs`.
    pub fn put(&self, reference: &str, value: &Sensitive, ttl_secs: u64) {
        let until = Instant::now() + Duration::from_secs(ttl_secs);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(reference.to_owned(), (value.clone(), until));
    }
}
