//! The one resource of a transaction: a full identifier, never a pattern.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest resource identifier accepted.
pub const MAX_RESOURCE_LEN: usize = 1024;

/// Why a string is not a single, concrete resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// Empty or longer than [`MAX_RESOURCE_LEN`].
    #[error("resource must be 1-{MAX_RESOURCE_LEN} bytes")]
    Length,
    /// A wildcard or glob character (`*`, `?`, `+`, `[`, `]`, `{`, `}`).
    #[error("resource may not contain wildcards")]
    Wildcard,
    /// A `.` or `..` path segment.
    #[error("resource may not contain '.' or '..' segments")]
    Traversal,
    /// An empty path segment (`//`) or a trailing slash.
    #[error("resource may not contain empty path segments")]
    EmptySegment,
    /// A control character, whitespace, quote, backslash or percent sign.
    #[error("resource may not contain whitespace, control characters, quotes, '\\\\' or '%'")]
    Character,
}

/// A validated resource identifier (`arn:aws:s3:::bucket/key`,
/// `secret/data/app/key`, `gs://bucket/object`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Resource(String);

impl Resource {
    /// Validates a resource identifier.
    pub fn parse(text: &str) -> Result<Self, ResourceError> {
        if text.is_empty() || text.len() > MAX_RESOURCE_LEN {
            return Err(ResourceError::Length);
        }
        if text.contains(['*', '?', '+', '[', ']', '{', '}']) {
            return Err(ResourceError::Wildcard);
        }
        if text
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '%'))
        {
            return Err(ResourceError::Character);
        }
        // The part after a scheme (`gs://`) or ARN prefix is a path.
        let path = text.split_once("://").map_or(text, |(_, rest)| rest);
        for segment in path.split('/') {
            if segment == "." || segment == ".." {
                return Err(ResourceError::Traversal);
            }
        }
        if path.split('/').skip(1).any(str::is_empty) || path.starts_with('/') {
            return Err(ResourceError::EmptySegment);
        }
        Ok(Self(text.to_owned()))
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Resource {
    type Error = ResourceError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Resource> for String {
    fn from(r: Resource) -> Self {
        r.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concrete_identifiers_are_resources() {
        for ok in [
            "arn:aws:s3:::bucket/a/b.txt",
            "secret/data/orders/42",
            "gs://b/o",
        ] {
            assert_eq!(Resource::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn patterns_traversal_and_odd_characters_are_not() {
        let cases = [
            ("secret/data/*", ResourceError::Wildcard),
            ("arn:aws:s3:::b/k?", ResourceError::Wildcard),
            ("secret/data/a/../b", ResourceError::Traversal),
            ("secret//x", ResourceError::EmptySegment),
            ("secret/x/", ResourceError::EmptySegment),
            ("/secret/x", ResourceError::EmptySegment),
            ("secret/a b", ResourceError::Character),
            ("secret/a\"}", ResourceError::Wildcard),
            ("secret/a%2fb", ResourceError::Character),
            ("", ResourceError::Length),
        ];
        for (input, expected) in cases {
            assert_eq!(Resource::parse(input), Err(expected), "{input}");
        }
    }
}
