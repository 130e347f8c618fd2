//! Kubernetes audit events (`audit.k8s.io/v1`), single `Event`s or webhook `EventList`s.
//!
//! driftwatch models exec and attach into pods. They are recognised by the
//! subresource, never the verb: over SPDY the verb is `create`, over WebSocket (kubectl's
//! default since about 1.30) it is `get`. The container and the command are only in the
//! `requestURI` query string. One request produces an event per audit stage: the
//! exec is reported from the first stage that carries the response code (101 started,
//! 403 denied), so `RequestReceived` is ignored and later repeats of the audit ID are
//! dropped. Other audit events are ignored.

use serde::Deserialize;

use super::lenient::opt_string;
use super::{parse, parse_time, wrong_shape};
use crate::error::DecodeError;
use crate::event::{Event, EventKind, ExecVia, Source, Workload};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    #[serde(default, deserialize_with = "opt_string")]
    kind: Option<String>,
    /// Present on `EventList`.
    items: Option<Vec<AuditEvent>>,
    #[serde(rename = "auditID", default, deserialize_with = "opt_string")]
    audit_id: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    stage: Option<String>,
    #[serde(rename = "requestURI", default, deserialize_with = "opt_string")]
    request_uri: Option<String>,
    user: Option<User>,
    #[serde(default, rename = "sourceIPs")]
    source_ips: Option<Vec<String>>,
    object_ref: Option<ObjectRef>,
    response_status: Option<ResponseStatus>,
    #[serde(default, deserialize_with = "opt_string")]
    request_received_timestamp: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    stage_timestamp: Option<String>,
}

#[derive(Deserialize)]
struct User {
    #[serde(default, deserialize_with = "opt_string")]
    username: Option<String>,
}

#[derive(Deserialize)]
struct ObjectRef {
    #[serde(default, deserialize_with = "opt_string")]
    resource: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    namespace: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    subresource: Option<String>,
}

#[derive(Deserialize)]
struct ResponseStatus {
    code: Option<i64>,
}

/// `seen(audit_id)` says whether an audit ID was already reported; the IDs this record
/// reports are added to `new_ids`, for the caller to remember once the record is accepted.
pub(super) fn decode(
    payload: &[u8],
    out: &mut Vec<Event>,
    seen: &dyn Fn(&str) -> bool,
    new_ids: &mut Vec<String>,
) -> Result<Option<&'static str>, DecodeError> {
    let doc: AuditEvent = parse(payload)?;
    match (doc.kind.as_deref(), doc.items) {
        (Some("EventList"), Some(items)) | (None, Some(items)) => {
            let start = out.len();
            let mut last_ignored = "empty_event_list";
            for item in items {
                if let Some(why) = one(item, out, seen, new_ids)? {
                    last_ignored = why;
                }
            }
            Ok((out.len() == start).then_some(last_ignored))
        }
        (Some("EventList"), None) => Err(wrong_shape("EventList has no items")),
        (_, None) => {
            let single = AuditEvent { items: None, ..doc };
            one(single, out, seen, new_ids)
        }
        (Some(_), Some(_)) => Err(wrong_shape("audit Event carries items")),
    }
}

fn one(
    e: AuditEvent,
    out: &mut Vec<Event>,
    seen: &dyn Fn(&str) -> bool,
    new_ids: &mut Vec<String>,
) -> Result<Option<&'static str>, DecodeError> {
    let Some(object) = &e.object_ref else {
        return Ok(Some("not_exec"));
    };
    let is_exec = object.resource.as_deref() == Some("pods")
        && matches!(object.subresource.as_deref(), Some("exec" | "attach"));
    if !is_exec {
        return Ok(Some("not_exec"));
    }
    let audit_id = e
        .audit_id
        .as_deref()
        .ok_or_else(|| wrong_shape("audit event has no auditID"))?;
    let time = match (
        e.request_received_timestamp.as_deref(),
        e.stage_timestamp.as_deref(),
    ) {
        (Some(t), _) => parse_time("requestReceivedTimestamp", t)?,
        (None, Some(t)) => parse_time("stageTimestamp", t)?,
        (None, None) => return Err(wrong_shape("audit event has no timestamp")),
    };
    if e.stage.as_deref() == Some("RequestReceived") {
        return Ok(Some("request_received_stage"));
    }
    if seen(audit_id) || new_ids.iter().any(|id| id == audit_id) {
        return Ok(Some("repeated_stage"));
    }
    new_ids.push(audit_id.to_owned());
    let mut command = Vec::new();
    let mut container = None;
    if let Some(query) = e
        .request_uri
        .as_deref()
        .and_then(|u| u.split_once('?'))
        .map(|(_, q)| q)
    {
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "command" => command.push(v.into_owned()),
                "container" => container = Some(v.into_owned()),
                _ => {}
            }
        }
    }
    // The authenticated user, not an impersonated one: the person behind the keyboard.
    let actor = e
        .user
        .and_then(|u| u.username)
        .unwrap_or_else(|| "unknown".to_owned());
    // 101 Switching Protocols is a started exec; 4xx/5xx a refused one.
    let allowed = e
        .response_status
        .and_then(|s| s.code)
        .map(|c| (100..400).contains(&c));
    out.push(Event {
        time,
        source: Source::K8sAudit,
        provenance: Default::default(),
        workload: Workload {
            namespace: object.namespace.clone(),
            pod: object.name.clone(),
            container_name: container,
            ..Workload::default()
        },
        service: String::new(),
        kind: EventKind::ExecInto {
            actor,
            command,
            via: ExecVia::K8sAudit,
            allowed,
            source_ips: e.source_ips.unwrap_or_default(),
        },
    });
    Ok(None)
}
