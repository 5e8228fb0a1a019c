//! `POST /v1/secrets/resolve {"name"}`: the filter's egress injection asks
//! for a secret for this workload's own identity. Authorization is decided
//! before any backend is read; values are never logged.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ephemera_core::SpiffeId;
use ephemera_core::filter::transaction::new_transaction_id;
use ephemera_core::secrets::{Plan, ResolveError, SecretsConfig};
use serde::Deserialize;
use serde_json::json;

use crate::identity_source::IdentitySource;
use crate::ledger::{Event, FileLedger, HmacKey, TransactionEvent};
use crate::sensitive::Sensitive;

/// Audit of secret decisions: a ledger and the tenant's HMAC salt.
pub struct Audit {
    ledger: FileLedger,
    tenant: String,
    salt: HmacKey,
}

impl Audit {
    /// Opens the audit ledger of a configuration, if it has one.
    pub fn open(config: &SecretsConfig) -> Result<Option<Self>, String> {
        let Some(a) = &config.audit else {
            return Ok(None);
        };
        let salt = std::fs::read(&a.salt_file).map_err(|e| format!("{}: {e}", a.salt_file))?;
        let salt = HmacKey::new(salt)
            .ok_or_else(|| format!("{}: a salt needs at least 16 bytes", a.salt_file))?;
        let (ledger, _) =
            FileLedger::open(std::path::Path::new(&a.ledger)).map_err(|e| e.to_string())?;
        Ok(Some(Self {
            ledger,
            tenant: a.tenant.clone(),
            salt,
        }))
    }
}

/// Plans, reads and audits one resolution. The secret is identified in the
/// ledger only by an HMAC (tenant salt) of its canonical URI.
pub async fn resolve_audited(
    config: &SecretsConfig,
    audit: Option<&Audit>,
    name: &str,
    caller: &SpiffeId,
) -> Result<(Sensitive, Plan), ResolveError> {
    let planned = config.plan(name, caller);
    let result = match &planned {
        Ok(plan) => crate::secret_store::read(&plan.location)
            .await
            .map(|v| (v, plan.clone())),
        Err(e) => Err(e.clone()),
    };
    if let Some(audit) = audit {
        let event = match &result {
            Ok(_) => Event::Allow,
            Err(ResolveError::UnknownSecret(_) | ResolveError::NotAuthorized { .. }) => Event::Deny,
            Err(_) => Event::Error,
        };
        let mut e = TransactionEvent::new(event, new_transaction_id().unwrap_or_default());
        e.caller = Some(caller.to_string());
        e.action = Some("read-secret".into());
        e.refs.insert("tenant".into(), audit.tenant.clone());
        let reference = planned
            .as_ref()
            .map_or_else(|_| format!("name:{name}"), |p| p.reference.clone());
        e.refs.insert(
            "secret".into(),
            audit.salt.reference(&audit.tenant, &reference),
        );
        if let Err(err) = &result {
            e.error = Some(err.to_string());
        }
        if let Err(err) = audit.ledger.append(e).await {
            // An unaudited release is no release.
            tracing::error!("secrets audit: {err}");
            return Err(ResolveError::StoreUnavailable(
                "audit ledger unavailable".into(),
            ));
        }
    }
    result
}

/// The secrets a workload may resolve for itself.
pub struct SecretsService {
    config: SecretsConfig,
    audit: Option<Audit>,
    identity: Arc<IdentitySource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveRequest {
    name: String,
}

impl SecretsService {
    /// A service over a validated configuration.
    pub fn new(config: SecretsConfig, identity: Arc<IdentitySource>) -> Result<Self, String> {
        let audit = Audit::open(&config)?;
        Ok(Self {
            config,
            audit,
            identity,
        })
    }

    /// The route.
    pub fn routes(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1/secrets/resolve", post(resolve))
            .with_state(self)
    }
}

fn status(e: &ResolveError) -> StatusCode {
    match e {
        ResolveError::UnknownSecret(_) => StatusCode::NOT_FOUND,
        ResolveError::NotAuthorized { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn resolve(State(service): State<Arc<SecretsService>>, body: axum::body::Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<ResolveRequest>(&body) else {
        return (StatusCode::BAD_REQUEST, "expected {\"name\": …}\n").into_response();
    };
    let Some(served) = service.identity.served() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no identity loaded\n").into_response();
    };
    let caller = served.identity.id().clone();
    match resolve_audited(
        &service.config,
        service.audit.as_ref(),
        &request.name,
        &caller,
    )
    .await
    {
        Ok((value, plan)) => {
            axum::Json(json!({"value": value.expose(), "cache_ttl_secs": plan.cache_ttl_secs}))
                .into_response()
        }
        Err(e) => {
            tracing::info!("secret {:?} not released: {e}", request.name);
            (status(&e), axum::Json(json!({"error": e.to_string()}))).into_response()
        }
    }
}
