//! The checks every shim request passes before any route: the per-start
//! secret on TCP, the `Host` header against the shim's own authority (no
//! DNS rebinding), and `content-type: application/json` on POSTs.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

/// A random secret, drawn at each start, that every request on a TCP
/// listener must carry as `Authorization: Bearer <secret>`.
#[derive(Clone)]
pub struct StartSecret(Arc<str>);

impl StartSecret {
    /// 32 random bytes, hex.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(hex::encode(bytes).into()))
    }

    /// The secret, for the file the filter configuration is built from.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `Authorization` carries this secret (constant time).
    fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(presented) = value.strip_prefix(b"Bearer ") else {
            return false;
        };
        presented.ct_eq(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for StartSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StartSecret(<redacted>)")
    }
}

/// What one listener admits.
#[derive(Debug, Clone)]
pub struct Access {
    /// Accepted `Host` values (lowercase).
    hosts: Arc<[String]>,
    /// Required on TCP listeners.
    secret: Option<StartSecret>,
}

impl Access {
    /// A listener answering to `authority` (and `localhost`), plus the TCP
    /// address it is bound to when given; `secret` is required when set.
    pub fn new(
        authority: &str,
        tcp: Option<std::net::SocketAddr>,
        secret: Option<StartSecret>,
    ) -> Self {
        let mut hosts = vec![authority.to_ascii_lowercase(), "localhost".to_owned()];
        if let Some(addr) = tcp {
            hosts.push(addr.to_string());
            hosts.push(format!("localhost:{}", addr.port()));
        }
        Self {
            hosts: hosts.into(),
            secret,
        }
    }

    fn check(&self, request: &Request) -> Result<(), (StatusCode, &'static str)> {
        let headers = request.headers();
        if let Some(secret) = &self.secret
            && !secret.admits(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
        {
            return Err((StatusCode::UNAUTHORIZED, ""));
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        if !host.is_some_and(|h| self.hosts.contains(&h)) {
            return Err((StatusCode::MISDIRECTED_REQUEST, "unknown host\n"));
        }
        if request.method() == Method::POST {
            let json = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
            if !json {
                return Err((
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "content-type must be application/json\n",
                ));
            }
        }
        Ok(())
    }
}

/// The middleware: refuses what `access` does not admit.
pub async fn guard(State(access): State<Access>, request: Request, next: Next) -> Response {
    match access.check(&request) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(method: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().method(method).uri("/v1/identity");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn a_tcp_listener_answers_401_without_its_secret() {
        let secret = StartSecret::generate().unwrap();
        let access = Access::new("ephemera-shim", None, Some(secret.clone()));
        let host = ("host", "ephemera-shim");
        let wrong = format!("Bearer {}x", secret.expose());
        let right = format!("Bearer {}", secret.expose());
        for headers in [vec![host], vec![host, ("authorization", wrong.as_str())]] {
            let refused = access.check(&request("GET", &headers)).unwrap_err();
            assert_eq!(refused.0, StatusCode::UNAUTHORIZED);
        }
        access
            .check(&request("GET", &[host, ("authorization", &right)]))
            .unwrap();
    }

    #[test]
    fn a_foreign_host_is_refused_as_dns_rebinding() {
        let tcp = "127.0.0.1:15080".parse().ok();
        let access = Access::new("ephemera-shim", tcp, None);
        for host in ["attacker.example", "attacker.example:15080", ""] {
            let refused = access
                .check(&request("GET", &[("host", host)]))
                .unwrap_err();
            assert_eq!(refused.0, StatusCode::MISDIRECTED_REQUEST, "{host}");
        }
        for host in [
            "ephemera-shim",
            "127.0.0.1:15080",
            "localhost:15080",
            "LOCALHOST",
        ] {
            access.check(&request("GET", &[("host", host)])).unwrap();
        }
    }

    #[test]
    fn posts_must_be_json() {
        let access = Access::new("ephemera-shim", None, None);
        let host = ("host", "ephemera-shim");
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            let refused = access
                .check(&request("POST", &[host, ("content-type", ct)]))
                .unwrap_err();
            assert_eq!(refused.0, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
        }
        assert!(access.check(&request("POST", &[host])).is_err());
        access
            .check(&request(
                "POST",
                &[host, ("content-type", "application/json; charset=utf-8")],
            ))
            .unwrap();
    }
}
