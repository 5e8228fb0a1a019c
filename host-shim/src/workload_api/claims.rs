//! Verified claims as the `google.protobuf.Struct` of
//! `ValidateJWTSVIDResponse`.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use serde_json::{Map, Value as Json};

/// The claims object as a protobuf Struct.
pub fn to_struct(claims: Map<String, Json>) -> Struct {
    Struct {
        fields: claims.into_iter().map(|(k, v)| (k, value(v))).collect(),
    }
}

fn value(json: Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        // Protobuf's Struct has doubles only, as JSON does.
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Kind::StringValue(s),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(to_struct(map)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_json_claim_keeps_its_type() {
        let Json::Object(claims) = json!({
            "sub": "spiffe://example.org/a",
            "aud": ["x"],
            "exp": 1700000000,
            "n": null,
            "ok": true,
            "nested": {"k": 1.5}
        }) else {
            unreachable!()
        };
        let s = to_struct(claims);
        let kind = |k: &str| s.fields[k].kind.clone();
        assert_eq!(
            kind("sub"),
            Some(Kind::StringValue("spiffe://example.org/a".into()))
        );
        assert_eq!(kind("exp"), Some(Kind::NumberValue(1_700_000_000.0)));
        assert_eq!(kind("n"), Some(Kind::NullValue(0)));
        assert_eq!(kind("ok"), Some(Kind::BoolValue(true)));
        assert!(matches!(kind("aud"), Some(Kind::ListValue(l)) if l.values.len() == 1));
        assert!(matches!(kind("nested"), Some(Kind::StructValue(n)) if n.fields.contains_key("k")));
    }
}
