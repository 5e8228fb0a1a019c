//! Transaction ids: lower-case UUID v4 from a CSPRNG, chosen by the filter.
//! They name a transaction in the shim's API paths and in the ledger, so
//! anything else is refused where it enters.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A transaction id (lower-case UUID v4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TransactionId(String);

/// Why a text is not a transaction id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transaction_id must be a lower-case UUID v4")]
pub struct TransactionIdError;

impl TransactionId {
    /// A fresh random id; `None` when no randomness is available.
    pub fn generate() -> Option<Self> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).ok()?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex = hex::encode(b);
        Some(Self(format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )))
    }

    /// Accepts exactly a lower-case UUID v4.
    pub fn parse(text: &str) -> Result<Self, TransactionIdError> {
        let b = text.as_bytes();
        let valid = b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                14 => *c == b'4',
                19 => matches!(c, b'8' | b'9' | b'a' | b'b'),
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
            });
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(TransactionIdError)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TransactionId {
    type Error = TransactionIdError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<TransactionId> for String {
    fn from(id: TransactionId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_distinct_lower_case_uuid_v4() {
        let id = TransactionId::generate().unwrap();
        assert_eq!(TransactionId::parse(id.as_str()), Ok(id.clone()));
        assert_eq!(&id.as_str()[14..15], "4");
        assert_ne!(id, TransactionId::generate().unwrap());
    }

    #[test]
    fn only_a_lower_case_uuid_v4_is_an_id() {
        assert!(TransactionId::parse("3f2b8c1e-9d4a-4b7e-8f10-2a3b4c5d6e7f").is_ok());
        for bad in [
            "3f2b8c1e-9d4a-1b7e-8f10-2a3b4c5d6e7f",
            "3F2B8C1E-9D4A-4B7E-8F10-2A3B4C5D6E7F",
            "3f2b8c1e-9d4a-4b7e-cf10-2a3b4c5d6e7f",
            "../../etc/passwd",
            "",
        ] {
            assert_eq!(TransactionId::parse(bad), Err(TransactionIdError), "{bad}");
        }
        assert!(serde_json::from_str::<TransactionId>("\"../x\"").is_err());
    }
}
