//! Which callers a route admits: exact SPIFFE IDs or `spiffe://td/prefix/*`.

use std::fmt;

use serde::Deserialize;

use crate::spiffe_id::{SpiffeId, SpiffeIdError};

/// One entry of a route's `allow` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerPattern {
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Every ID strictly below this one (`spiffe://td/team/*`), or every ID of
    /// the trust domain (`spiffe://td/*`).
    Below(SpiffeId),
}

impl CallerPattern {
    /// Parses `spiffe://…` or `spiffe://…/*`.
    pub fn parse(text: &str) -> Result<Self, SpiffeIdError> {
        match text.strip_suffix("/*") {
            Some(base) => SpiffeId::parse(base).map(Self::Below),
            None => SpiffeId::parse(text).map(Self::Exact),
        }
    }

    /// True when `caller` is admitted.
    pub fn matches(&self, caller: &SpiffeId) -> bool {
        match self {
            Self::Exact(id) => id == caller,
            Self::Below(base) => caller
                .as_str()
                .strip_prefix(base.as_str())
                .is_some_and(|rest| rest.starts_with('/')),
        }
    }
}

impl fmt::Display for CallerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(id) => write!(f, "{id}"),
            Self::Below(id) => write!(f, "{id}/*"),
        }
    }
}

impl<'de> Deserialize<'de> for CallerPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text)
            .map_err(|e| serde::de::Error::custom(format_args!("caller pattern {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn a_wildcard_admits_ids_strictly_below_its_base() {
        let p = CallerPattern::parse("spiffe://example.org/team/*").unwrap();
        assert!(p.matches(&id("spiffe://example.org/team/a")));
        assert!(p.matches(&id("spiffe://example.org/team/a/b")));
        assert!(!p.matches(&id("spiffe://example.org/team")));
        assert!(!p.matches(&id("spiffe://example.org/teammate")));
        assert!(!p.matches(&id("spiffe://example.org.evil/team/a")));
    }

    #[test]
    fn a_trust_domain_wildcard_admits_the_whole_domain_only() {
        let p = CallerPattern::parse("spiffe://example.org/*").unwrap();
        assert!(p.matches(&id("spiffe://example.org/x")));
        assert!(!p.matches(&id("spiffe://example.org.evil/x")));
    }

    #[test]
    fn exact_patterns_admit_one_id() {
        let p = CallerPattern::parse("spiffe://example.org/a").unwrap();
        assert!(p.matches(&id("spiffe://example.org/a")));
        assert!(!p.matches(&id("spiffe://example.org/a/b")));
        assert!(CallerPattern::parse("spiffe://example.org/a*").is_err());
        assert!(CallerPattern::parse("spiffe://example.org/*/x").is_err());
    }
}
