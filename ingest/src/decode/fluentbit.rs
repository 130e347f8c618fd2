//! Container log records from Fluent Bit: what its Kafka output sends (one JSON object
//! per record) and the `[timestamp, record]` array its forward and library outputs
//! write (`[[timestamp, metadata], record]` since Fluent Bit 2.1).
//!
//! - **Time**: `@timestamp` (out_kafka's `timestamp_key`), `time` (the container
//!   runtime's), or `date` (the default key of most other outputs), as float epoch
//!   seconds or RFC 3339; systemd's `_SOURCE_REALTIME_TIMESTAMP` (microseconds); then
//!   the array's timestamp. A record with none of them gets the time it is decoded:
//!   Fluent Bit stamps every record it reads, so a record without a time key is one
//!   whose output was told to leave the key out, and arrival is the closest time left.
//! - **Line**: `log` (the runtime's), `message` (the CRI parser's), or `MESSAGE`
//!   (systemd's journal). When a parser or `Merge_Log` replaced the line with the fields
//!   it parsed, the line is those fields as compact JSON (keys sorted), without the
//!   metadata (`kubernetes`, `stream`, time keys).
//! - **Workload**: the `kubernetes` filter's metadata; for journal records without it,
//!   `_HOSTNAME` is the node and Docker's journald fields (`CONTAINER_NAME`,
//!   `CONTAINER_ID_FULL`) or `SYSLOG_IDENTIFIER` / `_SYSTEMD_UNIT` name the container.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::lenient::{opt_string, short_container_id, string_map};
use super::{parse, parse_time, wrong_shape};
use crate::error::DecodeError;
use crate::event::{Event, EventKind, Image, Source, Workload};
use crate::time::Nanos;

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "@timestamp")]
    timestamp: Option<Timestamp>,
    time: Option<Timestamp>,
    date: Option<Timestamp>,
    /// Microseconds since the epoch, as a string (the journal's own stamp).
    #[serde(
        rename = "_SOURCE_REALTIME_TIMESTAMP",
        default,
        deserialize_with = "opt_string"
    )]
    journal_time: Option<String>,
    /// Plain `Option`: an empty line is a line, not a missing field.
    #[serde(default)]
    log: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(rename = "MESSAGE", default)]
    journal_message: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    stream: Option<String>,
    kubernetes: Option<Kubernetes>,
    #[serde(rename = "_HOSTNAME", default, deserialize_with = "opt_string")]
    journal_host: Option<String>,
    #[serde(rename = "CONTAINER_NAME", default, deserialize_with = "opt_string")]
    journal_container: Option<String>,
    #[serde(rename = "CONTAINER_ID_FULL", default, deserialize_with = "opt_string")]
    journal_container_id: Option<String>,
    #[serde(rename = "SYSLOG_IDENTIFIER", default, deserialize_with = "opt_string")]
    syslog_identifier: Option<String>,
    #[serde(rename = "_SYSTEMD_UNIT", default, deserialize_with = "opt_string")]
    systemd_unit: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Timestamp {
    Seconds(f64),
    Text(String),
}

/// The first element of the array form: a timestamp, or (Fluent Bit 2.1 and later) a
/// timestamp with the record's metadata.
#[derive(Deserialize)]
#[serde(untagged)]
enum Header {
    Seconds(f64),
    WithMetadata(f64, IgnoredAny),
}

#[derive(Deserialize)]
struct Kubernetes {
    #[serde(default, deserialize_with = "opt_string")]
    pod_name: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    namespace_name: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    container_name: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    container_image: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    docker_id: Option<String>,
    #[serde(default, deserialize_with = "string_map")]
    labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "opt_string")]
    host: Option<String>,
}

/// Keys that describe the record rather than say what the program logged.
const METADATA_KEYS: [&str; 6] = ["kubernetes", "stream", "@timestamp", "time", "date", "_p"];

/// Whether the payload is the array form (its first byte past whitespace is `[`).
pub(super) fn is_array(payload: &[u8]) -> bool {
    payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

pub(super) fn decode(
    payload: &[u8],
    out: &mut Vec<Event>,
) -> Result<Option<&'static str>, DecodeError> {
    let (header, r): (Option<f64>, Record) = if is_array(payload) {
        let (header, r): (Header, Record) = parse(payload)?;
        let seconds = match header {
            Header::Seconds(s) | Header::WithMetadata(s, _) => s,
        };
        (Some(seconds), r)
    } else {
        (None, parse(payload)?)
    };
    let time = time(&r, header)?;
    let mut message = match r.log.or(r.message).or(r.journal_message) {
        Some(m) => m,
        None => parsed_fields(payload)?,
    };
    // Runtimes keep the line's newline; the line is the text without it.
    while message.ends_with(['\n', '\r']) {
        message.pop();
    }
    let workload = match r.kubernetes {
        Some(k) => Workload {
            node: k.host.or(r.journal_host),
            namespace: k.namespace_name,
            pod: k.pod_name,
            container_id: k.docker_id.as_deref().and_then(short_container_id),
            container_name: k.container_name,
            image: k
                .container_image
                .as_deref()
                .map(Image::parse)
                .unwrap_or_default(),
            labels: k.labels,
            ..Workload::default()
        },
        None => Workload {
            node: r.journal_host,
            container_id: r
                .journal_container_id
                .as_deref()
                .and_then(short_container_id),
            container_name: r
                .journal_container
                .or(r.syslog_identifier)
                .or(r.systemd_unit),
            ..Workload::default()
        },
    };
    out.push(Event {
        time,
        source: Source::Log,
        provenance: Default::default(),
        workload,
        service: String::new(),
        kind: EventKind::Log {
            stream: r.stream,
            message,
            template_id: None,
        },
    });
    Ok(None)
}

/// The record's time: its own keys first, then the array's timestamp, then now.
fn time(r: &Record, header: Option<f64>) -> Result<Nanos, DecodeError> {
    let seconds = |field: &str, s: f64| {
        Nanos::from_epoch_seconds_f64(s).ok_or_else(|| {
            DecodeError::new(
                crate::Reason::AbsurdValue,
                format!("{field} {s} is not a time"),
            )
        })
    };
    for (field, value) in [
        ("@timestamp", &r.timestamp),
        ("time", &r.time),
        ("date", &r.date),
    ] {
        match value {
            Some(Timestamp::Seconds(s)) => return seconds(field, *s),
            Some(Timestamp::Text(t)) => return parse_time(field, t),
            None => {}
        }
    }
    if let Some(micros) = &r.journal_time {
        return micros
            .parse::<i64>()
            .ok()
            .and_then(|us| us.checked_mul(1_000))
            .map(Nanos)
            .ok_or_else(|| {
                DecodeError::new(
                    crate::Reason::AbsurdValue,
                    format!("_SOURCE_REALTIME_TIMESTAMP {micros:?} is not microseconds"),
                )
            });
    }
    match header {
        Some(s) => seconds("the record's timestamp", s),
        None => Ok(Nanos::now()),
    }
}

/// The line when a parser replaced it with the fields it parsed: those fields, as
/// compact JSON with sorted keys, without the record's metadata.
fn parsed_fields(payload: &[u8]) -> Result<String, DecodeError> {
    let mut fields: BTreeMap<String, serde_json::Value> = if is_array(payload) {
        let (_, fields): (IgnoredAny, BTreeMap<String, serde_json::Value>) = parse(payload)?;
        fields
    } else {
        parse(payload)?
    };
    fields.retain(|k, _| !METADATA_KEYS.contains(&k.as_str()));
    if fields.is_empty() {
        return Err(wrong_shape(
            "log record has neither a line (log, message, MESSAGE) nor parsed fields",
        ));
    }
    Ok(serde_json::to_string(&fields).expect("JSON values serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_without_any_time_key_is_dated_when_it_is_decoded() {
        let before = Nanos::now();
        let mut out = Vec::new();
        decode(
            br#"{"log":"no time here","kubernetes":{"pod_name":"a-0"}}"#,
            &mut out,
        )
        .unwrap();
        let after = Nanos::now();
        assert!(
            before <= out[0].time && out[0].time <= after,
            "{:?}",
            out[0].time
        );
    }

    #[test]
    fn the_record_s_own_time_wins_over_the_array_s() {
        let mut out = Vec::new();
        decode(
            br#"[1700000000.0,{"@timestamp":1600000000.0,"log":"x"}]"#,
            &mut out,
        )
        .unwrap();
        assert_eq!(out[0].time, Nanos(1_600_000_000_000_000_000));
    }
}
