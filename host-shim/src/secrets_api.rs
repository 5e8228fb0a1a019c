//! `POST /v1/secrets/resolve {"name"}`: the filter's egress injection asks
//! for a secret for this workload's own identity. Authorization is decided
//! before any backend is read; values are never logged.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ephemera_core::secrets::{ResolveError, SecretsConfig};
use serde::Deserialize;
use serde_json::json;

use crate::identity_source::IdentitySource;

/// The secrets a workload may resolve for itself.
pub struct SecretsService {
    config: SecretsConfig,
    identity: Arc<IdentitySource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveRequest {
    name: String,
}

impl SecretsService {
    /// A service over a validated configuration.
    pub fn new(config: SecretsConfig, identity: Arc<IdentitySource>) -> Self {
        Self { config, identity }
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
    let plan = match service.config.plan(&request.name, &caller) {
        Ok(plan) => plan,
        Err(e) => {
            tracing::info!("secret {:?} refused: {e}", request.name);
            return (status(&e), axum::Json(json!({"error": e.to_string()}))).into_response();
        }
    };
    match crate::secret_store::read(&plan.location).await {
        Ok(value) => {
            axum::Json(json!({"value": value.expose(), "cache_ttl_secs": plan.cache_ttl_secs}))
                .into_response()
        }
        Err(e) => {
            tracing::warn!(
                "secret {:?} ({}) unavailable: {e}",
                request.name,
                plan.reference
            );
            (status(&e), axum::Json(json!({"error": e.to_string()}))).into_response()
        }
    }
}
