//! The proxy-wasm ABI's data formats and codes, host side.

/// Status codes the host returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// No such item.
    NotFound = 1,
    /// The arguments make no sense.
    BadArgument = 2,
    /// Nothing to take (an empty queue).
    Empty = 7,
    /// Compare-and-swap lost.
    CasMismatch = 8,
}

/// Header maps.
pub mod map {
    /// The request headers of the effective stream.
    pub const REQUEST_HEADERS: i32 = 0;
    /// The response headers of the effective stream.
    pub const RESPONSE_HEADERS: i32 = 2;
    /// The headers of the call response being delivered.
    pub const CALL_RESPONSE_HEADERS: i32 = 6;
}

/// Buffers.
pub mod buffer {
    /// The body of the call response being delivered.
    pub const CALL_RESPONSE_BODY: i32 = 4;
    /// The VM configuration.
    pub const VM_CONFIGURATION: i32 = 6;
    /// The plugin configuration.
    pub const PLUGIN_CONFIGURATION: i32 = 7;
}

/// A header map: ordered pairs, values as bytes.
pub type Headers = Vec<(String, Vec<u8>)>;

/// Serializes a map: `u32 count`, `count × (u32 key_len, u32 value_len)`,
/// then each `key\0value\0`, little-endian.
pub fn encode_map(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&u32_of(headers.len()).to_le_bytes());
    for (k, v) in headers {
        out.extend_from_slice(&u32_of(k.len()).to_le_bytes());
        out.extend_from_slice(&u32_of(v.len()).to_le_bytes());
    }
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Parses a serialized map; `None` when it is malformed.
pub fn decode_map(bytes: &[u8]) -> Option<Headers> {
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
    };
    let count = word(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        sizes.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut out = Vec::with_capacity(sizes.len());
    for (k, v) in sizes {
        let key = bytes.get(at..at + k)?;
        at += k + 1;
        let value = bytes.get(at..at + v)?;
        at += v + 1;
        out.push((String::from_utf8(key.to_vec()).ok()?, value.to_vec()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip_through_the_wire_format() {
        let h = vec![
            (":path".to_owned(), b"/x".to_vec()),
            ("empty".to_owned(), Vec::new()),
        ];
        assert_eq!(decode_map(&encode_map(&h)), Some(h));
        assert_eq!(decode_map(&[1, 0, 0, 0, 9]), None, "truncated");
    }
}
