//! Falco alerts (`json_output: true`) and Falcosidekick's Kafka output.
//!
//! Every Falco alert becomes a `sensor_alert` event carrying the rule, the priority and
//! the process/file fields it had, so detection can correlate it with its own drift
//! alert about the same act.

use serde::Deserialize;

use super::lenient::{opt_string, opt_u32, opt_u64, short_container_id, split_words, string_list};
use super::{parse, parse_time, wrong_shape};
use crate::error::DecodeError;
use crate::event::{Event, EventKind, Image, Process, Source, Workload};
use crate::time::Nanos;

#[derive(Deserialize)]
struct FalcoAlert {
    #[serde(default, deserialize_with = "opt_string")]
    time: Option<String>,
    rule: String,
    priority: String,
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
    #[serde(rename = "evt.time", default, deserialize_with = "opt_u64")]
    evt_time: Option<u64>,
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
        deserialize_with = "opt_string"
    )]
    image_digest: Option<String>,
    #[serde(rename = "k8s.ns.name", default, deserialize_with = "opt_string")]
    k8s_ns: Option<String>,
    #[serde(rename = "k8s.pod.name", default, deserialize_with = "opt_string")]
    k8s_pod: Option<String>,
}

pub(super) fn decode(
    payload: &[u8],
    out: &mut Vec<Event>,
) -> Result<Option<&'static str>, DecodeError> {
    let alert: FalcoAlert = parse(payload)?;
    let fields = alert.output_fields.unwrap_or_default();
    let time = match (fields.evt_time, alert.time.as_deref()) {
        (Some(ns), _) => Nanos::from_unix_nanos_u64(ns).ok_or_else(|| {
            DecodeError::new(
                crate::Reason::AbsurdValue,
                format!("evt.time {ns} overflows"),
            )
        })?,
        (None, Some(t)) => parse_time("time", t)?,
        (None, None) => return Err(wrong_shape("Falco alert has neither time nor evt.time")),
    };

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
    // `fd.name` is a path for files and "ip:port->ip:port" for sockets; only paths are files.
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
            priority: alert.priority,
            tags: alert.tags,
            process,
            file,
            output: alert.output,
        },
    });
    Ok(None)
}
