//! The Workload Proof Token (draft-ietf-wimse-wpt-01): per request, a JWT
//! `typ: wpt+jwt` signed with the WIT's `cnf` key, bound to the request's
//! target URI (`aud`), the WIT (`wth`) and the other tokens it carries
//! (`ath`, `tth`, `oth`), short-lived (`exp`) and single-use (`jti`).

use serde_json::{Map, Value, json};

use super::error::WimseError;
use super::wit::{VerifiedWit, typed};
use crate::crypto::Es256;
use crate::jwk::ES256;
use crate::keys::PrivateKey;
use crate::token::dpop::token_hash;
use crate::token::mint::sign_compact;
use crate::token::verify::{decode, numeric_date};
use crate::token::{MintError, random_jti};

/// The WPT's `typ`.
pub const WPT_TYPE: &str = "wpt+jwt";
/// Longest WPT accepted, bytes.
pub const MAX_WPT_BYTES: usize = 4 * 1024;
/// Longest `jti` accepted, bytes.
const MAX_JTI_BYTES: usize = 256;

/// The tokens a request carries besides the WIT, which the proof must bind.
#[derive(Debug, Clone, Copy, Default)]
pub struct CarriedTokens<'a> {
    /// The `Authorization: Bearer` access token (`ath`).
    pub access_token: Option<&'a str>,
    /// The `Txn-Token` (`tth`).
    pub txn_token: Option<&'a str>,
    /// Other bound header fields the receiver understands that the request
    /// carries: lower-case name and value (`oth`).
    pub other: &'a [(&'a str, &'a str)],
}

/// What a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct ProofRequest<'a> {
    /// The request's target URI without query: configured scheme and
    /// authority, and the request's normalized path.
    pub target: &'a str,
    /// The presented WIT's text (`wth`).
    pub wit: &'a str,
    /// The tokens the request carries.
    pub carried: CarriedTokens<'a>,
    /// Header names whose `oth` entries this receiver understands.
    pub understood: &'a [String],
    /// Now, Unix seconds.
    pub now: u64,
    /// Leeway for `exp`, seconds.
    pub leeway_secs: u64,
    /// How far ahead `exp` may be, seconds.
    pub max_lifetime_secs: u64,
}

/// A verified proof, before its `jti` is checked for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The proof's `jti`.
    pub jti: String,
    /// The Unix second from which it no longer verifies (`exp` + leeway).
    pub lapses_at: u64,
}

/// Verifies the request's one `proof` for `wit`, in the draft's order.
pub fn verify_wpt(
    proof: &str,
    wit: &VerifiedWit,
    request: &ProofRequest<'_>,
    crypto: &dyn Es256,
) -> Result<VerifiedProof, WimseError> {
    let parts = decode(proof, MAX_WPT_BYTES).map_err(WimseError::WptMalformed)?;
    let header = &parts.header;
    // The WIT's cnf.jwk.alg is ES256 (checked with the WIT).
    if header.get("alg").and_then(Value::as_str) != Some(ES256) {
        return Err(WimseError::WptAlgorithm);
    }
    if !crypto.verify(
        &wit.proof_key,
        parts.signing_input.as_bytes(),
        &parts.signature,
    )? {
        return Err(WimseError::WptSignature);
    }
    if !typed(header, WPT_TYPE) || header.contains_key("crit") {
        return Err(WimseError::WptType);
    }
    let claims = &parts.claims;
    if text(claims, "aud")? != request.target {
        return Err(WimseError::WptAudience);
    }
    let exp = numeric_date(claims, "exp")
        .ok()
        .flatten()
        .ok_or(WimseError::WptClaim("exp"))?;
    let now = request.now as f64;
    if exp + request.leeway_secs as f64 <= now {
        return Err(WimseError::WptExpired);
    }
    if exp > now + (request.max_lifetime_secs + request.leeway_secs) as f64 {
        return Err(WimseError::WptLifetime(request.max_lifetime_secs));
    }
    if text(claims, "wth")? != token_hash(request.wit) {
        return Err(WimseError::WptIdentityHash);
    }
    let jti = text(claims, "jti")?;
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(WimseError::WptClaim("jti"));
    }
    let carried = &request.carried;
    binds(
        claims.get("ath"),
        carried.access_token,
        "access token (ath)",
    )?;
    binds(claims.get("tth"), carried.txn_token, "Txn-Token (tth)")?;
    others(claims.get("oth"), request)?;
    Ok(VerifiedProof {
        jti: jti.to_owned(),
        lapses_at: (exp as u64).saturating_add(request.leeway_secs),
    })
}

fn text<'c>(claims: &'c Map<String, Value>, name: &'static str) -> Result<&'c str, WimseError> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .ok_or(WimseError::WptClaim(name))
}

/// A hash claim must be present exactly when its token is, and match it.
fn binds(claim: Option<&Value>, token: Option<&str>, what: &'static str) -> Result<(), WimseError> {
    match (claim, token) {
        (None, None) => Ok(()),
        (Some(Value::String(hash)), Some(token)) if *hash == token_hash(token) => Ok(()),
        _ => Err(WimseError::WptBinding(what)),
    }
}

/// `oth`: every entry names an understood header the request carries, with
/// the hash of its trimmed value; every understood header the request
/// carries has its entry.
fn others(claim: Option<&Value>, request: &ProofRequest<'_>) -> Result<(), WimseError> {
    let empty = Map::new();
    let entries = match claim {
        None => &empty,
        Some(Value::Object(entries)) => entries,
        Some(_) => return Err(WimseError::WptClaim("oth")),
    };
    if entries
        .keys()
        .any(|name| !request.understood.iter().any(|u| u == name))
    {
        return Err(WimseError::WptUnknownOther);
    }
    for (name, value) in request.carried.other {
        binds(
            entries.get(*name),
            Some(value.trim_matches(' ')),
            "other token (oth)",
        )?;
    }
    let carried = |name: &str| request.carried.other.iter().any(|(n, _)| *n == name);
    if entries.keys().any(|name| !carried(name)) {
        return Err(WimseError::WptBinding("other token (oth)"));
    }
    Ok(())
}

/// A proof by `key` for `wit` aimed at `target`, carrying `carried`'s
/// hashes, valid from `now` for `ttl_secs`.
pub fn create_wpt(
    key: &PrivateKey,
    wit: &str,
    target: &str,
    carried: &CarriedTokens<'_>,
    now: u64,
    ttl_secs: u64,
    crypto: &dyn Es256,
) -> Result<String, MintError> {
    if ttl_secs == 0 {
        return Err(MintError::ZeroTtl);
    }
    let mut claims = json!({
        "aud": target,
        "exp": now.saturating_add(ttl_secs),
        "jti": random_jti()?,
        "wth": token_hash(wit),
    });
    if let Some(token) = carried.access_token {
        claims["ath"] = Value::String(token_hash(token));
    }
    if let Some(token) = carried.txn_token {
        claims["tth"] = Value::String(token_hash(token));
    }
    if !carried.other.is_empty() {
        let oth: Map<String, Value> = carried
            .other
            .iter()
            .map(|(name, value)| {
                let hash = token_hash(value.trim_matches(' '));
                ((*name).to_owned(), Value::String(hash))
            })
            .collect();
        claims["oth"] = Value::Object(oth);
    }
    let header = json!({"typ": WPT_TYPE, "alg": ES256});
    Ok(sign_compact(&header, &claims, key, crypto)?)
}
