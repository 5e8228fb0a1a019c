//! JSON parsing that rejects duplicate member names at any depth.
//!
//! `serde_json` keeps the last of two equal keys; for security documents
//! (token headers, claims, bundles) an ambiguous document is an invalid one.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a byte string is not an acceptable JSON document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not well-formed JSON (the parser's message, with line and column).
    #[error("malformed JSON: {0}")]
    Syntax(String),
    /// The same member name appears twice in one object.
    #[error("duplicate JSON member name {0:?}")]
    DuplicateMember(String),
    /// The document is valid JSON but not an object.
    #[error("expected a JSON object")]
    NotAnObject,
}

const DUPLICATE_MARK: &str = "\u{0}duplicate member:";

/// A JSON value whose objects never held a duplicate member.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("{DUPLICATE_MARK}{key}")));
            }
            let Strict(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// Parses `bytes` as JSON, rejecting duplicate member names anywhere.
pub fn parse_value(bytes: &[u8]) -> Result<Value, JsonError> {
    match serde_json::from_slice::<Strict>(bytes) {
        Ok(Strict(value)) => Ok(value),
        Err(e) => {
            let message = e.to_string();
            match message.strip_prefix(DUPLICATE_MARK) {
                Some(rest) => {
                    // serde_json appends " at line L column C"; keep only the name.
                    let name = rest.rsplit_once(" at line ").map_or(rest, |(n, _)| n);
                    Err(JsonError::DuplicateMember(name.to_owned()))
                }
                None => Err(JsonError::Syntax(message)),
            }
        }
    }
}

/// Parses `bytes` as a JSON object, rejecting duplicate member names anywhere.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, JsonError> {
    match parse_value(bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(JsonError::NotAnObject),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_members_are_rejected_at_any_depth() {
        assert_eq!(
            parse_object(br#"{"a":1,"a":2}"#),
            Err(JsonError::DuplicateMember("a".into()))
        );
        assert_eq!(
            parse_object(br#"{"x":[{"b":{"c":1,"c":1}}]}"#),
            Err(JsonError::DuplicateMember("c".into()))
        );
    }

    #[test]
    fn escaped_duplicates_are_still_duplicates() {
        assert_eq!(
            parse_object(br#"{"sub":1,"\u0073ub":2}"#),
            Err(JsonError::DuplicateMember("sub".into()))
        );
    }

    #[test]
    fn well_formed_documents_parse_unchanged() {
        let v = parse_object(br#"{"a":[1,2.5,"s",null,true],"b":{"c":-3}}"#).unwrap();
        assert_eq!(
            Value::Object(v),
            serde_json::json!({"a":[1,2.5,"s",null,true],"b":{"c":-3}})
        );
    }

    #[test]
    fn non_objects_and_garbage_are_errors() {
        assert_eq!(parse_object(b"[1]"), Err(JsonError::NotAnObject));
        assert!(matches!(parse_object(b"{"), Err(JsonError::Syntax(_))));
        assert!(matches!(parse_object(b"{} x"), Err(JsonError::Syntax(_))));
    }
}
