//! WIMSE proofs remembered by every worker of this Envoy: a ring of
//! shared-data buckets, 64 per second of lapse, each updated by
//! compare-and-swap so two workers never both admit one proof. Shared data
//! holds only hashes of senders and `jti`s: nothing secret.

use ephemera_core::wimse::{ReplayGuard, ReplayKey, admit, bucket_name, bucket_names};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// Compare-and-swap attempts before giving up (503).
const ATTEMPTS: usize = 16;

/// The Envoy-wide replay cache.
pub struct SharedReplay;

impl SharedReplay {
    /// Creates every bucket that does not exist yet, so each later write
    /// carries a CAS value (a bucket written without one could race).
    pub fn prepare() {
        for name in bucket_names() {
            if matches!(hostcalls::get_shared_data(&name), Ok((None, None))) {
                let _ = hostcalls::set_shared_data(&name, Some(&[]), None);
            }
        }
    }
}

impl ReplayGuard for SharedReplay {
    fn first_use(&self, key: ReplayKey, lapses_at: u64, _now: u64) -> Result<bool, String> {
        let name = bucket_name(lapses_at, &key);
        for _ in 0..ATTEMPTS {
            let (stored, cas) =
                hostcalls::get_shared_data(&name).map_err(|s| format!("shared data: {s:?}"))?;
            let Some(bucket) =
                admit(stored.as_deref(), key, lapses_at).map_err(|e| e.to_string())?
            else {
                return Ok(false);
            };
            match hostcalls::set_shared_data(&name, Some(&bucket), cas) {
                Ok(()) => return Ok(true),
                Err(Status::CasMismatch) => continue,
                Err(s) => return Err(format!("shared data: {s:?}")),
            }
        }
        Err("replay bucket contended".into())
    }
}
