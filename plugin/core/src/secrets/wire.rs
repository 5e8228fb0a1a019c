//! The shim's secrets API as the filter speaks it (JSON).

use std::fmt;

use serde::{Deserialize, Serialize};

/// `POST /v1/secrets/resolve`: a secret by name, for the presenter's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// The secret's name.
    pub name: String,
    /// Part of the grant key; egress injection uses the default.
    #[serde(default = "egress")]
    pub purpose: String,
}

/// The purpose of a read for egress injection.
pub const EGRESS_PURPOSE: &str = "egress";

fn egress() -> String {
    EGRESS_PURPOSE.to_owned()
}

impl ResolveRequest {
    /// A read for egress injection.
    pub fn egress(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            purpose: egress(),
        }
    }
}

/// The answer to a resolve: the value, and how long the ref allows caching it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveResponse {
    /// The value. Secret.
    pub value: String,
    /// Seconds the value may be cached; none or 0: not at all.
    pub cache_ttl_secs: Option<u64>,
}

impl fmt::Debug for ResolveResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveResponse")
            .field("cache_ttl_secs", &self.cache_ttl_secs)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolve_request_without_purpose_is_for_egress() {
        let r: ResolveRequest = serde_json::from_str(r#"{"name":"db"}"#).unwrap();
        assert_eq!(r, ResolveRequest::egress("db"));
        assert!(serde_json::from_str::<ResolveRequest>(r#"{"name":"db","x":1}"#).is_err());
    }

    #[test]
    fn a_resolved_value_never_shows_in_debug_output() {
        let r = ResolveResponse {
            value: "s3cr3t".into(),
            cache_ttl_secs: Some(5),
        };
        assert!(!format!("{r:?}").contains("s3cr3t"));
    }
}
