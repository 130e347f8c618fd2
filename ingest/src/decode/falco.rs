//! Falco alerts (`json_output: true`) and Falcosidekick's Kafka output.
//!
//! Every Falco alert becomes a `sensor_alert` event carrying the rule, the priority and
//! the process/file fields it had, so detection can correlate it with its own drift
//! alert about the same act.
//!
//! The shapes Falco and the tools around it really write:
//! - **time**: `output_fields."evt.time"` as epoch nanoseconds (a number or a numeric
//!   string; a count of digits that only fits micro- or milliseconds is read so), else
//!   `time` as RFC 3339 (any offset) or as gRPC's `{"seconds", "nanos"}`. `evt.time`
//!   printed as a clock (`18:50:03.391767411`, Falco's `-p` output) carries no date and
//!   is not used.
//! - **priority**: any case (`warning`), or the gRPC enum's number (0 emergency …
//!   7 debug); stored as Falco names it (`Warning`).
//! - Fields that hold a list where one value is expected (an image's digests) give
//!   their first value.
//! - Falco's records about itself are about the sensor, not a workload, and are never
//!   judged as alerts: a syscall event drop (`Falco internal: syscall event drop`,
//!   `n_drops` in the last second, `n_evts` seen) and a metrics snapshot (`scap.n_drops`
//!   against `scap.n_drops_prev`: dropped since the previous snapshot) become
//!   `sensor_health` events; other internal records are counted as ignored
//!   (`sensor_internal`).

use serde::Deserialize;

use super::lenient::{
    opt_first_string, opt_i64, opt_string, opt_u32, short_container_id, split_words, string_list,
};
use super::{parse, parse_time, wrong_shape};
use crate::error::DecodeError;
use crate::event::{Event, EventKind, Image, Process, SensorReport, Source, Workload};
use crate::time::Nanos;

#[derive(Deserialize)]
struct FalcoAlert {
    #[serde(default)]
    time: Option<Time>,
    rule: String,
    priority: Priority,
    #[serde(default, deserialize_with = "opt_string")]
    source: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    hostname: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    output: Option<String>,
    #[serde(default, deserialize_with = "string_list")]
    tags: Vec<String>,
    #[serde(default)]
    output_fields: Option<Fields>,
}

/// The `output_fields` driftwatch reads; the rest are skipped.
#[derive(Deserialize, Default)]
struct Fields {
    #[serde(rename = "evt.time", default)]
    evt_time: Option<EventTime>,
    #[serde(rename = "proc.name", default, deserialize_with = "opt_string")]
    proc_name: Option<String>,
    #[serde(rename = "proc.exepath", default, deserialize_with = "opt_string")]
    proc_exepath: Option<String>,
    #[serde(rename = "proc.exe", default, deserialize_with = "opt_string")]
    proc_exe: Option<String>,
    #[serde(rename = "proc.cmdline", default, deserialize_with = "opt_string")]
    proc_cmdline: Option<String>,
    #[serde(rename = "proc.pid", default, deserialize_with = "opt_u32")]
    proc_pid: Option<u32>,
    #[serde(rename = "proc.cwd", default, deserialize_with = "opt_string")]
    proc_cwd: Option<String>,
    #[serde(rename = "proc.pexepath", default, deserialize_with = "opt_string")]
    proc_pexepath: Option<String>,
    #[serde(rename = "proc.pname", default, deserialize_with = "opt_string")]
    proc_pname: Option<String>,
    #[serde(rename = "fd.name", default, deserialize_with = "opt_string")]
    fd_name: Option<String>,
    #[serde(rename = "fd.rip", default, deserialize_with = "opt_string")]
    fd_rip: Option<String>,
    #[serde(rename = "fd.rport", default, deserialize_with = "opt_u32")]
    fd_rport: Option<u32>,
    #[serde(rename = "user.name", default, deserialize_with = "opt_string")]
    user_name: Option<String>,
    #[serde(rename = "user.uid", default, deserialize_with = "opt_u32")]
    user_uid: Option<u32>,
    #[serde(rename = "container.id", default, deserialize_with = "opt_string")]
    container_id: Option<String>,
    #[serde(rename = "container.name", default, deserialize_with = "opt_string")]
    container_name: Option<String>,
    #[serde(
        rename = "container.image.repository",
        default,
        deserialize_with = "opt_string"
    )]
    image_repository: Option<String>,
    #[serde(
        rename = "container.image.tag",
        default,
        deserialize_with = "opt_string"
    )]
    image_tag: Option<String>,
    #[serde(
        rename = "container.image.digest",
        default,
        deserialize_with = "opt_first_string"
    )]
    image_digest: Option<String>,
    #[serde(rename = "k8s.ns.name", default, deserialize_with = "opt_string")]
    k8s_ns: Option<String>,
    #[serde(rename = "k8s.pod.name", default, deserialize_with = "opt_string")]
    k8s_pod: Option<String>,
    /// Syscall event drops: dropped and seen in the last second.
    #[serde(default, deserialize_with = "opt_i64")]
    n_drops: Option<i64>,
    #[serde(default, deserialize_with = "opt_i64")]
    n_evts: Option<i64>,
    /// A metrics snapshot's counters, now and at the previous snapshot.
    #[serde(rename = "scap.n_drops", default, deserialize_with = "opt_i64")]
    scap_drops: Option<i64>,
    #[serde(rename = "scap.n_drops_prev", default, deserialize_with = "opt_i64")]
    scap_drops_prev: Option<i64>,
    #[serde(rename = "scap.n_evts", default, deserialize_with = "opt_i64")]
    scap_evts: Option<i64>,
    #[serde(rename = "scap.n_evts_prev", default, deserialize_with = "opt_i64")]
    scap_evts_prev: Option<i64>,
}

/// `time`: RFC 3339 text, or gRPC's timestamp message.
#[derive(Deserialize)]
#[serde(untagged)]
enum Time {
    Text(String),
    Proto { seconds: i64, nanos: i64 },
}

/// `evt.time`: epoch nanoseconds (a number or a numeric string), or a clock.
#[derive(Deserialize)]
#[serde(untagged)]
enum EventTime {
    Number(u64),
    Text(String),
}

impl EventTime {
    /// The time, when this is an epoch count: by its size, nanoseconds, microseconds
    /// or milliseconds (each unit's count passed 10^18, 10^15 and 10^12 in 2001), so
    /// that a shipper that rescaled it is still read right. `None` for a clock or
    /// anything else.
    fn nanos(&self) -> Option<Nanos> {
        let n = match self {
            EventTime::Number(n) => *n,
            EventTime::Text(t) => t.trim().parse().ok()?,
        };
        let scale = match n {
            1_000_000_000_000_000_000.. => 1,
            1_000_000_000_000_000.. => 1_000,
            1_000_000_000_000.. => 1_000_000,
            _ => return None,
        };
        n.checked_mul(scale).and_then(Nanos::from_unix_nanos_u64)
    }
}

/// `priority`: a name in any case, or the gRPC enum's number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Priority {
    Number(u64),
    Name(String),
}

/// Falco's priorities, most severe first (the gRPC enum's order).
const PRIORITIES: [&str; 8] = [
    "Emergency",
    "Alert",
    "Critical",
    "Error",
    "Warning",
    "Notice",
    "Informational",
    "Debug",
];

impl Priority {
    fn name(self) -> Result<String, DecodeError> {
        match self {
            Priority::Number(n) => usize::try_from(n)
                .ok()
                .and_then(|i| PRIORITIES.get(i))
                .map(|p| (*p).to_owned())
                .ok_or_else(|| {
                    DecodeError::new(
                        crate::Reason::AbsurdValue,
                        format!("priority {n} is not one of Falco's 0-7"),
                    )
                }),
            // Falco's own short forms too (`info`, `warn`, `err`, `crit`, `emerg`).
            Priority::Name(name) => Ok(PRIORITIES
                .iter()
                .find(|p| {
                    p.eq_ignore_ascii_case(&name)
                        || (name.len() >= 3
                            && p.len() > name.len()
                            && p[..name.len()].eq_ignore_ascii_case(&name))
                })
                .map_or(name, |p| (*p).to_owned())),
        }
    }
}

/// The rule name prefix of Falco's records about itself.
const INTERNAL_RULE: &str = "Falco internal:";

/// The rule of Falco's syscall event drop alert.
const DROP_RULE: &str = "Falco internal: syscall event drop";

/// The rule of Falco's metrics snapshots.
const METRICS_RULE: &str = "Falco internal: metrics snapshot";

pub(super) fn decode(
    payload: &[u8],
    out: &mut Vec<Event>,
) -> Result<Option<&'static str>, DecodeError> {
    let alert: FalcoAlert = parse(payload)?;
    let internal =
        alert.rule.starts_with(INTERNAL_RULE) || alert.source.as_deref() == Some("internal");
    if internal && alert.rule != DROP_RULE && alert.rule != METRICS_RULE {
        return Ok(Some("sensor_internal"));
    }
    let fields = alert.output_fields.unwrap_or_default();
    let time = match (
        fields.evt_time.as_ref().and_then(EventTime::nanos),
        alert.time,
    ) {
        (Some(t), _) => t,
        (None, Some(Time::Text(t))) => parse_time("time", &t)?,
        (None, Some(Time::Proto { seconds, nanos })) => seconds
            .checked_mul(1_000_000_000)
            .and_then(|s| s.checked_add(nanos))
            .map(Nanos)
            .ok_or_else(|| {
                DecodeError::new(
                    crate::Reason::AbsurdValue,
                    format!("time {seconds} s {nanos} ns overflows"),
                )
            })?,
        (None, None) => return Err(wrong_shape("Falco alert has neither time nor evt.time")),
    };
    if internal {
        let count = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok());
        // Without the counter, the number Falco's own message gives.
        let said = || {
            let output = alert.output.as_deref()?;
            let before = &output[..output.find(" system calls dropped")?];
            before.rsplit(' ').next()?.parse::<u64>().ok()
        };
        out.push(Event {
            time,
            source: Source::Falco,
            provenance: Default::default(),
            workload: Workload {
                node: alert.hostname,
                ..Workload::default()
            },
            service: String::new(),
            kind: if alert.rule == METRICS_RULE {
                // Counters since start: what changed since the previous snapshot.
                let delta =
                    |now: Option<i64>, prev: Option<i64>| count(Some(now?.checked_sub(prev?)?));
                EventKind::SensorHealth {
                    sensor: "falco".to_owned(),
                    report: SensorReport::Metrics,
                    lost: delta(fields.scap_drops, fields.scap_drops_prev).unwrap_or(0),
                    seen: delta(fields.scap_evts, fields.scap_evts_prev),
                    detail: None,
                }
            } else {
                EventKind::SensorHealth {
                    sensor: "falco".to_owned(),
                    report: SensorReport::Dropped,
                    lost: count(fields.n_drops).or_else(said).unwrap_or(0),
                    seen: count(fields.n_evts),
                    detail: alert.output,
                }
            },
        });
        return Ok(None);
    }
    let priority = alert.priority.name()?;

    let exe = fields
        .proc_exepath
        .or(fields.proc_exe)
        .or_else(|| fields.proc_name.clone());
    let process = exe.map(|exe| Process {
        exe,
        // `proc.cmdline` is "name arg1 arg2…": the first word is the process name.
        args: fields
            .proc_cmdline
            .as_deref()
            .map(|c| split_words(c).into_iter().skip(1).collect())
            .unwrap_or_default(),
        parent_exe: fields.proc_pexepath.or(fields.proc_pname),
        pid: fields.proc_pid,
        uid: fields.user_uid,
        user: fields.user_name,
        cwd: fields.proc_cwd,
    });
    // `fd.name` is a path for files and "ip:port->ip:port" for sockets: the remote end
    // is `fd.rip`/`fd.rport` when Falco printed them, else the right of the arrow.
    let remote = match (&fields.fd_rip, fields.fd_rport) {
        (Some(ip), Some(port)) => Some(format!("{ip}:{port}")),
        _ => fields
            .fd_name
            .as_deref()
            .and_then(|n| n.split_once("->"))
            .map(|(_, r)| r.trim().to_owned())
            .filter(|r| r.contains(':')),
    };
    let file = fields.fd_name.filter(|n| n.starts_with('/'));

    let container_id = fields.container_id.as_deref().and_then(short_container_id);
    let container_name = fields.container_name.filter(|n| n != "host");
    let image = Image {
        repository: fields.image_repository,
        tag: fields.image_tag,
        digest: fields.image_digest,
    };
    out.push(Event {
        time,
        source: Source::Falco,
        provenance: Default::default(),
        workload: Workload {
            node: alert.hostname,
            namespace: fields.k8s_ns,
            pod: fields.k8s_pod,
            container_id,
            container_name,
            image,
            ..Workload::default()
        },
        service: String::new(),
        kind: EventKind::SensorAlert {
            rule: alert.rule,
            priority,
            tags: alert.tags,
            process,
            file,
            remote,
            output: alert.output,
        },
    });
    Ok(None)
}
