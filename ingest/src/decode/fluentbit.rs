//! Container log records from Fluent Bit's Kafka output with the `kubernetes` filter.
//!
//! `@timestamp` is float epoch seconds by default, or ISO 8601 when the output sets a
//! time format; the line is `log` (or `message` with the classic CRI parser).

use std::collections::BTreeMap;

use serde::Deserialize;

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
    /// Plain `Option`: an empty line is a line, not a missing field.
    #[serde(default)]
    log: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    stream: Option<String>,
    kubernetes: Option<Kubernetes>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Timestamp {
    Seconds(f64),
    Text(String),
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

pub(super) fn decode(
    payload: &[u8],
    out: &mut Vec<Event>,
) -> Result<Option<&'static str>, DecodeError> {
    let r: Record = parse(payload)?;
    let time = match r.timestamp.or(r.time) {
        Some(Timestamp::Seconds(s)) => Nanos::from_epoch_seconds_f64(s).ok_or_else(|| {
            DecodeError::new(
                crate::Reason::AbsurdValue,
                format!("@timestamp {s} is not a time"),
            )
        })?,
        Some(Timestamp::Text(t)) => parse_time("@timestamp", &t)?,
        None => return Err(wrong_shape("log record has no @timestamp")),
    };
    let mut message = r
        .log
        .or(r.message)
        .ok_or_else(|| wrong_shape("log record has neither log nor message"))?;
    // Runtimes keep the line's newline; the line is the text without it.
    while message.ends_with(['\n', '\r']) {
        message.pop();
    }
    let workload = match r.kubernetes {
        Some(k) => Workload {
            node: k.host,
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
        None => Workload::default(),
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
