//! JWT-SVID verification exactly as the spiffile profile orders it.

use serde_json::{Map, Value};

use super::claims::VerifiedToken;
use super::error::{InvalidToken, VerifyError};
use crate::b64;
use crate::bundle::Bundle;
use crate::crypto::{Es256, RawSignature};
use crate::jwk::ES256;
use crate::spiffe_id::SpiffeId;
use crate::strict_json;

/// Default clock leeway for `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Default upper bound on a token's length, checked before parsing.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Tunables of verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Clock leeway in seconds.
    pub leeway_secs: u64,
    /// Longest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Accept an `aud` array that contains the audience, from callers of
    /// a standard-mode (central issuer) trust domain only; spiffile callers
    /// always need the single string.
    pub allow_multiple_audiences: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            allow_multiple_audiences: false,
        }
    }
}

/// `aud` as a token carries it.
enum Aud<'c> {
    One(&'c str),
    Several(&'c [Value]),
}

/// Verifies JWT-SVIDs addressed to one audience.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    audience: SpiffeId,
    options: VerifyOptions,
}

/// The parts of a compact JWS, decoded but not yet trusted.
pub(crate) struct Parts<'t> {
    /// `header.claims`, the signed bytes.
    pub(crate) signing_input: &'t str,
    /// The JOSE header.
    pub(crate) header: Map<String, Value>,
    /// The claims.
    pub(crate) claims: Map<String, Value>,
    /// The raw `r || s` signature.
    pub(crate) signature: RawSignature,
}

impl TokenVerifier {
    /// A verifier that accepts tokens whose `aud` is exactly `audience`.
    pub fn new(audience: SpiffeId, options: VerifyOptions) -> Self {
        Self { audience, options }
    }

    /// The audience tokens must name.
    pub fn audience(&self) -> &SpiffeId {
        &self.audience
    }

    /// The options in force.
    pub fn options(&self) -> &VerifyOptions {
        &self.options
    }

    /// Verifies `token` against `bundle` at Unix time `now`.
    pub fn verify(
        &self,
        token: &str,
        bundle: &Bundle,
        now: u64,
        crypto: &dyn Es256,
    ) -> Result<VerifiedToken, VerifyError> {
        let parts = decode(token, self.options.max_token_bytes)?;
        check_header(&parts.header)?;
        let claims = &parts.claims;

        // 1. Required claims and their types.
        let sub = claims
            .get("sub")
            .ok_or(InvalidToken::MissingClaim("sub"))?
            .as_str()
            .ok_or(InvalidToken::ClaimType("sub"))?;
        let aud = match claims.get("aud").ok_or(InvalidToken::MissingClaim("aud"))? {
            Value::String(aud) => Aud::One(aud),
            Value::Array(items) if self.options.allow_multiple_audiences => Aud::Several(items),
            _ => return Err(InvalidToken::AudienceNotString.into()),
        };
        let exp = numeric_date(claims, "exp")?.ok_or(InvalidToken::MissingClaim("exp"))?;
        let nbf = numeric_date(claims, "nbf")?;
        let iat = numeric_date(claims, "iat")?;
        let jti = match claims.get("jti") {
            None => None,
            Some(Value::String(j)) => Some(j.clone()),
            Some(_) => return Err(InvalidToken::ClaimType("jti").into()),
        };

        // 2. The subject, and only the keys bound to it.
        let caller = SpiffeId::parse(sub).map_err(InvalidToken::Subject)?;
        let keys = bundle
            .keys_for(&caller)
            .ok_or_else(|| VerifyError::UnknownIdentity(caller.clone()))?;

        // 4. (cheap checks before the signature) audience and time.
        let aimed = match aud {
            Aud::One(aud) => aud == self.audience.as_str(),
            Aud::Several(items) => {
                // Several audiences only from a domain whose keys sign for
                // the whole domain; a spiffile domain keeps the one string.
                let standard = bundle
                    .domain(caller.trust_domain())
                    .is_some_and(|d| !d.binds_keys_to_identities());
                if !standard {
                    return Err(InvalidToken::AudienceNotString.into());
                }
                if items.is_empty() || items.iter().any(|v| !v.is_string()) {
                    return Err(InvalidToken::ClaimType("aud").into());
                }
                items
                    .iter()
                    .any(|v| v.as_str() == Some(self.audience.as_str()))
            }
        };
        if !aimed {
            return Err(InvalidToken::AudienceMismatch.into());
        }
        let now_f = now as f64;
        let leeway = self.options.leeway_secs as f64;
        if exp + leeway <= now_f {
            return Err(InvalidToken::Expired.into());
        }
        if nbf.is_some_and(|nbf| nbf > now_f + leeway) {
            return Err(InvalidToken::NotYetValid.into());
        }
        if iat.is_some_and(|iat| iat > now_f + leeway) {
            return Err(InvalidToken::IssuedInFuture.into());
        }

        // 3. The key named by kid among the subject's keys, else all of them.
        let kid = parts.header.get("kid").and_then(Value::as_str);
        let named = keys.iter().any(|k| Some(k.kid()) == kid);
        let candidates = keys.iter().filter(|k| !named || Some(k.kid()) == kid);
        let message = parts.signing_input.as_bytes();
        for key in candidates {
            if crypto.verify(key, message, &parts.signature)? {
                return Ok(VerifiedToken {
                    caller,
                    expires_at: exp as u64,
                    jti,
                    claims: parts.claims,
                });
            }
        }
        Err(InvalidToken::SignatureMismatch.into())
    }
}

/// Splits and decodes a compact JWS of at most `max_bytes`; nothing is
/// trusted yet.
pub(crate) fn decode(token: &str, max_bytes: usize) -> Result<Parts<'_>, InvalidToken> {
    if token.len() > max_bytes {
        return Err(InvalidToken::TooLarge {
            len: token.len(),
            limit: max_bytes,
        });
    }
    let mut segments = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(InvalidToken::NotCompact);
    };
    let signing_input = &token[..header.len() + 1 + claims.len()];
    let header = b64::decode(header).map_err(|_| InvalidToken::Encoding("header"))?;
    let claims = b64::decode(claims).map_err(|_| InvalidToken::Encoding("claims"))?;
    let signature = b64::decode(signature).map_err(|_| InvalidToken::Encoding("signature"))?;
    let header = strict_json::parse_object(&header).map_err(|error| InvalidToken::Json {
        part: "header",
        error,
    })?;
    let claims = strict_json::parse_object(&claims).map_err(|error| InvalidToken::Json {
        part: "claims",
        error,
    })?;
    let signature: RawSignature = signature
        .as_slice()
        .try_into()
        .map_err(|_| InvalidToken::SignatureLength(signature.len()))?;
    Ok(Parts {
        signing_input,
        header,
        claims,
        signature,
    })
}

/// Header parameters that offer a key or where to find one. The key of a
/// JWT-SVID comes from the bundle only, so a token offering one is refused:
/// it is never consulted, and refusing it keeps key-confusion attempts out
/// of the logs as accepted tokens.
const KEY_PARAMETERS: [&str; 6] = ["jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"];
/// Header parameters of encrypted or compressed objects (RFC 7516).
const JWE_PARAMETERS: [&str; 2] = ["enc", "zip"];
/// Header parameters that are strings when present.
const STRING_PARAMETERS: [&str; 2] = ["kid", "cty"];

/// `alg` must be ES256; `typ`, when present, JWT or JOSE; no `crit`; no
/// key, no key location, no encryption; `kid` and `cty` strings.
fn check_header(header: &Map<String, Value>) -> Result<(), InvalidToken> {
    if header.get("alg").and_then(Value::as_str) != Some(ES256) {
        return Err(InvalidToken::Algorithm);
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if t == "JWT" || t == "JOSE" => {}
        Some(_) => return Err(InvalidToken::Type),
    }
    if header.contains_key("crit") {
        return Err(InvalidToken::Critical);
    }
    if let Some(name) = KEY_PARAMETERS.into_iter().find(|p| header.contains_key(*p)) {
        return Err(InvalidToken::KeyInHeader(name));
    }
    if let Some(name) = JWE_PARAMETERS.into_iter().find(|p| header.contains_key(*p)) {
        return Err(InvalidToken::NotJws(name));
    }
    if let Some(name) = STRING_PARAMETERS
        .into_iter()
        .find(|p| header.get(*p).is_some_and(|v| !v.is_string()))
    {
        return Err(InvalidToken::HeaderType(name));
    }
    Ok(())
}

/// A NumericDate claim: absent, or a finite non-negative JSON number.
pub(crate) fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<f64>, InvalidToken> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
            _ => Err(InvalidToken::ClaimType(name)),
        },
        Some(_) => Err(InvalidToken::ClaimType(name)),
    }
}
