//! What the host keeps for one VM, and the effects it records.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::super::abi::Headers;
use super::super::foreign::HostCrypto;

/// A call the filter dispatched.
#[derive(Debug, Clone)]
pub struct DispatchedCall {
    /// The token the host gave it.
    pub token: u32,
    /// The context that dispatched it (gets the response).
    pub context_id: u32,
    /// The cluster.
    pub cluster: String,
    /// Request headers.
    pub headers: Headers,
    /// Request body.
    pub body: Vec<u8>,
    /// Timeout, milliseconds.
    pub timeout_ms: u64,
    /// When it was dispatched (host clock, ms).
    pub at_ms: u64,
}

impl DispatchedCall {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// A local reply the filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// Status.
    pub status: u32,
    /// Body.
    pub body: String,
    /// Headers.
    pub headers: Headers,
}

/// Everything the host keeps for one VM.
pub struct HostState {
    /// Host clock, Unix milliseconds (moves only when told to).
    pub now_ms: u64,
    pub(super) rng: u64,
    /// Log lines (level, message), WASI stdout/stderr included.
    pub logs: Vec<(i32, String)>,
    pub(super) effective: u32,
    pub(super) contexts: HashSet<u32>,
    pub(super) plugin_config: Vec<u8>,
    pub(super) request_headers: HashMap<u32, Headers>,
    pub(super) response_headers: HashMap<u32, Headers>,
    /// Local replies by stream.
    pub replies: HashMap<u32, LocalReply>,
    /// Streams the filter resumed.
    pub resumed: HashSet<u32>,
    pub(super) crypto: HostCrypto,
    /// The tick period the root asked for, ms (0: none).
    pub tick_ms: u64,
    pub(super) next_token: u32,
    /// Calls dispatched and not answered yet.
    pub pending: Vec<DispatchedCall>,
    /// Every call dispatched, in order.
    pub dispatched: Vec<DispatchedCall>,
    pub(super) clusters: HashSet<String>,
    pub(super) delivering: Option<(Headers, Vec<u8>)>,
    /// Metrics by name.
    pub metrics: BTreeMap<String, i64>,
    pub(super) metric_ids: Vec<String>,
    pub(super) properties: HashMap<String, Vec<u8>>,
}

impl HostState {
    pub(super) fn next_random(&mut self) -> u64 {
        // splitmix64: reproducible, not for secrets outside this harness.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
