//! The strict JSON reader against `serde_json`.

use ephemera_core::strict_json::{self, JsonError};

/// On any input both readers take, the same value; the strict reader
/// refuses more only for a duplicate member name.
pub fn strict_json(data: &[u8]) {
    let strict = strict_json::parse_value(data);
    let lenient = serde_json::from_slice::<serde_json::Value>(data);
    match (strict, lenient) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Ok(a), Err(e)) => panic!("strict took what serde_json refuses ({e}): {a}"),
        (Err(JsonError::DuplicateMember(_)), Ok(_)) | (Err(_), Err(_)) => {}
        (Err(e), Ok(v)) => panic!("strict refused ({e}) what serde_json takes: {v}"),
    }
}
