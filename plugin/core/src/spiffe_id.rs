//! SPIFFE IDs (`spiffe://<trust-domain>[/<path>]`) as the spiffile profile defines them.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SCHEME: &str = "spiffe://";

/// Longest SPIFFE ID accepted, in bytes (the SPIFFE standard's URI limit).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The string does not start with `spiffe://`.
    #[error("not a SPIFFE ID: missing the spiffe:// scheme")]
    MissingScheme,
    /// Nothing between the scheme and the path.
    #[error("empty trust domain")]
    EmptyTrustDomain,
    /// The trust domain holds a character outside `[a-z0-9._-]`.
    #[error("trust domain may only contain lowercase letters, digits, '.', '_' and '-'")]
    BadTrustDomainChar,
    /// The ID ends with `/`.
    #[error("trailing slash is not allowed")]
    TrailingSlash,
    /// Two consecutive slashes in the path.
    #[error("empty path segment")]
    EmptySegment,
    /// A `.` or `..` path segment.
    #[error("relative path segment ('.' or '..') is not allowed")]
    RelativeSegment,
    /// A path segment holds a character outside `[A-Za-z0-9._-]`.
    #[error("path segments may only contain letters, digits, '.', '_' and '-'")]
    BadPathChar,
    /// Longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("SPIFFE ID longer than {MAX_SPIFFE_ID_LEN} bytes")]
    TooLong,
}

/// A validated SPIFFE ID.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// The whole ID as text; always valid. Shared: a clone copies no text.
    text: Arc<str>,
    /// Byte offset where the path (possibly empty) starts in `text`.
    path_start: usize,
}

fn trust_domain_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
}

fn path_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')
}

/// Checks a trust domain name (`[a-z0-9._-]+`).
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), SpiffeIdError> {
    if trust_domain.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if !trust_domain.bytes().all(trust_domain_char) {
        return Err(SpiffeIdError::BadTrustDomainChar);
    }
    Ok(())
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn parse(value: &str) -> Result<Self, SpiffeIdError> {
        if value.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = value
            .strip_prefix(SCHEME)
            .ok_or(SpiffeIdError::MissingScheme)?;
        let (trust_domain, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        validate_trust_domain(trust_domain)?;
        if let Some(path) = path {
            if path.is_empty() {
                return Err(SpiffeIdError::TrailingSlash);
            }
            for segment in path.split('/') {
                if segment.is_empty() {
                    return Err(if path.ends_with('/') {
                        SpiffeIdError::TrailingSlash
                    } else {
                        SpiffeIdError::EmptySegment
                    });
                }
                if segment == "." || segment == ".." {
                    return Err(SpiffeIdError::RelativeSegment);
                }
                if !segment.bytes().all(path_char) {
                    return Err(SpiffeIdError::BadPathChar);
                }
            }
        }
        Ok(Self {
            text: Arc::from(value),
            path_start: SCHEME.len() + trust_domain.len(),
        })
    }

    /// Builds `spiffe://<trust_domain>/<path>` from its parts and validates it.
    pub fn from_parts(trust_domain: &str, path: &str) -> Result<Self, SpiffeIdError> {
        if path.is_empty() {
            Self::parse(&format!("{SCHEME}{trust_domain}"))
        } else {
            Self::parse(&format!("{SCHEME}{trust_domain}/{path}"))
        }
    }

    /// The trust domain, e.g. `example.org`.
    pub fn trust_domain(&self) -> &str {
        &self.text[SCHEME.len()..self.path_start]
    }

    /// The path: empty, or starting with `/`.
    pub fn path(&self) -> &str {
        &self.text[self.path_start..]
    }

    /// The ID as shared text (a clone copies nothing).
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.text)
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.text)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_split_at_the_first_slash() {
        let id = SpiffeId::parse("spiffe://example.org/a/b").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "/a/b");
        let root = SpiffeId::parse("spiffe://example.org").unwrap();
        assert_eq!(root.path(), "");
    }

    #[test]
    fn each_rule_has_its_own_error() {
        let cases = [
            ("http://example.org/x", SpiffeIdError::MissingScheme),
            ("spiffe://", SpiffeIdError::EmptyTrustDomain),
            ("spiffe:///x", SpiffeIdError::EmptyTrustDomain),
            ("spiffe://Example.org/x", SpiffeIdError::BadTrustDomainChar),
            ("spiffe://example.org/", SpiffeIdError::TrailingSlash),
            ("spiffe://example.org/a/", SpiffeIdError::TrailingSlash),
            ("spiffe://example.org//x", SpiffeIdError::EmptySegment),
            (
                "spiffe://example.org/a/../b",
                SpiffeIdError::RelativeSegment,
            ),
            ("spiffe://example.org/./b", SpiffeIdError::RelativeSegment),
            ("spiffe://example.org/a b", SpiffeIdError::BadPathChar),
            ("spiffe://example.org/bad~path", SpiffeIdError::BadPathChar),
            ("spiffe://example.org/caf\u{e9}", SpiffeIdError::BadPathChar),
        ];
        for (input, expected) in cases {
            assert_eq!(SpiffeId::parse(input), Err(expected), "{input}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
        assert_eq!(SpiffeId::parse(&long), Err(SpiffeIdError::TooLong));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "spiffe://example.org",
            "spiffe://ex-ample_2.org/UPPER.case/x",
        ] {
            let id: SpiffeId = text.parse().unwrap();
            assert_eq!(id.to_string(), text);
            assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        }
    }
}
