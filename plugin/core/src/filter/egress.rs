//! Egress secret injection: outbound calls to a named host carry a secret
//! the app never holds, resolved by the shim for this workload's identity.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use base64::Engine as _;

use crate::b64::STANDARD_PAD;
use crate::filter::disposition::LocalReply;

/// How the secret is put on the request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "as", rename_all = "lowercase", deny_unknown_fields)]
pub enum Inject {
    /// `Authorization: Bearer <value>`.
    Bearer,
    /// `<header>: <value>`.
    Header {
        /// The header name (lower case).
        header: String,
    },
    /// `Authorization: Basic base64(<username>:<value>)`.
    Basic {
        /// The user name.
        username: String,
    },
}

/// One egress rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    /// The `:authority` host (port ignored, case-insensitive).
    pub host: String,
    /// The secret's name at the shim.
    pub secret: String,
    /// How to inject it.
    pub inject: Inject,
}

impl EgressRule {
    /// The header the secret goes in (any app-supplied value is replaced).
    pub fn header(&self) -> &str {
        match &self.inject {
            Inject::Bearer | Inject::Basic { .. } => "authorization",
            Inject::Header { header } => header,
        }
    }

    /// The header value carrying `secret`.
    pub fn value(&self, secret: &str) -> String {
        match &self.inject {
            Inject::Bearer => format!("Bearer {secret}"),
            Inject::Header { .. } => secret.to_owned(),
            Inject::Basic { username } => {
                format!(
                    "Basic {}",
                    STANDARD_PAD.encode(format!("{username}:{secret}"))
                )
            }
        }
    }
}

/// Methods an egress route refuses: `TRACE` makes the upstream echo the
/// injected secret back to the caller, `CONNECT` would tunnel past the
/// injection.
const REFUSED_METHODS: [&str; 3] = ["TRACE", "TRACK", "CONNECT"];

/// The methods an egress route answers, for `Allow`.
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// What the outbound filter does with a request to an egress host.
#[derive(Debug, PartialEq, Eq)]
pub enum EgressDecision<'r> {
    /// Not an egress host: minting rules apply.
    NotEgress,
    /// An egress host, refused as sent.
    Refuse(LocalReply),
    /// Inject the secret of this rule (index in the configuration).
    Inject(usize, &'r EgressRule),
}

/// Decides a request by its `:authority` and `:method`.
pub fn decide<'r>(
    rules: &'r [EgressRule],
    authority: Option<&str>,
    method: &str,
) -> EgressDecision<'r> {
    match rule_for(rules, authority) {
        None => EgressDecision::NotEgress,
        Some(_)
            if REFUSED_METHODS
                .iter()
                .any(|m| m.eq_ignore_ascii_case(method)) =>
        {
            EgressDecision::Refuse(LocalReply::method_not_allowed(ALLOWED_METHODS))
        }
        Some((index, rule)) => EgressDecision::Inject(index, rule),
    }
}

/// The rule for a host, if any.
fn rule_for<'r>(
    rules: &'r [EgressRule],
    authority: Option<&str>,
) -> Option<(usize, &'r EgressRule)> {
    let host = super::authority::host(authority?);
    rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.host.eq_ignore_ascii_case(host))
}

/// Egress secrets a ref allows caching, by rule index, each until a
/// deadline (Unix ms). Cleared when the identity changes.
#[derive(Default)]
pub struct SecretCache(HashMap<usize, (String, u64)>);

impl SecretCache {
    /// The value of rule `rule`, if cached and not lapsed at `now_ms`.
    pub fn get(&self, rule: usize, now_ms: u64) -> Option<&str> {
        self.0
            .get(&rule)
            .filter(|(_, until)| *until > now_ms)
            .map(|(value, _)| value.as_str())
    }

    /// Keeps rule `rule`'s value until `until_ms`.
    pub fn put(&mut self, rule: usize, value: String, until_ms: u64) {
        self.0.insert(rule, (value, until_ms));
    }

    /// Forgets every value.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

impl fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretCache({} values)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(inject: Inject) -> EgressRule {
        EgressRule {
            host: "api.example.com".into(),
            secret: "k".into(),
            inject,
        }
    }

    #[test]
    fn each_injection_form_builds_its_header() {
        assert_eq!(rule(Inject::Bearer).value("s"), "Bearer s");
        let h = rule(Inject::Header {
            header: "x-api-key".into(),
        });
        assert_eq!((h.header(), h.value("s").as_str()), ("x-api-key", "s"));
        let b = rule(Inject::Basic {
            username: "svc".into(),
        });
        assert_eq!(b.value("pw"), "Basic c3ZjOnB3");
    }

    #[test]
    fn trace_and_connect_never_carry_a_secret() {
        let rules = vec![rule(Inject::Bearer)];
        for method in ["TRACE", "trace", "TRACK", "CONNECT"] {
            let EgressDecision::Refuse(reply) = decide(&rules, Some("api.example.com"), method)
            else {
                panic!("{method} was not refused");
            };
            assert_eq!(reply.status, 405);
        }
        assert!(matches!(
            decide(&rules, Some("api.example.com"), "GET"),
            EgressDecision::Inject(0, _)
        ));
        assert_eq!(
            decide(&rules, Some("other.example.com"), "TRACE"),
            EgressDecision::NotEgress
        );
    }

    #[test]
    fn a_cached_secret_lapses_and_never_shows_in_debug_output() {
        let mut cache = SecretCache::default();
        cache.put(0, "s3cr3t".into(), 1_000);
        assert_eq!(cache.get(0, 999), Some("s3cr3t"));
        assert_eq!(cache.get(0, 1_000), None);
        assert_eq!(cache.get(1, 0), None);
        assert!(!format!("{cache:?}").contains("s3cr3t"));
    }

    #[test]
    fn hosts_match_without_port_and_case() {
        let rules = vec![rule(Inject::Bearer)];
        assert!(rule_for(&rules, Some("API.example.com:443")).is_some());
        assert!(rule_for(&rules, Some("other.example.com")).is_none());
        assert!(rule_for(&rules, None).is_none());
    }
}
