//! Lenient field readers for sensor JSON.
//!
//! Falco writes `null` or the string `"<NA>"` for fields it could not resolve; protojson
//! (Tetragon) writes 64-bit integers as strings; log shippers mix numbers and strings in
//! label maps. These readers accept all of that and turn "no value" into `None`, while a
//! value of a truly wrong type (an object where a string belongs) is still an error.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Falco's marker for a field it could not resolve.
const NOT_AVAILABLE: &str = "<NA>";

struct OptStringVisitor;

impl<'de> Visitor<'de> for OptStringVisitor {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number, boolean or null")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok((!v.is_empty() && v != NOT_AVAILABLE).then(|| v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok((!v.is_empty() && v != NOT_AVAILABLE).then_some(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A string field that may be a number, a boolean, `null`, `""` or `"<NA>"`.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(OptStringVisitor)
}

/// [`opt_string`], or a list of them (Falco writes some fields as lists when a
/// container has several values, such as an image's digests): its first value.
pub fn opt_first_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(#[serde(deserialize_with = "opt_string")] Option<String>),
        Many(Vec<serde_json::Value>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s,
        OneOrMany::Many(values) => values.into_iter().find_map(|v| match v {
            serde_json::Value::String(s) if !s.is_empty() && s != NOT_AVAILABLE => Some(s),
            _ => None,
        }),
    })
}

struct OptIntVisitor;

impl<'de> Visitor<'de> for OptIntVisitor {
    type Value = Option<i128>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer, an integer in a string, or null")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.into()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let v = v.trim();
        if v.is_empty() || v == NOT_AVAILABLE {
            return Ok(None);
        }
        v.parse::<i128>()
            .map(Some)
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &"an integer"))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

fn opt_int<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<Option<T>, D::Error> {
    match d.deserialize_any(OptIntVisitor)? {
        None => Ok(None),
        Some(v) => T::try_from(v).map(Some).map_err(|_| {
            de::Error::invalid_value(
                de::Unexpected::Other(&format!("integer {v}")),
                &"an integer in range",
            )
        }),
    }
}

/// A signed 64-bit integer that may arrive as a JSON number or a string.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    opt_int(d)
}

/// A 32-bit id (pid, uid) that may arrive as a JSON number or a string.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    opt_int(d)
}

/// A port number; values outside 0..=65535 are an error (an absurd value).
pub fn opt_u16<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    opt_int(d)
}

/// A string-to-string map whose values may be numbers, booleans or null (dropped).
pub fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct MapVisitor;
    impl<'de> Visitor<'de> for MapVisitor {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings, or null")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            #[derive(serde::Deserialize)]
            struct Lenient(#[serde(deserialize_with = "opt_string")] Option<String>);
            let mut out = BTreeMap::new();
            while let Some((k, Lenient(v))) = map.next_entry::<String, Lenient>()? {
                if let Some(v) = v {
                    out.insert(k, v);
                }
            }
            Ok(out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
    }
    d.deserialize_any(MapVisitor)
}

/// A list of strings that may be `null`.
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Option::<Vec<String>>::deserialize(d).map(Option::unwrap_or_default)
}

/// Trims a container id to the 12-hex short form: `containerd://3f9a…` → `3f9a1c2b7d4e`.
/// Falco's `host` pseudo-container becomes `None`.
pub fn short_container_id(id: &str) -> Option<String> {
    let id = id.rsplit("://").next().unwrap_or(id).trim();
    if id.is_empty() || id == "host" || id == NOT_AVAILABLE {
        return None;
    }
    Some(id.chars().take(12).collect())
}

/// Splits a command line into words on whitespace (sensors join arguments with spaces;
/// the original quoting is lost before driftwatch sees it).
pub fn split_words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Fields {
        #[serde(default, deserialize_with = "opt_string")]
        s: Option<String>,
        #[serde(default, deserialize_with = "opt_i64")]
        n: Option<i64>,
        #[serde(default, deserialize_with = "opt_u16")]
        port: Option<u16>,
    }

    fn parse(json: &str) -> Result<Fields, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn na_and_null_mean_no_value() {
        let f = parse(r#"{"s":"<NA>","n":null}"#).unwrap();
        assert_eq!((f.s, f.n), (None, None));
        let f = parse(r#"{"s":null,"n":"<NA>"}"#).unwrap();
        assert_eq!((f.s, f.n), (None, None));
    }

    #[test]
    fn integers_may_be_strings() {
        let f = parse(r#"{"n":"1772446501123456789","s":42}"#).unwrap();
        assert_eq!(f.n, Some(1_772_446_501_123_456_789));
        assert_eq!(f.s.as_deref(), Some("42"));
    }

    #[test]
    fn out_of_range_ports_are_errors() {
        assert_eq!(parse(r#"{"port":"8443"}"#).unwrap().port, Some(8443));
        assert!(parse(r#"{"port":70000}"#).is_err());
        assert!(parse(r#"{"port":-1}"#).is_err());
    }

    #[test]
    fn objects_are_not_strings() {
        assert!(parse(r#"{"s":{"a":1}}"#).is_err());
    }
}
