//! Kubernetes audit events (`audit.k8s.io/v1`), single `Event`s or webhook `EventList`s.
//!
//! driftwatch models exec and attach into pods. They are recognised by the
//! subresource, never the verb: over SPDY the verb is `create`, over WebSocket (kubectl's
//! default since about 1.30) it is `get`. The container and the command are only in the
//! `requestURI` query string. One request produces an event per audit stage: the
//! exec is reported from the first stage that carries the response code (101 started,
//! 403 denied), so `RequestReceived` is ignored and later repeats of the audit ID are
//! dropped. Other audit events are ignored.
//!
//! Shapes taken besides the API server's own: `audit.k8s.io/v1beta1` (its `timestamp`),
//! events and `EventList` items without `kind` or `apiVersion`, AKS diagnostic-log
//! wrappers (`properties.log` holding the event as an object or as a JSON string), and
//! events some tools stripped of `auditID` (each is then reported: there is nothing to
//! tell its stages apart by) or of every timestamp (dated when decoded). GKE's Cloud
//! Logging entries (`protoPayload`) are another schema and are refused.

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
    /// `audit.k8s.io/v1beta1`'s time.
    #[serde(default, deserialize_with = "opt_string")]
    timestamp: Option<String>,
    /// An AKS diagnostic-log wrapper's payload.
    properties: Option<Properties>,
    /// A GKE Cloud Logging entry.
    proto_payload: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Properties {
    log: Option<Wrapped>,
}

/// What an AKS wrapper holds: the event, or its JSON text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Wrapped {
    Event(Box<AuditEvent>),
    Text(String),
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
    events(doc, out, seen, new_ids)
}

fn events(
    mut doc: AuditEvent,
    out: &mut Vec<Event>,
    seen: &dyn Fn(&str) -> bool,
    new_ids: &mut Vec<String>,
) -> Result<Option<&'static str>, DecodeError> {
    if doc.proto_payload.is_some() {
        return Err(wrong_shape(
            "a GKE Cloud Logging entry (protoPayload), not an audit.k8s.io Event",
        ));
    }
    if doc.object_ref.is_none()
        && doc.items.is_none()
        && let Some(log) = doc.properties.take().and_then(|p| p.log)
    {
        let inner = match log {
            Wrapped::Event(e) => *e,
            Wrapped::Text(text) => parse(text.as_bytes())?,
        };
        return events(inner, out, seen, new_ids);
    }
    if let Some(kind) = doc.kind.as_deref()
        && !matches!(kind, "Event" | "EventList")
    {
        return Err(wrong_shape(format!(
            "kind {kind:?} is neither an audit Event nor an EventList"
        )));
    }
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
    let time = match (
        e.request_received_timestamp.as_deref(),
        e.stage_timestamp.as_deref(),
        e.timestamp.as_deref(),
    ) {
        (Some(t), _, _) => parse_time("requestReceivedTimestamp", t)?,
        (None, Some(t), _) => parse_time("stageTimestamp", t)?,
        (None, None, Some(t)) => parse_time("timestamp", t)?,
        // Only a tool that rewrote the event drops every time the API server writes.
        (None, None, None) => crate::time::Nanos::now(),
    };
    if e.stage.as_deref() == Some("RequestReceived") {
        return Ok(Some("request_received_stage"));
    }
    if let Some(audit_id) = e.audit_id.as_deref() {
        if seen(audit_id) || new_ids.iter().any(|id| id == audit_id) {
            return Ok(Some("repeated_stage"));
        }
        new_ids.push(audit_id.to_owned());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_that_is_no_audit_event_is_refused() {
        for record in [&br#"{"kind": 0}"#[..], br#"{"kind":"Pod","items":[]}"#] {
            let err = decode(record, &mut Vec::new(), &|_| false, &mut Vec::new()).unwrap_err();
            assert_eq!(err.reason, crate::Reason::WrongShape, "{err}");
        }
    }

    #[test]
    fn an_event_without_audit_id_or_timestamps_is_reported_and_dated_when_decoded() {
        let record = br#"{"kind":"Event","verb":"create","user":{"username":"ci-bot"},"objectRef":{"resource":"pods","subresource":"exec","namespace":"shop","name":"worker-0"},"responseStatus":{"code":200},"requestURI":"/api/v1/namespaces/shop/pods/worker-0/exec?command=id"}"#;
        let (before, mut out, mut ids) = (crate::time::Nanos::now(), Vec::new(), Vec::new());
        // Twice: without an audit ID, no stage can be told from another request.
        for _ in 0..2 {
            assert_eq!(
                decode(record, &mut out, &|_| false, &mut ids).unwrap(),
                None
            );
        }
        assert_eq!(out.len(), 2);
        assert!(ids.is_empty());
        assert!(before <= out[0].time && out[0].time <= crate::time::Nanos::now());
    }
}
