//! `POST /v1/secrets/resolve {"name"[, "purpose"]}`: on the Envoy listener
//! the filter's egress injection asks for a secret for this workload's own
//! identity; on the app listener a caller presenting a JWT-SVID for the workload's secrets audience (with a `jti`,
//! living no longer than the replay window) asks for itself. Every read
//! passes the gate (negative cache, `jti` anti-replay, policy, grant)
//! before any backend is read; values are never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ephemera_core::RustCrypto;
use ephemera_core::SpiffeId;
use ephemera_core::filter::inbound::bearer_token;
use ephemera_core::filter::workload_identity::WorkloadIdentity;
use ephemera_core::ipt::TransactionId;
use ephemera_core::secrets::grants::{EnforcementOptions, SenderBinding};
use ephemera_core::secrets::wire::{ResolveRequest, ResolveResponse};
use ephemera_core::secrets::{
    Gate, GateRequest, Plan, ResolveError, SecretsConfig, secrets_audience,
};
use ephemera_core::token::{DpopRequest, TokenVerifier, VerifyOptions, verify_dpop};
use serde_json::json;

use crate::identity_source::IdentitySource;
use crate::ledger::Checkpointer;
use crate::ledger::signing::configured_key;
use crate::ledger::{Event, FileLedger, HmacKey, TransactionEvent};
use crate::sensitive::Sensitive;

/// Audit of secret decisions: a ledger and the tenant's HMAC salt.
pub struct Audit {
    ledger: FileLedger,
    tenant: String,
    salt: HmacKey,
    checkpointer: Option<Arc<Checkpointer>>,
}

impl Audit {
    /// Opens the audit ledger of a configuration, if it has one; without a
    /// signing key only when `unkeyed` was asked for.
    pub fn open(config: &SecretsConfig, unkeyed: bool) -> Result<Option<Self>, String> {
        let Some(a) = &config.audit else {
            return Ok(None);
        };
        let salt = std::fs::read(&a.salt_file).map_err(|e| format!("{}: {e}", a.salt_file))?;
        let salt = HmacKey::new(salt)
            .ok_or_else(|| format!("{}: a salt needs at least 16 bytes", a.salt_file))?;
        let path = std::path::Path::new(&a.ledger);
        let key = configured_key(
            path,
            a.signing_key_file.as_deref().map(std::path::Path::new),
            unkeyed,
        )?;
        if a.checkpoint.is_some() && key.is_none() {
            return Err(format!("{}: a checkpoint needs signing_key_file", a.ledger));
        }
        let checkpoint = a.checkpoint.as_ref().zip(key.clone());
        let (ledger, _) = FileLedger::open(path, key).map_err(|e| e.to_string())?;
        let checkpointer = checkpoint
            .map(|(config, key)| Checkpointer::start(ledger.clone(), key, config))
            .transpose()?;
        Ok(Some(Self {
            ledger,
            tenant: a.tenant.clone(),
            salt,
            checkpointer,
        }))
    }

    /// Checkpoints the ledger's head now, if it is checkpointed and moved.
    pub async fn flush(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.flush().await;
        }
    }
}

/// Plans, reads and audits one resolution (the operator's path: policy
/// only, no grants, no cache).
pub async fn resolve_audited(
    config: &SecretsConfig,
    audit: Option<&Audit>,
    name: &str,
    caller: &SpiffeId,
) -> Result<(Sensitive, Plan), ResolveError> {
    release(config, audit, None, config.plan(name, caller), name, caller).await
}

/// Resolved values kept for as long as their ref allows, by reference.
#[derive(Default)]
struct ValueCache(Mutex<HashMap<String, (Sensitive, Instant)>>);

impl ValueCache {
    fn get(&self, reference: &str) -> Option<Sensitive> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, until)| *until > Instant::now());
        map.get(reference).map(|(v, _)| v.clone())
    }

    fn put(&self, reference: &str, value: &Sensitive, ttl_secs: u64) {
        let until = Instant::now() + Duration::from_secs(ttl_secs);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(reference.to_owned(), (value.clone(), until));
    }
}

/// Reads what a decision allows (from `cache` when the ref permits it) and
/// audits the outcome. The secret is identified in the ledger only by an
/// HMAC (tenant salt) of its canonical URI.
async fn release(
    config: &SecretsConfig,
    audit: Option<&Audit>,
    cache: Option<&ValueCache>,
    decision: Result<Plan, ResolveError>,
    name: &str,
    caller: &SpiffeId,
) -> Result<(Sensitive, Plan), ResolveError> {
    let result = match decision {
        Ok(plan) => {
            let ttl = plan.cache_ttl_secs.filter(|t| *t > 0);
            match (cache, ttl) {
                (Some(cache), Some(ttl)) => match cache.get(&plan.reference) {
                    Some(value) => Ok((value, plan)),
                    None => crate::secret_store::read(&plan.location).await.map(|v| {
                        cache.put(&plan.reference, &v, ttl);
                        (v, plan)
                    }),
                },
                _ => crate::secret_store::read(&plan.location)
                    .await
                    .map(|v| (v, plan)),
            }
        }
        Err(e) => Err(e),
    };
    if let Some(audit) = audit {
        let event = match &result {
            Ok(_) => Event::Allow,
            Err(
                ResolveError::UnknownSecret(_)
                | ResolveError::NotAuthorized { .. }
                | ResolveError::Refused(_),
            ) => Event::Deny,
            Err(_) => Event::Error,
        };
        let mut e = TransactionEvent::new(
            event,
            TransactionId::generate()
                .map(String::from)
                .unwrap_or_default(),
        );
        e.caller = Some(caller.to_string());
        e.action = Some("read-secret".into());
        e.refs.insert("tenant".into(), audit.tenant.clone());
        let reference = config
            .reference(name)
            .unwrap_or_else(|| format!("name:{name}"));
        e.refs.insert(
            "secret".into(),
            audit.salt.reference(&audit.tenant, &reference),
        );
        if let Err(err) = &result {
            e.error = Some(err.audit_reason());
        }
        if let Err(err) = audit.ledger.append(e).await {
            // An unaudited release is no release.
            tracing::error!("secrets audit: {err}");
            return Err(ResolveError::AuditUnavailable);
        }
    }
    result
}

/// The secrets a workload may resolve for itself.
pub struct SecretsService {
    config: SecretsConfig,
    audit: Option<Audit>,
    identity: Arc<IdentitySource>,
    gate: Mutex<Gate>,
    options: EnforcementOptions,
    cache: ValueCache,
}

impl SecretsService {
    /// Checkpoints the audit ledger's head now (at shutdown).
    pub async fn flush_audit(&self) {
        if let Some(audit) = &self.audit {
            audit.flush().await;
        }
    }

    /// A service over a validated configuration.
    pub fn new(
        config: SecretsConfig,
        identity: Arc<IdentitySource>,
        unkeyed_ledger: bool,
    ) -> Result<Self, String> {
        let audit = Audit::open(&config, unkeyed_ledger)?;
        let tenant = config
            .audit
            .as_ref()
            .map_or("default", |a| a.tenant.as_str());
        let options = EnforcementOptions::default();
        let gate = Mutex::new(Gate::new(tenant, options));
        Ok(Self {
            config,
            audit,
            identity,
            gate,
            options,
            cache: ValueCache::default(),
        })
    }

    /// The route, for the callers one listener serves.
    pub fn routes(self: Arc<Self>, callers: Callers) -> Router {
        Router::new()
            .route("/v1/secrets/resolve", post(resolve))
            .with_state((self, callers))
    }
}

/// Who asks on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callers {
    /// The Envoy listener: the filter asking for the workload itself.
    /// `Authorization` is not read (on TCP it carries the start secret).
    Workload,
    /// The app listener: every request presents its own JWT-SVID.
    Bearer,
}

fn status(e: &ResolveError) -> StatusCode {
    match e {
        ResolveError::UnknownSecret(_) => StatusCode::NOT_FOUND,
        ResolveError::NotAuthorized { .. } | ResolveError::Refused(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The caller of a request: on the Envoy listener the workload itself; on
/// the app listener the bearer of a JWT-SVID for this workload's secrets
/// audience.
struct Presenter {
    caller: SpiffeId,
    jti: Option<String>,
    sender: Option<SenderBinding>,
}

fn presenter(
    callers: Callers,
    headers: &HeaderMap,
    identity: &WorkloadIdentity,
    replay_window_ms: u64,
) -> Result<Presenter, String> {
    if callers == Callers::Workload {
        return Ok(Presenter {
            caller: identity.id().clone(),
            jti: None,
            sender: None,
        });
    }
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err("a JWT-SVID for this workload's secrets audience is required".into());
    };
    let token = value
        .to_str()
        .ok()
        .and_then(bearer_token)
        .ok_or("authorization is not a bearer token")?;
    let audience = secrets_audience(identity.id()).map_err(|e| e.to_string())?;
    let verifier = TokenVerifier::new(audience, VerifyOptions::default());
    let now = crate::clock::unix_now();
    let verified = verifier
        .verify(token, &identity.bundle, now, &RustCrypto)
        .map_err(|e| e.to_string())?;
    if verified.jti.is_none() {
        return Err("a JWT-SVID asking for secrets needs a jti".into());
    }
    // Its jti is remembered for the replay window: it must not outlive it.
    if verified.expires_at.saturating_sub(now) > replay_window_ms / 1000 {
        return Err(format!(
            "a JWT-SVID asking for secrets may live at most {} s",
            replay_window_ms / 1000
        ));
    }
    let sender = match verified
        .claims
        .get("cnf")
        .and_then(|c| c.get("jkt"))
        .and_then(|j| j.as_str())
    {
        Some(jkt) => Some(proven_sender(headers, token, jkt, now)?),
        None => None,
    };
    Ok(Presenter {
        caller: verified.caller,
        jti: verified.jti,
        sender,
    })
}

/// A sender-bound token (`cnf.jkt`) counts only with a DPoP proof by that
/// key for this request and this token. Its `ath` ties the proof to the
/// token, whose `jti` is single-use here, so a proof cannot be replayed.
fn proven_sender(
    headers: &HeaderMap,
    token: &str,
    jkt: &str,
    now: u64,
) -> Result<SenderBinding, String> {
    let proof = headers
        .get("dpop")
        .and_then(|v| v.to_str().ok())
        .ok_or("the JWT-SVID is sender-bound (cnf.jkt): send a DPoP proof")?;
    let request = DpopRequest {
        method: "POST",
        path: "/v1/secrets/resolve",
        access_token: token,
        now,
        max_skew_secs: 60,
    };
    let proven = verify_dpop(proof, &request, &RustCrypto).map_err(|e| e.to_string())?;
    if proven.jkt != jkt {
        return Err("the DPoP proof is signed by another key than the token's cnf".into());
    }
    Ok(SenderBinding::JwkThumbprint(proven.jkt))
}

async fn resolve(
    State((service, callers)): State<(Arc<SecretsService>, Callers)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<ResolveRequest>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "expected {\"name\": …[, \"purpose\": …]}\n",
        )
            .into_response();
    };
    let Some(served) = service.identity.served() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no identity loaded\n").into_response();
    };
    let who = match presenter(
        callers,
        &headers,
        &served.identity,
        service.options.replay_window_ms,
    ) {
        Ok(who) => who,
        Err(why) => {
            return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": why}))).into_response();
        }
    };
    let read = GateRequest {
        name: &request.name,
        caller: &who.caller,
        purpose: &request.purpose,
        jti: who.jti.as_deref(),
        sender: who.sender.as_ref(),
        now_ms: crate::clock::unix_now_ms(),
    };
    let gate = || service.gate.lock().unwrap_or_else(|p| p.into_inner());
    let decision = gate().decide(&service.config, &read);
    let admitted = decision.is_ok();
    match release(
        &service.config,
        service.audit.as_ref(),
        Some(&service.cache),
        decision,
        &request.name,
        &who.caller,
    )
    .await
    {
        Ok((value, plan)) => axum::Json(ResolveResponse {
            value: value.expose().to_owned(),
            cache_ttl_secs: plan.cache_ttl_secs,
        })
        .into_response(),
        Err(e) => {
            // Nothing was read: the use and the jti are not spent. A read
            // that could not be audited stays spent (`AuditUnavailable`):
            // a failing audit must not let one token read again and again.
            if admitted && matches!(e, ResolveError::StoreUnavailable(_)) {
                gate().refund(&service.config, &read);
            }
            tracing::info!("secret {:?} not released: {e}", request.name);
            (status(&e), axum::Json(json!({"error": e.to_string()}))).into_response()
        }
    }
}
