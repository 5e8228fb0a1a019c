//! The foreign functions Envoy offers Wasm filters for ES256:
//! `verify_signature` and `sign`, in Envoy's protobuf encoding. A host can
//! lack them (the filter must use its own crypto), offer them, or offer a
//! `verify_signature` that accepts anything (the filter's self-test must
//! refuse it and fall back).

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use serde::Deserialize;

// The filter's own encoding of these messages: the host decodes exactly
// what the filter encodes.
#[path = "../../../plugin/envoy/src/protobuf.rs"]
mod protobuf;

use protobuf::{Field, decode, put_bytes};

/// Which crypto foreign functions the host offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostCrypto {
    /// None: every foreign function is NotFound (Envoy without them).
    #[default]
    Absent,
    /// `verify_signature` and `sign`, as Envoy's BoringSSL ones behave.
    Native,
    /// A `verify_signature` that says yes to every signature.
    AcceptsAll,
}

impl HostCrypto {
    /// The reply to foreign function `name` called with `args`; `None`
    /// when the host has no such function.
    pub fn call(self, name: &str, args: &[u8]) -> Option<Vec<u8>> {
        match (self, name) {
            (Self::Absent, _) => None,
            (_, "verify_signature") => Some(self.verify(args)),
            (_, "sign") => Some(sign(args)),
            _ => None,
        }
    }

    fn verify(self, args: &[u8]) -> Vec<u8> {
        let verdict = || -> Result<bool, &'static str> {
            let fields = decode(args).ok_or("malformed arguments")?;
            let [hash, key, signature, message] = [1, 2, 3, 4].map(|n| bytes(&fields, n));
            if hash != Some(b"sha256".as_slice()) {
                return Err("unsupported hash");
            }
            let key = VerifyingKey::from_public_key_der(key.ok_or("no key")?)
                .map_err(|_| "invalid public key")?;
            let signature =
                Signature::from_der(signature.ok_or("no signature")?).map_err(|_| "bad DER")?;
            Ok(key.verify(message.unwrap_or_default(), &signature).is_ok())
        };
        match (self, verdict()) {
            (Self::AcceptsAll, _) | (_, Ok(true)) => reply(true, &[]),
            (_, Ok(false)) => reply(false, &[(2, b"signature mismatch")]),
            (_, Err(e)) => reply(false, &[(2, e.as_bytes())]),
        }
    }
}

fn sign(args: &[u8]) -> Vec<u8> {
    let signed = || -> Result<Vec<u8>, &'static str> {
        let fields = decode(args).ok_or("malformed arguments")?;
        let [hash, key, message] = [1, 2, 3].map(|n| bytes(&fields, n));
        if hash != Some(b"sha256".as_slice()) {
            return Err("unsupported hash");
        }
        let key =
            SigningKey::from_pkcs8_der(key.ok_or("no key")?).map_err(|_| "invalid private key")?;
        let signature: Signature = key.sign(message.unwrap_or_default());
        Ok(signature.to_der().as_bytes().to_vec())
    };
    match signed() {
        Ok(der) => reply(true, &[(2, &der)]),
        Err(e) => reply(false, &[(3, e.as_bytes())]),
    }
}

fn bytes<'a>(fields: &[(u32, Field<'a>)], number: u32) -> Option<&'a [u8]> {
    fields.iter().find_map(|(n, f)| match f {
        Field::Bytes(b) if *n == number => Some(*b),
        _ => None,
    })
}

/// A reply: field 1 the verdict (a varint), then byte fields.
fn reply(ok: bool, fields: &[(u32, &[u8])]) -> Vec<u8> {
    let mut out = vec![0x08, u8::from(ok)];
    for (number, value) in fields {
        put_bytes(&mut out, *number, value);
    }
    out
}
