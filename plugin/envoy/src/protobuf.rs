//! The few protobuf encodings Envoy's crypto foreign functions take and return.

/// Appends a length-delimited field (wire type 2).
pub fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field << 3 | 2));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A decoded field: a varint or a byte string.
#[derive(Debug, PartialEq, Eq)]
pub enum Field<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 2.
    Bytes(&'a [u8]),
}

/// Decodes a message into `(field number, value)` pairs; `None` when malformed
/// or when it uses wire types these messages never carry.
pub fn decode(mut input: &[u8]) -> Option<Vec<(u32, Field<'_>)>> {
    let mut fields = Vec::new();
    while !input.is_empty() {
        let key = get_varint(&mut input)?;
        let number = u32::try_from(key >> 3).ok()?;
        match key & 7 {
            0 => fields.push((number, Field::Varint(get_varint(&mut input)?))),
            2 => {
                let len = usize::try_from(get_varint(&mut input)?).ok()?;
                if len > input.len() {
                    return None;
                }
                let (bytes, rest) = input.split_at(len);
                input = rest;
                fields.push((number, Field::Bytes(bytes)));
            }
            _ => return None,
        }
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut m = Vec::new();
        put_bytes(&mut m, 1, b"sha256");
        put_bytes(&mut m, 3, &[0u8; 200]);
        m.extend_from_slice(&[0x08 | (5 << 3), 1]);
        let fields = decode(&m).unwrap();
        assert_eq!(fields[0], (1, Field::Bytes(b"sha256")));
        assert_eq!(fields[1], (3, Field::Bytes(&[0u8; 200])));
        assert_eq!(fields[2], (5, Field::Varint(1)));
        assert!(decode(&[0x0a, 5, 1]).is_none());
    }
}
