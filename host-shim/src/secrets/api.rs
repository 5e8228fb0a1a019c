//! `POST /v1/secrets/resolve {"name"[, "purpose"]}`: on the Envoy listener
//! the filter's egress injection asks for a secret for this workload's own
//! identity; on the app listener a caller presenting its own JWT-SVID for
//! the workload's secrets audience ([`ephemera_core::secrets::presenter`])
//! asks for itself. Values are never logged.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ephemera_core::RustCrypto;
use ephemera_core::secrets::presenter::{Presented, Presenter, RESOLVE_PATH, present};
use ephemera_core::secrets::wire::{ResolveRequest, ResolveResponse};
use ephemera_core::secrets::{GateRequest, ResolveError};
use serde_json::json;

use super::SecretsService;

/// Who asks on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callers {
    /// The Envoy listener: the filter asking for the workload itself.
    /// `Authorization` is not read (on TCP it carries the start secret).
    Workload,
    /// The app listener: every request presents its own JWT-SVID.
    Bearer,
}

/// The route, for the callers one listener serves.
pub fn routes(service: Arc<SecretsService>, callers: Callers) -> Router {
    Router::new()
        .route(RESOLVE_PATH, post(resolve))
        .with_state((service, callers))
}

fn status(e: &ResolveError) -> StatusCode {
    match e {
        ResolveError::UnknownSecret(_) => StatusCode::NOT_FOUND,
        ResolveError::NotAuthorized { .. } | ResolveError::Refused(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
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
    let Some(served) = service.identity().served() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no identity loaded\n").into_response();
    };
    let now_ms = crate::clock::unix_now_ms();
    let (caller, jti, sender) = match callers {
        Callers::Workload => (served.identity.id().clone(), None, None),
        Callers::Bearer => {
            let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
            let presented = Presented {
                authorization: header(AUTHORIZATION.as_str()),
                dpop: header("dpop"),
            };
            let now = now_ms / 1000;
            match present(
                presented,
                &served.identity,
                now,
                service.replay_window_ms(),
                &RustCrypto,
            ) {
                Ok(Presenter {
                    caller,
                    jti,
                    sender,
                }) => (caller, Some(jti), sender),
                Err(why) => {
                    let body = json!({"error": why.to_string()});
                    return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
                }
            }
        }
    };
    let read = GateRequest {
        name: &request.name,
        caller: &caller,
        purpose: &request.purpose,
        jti: jti.as_deref(),
        sender: sender.as_ref(),
        now_ms,
    };
    match service.resolve(&read).await {
        Ok((value, plan)) => axum::Json(ResolveResponse {
            value: value.expose().to_owned(),
            cache_ttl_secs: plan.cache_ttl_secs,
        })
        .into_response(),
        Err(e) => {
            tracing::info!("secret {:?} not released: {e}", request.name);
            (status(&e), axum::Json(json!({"error": e.to_string()}))).into_response()
        }
    }
}
