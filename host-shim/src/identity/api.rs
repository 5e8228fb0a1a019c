//! `GET /v1/identity` (the identity document, with an ETag), `GET /healthz`
//! and `GET /v1/status`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::source::IdentitySource;

/// The Envoy listener's identity routes.
pub fn router(source: Arc<IdentitySource>) -> Router {
    Router::new()
        .route("/v1/identity", get(identity))
        .route("/healthz", get(healthz))
        .route("/v1/status", get(status))
        .with_state(source)
}

/// `GET /healthz` alone (the app listener's).
pub fn health(source: Arc<IdentitySource>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(source)
}

async fn identity(State(source): State<Arc<IdentitySource>>, headers: HeaderMap) -> Response {
    if let Some(age) = source
        .unconfirmed_for()
        .filter(|age| *age > super::store::VOUCH_WINDOW)
    {
        let message = if age == std::time::Duration::MAX {
            "the bundle store has delivered no revision yet\n".to_owned()
        } else {
            format!(
                "the bundle store has not confirmed the bundle for {} ms\n",
                age.as_millis()
            )
        };
        return (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    }
    let Some(served) = source.served() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no identity loaded\n").into_response();
    };
    let etag = format!("\"{}\"", served.version);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let etag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (header::ETAG, etag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        served.document.as_ref().clone(),
    )
        .into_response()
}

async fn healthz(State(source): State<Arc<IdentitySource>>) -> StatusCode {
    if source.served().is_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn status(State(source): State<Arc<IdentitySource>>) -> Response {
    let served = source.served();
    axum::Json(json!({
        "version": served.as_ref().map(|s| s.version.clone()),
        "generation": served.as_ref().map(|s| s.generation),
        "reload_failures": source.reload_failures(),
        "wit_expires_at": source.wit_expires_at(),
        "wit_expiry_warnings": source.wit_expiry_warnings(),
        "bundle_unconfirmed_ms": source.unconfirmed_for().map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
    }))
    .into_response()
}
