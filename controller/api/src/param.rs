//! Parameter and result values: a string, an array of strings, or an object
//! of strings, told apart by their JSON shape as Tekton does.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A param or result value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamValue {
    String(String),
    Array(Vec<String>),
    Object(BTreeMap<String, String>),
}

impl ParamValue {
    /// `string`, `array` or `object`: the type name Tekton uses.
    pub fn kind(&self) -> &'static str {
        match self {
            ParamValue::String(_) => "string",
            ParamValue::Array(_) => "array",
            ParamValue::Object(_) => "object",
        }
    }

    /// Every string in the value, for reference scanning.
    pub fn strings(&self) -> Vec<&str> {
        match self {
            ParamValue::String(s) => vec![s.as_str()],
            ParamValue::Array(a) => a.iter().map(String::as_str).collect(),
            ParamValue::Object(o) => o.values().map(String::as_str).collect(),
        }
    }
}

impl Default for ParamValue {
    fn default() -> Self {
        ParamValue::String(String::new())
    }
}

impl Serialize for ParamValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ParamValue::String(v) => s.serialize_str(v),
            ParamValue::Array(v) => v.serialize(s),
            ParamValue::Object(v) => v.serialize(s),
        }
    }
}

struct ValueVisitor;

/// Scalars inside arrays and objects must be strings, as in Tekton; a bare
/// number or boolean as the whole value is taken as its text (YAML users write
/// `value: 3` and mean "3").
struct StrItem(String);

impl<'de> Deserialize<'de> for StrItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrItem, E> {
                Ok(StrItem(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = ParamValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, an array of strings or an object of strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ParamValue, E> {
        Ok(ParamValue::String(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ParamValue, E> {
        Ok(ParamValue::String(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ParamValue, E> {
        Ok(ParamValue::String(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ParamValue, E> {
        Ok(ParamValue::String(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ParamValue, E> {
        Ok(ParamValue::String(v.to_string()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ParamValue, A::Error> {
        let mut out = Vec::new();
        while let Some(StrItem(s)) = seq.next_element()? {
            out.push(s);
        }
        Ok(ParamValue::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ParamValue, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((k, StrItem(v))) = map.next_entry::<String, StrItem>()? {
            out.insert(k, v);
        }
        Ok(ParamValue::Object(out))
    }
}

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl schemars::JsonSchema for ParamValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ParamValue".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // A union of three shapes is not a structural schema: the API server
        // keeps the value as given and Tektite checks its shape.
        schemars::json_schema!({
            "description": "A string, an array of strings or an object of strings.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes() {
        let v: ParamValue = serde_json::from_value(json!("x")).unwrap();
        assert_eq!(v, ParamValue::String("x".into()));
        let v: ParamValue = serde_json::from_value(json!(3)).unwrap();
        assert_eq!(v, ParamValue::String("3".into()));
        let v: ParamValue = serde_json::from_value(json!(["a", "b"])).unwrap();
        assert_eq!(v.kind(), "array");
        let v: ParamValue = serde_json::from_value(json!({"k": "v"})).unwrap();
        assert_eq!(serde_json::to_value(&v).unwrap(), json!({"k": "v"}));
        let e = serde_json::from_value::<ParamValue>(json!([1])).unwrap_err();
        assert!(e.to_string().contains("expected a string"), "{e}");
        assert!(serde_json::from_value::<ParamValue>(json!(null)).is_err());
    }
}
