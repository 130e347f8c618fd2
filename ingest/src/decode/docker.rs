//! Docker Engine events (`GET /events`, API ≥ 1.52: `Type`, `Action`, `Actor`, `time`,
//! `timeNano`; the old `status/id/from` fields are gone).
//!
//! Container actions become `container` lifecycle events; `exec_start: <command>`
//! becomes `exec_into` (the command is inside the action string). `exec_create` and
//! `exec_die` of the same exec are ignored so one exec is one event. Image, network and
//! volume events are ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::lenient::{opt_i64, opt_string, short_container_id, split_words, string_map};
use super::{parse, wrong_shape};
use crate::error::DecodeError;
use crate::event::{ContainerFacts, Event, EventKind, ExecVia, Image, Source, Workload};
use crate::time::{NANOS_PER_SECOND, Nanos};

#[derive(Deserialize)]
struct DockerEvent {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "Actor")]
    actor: Option<Actor>,
    #[serde(default, deserialize_with = "opt_i64")]
    time: Option<i64>,
    #[serde(rename = "timeNano", default, deserialize_with = "opt_i64")]
    time_nano: Option<i64>,
}

#[derive(Deserialize)]
struct Actor {
    #[serde(rename = "ID", default, deserialize_with = "opt_string")]
    id: Option<String>,
    #[serde(rename = "Attributes", default, deserialize_with = "string_map")]
    attributes: BTreeMap<String, String>,
}

/// Attributes that are container properties, not labels.
const NON_LABEL_ATTRIBUTES: [&str; 5] = ["image", "name", "exitCode", "execID", "signal"];

pub(super) fn decode(
    payload: &[u8],
    out: &mut Vec<Event>,
) -> Result<Option<&'static str>, DecodeError> {
    let e: DockerEvent = parse(payload)?;
    if e.kind != "container" {
        return Ok(Some("not_container"));
    }
    let time = match (e.time_nano, e.time) {
        (Some(ns), _) => Nanos(ns),
        (None, Some(s)) => Nanos(s.saturating_mul(NANOS_PER_SECOND)),
        (None, None) => return Err(wrong_shape("Docker event has neither time nor timeNano")),
    };
    let actor = e
        .actor
        .ok_or_else(|| wrong_shape("Docker container event has no Actor"))?;
    let mut attributes = actor.attributes;
    let kind = if let Some(command) = e.action.strip_prefix("exec_start:") {
        EventKind::ExecInto {
            // The engine does not say who called it.
            actor: "docker".to_owned(),
            command: split_words(command),
            via: ExecVia::Docker,
            allowed: Some(true),
            source_ips: Vec::new(),
        }
    } else if e.action.starts_with("exec_") {
        return Ok(Some("exec_stage"));
    } else {
        // "health_status: healthy" and friends: the action is the part before the colon.
        let action = e
            .action
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let exit_code = attributes.get("exitCode").and_then(|c| c.parse().ok());
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
            container_id: actor.id.as_deref().and_then(short_container_id),
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
