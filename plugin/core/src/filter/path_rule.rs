//! Matching request paths against configured rules, segment by segment.

use serde::Deserialize;

/// A path rule: `/healthz` matches that path exactly; `/api/*` matches
/// `/api` and everything below it; `/*` matches every path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRule {
    /// This path only (query string ignored).
    Exact(String),
    /// This path and everything below it.
    Subtree(String),
}

/// Why a path rule was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path rule {0:?} must start with '/' and may end with '/*' only")]
pub struct PathRuleError(pub String);

impl PathRule {
    /// Parses `/exact` or `/prefix/*`.
    pub fn parse(text: &str) -> Result<Self, PathRuleError> {
        let bad = || PathRuleError(text.to_owned());
        if !text.starts_with('/') {
            return Err(bad());
        }
        match text.strip_suffix("/*") {
            Some(base) if !base.contains('*') => Ok(Self::Subtree(base.to_owned())),
            None if !text.contains('*') => Ok(Self::Exact(text.to_owned())),
            _ => Err(bad()),
        }
    }

    /// True when the request path (with or without a query) is covered.
    pub fn matches(&self, request_path: &str) -> bool {
        let path = request_path
            .split_once(['?', '#'])
            .map_or(request_path, |(p, _)| p);
        match self {
            Self::Exact(p) => path == p,
            Self::Subtree(base) => path
                .strip_prefix(base.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }

    /// How specific the rule is (longer wins).
    pub fn specificity(&self) -> usize {
        match self {
            Self::Exact(p) => p.len() * 2 + 1,
            Self::Subtree(p) => p.len() * 2,
        }
    }
}

impl<'de> Deserialize<'de> for PathRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtrees_match_whole_segments_only() {
        let r = PathRule::parse("/admin/*").unwrap();
        assert!(r.matches("/admin"));
        assert!(r.matches("/admin/users?x=1"));
        assert!(!r.matches("/administrator"));
        assert!(PathRule::parse("/*").unwrap().matches("/anything/at/all"));
    }

    #[test]
    fn exact_rules_ignore_the_query_only() {
        let r = PathRule::parse("/healthz").unwrap();
        assert!(r.matches("/healthz"));
        assert!(r.matches("/healthz?full=1"));
        assert!(!r.matches("/healthz/x"));
        assert!(!r.matches("/healthzz"));
    }

    #[test]
    fn malformed_rules_are_rejected() {
        for bad in ["healthz", "/a*", "/*/b", "", "/a/*/*"] {
            assert!(PathRule::parse(bad).is_err(), "{bad}");
        }
    }
}
