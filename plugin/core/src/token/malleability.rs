//! One name per token: a compact JWS whose ECDSA signature was replaced by
//! its twin (`s` → `n−s`) is a different string for the same token.

use crate::b64;
use crate::crypto::{RawSignature, low_s};

/// The token with its signature in low-S form, for ledger references and
/// replay keys; `None` when it is not a compact JWS with a P-256 signature.
pub fn malleability_free(token: &str) -> Option<String> {
    let (signed, signature) = token.rsplit_once('.')?;
    let raw: RawSignature = b64::decode(signature).ok()?.try_into().ok()?;
    Some(format!("{signed}.{}", b64::encode(low_s(&raw)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Es256, PrivateKey, RustCrypto};

    /// `n − s` for P-256's group order `n`.
    fn high_twin(raw: &RawSignature) -> RawSignature {
        const N: [u8; 32] = [
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2,
            0xfc, 0x63, 0x25, 0x51,
        ];
        let mut out = *raw;
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let d = i16::from(N[i]) - i16::from(raw[32 + i]) - borrow;
            borrow = i16::from(d < 0);
            out[32 + i] = (d + 256 * borrow) as u8;
        }
        out
    }

    #[test]
    fn a_token_and_its_high_s_twin_have_one_malleability_free_form() {
        let key = PrivateKey::generate().unwrap();
        let signed = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0";
        let raw = RustCrypto.sign(&key, signed.as_bytes()).unwrap();
        let twin = high_twin(&raw);
        assert_ne!(raw, twin);
        assert!(
            RustCrypto
                .verify(key.public_key(), signed.as_bytes(), &twin)
                .unwrap(),
            "the twin is an equally valid signature"
        );
        let token = format!("{signed}.{}", b64::encode(raw));
        let twin_token = format!("{signed}.{}", b64::encode(twin));
        assert_ne!(token, twin_token);
        assert_eq!(malleability_free(&token), malleability_free(&twin_token));
        assert!(malleability_free(&token).is_some());
    }

    #[test]
    fn what_is_not_an_es256_jws_has_no_form() {
        for bad in ["", "a.b", "a.b.!!", "a.b.AAAA"] {
            assert_eq!(malleability_free(bad), None, "{bad:?}");
        }
    }
}
