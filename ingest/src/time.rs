//! Event time: nanoseconds since the Unix epoch, UTC, as an `i64`.
//!
//! Sources write time as RFC 3339 strings with up to nine fractional digits, as u64
//! nanosecond integers (Falco's `evt.time`, ≈1.7e18, which an f64 cannot hold exactly),
//! as Docker's `timeNano`, or as float epoch seconds (Fluent Bit). Everything lands here.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Nanoseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nanos(pub i64);

pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

impl Nanos {
    pub fn from_rfc3339(s: &str) -> Option<Nanos> {
        let t = DateTime::parse_from_rfc3339(s.trim()).ok()?;
        t.timestamp_nanos_opt().map(Nanos)
    }

    /// Float epoch seconds, rounded to the microsecond (an f64 epoch carries no more).
    pub fn from_epoch_seconds_f64(secs: f64) -> Option<Nanos> {
        if !secs.is_finite() || secs.abs() > 9.2e9 {
            return None;
        }
        let micros = (secs * 1e6).round() as i64;
        micros.checked_mul(1_000).map(Nanos)
    }

    pub fn from_unix_nanos_u64(n: u64) -> Option<Nanos> {
        i64::try_from(n).ok().map(Nanos)
    }

    pub fn now() -> Nanos {
        Nanos(Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX))
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.0)
    }

    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Nanos, true)
    }

    pub fn saturating_add(self, nanos: i64) -> Nanos {
        Nanos(self.0.saturating_add(nanos))
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Nanos {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Nanos {
    /// Accepts an RFC 3339 string or an integer of nanoseconds.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Nanos, D::Error> {
        struct NanosVisitor;
        impl Visitor<'_> for NanosVisitor {
            type Value = Nanos;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time or integer nanoseconds since the epoch")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Nanos, E> {
                Nanos::from_rfc3339(v)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Nanos, E> {
                Ok(Nanos(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Nanos, E> {
                Nanos::from_unix_nanos_u64(v)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
        }
        deserializer.deserialize_any(NanosVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_keeps_all_nine_fractional_digits() {
        let t = Nanos::from_rfc3339("2026-03-02T10:15:01.123456789Z").unwrap();
        assert_eq!(t.0, 1_772_446_501_123_456_789);
        assert_eq!(t.to_rfc3339(), "2026-03-02T10:15:01.123456789Z");
    }

    #[test]
    fn u64_nanoseconds_are_exact() {
        let n: u64 = 1_772_446_501_123_456_789;
        assert_eq!(Nanos::from_unix_nanos_u64(n).unwrap().0 as u64, n);
    }

    #[test]
    fn float_seconds_round_to_the_microsecond() {
        let t = Nanos::from_epoch_seconds_f64(1_772_446_501.123456).unwrap();
        assert_eq!(t.0, 1_772_446_501_123_456_000);
    }
}
