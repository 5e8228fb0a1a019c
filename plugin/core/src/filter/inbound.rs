//! Inbound: authenticate the caller, authorize the route, tell the app who called.

use smallvec::{SmallVec, smallvec};

use super::config::InboundConfig;
use super::disposition::{Disposition, LocalReply};
use super::edits::{Edits, Text};
use super::token_cache::TokenCache;
use super::transaction::TransactionRoutes;
use super::wit_cache::WitCache;
use super::workload_identity::WorkloadIdentity;
use crate::crypto::Es256;
use crate::spiffe_id::SpiffeId;
use crate::token::{InvalidToken, TokenVerifier, VerifyError, VerifyOptions};
use crate::wimse::{
    self, CarriedTokens, ProofRequest, ReplayGuard, ReplayKey, WIT_HEADER, WPT_HEADER, WimseError,
    verify_wit, verify_wpt,
};
use std::sync::Arc;

/// The parts of an inbound request the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct InboundRequest<'a> {
    /// `:path`, query included; `None` when not read because no rule looks
    /// at it ([`Inbound::reads_path`]).
    pub path: Option<&'a str>,
    /// The `Authorization` header; `Err(())` when present but not UTF-8.
    pub authorization: Option<Result<&'a str, ()>>,
}

/// A WIMSE caller's request: every value of its token headers, and the
/// other tokens it carries.
#[derive(Debug, Clone, Copy)]
pub struct WimseRequest<'a> {
    /// `:path`, query included.
    pub path: Option<&'a str>,
    /// Every `Workload-Identity-Token` value.
    pub wits: &'a [String],
    /// Every `Workload-Proof-Token` value.
    pub proofs: &'a [String],
    /// The access token, Txn-Token and understood other tokens.
    pub carried: CarriedTokens<'a>,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// `Authorization` present but not a Bearer token in UTF-8.
    MalformedHeader,
    /// Verification failed.
    Verify(VerifyError),
    /// The identity in force has not been confirmed by the shim within
    /// `shim.max_identity_age_ms`: a revocation may be pending (503).
    IdentityStale,
    /// A Workload Identity Token presented as a bearer token.
    WitAsBearer,
    /// A WIMSE caller's tokens were refused (400, or 503 undecided).
    Wimse(WimseError),
}

impl Rejection {
    /// A short stable code for counters and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::MalformedHeader => "malformed",
            Self::Verify(e) => e.code(),
            Self::IdentityStale => "identity_stale",
            Self::WitAsBearer => "wit_as_bearer",
            Self::Wimse(e) => e.code(),
        }
    }

    /// The reply's status: 503 when nothing could be decided (a failing
    /// signature backend or replay cache, a stale identity); 400 for WIMSE
    /// tokens, as the drafts advise; else 401.
    pub fn status(&self) -> u16 {
        match self {
            Self::Verify(VerifyError::Crypto(_)) | Self::IdentityStale => 503,
            Self::Wimse(e) if e.undecided() => 503,
            Self::Wimse(_) => 400,
            _ => 401,
        }
    }
}

/// The inbound verdict, before it becomes an [`Disposition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundVerdict {
    /// A path served without authentication.
    Unauthenticated,
    /// Authenticated and authorized.
    Allowed {
        /// The verified caller.
        caller: SpiffeId,
        /// True when the verified-token cache answered.
        cached: bool,
    },
    /// Not authenticated: 401.
    Rejected(Rejection),
    /// Authenticated but not admitted on this route: 403.
    Forbidden {
        /// The verified caller.
        caller: SpiffeId,
    },
    /// The path is not in normal form (`//`, `/./`, `/../`, encoded dots,
    /// slashes or backslashes, a `;` raw or encoded, a segment ending in
    /// `.`): 400, since apps that read such paths differently could dodge
    /// path rules.
    BadPath,
    /// No identity loaded yet.
    AwaitIdentity,
}

/// True for a path in the normal form path rules assume.
fn normal_path(request_path: &str) -> bool {
    let path = request_path
        .split_once(['?', '#'])
        .map_or(request_path, |(p, _)| p);
    if !path.starts_with('/') || path.contains('\\') || path.contains("//") {
        return false;
    }
    // `;` starts path parameters that Tomcat/Spring strip; a trailing `.`
    // is dropped by some servers: both would let `/admin;x` or `/admin.`
    // reach `/admin` unmatched.
    let bytes = path.as_bytes();
    let escaped = |e: &[u8]| bytes.windows(e.len()).any(|w| w.eq_ignore_ascii_case(e));
    if path.contains(';') || [b"%2e", b"%2f", b"%5c", b"%3b"].iter().any(|e| escaped(*e)) {
        return false;
    }
    !path.split('/').any(|segment| segment.ends_with('.'))
}

/// The path without its query or fragment.
fn path_only(request_path: &str) -> &str {
    request_path
        .split_once(['?', '#'])
        .map_or(request_path, |(p, _)| p)
}

/// The inbound policy, built once from configuration.
#[derive(Debug, Clone)]
pub struct Inbound {
    config: InboundConfig,
    options: VerifyOptions,
    transactions: TransactionRoutes,
    /// The caller header, shared by every request's edits.
    caller_header: Text,
    /// What every forwarded request loses: headers a client could forge
    /// (the caller header, credential headers) and, unless kept, its token.
    removed: SmallVec<[Text; 4]>,
    /// The same but the caller header, for a request that is given a
    /// caller: setting the header replaces every value a client sent.
    removed_under_caller: SmallVec<[Text; 4]>,
    /// Some rule looks at the path.
    reads_path: bool,
}

impl Inbound {
    /// A policy for `config`.
    pub fn new(config: InboundConfig) -> Self {
        let options = VerifyOptions {
            leeway_secs: config.leeway_secs,
            max_token_bytes: config.max_token_bytes,
            allow_multiple_audiences: config.allow_multiple_audiences,
        };
        let transactions = TransactionRoutes::new(config.transactions.clone());
        let caller_header = Text::from(config.caller_header.as_str());
        let wimse_headers = config
            .wimse
            .iter()
            .flat_map(|_| [Text::from(WIT_HEADER), Text::from(WPT_HEADER)]);
        let removed_under_caller: SmallVec<[Text; 4]> = transactions
            .credential_headers()
            .map(Text::from)
            .chain(config.strip_token.then(|| Text::from("authorization")))
            .chain(wimse_headers)
            .collect();
        let removed = std::iter::once(caller_header.clone())
            .chain(removed_under_caller.iter().cloned())
            .collect();
        let reads_path = !(config.routes.is_empty()
            && config.unauthenticated.is_empty()
            && transactions.is_empty()
            && config.wimse.is_none());
        Self {
            config,
            options,
            transactions,
            caller_header,
            removed,
            removed_under_caller,
            reads_path,
        }
    }

    /// The Identity-Per-Transaction routes.
    pub fn transactions(&self) -> &TransactionRoutes {
        &self.transactions
    }

    /// True when some rule (route, unauthenticated path, transaction route)
    /// looks at the path. Without any, the path is neither read nor checked
    /// for normal form: nothing could be dodged with it.
    pub fn reads_path(&self) -> bool {
        self.reads_path
    }

    /// The configuration.
    pub fn config(&self) -> &InboundConfig {
        &self.config
    }

    /// Decides a request, verifying tokens against `identity` (through the
    /// verified-token cache). A `stale` identity decides nothing that needs
    /// it (503), and the cache is not consulted.
    pub fn decide(
        &self,
        request: &InboundRequest<'_>,
        identity: Option<&WorkloadIdentity>,
        stale: bool,
        cache: &mut TokenCache,
        now: u64,
        crypto: &dyn Es256,
    ) -> InboundVerdict {
        self.decide_with(
            request,
            identity.map(WorkloadIdentity::id),
            |token, audience| {
                if stale {
                    return Err(Rejection::IdentityStale);
                }
                if let Some(caller) = cache.get(token, now) {
                    return Ok((caller, true));
                }
                // `decide_with` asks only with an identity in force.
                let identity = identity.ok_or(Rejection::IdentityStale)?;
                let verifier = TokenVerifier::new(audience.clone(), self.options);
                match verifier.verify(token, &identity.bundle, now, crypto) {
                    Ok(verified) => {
                        let lapses_at =
                            verified.expires_at.saturating_add(self.options.leeway_secs);
                        cache.insert(token, verified.caller.clone(), lapses_at);
                        Ok((verified.caller, false))
                    }
                    Err(VerifyError::Invalid(InvalidToken::Type)) if wimse::is_wit(token) => {
                        Err(Rejection::WitAsBearer)
                    }
                    Err(e) => Err(Rejection::Verify(e)),
                }
            },
        )
    }

    /// True when WIMSE callers are accepted.
    pub fn accepts_wimse(&self) -> bool {
        self.config.wimse.is_some()
    }

    /// The target URI a WIMSE proof for `path` must name: the configured
    /// origin and the path without its query.
    pub fn wimse_target(&self, path: &str) -> Option<String> {
        let config = self.config.wimse.as_ref()?;
        Some(format!("{}{}", config.origin, path_only(path)))
    }

    /// Decides a WIMSE caller's request: its WIT against the trust domain's
    /// issuers and the bundle, its one proof against the WIT and this very
    /// request, the proof's `jti` against `replay`, then the route rules.
    #[allow(clippy::too_many_arguments)]
    pub fn decide_wimse(
        &self,
        request: &WimseRequest<'_>,
        identity: Option<&WorkloadIdentity>,
        stale: bool,
        wits: &mut WitCache,
        now: u64,
        crypto: &dyn Es256,
        replay: &dyn ReplayGuard,
    ) -> InboundVerdict {
        let path = request.path.unwrap_or_default();
        let workload = match self.front(path, identity.map(WorkloadIdentity::id)) {
            Ok(workload) => workload,
            Err(verdict) => return verdict,
        };
        let rejected = |e| InboundVerdict::Rejected(Rejection::Wimse(e));
        let (Some(config), Some(identity)) = (&self.config.wimse, identity) else {
            return InboundVerdict::Rejected(Rejection::MissingToken);
        };
        if stale {
            return InboundVerdict::Rejected(Rejection::IdentityStale);
        }
        let ([wit], [proof]) = (request.wits, request.proofs) else {
            return rejected(WimseError::ProofCount);
        };
        let Some(issuers) = &identity.wimse.issuers else {
            return rejected(WimseError::UnknownIssuer(
                workload.trust_domain().to_owned(),
            ));
        };
        let leeway = self.options.leeway_secs;
        let verified = match wits.get(wit, now) {
            Some(verified) => verified,
            None => match verify_wit(wit, issuers, &identity.bundle, now, leeway, crypto) {
                Ok(verified) => {
                    let verified = Arc::new(verified);
                    let lapses_at = verified.expires_at.saturating_add(leeway);
                    wits.insert(wit, Arc::clone(&verified), lapses_at);
                    verified
                }
                Err(e) => return rejected(e),
            },
        };
        let target = self.wimse_target(path).unwrap_or_default();
        let proof_request = ProofRequest {
            target: &target,
            wit,
            carried: request.carried,
            understood: &config.other_tokens,
            now,
            leeway_secs: config.proof_leeway_secs,
            max_lifetime_secs: config.max_proof_lifetime_secs,
        };
        let proven = match verify_wpt(proof, &verified, &proof_request, crypto) {
            Ok(proven) => proven,
            Err(e) => return rejected(e),
        };
        let key = ReplayKey::new(&verified.caller, &proven.jti);
        match replay.first_use(key, proven.lapses_at, now) {
            Ok(true) => {}
            Ok(false) => return rejected(WimseError::Replayed),
            Err(why) => return rejected(WimseError::ReplayUnavailable(why)),
        }
        let caller = verified.caller.clone();
        if self.admits(&caller, workload, path) {
            InboundVerdict::Allowed {
                caller,
                cached: false,
            }
        } else {
            InboundVerdict::Forbidden { caller }
        }
    }

    /// What every request passes first: a path in normal form (when rules
    /// read it), not an unauthenticated one, and an identity in force.
    fn front<'w>(
        &self,
        path: &str,
        workload: Option<&'w SpiffeId>,
    ) -> Result<&'w SpiffeId, InboundVerdict> {
        // A path that should have been read and was not is not normal.
        if self.reads_path {
            if !normal_path(path) {
                return Err(InboundVerdict::BadPath);
            }
            if self.unauthenticated(path) {
                return Err(InboundVerdict::Unauthenticated);
            }
        }
        workload.ok_or(InboundVerdict::AwaitIdentity)
    }

    /// Decides a request for `workload` (none: no identity yet), with
    /// `verify(token, audience)` deciding tokens: the caller and whether a
    /// cache answered, or why not.
    pub fn decide_with(
        &self,
        request: &InboundRequest<'_>,
        workload: Option<&SpiffeId>,
        verify: impl FnOnce(&str, &SpiffeId) -> Result<(SpiffeId, bool), Rejection>,
    ) -> InboundVerdict {
        let path = request.path.unwrap_or_default();
        let workload = match self.front(path, workload) {
            Ok(workload) => workload,
            Err(verdict) => return verdict,
        };
        let token = match request.authorization {
            None => return InboundVerdict::Rejected(Rejection::MissingToken),
            Some(Err(())) => return InboundVerdict::Rejected(Rejection::MalformedHeader),
            Some(Ok(value)) => match bearer_token(value) {
                Some(token) => token,
                None => return InboundVerdict::Rejected(Rejection::MalformedHeader),
            },
        };
        let audience = self.config.audience.as_ref().unwrap_or(workload);
        let (caller, cached) = match verify(token, audience) {
            Ok(verified) => verified,
            Err(rejection) => return InboundVerdict::Rejected(rejection),
        };
        if self.admits(&caller, workload, path) {
            InboundVerdict::Allowed { caller, cached }
        } else {
            InboundVerdict::Forbidden { caller }
        }
    }

    /// The forms of a path the rules must agree on: as sent and, unless
    /// the app routes case-sensitively, ASCII case-folded, so `/ADMIN/x`
    /// is as restricted as `/admin/x` for an app that folds case. A path
    /// with no upper-case letter is its own folded form (no copy).
    pub fn path_forms<'p>(&self, path: &'p str) -> [std::borrow::Cow<'p, str>; 2] {
        let path = path_only(path);
        let folded = if self.config.case_sensitive || !path.bytes().any(|b| b.is_ascii_uppercase())
        {
            std::borrow::Cow::Borrowed(path)
        } else {
            std::borrow::Cow::Owned(path.to_ascii_lowercase())
        };
        [std::borrow::Cow::Borrowed(path), folded]
    }

    /// Unauthenticated only if every form of the path says so.
    fn unauthenticated(&self, path: &str) -> bool {
        self.path_forms(path)
            .iter()
            .all(|form| self.config.unauthenticated.iter().any(|r| r.matches(form)))
    }

    /// Route authorization: for each form of the path, the most specific
    /// rule covering it decides, and every form must admit the caller; no
    /// rules at all admits every authenticated caller of the workload's own
    /// trust domain (a federated domain only where a rule names it).
    fn admits(&self, caller: &SpiffeId, workload: &SpiffeId, path: &str) -> bool {
        if self.config.routes.is_empty() {
            return caller.trust_domain() == workload.trust_domain();
        }
        self.path_forms(path).iter().all(|form| {
            self.config
                .routes
                .iter()
                .filter(|r| r.path.matches(form))
                .max_by_key(|r| r.path.specificity())
                .is_some_and(|r| r.allow.iter().any(|p| p.matches(caller)))
        })
    }

    /// What the host does for a verdict. The caller header and credential
    /// headers from the client are always removed; the verified caller is set
    /// only for an allowed caller.
    pub fn disposition(&self, verdict: &InboundVerdict) -> Disposition {
        match verdict {
            // The app must not be handed a token it could replay.
            InboundVerdict::Unauthenticated => Disposition::Forward(Edits {
                remove: self.removed.clone(),
                set: SmallVec::new(),
            }),
            InboundVerdict::Allowed { caller, .. } => Disposition::Forward(Edits {
                remove: self.removed_under_caller.clone(),
                set: smallvec![(self.caller_header.clone(), caller.shared())],
            }),
            // A failing signature backend is no verdict on the token.
            InboundVerdict::Rejected(r) if r.status() == 503 => {
                Disposition::Reply(LocalReply::unavailable())
            }
            InboundVerdict::Rejected(Rejection::Wimse(e)) => {
                Disposition::Reply(LocalReply::problem(400, e.code(), &e.to_string()))
            }
            InboundVerdict::Rejected(_) => Disposition::Reply(LocalReply::unauthorized()),
            InboundVerdict::BadPath => Disposition::Reply(LocalReply::bad_request()),
            InboundVerdict::Forbidden { .. } => Disposition::Reply(LocalReply::forbidden()),
            InboundVerdict::AwaitIdentity => Disposition::AwaitIdentity,
        }
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, one space or more).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.trim_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn only_normal_paths_are_decided() {
        for ok in ["/", "/a/b", "/a?x=../y;z", "/a.b/c..d", "/.well-known/x"] {
            assert!(super::normal_path(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "//a",
            "/a//b",
            "/a/./b",
            "/a/..",
            "/a/%2e%2e/b",
            "/a%2Fb",
            "/a\\b",
            "/a/%5c",
            "/admin;x/y",
            "/admin;/y",
            "/admin%3Bx/y",
            "/admin%3bx",
            "/admin./x",
            "/admin/x.",
            "/a/...",
        ] {
            assert!(!super::normal_path(bad), "{bad}");
        }
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_nothing_else_is() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer a b"), None);
    }
}
