//! Docker Engine events (`GET /events`, `docker events --format json`) in every shape
//! the engine and its look-alikes write:
//!
//! - API ≥ 1.52: `Type`, `Action`, `Actor` (`ID`, `Attributes`), `time`, `timeNano`;
//! - API 1.22–1.51: the same beside the legacy `status`, `id` and `from`;
//! - API < 1.22: `status`, `id`, `from` and `time` only; an event with `from` (the
//!   image) is about a container, one without is about an image;
//! - Podman's Docker-compatible stream: an empty `Actor.ID` (the top-level `id` holds
//!   it) and `containerExitCode`;
//! - `docker compose events --json`: lower-case `type`, `action`, `id`, `attributes`,
//!   the compose `service`, and `time` as RFC 3339.
//!
//! Time is `timeNano` when it agrees with `time` to the second, else `time` (a
//! `timeNano` that disagrees was rescaled or rounded on the way, as jq does past a
//! float's 53 bits). Container actions become `container` lifecycle events;
//! `exec_start: <command>` becomes `exec_into` (the command is inside the action
//! string). `exec_create` and `exec_die` of the same exec are ignored so one exec is one
//! event. Image, network and volume events are ignored, and so are the container
//! actions that change nothing driftwatch judges (`attach`, `resize`, `stop` before its
//! `die`, `destroy`, `history`, …): see [`LIFECYCLE_ACTIONS`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::lenient::{opt_string, short_container_id, split_words, string_map};
use super::{parse, parse_time, wrong_shape};
use crate::error::DecodeError;
use crate::event::{ContainerFacts, Event, EventKind, ExecVia, Image, Source, Workload};
use crate::time::{NANOS_PER_SECOND, Nanos};

#[derive(Deserialize)]
struct DockerEvent {
    #[serde(
        rename = "Type",
        alias = "type",
        default,
        deserialize_with = "opt_string"
    )]
    kind: Option<String>,
    #[serde(
        rename = "Action",
        alias = "action",
        default,
        deserialize_with = "opt_string"
    )]
    action: Option<String>,
    #[serde(rename = "Actor")]
    actor: Option<Actor>,
    #[serde(default, deserialize_with = "opt_string")]
    status: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    from: Option<String>,
    /// `docker compose events --json` keeps the attributes at the top level.
    #[serde(default, deserialize_with = "string_map")]
    attributes: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "opt_string")]
    service: Option<String>,
    #[serde(default)]
    time: Option<Stamp>,
    #[serde(rename = "timeNano", default)]
    time_nano: Option<Stamp>,
}

/// A time field: a number (an integer, or a float a tool rounded it to), or text (a
/// number in a string, or RFC 3339).
#[derive(Deserialize)]
#[serde(untagged)]
enum Stamp {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Stamp {
    fn number(&self) -> Option<i64> {
        match self {
            Stamp::Int(n) => Some(*n),
            // Past 2^53 a float has lost the last digits; what is left is close enough.
            Stamp::Float(f) if f.is_finite() && f.abs() < 9.2e18 => Some(*f as i64),
            Stamp::Float(_) => None,
            Stamp::Text(t) => t.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct Actor {
    #[serde(rename = "ID", default, deserialize_with = "opt_string")]
    id: Option<String>,
    #[serde(rename = "Attributes", default, deserialize_with = "string_map")]
    attributes: BTreeMap<String, String>,
}

/// Container actions that are behaviour: a container's life (create, start, restart,
/// die with its exit code, kill, out of memory, pause), its health and its changed
/// settings. The others (`attach`, `detach`, `resize`, `stop`, `destroy`, `top`,
/// `history`, `copy`, `archive-path`, `export`, `commit`, …) follow from these or
/// change nothing a control or a baseline reads; each would also fire a compliance
/// check for nothing.
const LIFECYCLE_ACTIONS: [&str; 11] = [
    "create",
    "start",
    "restart",
    "die",
    "kill",
    "oom",
    "pause",
    "unpause",
    "health_status",
    "update",
    "rename",
];

/// Attributes that are container properties, not labels.
const NON_LABEL_ATTRIBUTES: [&str; 6] = [
    "image",
    "name",
    "exitCode",
    "containerExitCode",
    "execID",
    "signal",
];

/// The event's time (see the module's notes).
fn time(e: &DockerEvent) -> Result<Nanos, DecodeError> {
    let seconds = e.time.as_ref().and_then(Stamp::number);
    let nanos = e.time_nano.as_ref().and_then(Stamp::number);
    match (nanos, seconds) {
        (Some(ns), Some(s)) if (ns.div_euclid(NANOS_PER_SECOND) - s).abs() <= 1 => Ok(Nanos(ns)),
        (Some(ns), None) => Ok(Nanos(ns)),
        (_, Some(s)) => Ok(Nanos(s.saturating_mul(NANOS_PER_SECOND))),
        (_, None) => match &e.time {
            Some(Stamp::Text(t)) => parse_time("time", t),
            _ => Err(wrong_shape("Docker event has neither time nor timeNano")),
        },
    }
}

pub(super) fn decode(
    payload: &[u8],
    out: &mut Vec<Event>,
) -> Result<Option<&'static str>, DecodeError> {
    let e: DockerEvent = parse(payload)?;
    let kind = match (&e.kind, &e.status) {
        (Some(kind), _) => kind.as_str(),
        // Before API 1.22: only container events name their image in `from`.
        (None, Some(_)) if e.from.is_some() => "container",
        (None, Some(_)) => "image",
        (None, None) => return Err(wrong_shape("Docker event has neither Type nor status")),
    };
    if kind != "container" {
        return Ok(Some("not_container"));
    }
    let time = time(&e)?;
    let action = e
        .action
        .or(e.status)
        .ok_or_else(|| wrong_shape("Docker container event has neither Action nor status"))?;
    let (actor_id, mut attributes) = match e.actor {
        Some(a) => (a.id, a.attributes),
        None => (None, BTreeMap::new()),
    };
    attributes.extend(e.attributes);
    if let Some(image) = e.from {
        attributes.entry("image".to_owned()).or_insert(image);
    }
    if let Some(service) = e.service {
        attributes
            .entry("com.docker.compose.service".to_owned())
            .or_insert(service);
    }
    let id = actor_id.or(e.id);
    if id.is_none() && attributes.is_empty() {
        return Err(wrong_shape("Docker container event names no container"));
    }
    let kind = if let Some(command) = action.strip_prefix("exec_start:") {
        EventKind::ExecInto {
            // The engine does not say who called it.
            actor: "docker".to_owned(),
            command: split_words(command),
            via: ExecVia::Docker,
            allowed: Some(true),
            source_ips: Vec::new(),
        }
    } else if action.starts_with("exec_") {
        return Ok(Some("exec_stage"));
    } else {
        // "health_status: healthy" and friends: the action is the part before the colon.
        let action = action
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        if !LIFECYCLE_ACTIONS.contains(&action.as_str()) {
            return Ok(Some("lifecycle_noise"));
        }
        let exit_code = attributes
            .get("exitCode")
            .or_else(|| attributes.get("containerExitCode"))
            .and_then(|c| c.parse().ok());
        EventKind::Container {
            action,
            facts: ContainerFacts {
                exit_code,
                ..ContainerFacts::default()
            },
        }
    };
    let image = attributes
        .get("image")
        .map(|i| Image::parse(i))
        .unwrap_or_default();
    let container_name = attributes.get("name").cloned();
    // Kubernetes' dockershim/cri-dockerd labels name the pod behind a container.
    let namespace = attributes.get("io.kubernetes.pod.namespace").cloned();
    let pod = attributes.get("io.kubernetes.pod.name").cloned();
    let k8s_container = attributes.get("io.kubernetes.container.name").cloned();
    attributes.retain(|k, _| !NON_LABEL_ATTRIBUTES.contains(&k.as_str()));
    out.push(Event {
        time,
        source: Source::Docker,
        provenance: Default::default(),
        workload: Workload {
            namespace,
            pod,
            container_id: id.as_deref().and_then(short_container_id),
            container_name: k8s_container.or(container_name),
            image,
            labels: attributes,
            ..Workload::default()
        },
        service: String::new(),
        kind,
    });
    Ok(None)
}
