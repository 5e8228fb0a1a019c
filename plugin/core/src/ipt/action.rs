//! The one action of a transaction.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the caller does to the resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Action {
    /// Read it.
    Read,
    /// Create or replace it.
    Write,
    /// Delete it.
    Delete,
    /// Tag it.
    Tag,
    /// A provider-specific action (`[A-Za-z0-9:._-]{1,64}`), passed through.
    Other(String),
}

/// Why a string is not an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("action {0:?} must be 1-64 characters of [A-Za-z0-9:._-]")]
pub struct ActionError(pub String);

impl Action {
    /// Parses an action name.
    pub fn parse(text: &str) -> Result<Self, ActionError> {
        Ok(match text {
            "read" => Self::Read,
            "write" => Self::Write,
            "delete" => Self::Delete,
            "tag" => Self::Tag,
            other => {
                let ok = !other.is_empty()
                    && other.len() <= 64
                    && other.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-')
                    });
                if !ok {
                    return Err(ActionError(other.to_owned()));
                }
                Self::Other(other.to_owned())
            }
        })
    }

    /// The default action of an HTTP method: GET/HEAD read, PUT/POST/PATCH
    /// write, DELETE delete; others have none.
    pub fn for_method(method: &str) -> Option<Self> {
        match method {
            "GET" | "HEAD" => Some(Self::Read),
            "PUT" | "POST" | "PATCH" => Some(Self::Write),
            "DELETE" => Some(Self::Delete),
            _ => None,
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
            Self::Tag => "tag",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Action {
    type Error = ActionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Action> for String {
    fn from(a: Action) -> Self {
        a.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_actions() {
        assert_eq!(Action::for_method("GET"), Some(Action::Read));
        assert_eq!(Action::for_method("POST"), Some(Action::Write));
        assert_eq!(Action::for_method("DELETE"), Some(Action::Delete));
        assert_eq!(Action::for_method("OPTIONS"), None);
    }

    #[test]
    fn provider_actions_pass_through_when_well_formed() {
        assert_eq!(
            Action::parse("s3:GetObjectAcl").unwrap().as_str(),
            "s3:GetObjectAcl"
        );
        for bad in ["", "a b", "*", "x\"y", &"a".repeat(65)] {
            assert!(Action::parse(bad).is_err(), "{bad}");
        }
    }
}
