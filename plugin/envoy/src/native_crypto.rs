//! ES256 through Envoy's native (BoringSSL) foreign functions `verify_signature`
//! and `sign`, with a self-test that decides whether they may be used.

use ephemera_core::crypto::{der_to_raw, raw_to_der};
use ephemera_core::{CryptoError, Es256, PrivateKey, PublicKey, RawSignature, RustCrypto};
use proxy_wasm::hostcalls;

use crate::protobuf::{self, Field};

const BACKEND: &str = "envoy";

fn failure(reason: impl Into<String>) -> CryptoError {
    CryptoError {
        backend: BACKEND,
        reason: reason.into(),
    }
}

fn call(function: &str, args: &[u8]) -> Result<Vec<u8>, CryptoError> {
    match hostcalls::call_foreign_function(function, Some(args)) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Ok(Vec::new()),
        Err(status) => Err(failure(format!("{function}: {status:?}"))),
    }
}

/// Envoy's native crypto.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvoyCrypto;

impl Es256 for EnvoyCrypto {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn verify(
        &self,
        key: &PublicKey,
        message: &[u8],
        signature: &RawSignature,
    ) -> Result<bool, CryptoError> {
        let Some(der) = raw_to_der(signature) else {
            return Ok(false);
        };
        let der = der.as_bytes();
        let mut args = Vec::with_capacity(64 + key.spki_der().len() + der.len() + message.len());
        protobuf::put_bytes(&mut args, 1, b"sha256");
        protobuf::put_bytes(&mut args, 2, key.spki_der());
        protobuf::put_bytes(&mut args, 3, der);
        protobuf::put_bytes(&mut args, 4, message);
        let reply = call("verify_signature", &args)?;
        let fields = protobuf::decode(&reply).ok_or_else(|| failure("undecodable reply"))?;
        // Field 1 is the verdict; field 2 explains a false one (a mismatch, not a failure).
        let result = fields
            .iter()
            .any(|(number, field)| *number == 1 && matches!(field, Field::Varint(v) if *v != 0));
        Ok(result)
    }

    fn sign(&self, key: &PrivateKey, message: &[u8]) -> Result<RawSignature, CryptoError> {
        let mut args = Vec::with_capacity(64 + key.pkcs8_der().len() + message.len());
        protobuf::put_bytes(&mut args, 1, b"sha256");
        protobuf::put_bytes(&mut args, 2, key.pkcs8_der());
        protobuf::put_bytes(&mut args, 3, message);
        let reply = call("sign", &args)?;
        let fields = protobuf::decode(&reply).ok_or_else(|| failure("undecodable reply"))?;
        let mut ok = false;
        let mut signature = None;
        let mut error = String::new();
        for (number, field) in fields {
            match (number, field) {
                (1, Field::Varint(v)) => ok = v != 0,
                (2, Field::Bytes(s)) => signature = Some(s),
                (3, Field::Bytes(e)) => error = String::from_utf8_lossy(e).into_owned(),
                _ => {}
            }
        }
        match (ok, signature) {
            (true, Some(der)) => {
                der_to_raw(der).ok_or_else(|| failure("sign returned a malformed DER signature"))
            }
            _ => Err(failure(format!("sign failed: {error}"))),
        }
    }
}

/// Checks the native functions against the pure-Rust backend with a fresh
/// key: both directions must agree and a wrong message must not verify.
pub fn self_test() -> Result<(), String> {
    let key = PrivateKey::generate().map_err(|e| e.to_string())?;
    let message = b"ephemera native crypto self-test";
    let ours = RustCrypto.sign(&key, message).map_err(|e| e.to_string())?;
    if !EnvoyCrypto
        .verify(key.public_key(), message, &ours)
        .map_err(|e| e.to_string())?
    {
        return Err("verify_signature rejected a valid signature".into());
    }
    if EnvoyCrypto
        .verify(key.public_key(), b"another message", &ours)
        .map_err(|e| e.to_string())?
    {
        return Err("verify_signature accepted a signature over another message".into());
    }
    let theirs = EnvoyCrypto.sign(&key, message).map_err(|e| e.to_string())?;
    if !RustCrypto
        .verify(key.public_key(), message, &theirs)
        .map_err(|e| e.to_string())?
    {
        return Err("sign produced a signature that does not verify".into());
    }
    Ok(())
}
