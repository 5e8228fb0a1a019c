//! HTTP routes of the transaction service.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ephemera_core::ipt::{CloseRequest, OpenRequest, TransactionId};
use serde_json::json;

use super::service::{Transactions, TxError};

/// `POST /v1/transactions` and `POST /v1/transactions/{id}/close`.
pub fn routes(service: Arc<Transactions>) -> Router {
    Router::new()
        .route("/v1/transactions", post(open))
        .route("/v1/transactions/{id}/close", post(close))
        .with_state(service)
}

/// The same routes answering 503 (the service could not start, e.g. the
/// ledger cannot be opened).
pub fn unavailable(reason: String) -> Router {
    let answer = move || {
        let e = TxError::Unavailable(reason.clone());
        async move { error(&e) }
    };
    Router::new()
        .route("/v1/transactions", post(answer.clone()))
        .route("/v1/transactions/{id}/close", post(answer))
}

fn error(e: &TxError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({"error": e.code(), "message": e.to_string()})),
    )
        .into_response()
}

/// Runs `work` to its end even when the caller goes away (Envoy resets a
/// call it stopped waiting for): a half-done open or close would leave an
/// issued credential unrecorded or unrevoked.
async fn to_completion<T: Send + 'static>(
    work: impl Future<Output = Result<T, TxError>> + Send + 'static,
) -> Result<T, TxError> {
    tokio::spawn(work)
        .await
        .unwrap_or_else(|e| Err(TxError::Unavailable(format!("task failed: {e}"))))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, TxError> {
    serde_json::from_slice(body).map_err(|e| TxError::BadRequest(e.to_string()))
}

async fn open(State(service): State<Arc<Transactions>>, body: axum::body::Bytes) -> Response {
    let result = match parse::<OpenRequest>(&body) {
        Ok(request) => to_completion(async move { service.open(request).await }).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(response) => Json(response).into_response(),
        Err(e) => {
            tracing::info!("transaction refused: {e}");
            error(&e)
        }
    }
}

async fn close(
    State(service): State<Arc<Transactions>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    // An id that is not one was never opened.
    let result = match (TransactionId::parse(&id), parse::<CloseRequest>(&body)) {
        (Err(_), _) => Err(TxError::NotFound),
        (Ok(id), Ok(request)) => {
            to_completion(async move { service.close(&id, request).await }).await
        }
        (_, Err(e)) => Err(e),
    };
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(&e),
    }
}
