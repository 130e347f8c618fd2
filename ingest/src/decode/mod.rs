//! Decoders: one record (a Kafka message or a replay line) in, zero or more `Event`s out.
//!
//! Each format has its own module with typed serde structs (no intermediate
//! `serde_json::Value`), so decoding costs about one pass over the bytes. A record that
//! cannot be decoded returns a [`DecodeError`] with a [`Reason`]; the caller counts and
//! dead-letters it. A valid record that describes nothing driftwatch models (a Docker
//! image event, a Kubernetes `list` call) is *ignored*: counted, not dead-lettered.

mod docker;
mod falco;
mod fluentbit;
mod k8s_audit;
pub(crate) mod lenient;
mod tetragon;

use std::collections::{HashSet, VecDeque};
use std::str::FromStr;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::dead_letter::Reason;
use crate::error::DecodeError;
use crate::event::{Event, EventKind, Provenance, Source};
use crate::service::ServiceKeyer;
use crate::time::Nanos;

/// The input format of a topic or file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Falco,
    Tetragon,
    K8sAudit,
    Docker,
    #[serde(alias = "fluentbit", alias = "log")]
    FluentBit,
    Native,
    /// Detect the format of each record from its content (for mixed topics and files).
    Auto,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Falco => "falco",
            Format::Tetragon => "tetragon",
            Format::K8sAudit => "k8s-audit",
            Format::Docker => "docker",
            Format::FluentBit => "fluent-bit",
            Format::Native => "native",
            Format::Auto => "auto",
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "falco" => Format::Falco,
            "tetragon" => Format::Tetragon,
            "k8s-audit" | "k8s_audit" => Format::K8sAudit,
            "docker" => Format::Docker,
            "fluent-bit" | "fluentbit" | "log" => Format::FluentBit,
            "native" => Format::Native,
            "auto" => Format::Auto,
            other => {
                return Err(format!(
                    "unknown format {other:?} (expected falco, tetragon, k8s-audit, docker, \
                     fluent-bit, native or auto)"
                ));
            }
        })
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits a decoder enforces on every record.
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    /// Records larger than this are dead-lettered as `oversized` without being parsed.
    pub max_record_bytes: usize,
    /// Event times before this are absurd (dead-lettered).
    pub min_time: Nanos,
    /// Event times after this are absurd (dead-lettered).
    pub max_time: Nanos,
    /// Event times further than this ahead of the wall clock are absurd: one record from
    /// a node with a wrong clock must not push event-time windows (and retention) into
    /// the future.
    pub max_future_skew: std::time::Duration,
    /// Event times further than this behind the newest event decoded so far are absurd
    /// (a node whose clock is a day behind must not start a service's learning window a
    /// day early). `None` accepts any lag, as replays of mixed files need.
    pub max_past_skew: Option<std::time::Duration>,
    /// Log lines longer than this are cut at a character boundary, with a marker that
    /// says how much was cut.
    pub max_log_line_bytes: usize,
}

/// 1 MiB: Kafka's default `message.max.bytes` is about the same, so a larger record is
/// almost certainly not a sensor event.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// 16 KiB: holds any stack-trace line worth reading and bounds what one runaway line
/// costs the template miner and the search index.
pub const DEFAULT_MAX_LOG_LINE_BYTES: usize = 16 * 1024;

/// One hour: far beyond NTP drift, short enough that a bad clock cannot move windows far.
pub const DEFAULT_MAX_FUTURE_SKEW: std::time::Duration = std::time::Duration::from_secs(3600);

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            // 2000-01-01 and 2100-01-01: no container sensor predates the first, and a
            // time past the second is a unit mix-up (micro- or nanoseconds read as seconds).
            min_time: Nanos(946_684_800 * crate::time::NANOS_PER_SECOND),
            max_time: Nanos(4_102_444_800 * crate::time::NANOS_PER_SECOND),
            max_future_skew: DEFAULT_MAX_FUTURE_SKEW,
            max_past_skew: None,
            max_log_line_bytes: DEFAULT_MAX_LOG_LINE_BYTES,
        }
    }
}

/// How a record was repaired to be kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Invalid UTF-8 was replaced with U+FFFD.
    pub lossy_utf8: bool,
    /// Log lines cut to the line limit.
    pub truncated_lines: u32,
}

/// What a successfully read record produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// This many events were appended to the output, from this source.
    Events {
        source: Source,
        count: usize,
        repairs: Repairs,
    },
    /// A valid record that describes nothing driftwatch models.
    Ignored { source: Source, why: &'static str },
}

/// How many audit IDs the Kubernetes audit decoder remembers to drop repeated stages.
/// Stages of one request arrive within seconds, so a window far smaller than this
/// already catches them; the bound keeps memory fixed.
const AUDIT_ID_MEMORY: usize = 65_536;

/// Decodes records into events. Holds the little state decoding needs (recent audit IDs).
#[derive(Debug)]
pub struct Decoder {
    limits: DecodeLimits,
    keyer: ServiceKeyer,
    seen_audit_ids: HashSet<String>,
    audit_id_order: VecDeque<String>,
    /// Audit IDs the record being decoded reports; remembered only if it is accepted.
    new_audit_ids: Vec<String>,
    /// The newest event time accepted: "now" for the past-skew bound.
    newest: Nanos,
    /// Whether native records keep the provenance they carry ([`Decoder::keeping_provenance`]).
    keep_provenance: bool,
}

impl Decoder {
    /// For the repartition topic, which only driftwatch's decode stage writes: native
    /// records keep the provenance of the raw record they were decoded from. Elsewhere
    /// a record's own claim of where it came from is replaced by where it did.
    pub fn keeping_provenance(mut self) -> Self {
        self.keep_provenance = true;
        self
    }

    pub fn new(limits: DecodeLimits, keyer: ServiceKeyer) -> Self {
        Decoder {
            limits,
            keyer,
            seen_audit_ids: HashSet::new(),
            audit_id_order: VecDeque::new(),
            new_audit_ids: Vec::new(),
            newest: Nanos(i64::MIN),
            keep_provenance: false,
        }
    }

    /// Decodes one record, appending its events to `out`. On error `out` is unchanged.
    pub fn decode(
        &mut self,
        format: Format,
        payload: &[u8],
        provenance: &Provenance,
        out: &mut Vec<Event>,
    ) -> Result<Decoded, DecodeError> {
        if payload.len() > self.limits.max_record_bytes {
            return Err(DecodeError::new(
                Reason::Oversized,
                format!(
                    "record is {} bytes, more than the {}-byte limit",
                    payload.len(),
                    self.limits.max_record_bytes
                ),
            ));
        }
        let start = out.len();
        self.new_audit_ids.clear();
        let mut repairs = Repairs::default();
        let result = match self.detect_and_decode(format, payload, out) {
            // Sensors pass through what programs print, invalid UTF-8 included, and JSON
            // may not carry it. Rather than lose the record, decode it again with the bad
            // bytes replaced (U+FFFD). Only the failure path pays for the check.
            Err(e) if e.reason == Reason::NotJson && std::str::from_utf8(payload).is_err() => {
                out.truncate(start);
                self.new_audit_ids.clear();
                let lossy = String::from_utf8_lossy(payload);
                repairs.lossy_utf8 = true;
                self.detect_and_decode(format, lossy.as_bytes(), out)
            }
            Err(_) if payload.iter().all(u8::is_ascii_whitespace) => {
                Err(DecodeError::new(Reason::NotJson, "record is empty"))
            }
            r => r,
        };
        let result = result.and_then(|(format, ignored)| {
            let source = source_of(format);
            if let Some(why) = ignored {
                out.truncate(start);
                return Ok(Decoded::Ignored { source, why });
            }
            for event in &mut out[start..] {
                self.check(event)?;
                self.newest = self.newest.max(event.time);
                // A repartitioned event keeps its raw record's provenance; the copy's
                // own (the repartition topic's) is of no use to an analyst.
                if !(format == Format::Native
                    && self.keep_provenance
                    && !event.provenance.is_unknown())
                {
                    event.provenance.clone_from(provenance);
                }
                if event.service.is_empty() {
                    event.service = self.keyer.key(&event.workload);
                }
                if let EventKind::Log { message, .. } = &mut event.kind
                    && message.len() > self.limits.max_log_line_bytes
                {
                    *message = truncate_line(message, self.limits.max_log_line_bytes).into_owned();
                    repairs.truncated_lines += 1;
                }
            }
            for id in std::mem::take(&mut self.new_audit_ids) {
                self.remember_audit_id(id);
            }
            Ok(Decoded::Events {
                source,
                count: out.len() - start,
                repairs,
            })
        });
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Resolves `Auto` and runs the format's decoder: the format used, and why the record
    /// was ignored if it was.
    fn detect_and_decode(
        &mut self,
        format: Format,
        payload: &[u8],
        out: &mut Vec<Event>,
    ) -> Result<(Format, Option<&'static str>), DecodeError> {
        let format = match format {
            Format::Auto => detect(payload)?,
            f => f,
        };
        let ignored = match format {
            Format::Falco => falco::decode(payload, out),
            Format::Tetragon => tetragon::decode(payload, out),
            Format::K8sAudit => {
                let seen = &self.seen_audit_ids;
                k8s_audit::decode(
                    payload,
                    out,
                    &|id| seen.contains(id),
                    &mut self.new_audit_ids,
                )
            }
            Format::Docker => docker::decode(payload, out),
            Format::FluentBit => fluentbit::decode(payload, out),
            Format::Native => decode_native(payload, out),
            Format::Auto => unreachable!("resolved above"),
        }?;
        Ok((format, ignored))
    }

    /// Rejects values no real event has.
    fn check(&self, event: &Event) -> Result<(), DecodeError> {
        let absurd = |what: String| Err(DecodeError::new(Reason::AbsurdValue, what));
        if event.time < self.limits.min_time || event.time > self.limits.max_time {
            return absurd(format!(
                "event time {} is outside {} .. {}",
                event.time.0, self.limits.min_time, self.limits.max_time
            ));
        }
        let skew = i64::try_from(self.limits.max_future_skew.as_nanos()).unwrap_or(i64::MAX);
        let latest = Nanos::now().saturating_add(skew);
        if event.time > latest {
            return absurd(format!(
                "event time {} is more than {:?} ahead of the clock",
                event.time, self.limits.max_future_skew
            ));
        }
        if let Some(past) = self.limits.max_past_skew {
            let earliest = self
                .newest
                .saturating_add(-i64::try_from(past.as_nanos()).unwrap_or(i64::MAX));
            if event.time < earliest {
                return absurd(format!(
                    "event time {} is more than {past:?} behind the newest event ({})",
                    event.time, self.newest
                ));
            }
        }
        match &event.kind {
            EventKind::ProcessExec { process } | EventKind::ProcessExit { process, .. }
                if process.exe.trim().is_empty() =>
            {
                absurd("process has an empty executable path".into())
            }
            EventKind::FileAccess { path, .. } if path.trim().is_empty() => {
                absurd("file access has an empty path".into())
            }
            EventKind::Network { address, .. } if address.trim().is_empty() => {
                absurd("network event has an empty address".into())
            }
            _ => Ok(()),
        }
    }

    /// Remembers a reported audit ID, forgetting the oldest beyond the window.
    fn remember_audit_id(&mut self, audit_id: String) {
        if self.audit_id_order.len() == AUDIT_ID_MEMORY
            && let Some(old) = self.audit_id_order.pop_front()
        {
            self.seen_audit_ids.remove(&old);
        }
        self.seen_audit_ids.insert(audit_id.clone());
        self.audit_id_order.push_back(audit_id);
    }
}

fn source_of(format: Format) -> Source {
    match format {
        Format::Falco => Source::Falco,
        Format::Tetragon => Source::Tetragon,
        Format::K8sAudit => Source::K8sAudit,
        Format::Docker => Source::Docker,
        Format::FluentBit => Source::Log,
        Format::Native | Format::Auto => Source::Native,
    }
}

/// The keys that tell the formats apart. Values are skipped, not built.
#[derive(Deserialize)]
struct Probe {
    output_fields: Option<IgnoredAny>,
    rule: Option<IgnoredAny>,
    priority: Option<IgnoredAny>,
    process_exec: Option<IgnoredAny>,
    process_exit: Option<IgnoredAny>,
    process_kprobe: Option<IgnoredAny>,
    node_name: Option<IgnoredAny>,
    #[serde(rename = "auditID")]
    audit_id: Option<IgnoredAny>,
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<ProbeKind>,
    #[serde(rename = "Type")]
    docker_type: Option<IgnoredAny>,
    #[serde(rename = "Action")]
    docker_action: Option<IgnoredAny>,
    #[serde(rename = "@timestamp")]
    fluent_timestamp: Option<IgnoredAny>,
    kubernetes: Option<IgnoredAny>,
    log: Option<IgnoredAny>,
    time: Option<IgnoredAny>,
    /// A journal record (Fluent Bit's systemd input).
    #[serde(rename = "MESSAGE")]
    journal_message: Option<IgnoredAny>,
    /// Docker's legacy (`status`, `id`, `from`) and compose (`type`, `action`) shapes.
    status: Option<IgnoredAny>,
    id: Option<IgnoredAny>,
    from: Option<IgnoredAny>,
    #[serde(rename = "type")]
    lower_type: Option<IgnoredAny>,
    action: Option<IgnoredAny>,
    /// An AKS diagnostic-log wrapper (`kube-audit`, `kube-audit-admin`).
    category: Option<ProbeKind>,
    /// A GKE Cloud Logging entry: refused by the audit decoder, with its reason.
    #[serde(rename = "protoPayload")]
    proto_payload: Option<IgnoredAny>,
}

/// The `kind` tags of native events (see [`EventKind::name`]).
pub const NATIVE_KINDS: [&str; 8] = [
    "process_exec",
    "process_exit",
    "file_access",
    "network",
    "exec_into",
    "container",
    "log",
    "sensor_alert",
];

/// `kind` is a string in native events and audit events; anything else is kept as "not
/// a string" rather than failing detection.
#[derive(Deserialize)]
#[serde(untagged)]
enum ProbeKind {
    Text(String),
    Other(IgnoredAny),
}

/// Detects a record's format from its keys.
pub fn detect(payload: &[u8]) -> Result<Format, DecodeError> {
    // Of the formats, only Fluent Bit's forward and library outputs write arrays.
    if fluentbit::is_array(payload) {
        return Ok(Format::FluentBit);
    }
    let probe: Probe = serde_json::from_slice(payload).map_err(|e| DecodeError::from_json(&e))?;
    let kind = match &probe.kind {
        Some(ProbeKind::Text(k)) => Some(k.as_str()),
        _ => None,
    };
    let native_kind = kind.is_some_and(|k| NATIVE_KINDS.contains(&k));
    let format = if native_kind && probe.time.is_some() {
        // Checked first: a native sensor_alert also has `rule` and `priority`.
        Format::Native
    } else if probe.output_fields.is_some() || (probe.rule.is_some() && probe.priority.is_some()) {
        Format::Falco
    } else if probe.process_exec.is_some()
        || probe.process_exit.is_some()
        || probe.process_kprobe.is_some()
        || probe.node_name.is_some()
    {
        Format::Tetragon
    } else if probe.audit_id.is_some()
        || probe
            .api_version
            .as_deref()
            .is_some_and(|v| v.starts_with("audit.k8s.io/"))
        || matches!(&probe.category, Some(ProbeKind::Text(c)) if c.starts_with("kube-audit"))
        || probe.proto_payload.is_some()
    {
        Format::K8sAudit
    } else if probe.docker_type.is_some() && probe.docker_action.is_some() {
        Format::Docker
    } else if probe.fluent_timestamp.is_some()
        || (probe.kubernetes.is_some() && probe.log.is_some())
        || probe.journal_message.is_some()
    {
        Format::FluentBit
    } else if (probe.status.is_some() && (probe.from.is_some() || probe.id.is_some()))
        || (probe.lower_type.is_some() && probe.action.is_some())
    {
        // Checked after Fluent Bit: a parsed log line may have a `status` of its own.
        Format::Docker
    } else {
        return Err(DecodeError::new(
            Reason::UnknownFormat,
            "JSON object matches none of falco, tetragon, k8s-audit, docker, fluent-bit, native",
        ));
    };
    Ok(format)
}

fn decode_native(
    payload: &[u8],
    out: &mut Vec<Event>,
) -> Result<Option<&'static str>, DecodeError> {
    out.push(parse::<Event>(payload)?);
    Ok(None)
}

/// Parses `payload` as `T`, mapping serde errors to dead-letter reasons.
pub(crate) fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(payload).map_err(|e| DecodeError::from_json(&e))
}

pub(crate) fn wrong_shape(detail: impl Into<String>) -> DecodeError {
    DecodeError::new(Reason::WrongShape, detail)
}

/// Parses a time string, or says which field was wrong.
pub(crate) fn parse_time(field: &str, value: &str) -> Result<Nanos, DecodeError> {
    Nanos::from_rfc3339(value).ok_or_else(|| {
        DecodeError::new(
            Reason::AbsurdValue,
            format!("{field} {value:?} is not an RFC 3339 time"),
        )
    })
}

/// Cuts a line longer than `max_bytes` at a character boundary and says how much was
/// cut, so that one runaway line costs neither the miner nor the index more than that.
pub fn truncate_line(line: &str, max_bytes: usize) -> std::borrow::Cow<'_, str> {
    if line.len() <= max_bytes {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut end = max_bytes;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{} …[truncated {} bytes]",
        &line[..end],
        line.len() - end
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(format: Format, json: &str) -> Result<Decoded, DecodeError> {
        let mut d = Decoder::new(DecodeLimits::default(), ServiceKeyer::default());
        d.decode(
            format,
            json.as_bytes(),
            &Provenance::default(),
            &mut Vec::new(),
        )
    }

    #[test]
    fn records_over_the_cap_are_oversized() {
        let mut d = Decoder::new(
            DecodeLimits {
                max_record_bytes: 10,
                ..DecodeLimits::default()
            },
            ServiceKeyer::default(),
        );
        let err = d
            .decode(
                Format::Auto,
                br#"{"rule":"x","priority":"y"}"#,
                &Provenance::default(),
                &mut Vec::new(),
            )
            .unwrap_err();
        assert_eq!(err.reason, Reason::Oversized);
    }

    #[test]
    fn non_json_truncated_and_unknown_are_told_apart() {
        assert_eq!(
            decode_one(Format::Auto, "hello").unwrap_err().reason,
            Reason::NotJson
        );
        assert_eq!(
            decode_one(Format::Auto, r#"{"rule":"x","#)
                .unwrap_err()
                .reason,
            Reason::Truncated
        );
        assert_eq!(
            decode_one(Format::Auto, r#"{"a":1}"#).unwrap_err().reason,
            Reason::UnknownFormat
        );
        assert_eq!(
            decode_one(Format::Auto, "[1,2]").unwrap_err().reason,
            Reason::WrongShape
        );
    }

    #[test]
    fn a_known_format_with_a_wrong_field_type_is_wrong_shape() {
        let err = decode_one(Format::Falco, r#"{"rule":["x"],"priority":"Notice"}"#).unwrap_err();
        assert_eq!(err.reason, Reason::WrongShape);
    }

    #[test]
    fn absurd_times_are_rejected() {
        let json =
            r#"{"time":"1970-01-01T00:00:01Z","source":"native","kind":"log","message":"x"}"#;
        assert_eq!(
            decode_one(Format::Native, json).unwrap_err().reason,
            Reason::AbsurdValue
        );
    }

    #[test]
    fn times_far_ahead_of_the_clock_are_absurd() {
        let ahead = Nanos::now().saturating_add(2 * 3600 * crate::time::NANOS_PER_SECOND);
        let json = format!(
            r#"{{"time":{},"kind":"log","message":"from a node with a bad clock"}}"#,
            ahead.0
        );
        assert_eq!(
            decode_one(Format::Native, &json).unwrap_err().reason,
            Reason::AbsurdValue
        );
    }

    #[test]
    fn with_a_past_bound_times_far_behind_the_newest_event_are_absurd() {
        let limits = DecodeLimits {
            max_past_skew: Some(std::time::Duration::from_secs(3600)),
            ..DecodeLimits::default()
        };
        let mut d = Decoder::new(limits, ServiceKeyer::default());
        let at = |t: &str| format!(r#"{{"time":"{t}","kind":"log","message":"m"}}"#);
        let mut out = Vec::new();
        let p = Provenance::default();
        d.decode(
            Format::Native,
            at("2026-03-02T10:00:00Z").as_bytes(),
            &p,
            &mut out,
        )
        .unwrap();
        d.decode(
            Format::Native,
            at("2026-03-02T09:30:00Z").as_bytes(),
            &p,
            &mut out,
        )
        .unwrap();
        let late = d.decode(
            Format::Native,
            at("2026-03-02T08:00:00Z").as_bytes(),
            &p,
            &mut out,
        );
        assert_eq!(late.unwrap_err().reason, Reason::AbsurdValue);
    }

    #[test]
    fn native_sensor_alerts_are_not_mistaken_for_falco() {
        let json = r#"{"time":"2026-03-02T10:00:00Z","kind":"sensor_alert","rule":"r","priority":"Notice","service":"a/b"}"#;
        assert_eq!(detect(json.as_bytes()).unwrap(), Format::Native);
    }

    #[test]
    fn native_kinds_are_the_event_kind_tags() {
        let kind = EventKind::ProcessExec {
            process: Default::default(),
        };
        assert!(NATIVE_KINDS.contains(&kind.name()));
        assert_eq!(NATIVE_KINDS.len(), 8);
    }

    #[test]
    fn repeated_audit_stages_decode_once() {
        let mut d = Decoder::new(DecodeLimits::default(), ServiceKeyer::default());
        let stage = |s: &str| {
            format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a1","stage":"{s}","verb":"create","requestURI":"/api/v1/namespaces/shop/pods/api-0/exec?command=sh&container=api","user":{{"username":"alice"}},"objectRef":{{"resource":"pods","namespace":"shop","name":"api-0","subresource":"exec"}},"requestReceivedTimestamp":"2026-03-02T10:00:00.000000Z"}}"#
            )
        };
        let mut out = Vec::new();
        let first = d.decode(
            Format::Auto,
            stage("ResponseStarted").as_bytes(),
            &Provenance::default(),
            &mut out,
        );
        let second = d.decode(
            Format::Auto,
            stage("ResponseComplete").as_bytes(),
            &Provenance::default(),
            &mut out,
        );
        assert_eq!(
            first.unwrap(),
            Decoded::Events {
                source: Source::K8sAudit,
                count: 1,
                repairs: Repairs::default(),
            }
        );
        assert!(matches!(
            second.unwrap(),
            Decoded::Ignored {
                why: "repeated_stage",
                ..
            }
        ));
    }

    #[test]
    fn long_log_lines_are_cut_with_a_marker_and_counted() {
        let mut d = Decoder::new(
            DecodeLimits {
                max_log_line_bytes: 64,
                ..DecodeLimits::default()
            },
            ServiceKeyer::default(),
        );
        let long = "é".repeat(100);
        let record = format!(
            r#"{{"@timestamp":1700000000.0,"log":"{long}","stream":"stderr","kubernetes":{{"namespace_name":"shop","pod_name":"api-7d9f8b6c5d-x2x9q","container_name":"api"}}}}"#
        );
        let mut out = Vec::new();
        let decoded = d
            .decode(
                Format::FluentBit,
                record.as_bytes(),
                &Provenance::default(),
                &mut out,
            )
            .unwrap();
        assert!(matches!(
            decoded,
            Decoded::Events {
                repairs: Repairs {
                    truncated_lines: 1,
                    lossy_utf8: false
                },
                ..
            }
        ));
        let EventKind::Log { message, .. } = &out[0].kind else {
            panic!("{:?}", out[0].kind)
        };
        assert_eq!(
            message,
            &format!("{} …[truncated 136 bytes]", "é".repeat(32))
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let mut d = Decoder::new(DecodeLimits::default(), ServiceKeyer::default());
        let mut record = br#"{"@timestamp":1700000000.0,"log":"bad "#.to_vec();
        record.extend_from_slice(&[0xff, 0xfe]);
        record.extend_from_slice(br#" bytes","kubernetes":{"namespace_name":"shop","pod_name":"api-0","container_name":"api"}}"#);
        let mut out = Vec::new();
        let decoded = d
            .decode(Format::FluentBit, &record, &Provenance::default(), &mut out)
            .unwrap();
        assert!(matches!(
            decoded,
            Decoded::Events {
                repairs: Repairs {
                    lossy_utf8: true,
                    ..
                },
                ..
            }
        ));
        let EventKind::Log { message, .. } = &out[0].kind else {
            panic!("{:?}", out[0].kind)
        };
        assert_eq!(message, "bad \u{fffd}\u{fffd} bytes");
    }
}
