//! `ephemera serve`: the shim's HTTP API for the filter, on 127.0.0.1 or a
//! Unix socket.
//!
//! - `GET /v1/identity`: the identity document; `ETag` is its version and
//!   `If-None-Match` with the current version answers 304.
//! - `GET /healthz`: 200 once an identity is served, else 503.
//! - `GET /v1/status`: `{"version", "generation", "reload_failures"}`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::identity_source::IdentitySource;

/// Where the shim listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address (loopback by convention).
    Tcp(std::net::SocketAddr),
    /// A Unix socket path.
    Unix(std::path::PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Ok(Self::Unix(path.into())),
            Some(_) => Err("unix: needs a socket path".into()),
            None => s
                .parse()
                .map(Self::Tcp)
                .map_err(|e| format!("{s:?} is not HOST:PORT or unix:PATH: {e}")),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The shim's routes over an identity source.
pub fn router(source: Arc<IdentitySource>) -> Router {
    Router::new()
        .route("/v1/identity", get(identity))
        .route("/healthz", get(healthz))
        .route("/v1/status", get(status))
        .with_state(source)
}

async fn identity(State(source): State<Arc<IdentitySource>>, headers: HeaderMap) -> Response {
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
    }))
    .into_response()
}

/// A bound listener.
#[derive(Debug)]
pub enum Bound {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// Unix socket.
    Unix(tokio::net::UnixListener),
}

/// Binds `listen` (replacing a stale Unix socket file).
pub async fn bind(listen: &Listen) -> std::io::Result<Bound> {
    match listen {
        Listen::Tcp(addr) => tokio::net::TcpListener::bind(addr).await.map(Bound::Tcp),
        Listen::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let listener = tokio::net::UnixListener::bind(path)?;
            // The identity includes the private key: owner only.
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            Ok(Bound::Unix(listener))
        }
    }
}

/// Serves `router` on a bound listener until `shutdown` resolves.
pub async fn serve(
    bound: Bound,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match bound {
        Bound::Tcp(listener) => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Bound::Unix(listener) => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}
