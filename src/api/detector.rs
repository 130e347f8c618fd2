//! The detector's endpoints: alerts and what analysts do with them, services, and
//! baselines. Reads load the pipeline's published view; changes are commands the
//! pipeline applies, answered once applied.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use detect::{Alert, AlertStatus, Command, Outcome};
use ingest::Nanos;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Api, ApiError, ApiQuery, Caller, Role, label, parse_since, scoped, with_member};
use crate::baseline::{self, BaselineFile};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertFilter {
    service: Option<String>,
    kind: Option<String>,
    severity: Option<String>,
    status: Option<String>,
    /// RFC 3339 time or a duration back from now (`1h`).
    since: Option<String>,
    limit: Option<usize>,
    /// `cluster` (the default): this daemon's alerts and, with `[kafka] cluster-topic`,
    /// the other daemons'; `local`: this daemon's only.
    scope: Option<String>,
}

impl AlertFilter {
    fn keeps(&self, a: &Alert, since: Option<Nanos>) -> bool {
        self.service.as_ref().is_none_or(|s| &a.service == s)
            && self.kind.as_ref().is_none_or(|k| a.kind.as_str() == k)
            && self
                .severity
                .as_ref()
                .is_none_or(|s| &label(&a.severity) == s)
            && self.status.as_ref().is_none_or(|s| &label(&a.status) == s)
            && since.is_none_or(|t| a.last_seen >= t)
    }
}

/// An alert as the API shows it; with a cluster topic, with the member that holds it.
fn shown(alert: &Alert, member: Option<&str>) -> Value {
    with_member(json!(alert), member)
}

pub(super) async fn list_alerts(
    State(api): State<Arc<Api>>,
    caller: Caller,
    ApiQuery(f): ApiQuery<AlertFilter>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let since = f.since.as_deref().map(parse_since).transpose()?;
    let limit = f.limit.unwrap_or(1000).min(10_000);
    let cluster = scoped(&api, f.scope.as_deref())?;
    let view = api.views.load();
    let member = api.cluster.as_ref().map(|c| c.member());
    // Newest first, from the view's time order: stops at the limit.
    let mine: Vec<(&Alert, Option<&str>)> = view
        .alerts()
        .rev()
        .map(AsRef::as_ref)
        .filter(|a| f.keeps(a, since))
        .take(limit)
        .map(|a| (a, member))
        .collect();
    let others = cluster.map(|c| c.load());
    let theirs: Vec<(&Alert, Option<&str>)> = others
        .iter()
        .flat_map(|o| o.alerts().rev())
        .filter(|r| view.alert(&r.item.id).is_none() && f.keeps(&r.item, since))
        .take(limit)
        .map(|r| (r.item.as_ref(), Some(&*r.member)))
        .collect();
    let alerts: Vec<Value> = newest_first(mine, theirs)
        .take(limit)
        .map(|(a, m)| shown(a, m))
        .collect();
    Ok(Json(json!({ "alerts": alerts })))
}

/// Two lists of alerts, each newest first, merged newest first.
fn newest_first<'a, T: Copy>(
    a: Vec<(&'a Alert, T)>,
    b: Vec<(&'a Alert, T)>,
) -> impl Iterator<Item = (&'a Alert, T)> {
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if y.0.time > x.0.time => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

pub(super) async fn get_alert(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let view = api.views.load();
    let member = api.cluster.as_ref().map(|c| c.member());
    if let Some(alert) = view.alert(&id) {
        return Ok(Json(shown(alert, member)));
    }
    let others = api.cluster.as_ref().map(|c| c.load());
    let remote = others.as_ref().and_then(|o| o.alert(&id));
    match remote {
        Some(r) => Ok(Json(shown(&r.item, Some(&r.member)))),
        None => Err(ApiError::NotFound(format!("no alert {id:?}"))),
    }
}

/// Has the pipeline apply a command, and waits until it has.
async fn command(api: &Api, command: Command) -> Result<Outcome, ApiError> {
    Ok(api.commands.apply(command).await?)
}

async fn set_status(
    api: &Api,
    caller: &Caller,
    id: &str,
    status: AlertStatus,
    action: &str,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Analyst)?;
    let outcome = command(
        api,
        Command::SetStatus {
            id: id.to_owned(),
            status,
        },
    )
    .await?;
    match outcome {
        Outcome::Alert(Some(alert)) => {
            if let (Some(n), AlertStatus::Resolved) = (&api.notifier, status) {
                n.submit(notify::Item::from_alert(&alert)).await;
            }
            api.audit
                .record_as(&caller.name, caller.role.as_str(), action, id, "ok");
            Ok(Json(json!(alert)))
        }
        _ => {
            api.audit
                .record_as(&caller.name, caller.role.as_str(), action, id, "not found");
            // Another member judges it: only that member can change it.
            let held = api
                .cluster
                .as_ref()
                .and_then(|c| c.load().alert(id).map(|r| r.member.to_string()));
            Err(ApiError::NotFound(match held {
                Some(member) => {
                    format!("alert {id:?} is held by the daemon on {member}: change it there")
                }
                None => format!("no alert {id:?}"),
            }))
        }
    }
}

pub(super) async fn acknowledge(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_status(
        &api,
        &caller,
        &id,
        AlertStatus::Acknowledged,
        "alert.acknowledge",
    )
    .await
}

pub(super) async fn resolve(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_status(&api, &caller, &id, AlertStatus::Resolved, "alert.resolve").await
}

pub(super) async fn accept(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Analyst)?;
    match command(&api, Command::Accept { id: id.clone() }).await? {
        Outcome::Alert(Some(alert)) => {
            api.audit.record_as(
                &caller.name,
                caller.role.as_str(),
                "alert.accept",
                &id,
                "ok",
            );
            Ok(Json(json!(alert)))
        }
        _ => {
            api.audit.record_as(
                &caller.name,
                caller.role.as_str(),
                "alert.accept",
                &id,
                "refused",
            );
            Err(ApiError::Conflict(format!(
                "no alert {id:?} that can be accepted (rate and baseline-cap alerts cannot)"
            )))
        }
    }
}

pub(super) async fn services(
    State(api): State<Arc<Api>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let view = api.views.load();
    // The view keeps services by name: already in order.
    let services: Vec<Value> = view
        .services
        .iter()
        .map(|(name, s)| {
            let snap = &s.snapshot;
            json!({
                "service": name,
                "phase": label(&snap.phase),
                "events": snap.events,
                "learning_since": snap.learning_since,
                "learned_at": snap.learned_at.map(|(t, _)| t),
                "baseline_entries": snap.baseline.len(),
                "image_digest": snap.image_digest,
                "log_templates": s.templates.len(),
                "growing": s.growing.iter().map(label).collect::<Vec<_>>(),
                "growth_until": snap.growth_until,
                "novelty": snap
                    .novelty
                    .iter()
                    .filter(|n| n.novelty.seen > 0)
                    .map(|n| (label(&n.dimension), json!({ "seen": n.novelty.seen, "new": n.novelty.new, "new_share": n.novelty.rate, "grown": n.novelty.grown, "growing": s.is_growing(n.dimension) })))
                    .collect::<serde_json::Map<String, Value>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "services": services })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServiceParam {
    service: Option<String>,
}

pub(super) async fn export_baselines(
    State(api): State<Arc<Api>>,
    caller: Caller,
    ApiQuery(p): ApiQuery<ServiceParam>,
) -> Result<Json<BaselineFile>, ApiError> {
    caller.require(Role::Viewer)?;
    let view = api.views.load();
    let file = match &p.service {
        Some(s) => {
            let service = view
                .services
                .get(s)
                .ok_or_else(|| ApiError::NotFound(format!("no service {s:?}")))?;
            baseline::from_services(std::iter::once(&service.snapshot))
        }
        None => baseline::from_services(view.services.values().map(|s| &s.snapshot)),
    };
    Ok(Json(file))
}

pub(super) async fn import_baselines(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let file: BaselineFile = serde_json::from_slice(&body).map_err(|e| {
        api.audit.record_as(
            &caller.name,
            caller.role.as_str(),
            "baseline.import",
            "",
            "invalid",
        );
        ApiError::BadRequest(format!("not a baseline file: {e}"))
    })?;
    let targets: Vec<&str> = file.services.iter().map(|s| s.service.as_str()).collect();
    let target = targets.join(",");
    let imported = command(
        &api,
        Command::Import {
            file: Box::new(file.clone()),
            at: Nanos::now(),
        },
    )
    .await?;
    match imported {
        Outcome::Imported(Ok(added)) => {
            api.audit.record_as(
                &caller.name,
                caller.role.as_str(),
                "baseline.import",
                &target,
                "ok",
            );
            Ok(Json(json!({ "added": added })))
        }
        Outcome::Imported(Err(e)) => {
            api.audit.record_as(
                &caller.name,
                caller.role.as_str(),
                "baseline.import",
                &target,
                "failed",
            );
            Err(ApiError::Internal(e.to_string()))
        }
        other => unreachable!("an import answers with what it imported, not {other:?}"),
    }
}

pub(super) async fn relearn(
    State(api): State<Arc<Api>>,
    caller: Caller,
    ApiQuery(p): ApiQuery<ServiceParam>,
) -> Result<Json<Value>, ApiError> {
    control(&api, &caller, p, "baseline.relearn", |service| {
        Command::Relearn { service }
    })
    .await
}

pub(super) async fn lock(
    State(api): State<Arc<Api>>,
    caller: Caller,
    ApiQuery(p): ApiQuery<ServiceParam>,
) -> Result<Json<Value>, ApiError> {
    control(&api, &caller, p, "baseline.lock", |service| Command::Lock {
        service,
    })
    .await
}

async fn control(
    api: &Api,
    caller: &Caller,
    p: ServiceParam,
    action: &str,
    make: fn(String) -> Command,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let service = p
        .service
        .ok_or_else(|| ApiError::BadRequest("the service parameter is required".into()))?;
    let done = matches!(
        command(api, make(service.clone())).await?,
        Outcome::Service(true)
    );
    api.audit.record_as(
        &caller.name,
        caller.role.as_str(),
        action,
        &service,
        if done { "ok" } else { "not found" },
    );
    if done {
        Ok(Json(json!({ "service": service, "done": action })))
    } else {
        Err(ApiError::NotFound(format!("no service {service:?}")))
    }
}
