//! HMAC references: sensitive identifiers enter the ledger only as keyed
//! hashes, comparable by whoever holds the key, meaningless to anyone else.

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

/// A key for HMAC-SHA256 references.
#[derive(Clone)]
pub struct HmacKey(Vec<u8>);

impl HmacKey {
    /// A key from its bytes (at least 16).
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() >= 16).then_some(Self(bytes))
    }

    /// `hmac-sha256:<hex>` of `value` under this key and a domain label.
    pub fn reference(&self, label: &str, value: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return String::from("hmac-sha256:unavailable");
        };
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("hmac-sha256:{}", hex::encode(digest))
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_depend_on_key_label_and_value_and_hide_the_value() {
        let k1 = HmacKey::new(vec![1; 32]).unwrap();
        let k2 = HmacKey::new(vec![2; 32]).unwrap();
        let r = k1.reference("token", "s3cr3t-value");
        assert!(r.starts_with("hmac-sha256:") && !r.contains("s3cr3t"));
        assert_eq!(r, k1.reference("token", "s3cr3t-value"));
        assert_ne!(r, k2.reference("token", "s3cr3t-value"));
        assert_ne!(r, k1.reference("uri", "s3cr3t-value"));
        assert!(HmacKey::new(vec![0; 8]).is_none());
    }
}
