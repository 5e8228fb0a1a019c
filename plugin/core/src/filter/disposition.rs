//! What a decided request becomes: forwarded with header changes, answered
//! locally, or held for the identity; and the local replies.

use super::edits::Edits;

/// `WWW-Authenticate` value of every 401.
pub const INVALID_TOKEN_CHALLENGE: &str = "Bearer error=\"invalid_token\"";

/// What a decided request becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Forward upstream with these header changes.
    Forward(Edits),
    /// Answer locally; nothing goes upstream.
    Reply(LocalReply),
    /// Hold the request until an identity is loaded (503 after the wait).
    AwaitIdentity,
}

/// A local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status.
    pub status: u16,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Body (no internal detail).
    pub body: String,
}

impl LocalReply {
    /// 401 with the Bearer `invalid_token` challenge.
    pub fn unauthorized() -> Self {
        Self {
            status: 401,
            headers: vec![("www-authenticate".into(), INVALID_TOKEN_CHALLENGE.into())],
            body: "unauthorized\n".into(),
        }
    }

    /// An RFC 9457 problem: `status`, the rule broken as `code` and `detail`
    /// (never a token's content).
    pub fn problem(status: u16, code: &str, detail: &str) -> Self {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": "Workload authentication failed",
            "status": status,
            "detail": detail,
            "code": code,
        });
        Self {
            status,
            headers: vec![("content-type".into(), "application/problem+json".into())],
            body: body.to_string(),
        }
    }

    /// 403.
    pub fn forbidden() -> Self {
        Self {
            status: 403,
            headers: Vec::new(),
            body: "forbidden\n".into(),
        }
    }

    /// 400: the request cannot be decided as sent.
    pub fn bad_request() -> Self {
        Self {
            status: 400,
            headers: Vec::new(),
            body: "bad request\n".into(),
        }
    }

    /// 405 with the methods that are allowed.
    pub fn method_not_allowed(allow: &str) -> Self {
        Self {
            status: 405,
            headers: vec![("allow".into(), allow.into())],
            body: "method not allowed\n".into(),
        }
    }

    /// 429: the caller has too many transactions open.
    pub fn too_many_requests() -> Self {
        Self {
            status: 429,
            headers: Vec::new(),
            body: "too many requests\n".into(),
        }
    }

    /// 503: identity not (yet) available.
    pub fn unavailable() -> Self {
        Self {
            status: 503,
            headers: Vec::new(),
            body: "identity unavailable\n".into(),
        }
    }

    /// 500: the filter could not do its job (e.g. minting failed).
    pub fn internal() -> Self {
        Self {
            status: 500,
            headers: Vec::new(),
            body: "internal error\n".into(),
        }
    }
}
