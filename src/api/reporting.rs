//! Compliance findings, posture and reports, and the delivery status of notifications.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ingest::Nanos;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Api, ApiError, ApiQuery, Caller, Role, parse_since, scoped, with_member};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FindingFilter {
    service: Option<String>,
    control: Option<String>,
    status: Option<String>,
    /// `pci-dss`, `nist-800-53`, …
    framework: Option<String>,
    alert: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    /// `cluster` (the default): this daemon's findings and, with `[kafka] cluster-topic`,
    /// the other daemons' it does not hold itself, each once; `local`: this daemon's only.
    scope: Option<String>,
}

/// What the filter reads of a finding, this daemon's or another member's.
struct Fields<'a> {
    service: &'a str,
    control: &'a str,
    status: &'a str,
    references: &'a [String],
    alert: Option<&'a str>,
    time: Nanos,
}

impl FindingFilter {
    fn keeps(&self, x: &Fields<'_>, since: Option<Nanos>) -> bool {
        self.service.as_ref().is_none_or(|s| x.service == s)
            && self.control.as_ref().is_none_or(|c| x.control == c)
            && self.status.as_ref().is_none_or(|s| x.status == s)
            && self
                .framework
                .as_ref()
                .is_none_or(|fw| refers_to(x.references, fw))
            && self
                .alert
                .as_ref()
                .is_none_or(|a| x.alert == Some(a.as_str()))
            && since.is_none_or(|t| x.time >= t)
    }
}

fn compliance(api: &Api) -> Result<&compliance::worker::Compliance, ApiError> {
    api.compliance.as_ref().ok_or_else(|| {
        ApiError::NotFound("compliance is disabled ([compliance] enabled = false)".into())
    })
}

fn refers_to(references: &[String], framework: &str) -> bool {
    references
        .iter()
        .any(|r| r.split_once(':').is_some_and(|(f, _)| f == framework))
}

pub(super) async fn findings(
    State(api): State<Arc<Api>>,
    caller: Caller,
    ApiQuery(f): ApiQuery<FindingFilter>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let c = compliance(&api)?;
    let since = f.since.as_deref().map(parse_since).transpose()?;
    let limit = f.limit.unwrap_or(1000).min(10_000);
    let cluster = scoped(&api, f.scope.as_deref())?;
    let member = api.cluster.as_ref().map(|c| c.member());
    let view = c.view();
    // Newest first, each list up to the limit, then merged by time.
    let mut found: Vec<(Nanos, Value)> = view
        .findings
        .iter()
        .rev()
        .map(AsRef::as_ref)
        .filter(|x| {
            let fields = Fields {
                service: &x.service,
                control: &x.control,
                status: x.status.as_str(),
                references: &x.references,
                alert: x.alert.as_deref(),
                time: x.time,
            };
            f.keeps(&fields, since)
        })
        .take(limit)
        .map(|x| (x.time, with_member(json!(x), member)))
        .collect();
    let others = cluster.map(|c| c.load());
    found.extend(
        others
            .iter()
            .flat_map(|o| o.findings().rev())
            // A finding this daemon holds is shown as its own.
            .filter(|r| !view.holds(&r.item.id))
            .filter(|r| {
                let x = &r.item;
                let fields = Fields {
                    service: &x.service,
                    control: &x.control,
                    status: &x.status,
                    references: &x.references,
                    alert: x.alert_id.as_deref(),
                    time: Nanos(x.time),
                };
                f.keeps(&fields, since)
            })
            .take(limit)
            .map(|r| {
                (
                    Nanos(r.item.time),
                    with_member(r.item.to_json(), Some(&r.member)),
                )
            }),
    );
    found.sort_by_key(|(time, _)| std::cmp::Reverse(*time));
    let found: Vec<Value> = found.into_iter().take(limit).map(|(_, v)| v).collect();
    Ok(Json(json!({ "findings": found })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PostureFilter {
    service: Option<String>,
    framework: Option<String>,
    status: Option<String>,
}

pub(super) async fn posture(
    State(api): State<Arc<Api>>,
    caller: Caller,
    ApiQuery(f): ApiQuery<PostureFilter>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let c = compliance(&api)?;
    let view = c.view();
    let entries: Vec<Value> = view
        .posture()
        .filter(|p| f.service.as_ref().is_none_or(|s| &p.service == s))
        .filter(|p| f.status.as_ref().is_none_or(|s| p.status.as_str() == s))
        .filter_map(|p| {
            let control = c.catalog.get(&p.control)?;
            let references: Vec<String> =
                control.references.iter().map(ToString::to_string).collect();
            if f.framework
                .as_ref()
                .is_some_and(|fw| !refers_to(&references, fw))
            {
                return None;
            }
            Some(json!({
                "service": p.service,
                "control": &*p.control,
                "title": control.title,
                "severity": control.severity,
                "references": references,
                "status": p.status,
                "since": p.since,
                "last_checked": p.last_checked,
                "finding": p.finding,
            }))
        })
        .collect();
    Ok(Json(json!({ "posture": entries })))
}

pub(super) async fn list_reports(
    State(api): State<Arc<Api>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let dir = api.reports_dir.clone();
    let index = tokio::task::spawn_blocking(move || compliance::folder::read_index(&dir)).await?;
    Ok(Json(json!({ "reports": index })))
}

/// A file of a scheduled report; only files the index lists are served.
pub(super) async fn get_report_file(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let dir = api.reports_dir.clone();
    let listed = compliance::folder::read_index(&dir)
        .iter()
        .any(|e| e.files.values().any(|f| *f == file));
    let format = file
        .rsplit_once('.')
        .and_then(|(_, ext)| compliance::ReportFormat::parse(ext));
    let (true, Some(format)) = (listed, format) else {
        return Err(ApiError::NotFound(format!("no report file {file:?}")));
    };
    let body = tokio::fs::read(dir.join(&file))
        .await
        .map_err(|_| ApiError::NotFound(format!("no report file {file:?}")))?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportQuery {
    /// Comma-separated framework names; none: every framework.
    framework: Option<String>,
    /// Comma-separated service patterns (`*` wildcards); none: every service.
    service: Option<String>,
    /// The period: a duration back from now (`7d`) or an RFC 3339 start.
    since: Option<String>,
    /// `json` (the default), `csv` or `html`.
    format: Option<String>,
}

/// A report made now, over the period asked for.
pub(super) async fn report_on_demand(
    State(api): State<Arc<Api>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let c = compliance(&api)?;
    let split = |s: &Option<String>| -> Vec<String> {
        s.iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let frameworks = compliance::schedule::parse_frameworks(&split(&q.framework))
        .map_err(|e| ApiError::BadRequest(format!("framework: {e:#}")))?;
    let services = split(&q.service);
    let format = match q.format.as_deref() {
        None => compliance::ReportFormat::Json,
        Some(f) => compliance::ReportFormat::parse(f).ok_or_else(|| {
            ApiError::BadRequest(format!("format: {f:?} is not json, csv or html"))
        })?,
    };
    // Up to now, or to the newest check when event time runs ahead of the clock.
    let end = c
        .view()
        .newest_check()
        .map_or(Nanos::now(), |t| t.max(Nanos::now()));
    let start = match q.since.as_deref() {
        Some(s) => parse_since(s)?,
        None => Nanos(end.0.saturating_sub(7 * 24 * 3600 * 1_000_000_000)),
    };
    let request = compliance::report::Request {
        name: "on-demand",
        frameworks: &frameworks,
        services: &services,
        start,
        end,
        generated_at: end,
        link_base: None,
    };
    let r = c.report(&request, None).await;
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        format.render(&r),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NotificationFilter {
    /// An alert or finding id.
    item: Option<String>,
    sink: Option<String>,
    /// `pending`, `delivered` or `failed`.
    state: Option<String>,
}

/// Delivery status per alert (or finding) and sink.
pub(super) async fn notifications(
    State(api): State<Arc<Api>>,
    caller: Caller,
    ApiQuery(f): ApiQuery<NotificationFilter>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let statuses: Vec<notify::DeliveryStatus> = api
        .notifier
        .as_ref()
        .map(notify::Notifier::statuses)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| f.item.as_ref().is_none_or(|i| &s.item == i))
        .filter(|s| f.sink.as_ref().is_none_or(|i| &s.sink == i))
        .filter(|s| f.state.as_ref().is_none_or(|i| &s.state == i))
        .collect();
    Ok(Json(json!({ "notifications": statuses })))
}
