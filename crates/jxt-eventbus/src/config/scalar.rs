//! Text fields that take any scalar: secrets and raw client properties.
//!
//! YAML and TOML read `password: 20240611` or `statistics.interval.ms: 0`
//! as numbers; these fields are text for the client that receives them, so
//! any scalar is taken as its text. A value of another shape (a list, a
//! map) fails without showing the value: it may be a secret.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};

/// Reads any scalar as text.
struct Text;

impl<'de> Visitor<'de> for Text {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("text (a string, number or boolean)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(Text)
    }
}

/// Any scalar as text. Errors name the shape found (`map`, `sequence`),
/// never the value.
pub(super) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(Text)
}

/// A map of text values, each any scalar (raw client properties).
pub(super) fn text_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Entries;

    impl<'de> Visitor<'de> for Entries {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of property names to values")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value::<TextValue>()?;
                out.insert(key, value.0);
            }
            Ok(out)
        }
    }

    d.deserialize_map(Entries)
}

/// One text value of a [`text_map`].
struct TextValue(String);

impl<'de> serde::Deserialize<'de> for TextValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text(d).map(TextValue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "text")]
        value: String,
        #[serde(default, deserialize_with = "text_map")]
        map: BTreeMap<String, String>,
    }

    #[test]
    fn scalars_are_text_and_other_shapes_hide_the_value() {
        let h: Holder =
            serde_json::from_str(r#"{"value": 20240611, "map": {"a": true, "b": 1.5, "c": "x"}}"#)
                .unwrap();
        assert_eq!(h.value, "20240611");
        assert_eq!(h.map["a"], "true");
        assert_eq!(h.map["b"], "1.5");
        assert_eq!(h.map["c"], "x");
        for bad in [
            r#"{"value": [918273645]}"#,
            r#"{"value": {"k": 918273645}}"#,
            r#"{"value": "v", "map": {"k": [918273645]}}"#,
        ] {
            let e = serde_json::from_str::<Holder>(bad).unwrap_err().to_string();
            assert!(!e.contains("918273645"), "{e}");
        }
    }
}
