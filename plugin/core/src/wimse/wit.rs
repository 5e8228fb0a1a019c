//! The Workload Identity Token (draft-ietf-wimse-workload-creds-02): a JWT
//! `typ: wit+jwt` signed by the trust domain's issuer, naming the workload
//! (`sub`) and the key it proves possession with (`cnf.jwk`, with `alg`).

use serde_json::{Map, Value, json};

use super::error::WimseError;
use super::issuers::WitIssuers;
use crate::bundle::Bundle;
use crate::crypto::Es256;
use crate::jwk::ES256;
use crate::keys::{PrivateKey, PublicKey};
use crate::spiffe_id::SpiffeId;
use crate::token::dpop::public_key;
use crate::token::mint::sign_compact;
use crate::token::verify::{decode, numeric_date};
use crate::token::{MintError, random_jti};

/// The WIT's `typ`.
pub const WIT_TYPE: &str = "wit+jwt";
/// Longest WIT accepted, bytes.
pub const MAX_WIT_BYTES: usize = 8 * 1024;

/// A verified WIT.
#[derive(Debug, Clone)]
pub struct VerifiedWit {
    /// The workload it names.
    pub caller: SpiffeId,
    /// The key its proofs must be signed with.
    pub proof_key: PublicKey,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
}

/// `typ` as a media type, with or without its `application/` prefix
/// (RFC 7515 §4.1.9), compared case-insensitively.
pub(super) fn typed(header: &Map<String, Value>, expected: &str) -> bool {
    header
        .get("typ")
        .and_then(Value::as_str)
        .map(|t| {
            let t = t.to_ascii_lowercase();
            t.strip_prefix("application/").unwrap_or(&t) == expected
        })
        .unwrap_or(false)
}

/// Verifies `wit` against the issuers of its `sub`'s trust domain, the
/// trust bundle (the `sub` must be in it) and the proof key bound to the
/// `sub`, at `now` with `leeway_secs` for the times.
pub fn verify_wit(
    wit: &str,
    issuers: &WitIssuers,
    bundle: &Bundle,
    now: u64,
    leeway_secs: u64,
    crypto: &dyn Es256,
) -> Result<VerifiedWit, WimseError> {
    let parts = decode(wit, MAX_WIT_BYTES).map_err(WimseError::WitMalformed)?;
    let header = &parts.header;
    if !typed(header, WIT_TYPE)
        || header.get("alg").and_then(Value::as_str) != Some(ES256)
        || header.contains_key("crit")
    {
        return Err(WimseError::WitHeader);
    }
    let claims = &parts.claims;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(WimseError::WitClaim("sub"))?;
    let caller = SpiffeId::parse(sub).map_err(|_| WimseError::WitSubject)?;
    if caller.trust_domain() != issuers.trust_domain() {
        return Err(WimseError::UnknownIssuer(caller.trust_domain().to_owned()));
    }
    let date = |name| numeric_date(claims, name).map_err(|_| WimseError::WitClaim(name));
    let exp = date("exp")?.ok_or(WimseError::WitClaim("exp"))?;
    let (iat, nbf) = (date("iat")?, date("nbf")?);
    let jwk = claims
        .get("cnf")
        .and_then(|c| c.get("jwk"))
        .ok_or(WimseError::WitClaim("cnf"))?;
    if jwk.get("alg").and_then(Value::as_str) != Some(ES256) {
        return Err(WimseError::ProofAlgorithm);
    }
    let proof_key = public_key(jwk).map_err(WimseError::ProofKey)?;
    let (now_f, leeway) = (now as f64, leeway_secs as f64);
    if exp + leeway <= now_f {
        return Err(WimseError::WitExpired);
    }
    if [iat, nbf].into_iter().flatten().any(|t| t > now_f + leeway) {
        return Err(WimseError::WitNotYetValid);
    }

    let kid = header.get("kid").and_then(Value::as_str);
    let keys = issuers.keys();
    let named = keys.iter().any(|k| Some(k.kid()) == kid);
    let message = parts.signing_input.as_bytes();
    let mut signed = false;
    for key in keys.iter().filter(|k| !named || Some(k.kid()) == kid) {
        if crypto.verify(key, message, &parts.signature)? {
            signed = true;
            break;
        }
    }
    if !signed {
        return Err(WimseError::WitSignature);
    }

    // Removal from the bundle revokes the workload's WITs; a new proof key
    // (rotation) revokes the WITs bound to the old one.
    if bundle.keys_for(&caller).is_none() {
        return Err(WimseError::UnknownWorkload(caller));
    }
    if issuers.binding(&caller) != Some(proof_key.jwk().thumbprint().as_str()) {
        return Err(WimseError::NotBound(caller));
    }
    Ok(VerifiedWit {
        caller,
        proof_key,
        expires_at: exp as u64,
    })
}

/// Issues a WIT for `workload`, bound to `proof_key`, signed by `issuer`
/// (whose `kid` it names), valid from `now` for `ttl_secs`.
pub fn issue_wit(
    issuer: &PrivateKey,
    workload: &SpiffeId,
    proof_key: &PublicKey,
    now: u64,
    ttl_secs: u64,
    crypto: &dyn Es256,
) -> Result<String, MintError> {
    if ttl_secs == 0 {
        return Err(MintError::ZeroTtl);
    }
    let jwk = proof_key.jwk();
    let header = json!({"typ": WIT_TYPE, "alg": ES256, "kid": issuer.public_key().kid()});
    let claims = json!({
        "sub": workload.as_str(),
        "iat": now,
        "exp": now.saturating_add(ttl_secs),
        "jti": random_jti()?,
        "cnf": {"jwk": {"kty": jwk.kty, "crv": jwk.crv, "x": jwk.x, "y": jwk.y, "alg": ES256}},
    });
    Ok(sign_compact(&header, &claims, issuer, crypto)?)
}

/// The `iat` and `exp` of a WIT, read without verifying it (to warn
/// before it lapses).
pub fn unverified_times(wit: &str) -> Option<(u64, u64)> {
    let parts = decode(wit, MAX_WIT_BYTES).ok()?;
    let claim = |name| parts.claims.get(name).and_then(Value::as_u64);
    Some((claim("iat")?, claim("exp")?))
}
