//! Store settings (`[store]` in the config file).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// How much of the event stream the in-memory tables keep.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreConfig {
    /// Events older than this (in event time, behind the newest event) are dropped.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// The `events` table never holds more than this many bytes of Arrow buffers.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Width of the event-time partitions retention drops whole.
    #[serde(default = "default_partition", with = "humantime_serde")]
    pub partition: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention: default_retention(),
            max_bytes: default_max_bytes(),
            partition: default_partition(),
        }
    }
}

/// A day: the window an analyst looks back over in a shift handover.
fn default_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// 2 GiB: a tenth of this machine class's memory, leaving room for baselines and queries.
fn default_max_bytes() -> ByteSize {
    ByteSize(2 << 30)
}

/// One hour: retention granularity of 1/24 of the default retention.
fn default_partition() -> Duration {
    Duration::from_secs(3600)
}

/// A size in bytes, written as an integer or as `"512MiB"`, `"2GiB"`, `"100MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a size like \"512MiB\""))?;
        let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, kB, MB, GB)"
                ));
            }
        };
        Ok(ByteSize((number * multiplier) as usize))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(usize),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(ByteSize::parse("512MiB").unwrap().0, 512 << 20);
        assert_eq!(ByteSize::parse("2 GiB").unwrap().0, 2 << 30);
        assert_eq!(ByteSize::parse("100MB").unwrap().0, 100_000_000);
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("5 parsecs").is_err());
    }
}
