//! `ephemera webhook`: a mutating admission webhook making the same change
//! to a Pod as `ephemera inject` makes to its template. `AdmissionReview`
//! `admission.k8s.io/v1` in and out over HTTPS (TLS 1.2 or 1.3): the same
//! `uid`, a base64 RFC 6902 patch (`patchType: JSONPatch`) computed as the
//! difference between the Pod and its injected form. A Pod already
//! injected or opted out is allowed with no patch; one whose boundaries
//! cannot hold is denied with the reason; a malformed review gets 400.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::inject::{Options, inject_template};

/// The path the webhook configuration calls.
pub const PATH: &str = "/mutate";

/// Why the webhook cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The certificate or key file is unusable.
    #[error("{0}: {1}")]
    Pem(String, String),
    /// The TLS configuration was refused.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
}

/// The server's TLS configuration from PEM files (TLS 1.2 and 1.3).
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, WebhookError> {
    let pem = |path: &Path, e: &dyn std::fmt::Display| {
        WebhookError::Pem(path.display().to_string(), e.to_string())
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, &e))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The webhook's routes.
pub fn router(options: Options) -> Router {
    Router::new()
        .route(PATH, post(mutate))
        .with_state(Arc::new(options))
}

fn bad_request(why: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response()
}

async fn mutate(State(options): State<Arc<Options>>, headers: HeaderMap, body: Bytes) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "an AdmissionReview is application/json\n",
        )
            .into_response();
    }
    match review(&body, &options) {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(why) => bad_request(why),
    }
}

/// Answers one `AdmissionReview` (JSON): the review with its response, or
/// why the body is not a review request.
pub fn review(body: &[u8], options: &Options) -> Result<serde_json::Value, String> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|e| format!("not an AdmissionReview request: {e}"))?;
    Ok(base64_patch(decide(&request, options).into_review()))
}

/// The review as JSON, its patch as the base64 string of the API's
/// `[]byte` (kube-core writes the bytes as a number array).
fn base64_patch(review: AdmissionReview<DynamicObject>) -> serde_json::Value {
    let mut value = serde_json::to_value(&review).unwrap_or_default();
    let bytes: Option<Vec<u8>> = value["response"]["patch"].as_array().map(|a| {
        a.iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect()
    });
    if let Some(bytes) = bytes {
        value["response"]["patch"] = STANDARD.encode(bytes).into();
    }
    value
}

/// The response to one request.
fn decide(request: &AdmissionRequest<DynamicObject>, options: &Options) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(request);
    let Some(object) = &request.object else {
        return allowed;
    };
    if request.kind.kind != "Pod" {
        return allowed;
    }
    let Ok(original) = serde_json::to_value(object) else {
        return allowed.deny("the Pod cannot be read");
    };
    let Ok(serde_yaml_ng::Value::Mapping(mut pod)) = serde_yaml_ng::to_value(&original) else {
        return allowed.deny("the Pod is not an object");
    };
    let metadata = &original["metadata"];
    let workload = metadata["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            metadata["generateName"]
                .as_str()
                .map(|g| g.trim_end_matches('-'))
        })
        .unwrap_or("pod")
        .to_owned();
    let name = format!("Pod/{workload}");
    match inject_template(&mut pod, &name, &workload, options) {
        Ok(None) => allowed,
        Ok(Some(_)) => {
            let Ok(injected) = serde_json::to_value(serde_yaml_ng::Value::Mapping(pod)) else {
                return allowed.deny("the injected Pod cannot be written");
            };
            let patch = json_patch::diff(&original, &injected);
            match allowed.clone().with_patch(patch) {
                Ok(patched) => patched,
                Err(e) => allowed.deny(e),
            }
        }
        Err(e) => allowed.deny(e),
    }
}

/// Serves `router` over TLS on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            // A failed handshake is the peer's problem: drop it.
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
