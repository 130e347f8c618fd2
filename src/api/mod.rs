//! The HTTP API (JSON) under `/api/v1`, described by `/openapi.json`: alerts, services
//! and baselines, SQL, log search and the audit log, behind bearer tokens with roles.
//!
//! `/metrics`, `/healthz`, `/readyz` and `/openapi.json` need no token, so Prometheus
//! and load balancers can reach them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::DateTime;
use ingest::Nanos;
use queries::metrics::SqlMetrics;
use queries::search::LogSearcher;
use queries::sql::SqlEngine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod detector;
mod error;
mod reporting;
mod sql_search;

pub use error::{ApiError, ApiJson, ApiQuery};
pub use store::audit::{AUDIT_KEPT, AuditEntry, AuditLog};

/// What a token may do; each role can do everything the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also acknowledges, resolves and accepts alerts.
    Analyst,
    /// Also imports baselines, makes services learn again, locks them, and reads the
    /// configuration.
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }
}

/// An API token as the configuration holds it: only its SHA-256 (`[[http.tokens]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiToken {
    /// Who uses it: the name the audit log records.
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
}

/// The hex SHA-256 of a token, as `[[http.tokens]] sha256` expects it.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Who made a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                actor: self.name.clone(),
                role: self.role.as_str(),
                needs: role.as_str(),
            })
        }
    }
}

/// Everything the API reads and changes.
pub struct Api {
    /// What the pipeline last published of the detector.
    pub views: detect::Views,
    /// Changes for the detector, applied by the pipeline.
    pub commands: pipeline::Commands,
    pub sql: Arc<SqlEngine>,
    pub sql_metrics: SqlMetrics,
    pub search: Option<LogSearcher>,
    pub compliance: Option<compliance::worker::Compliance>,
    /// Where scheduled reports and their index are written.
    pub reports_dir: std::path::PathBuf,
    /// Alert delivery, when configured: resolving an alert resolves it downstream.
    pub notifier: Option<notify::Notifier>,
    /// The other daemons' alerts (`[kafka] cluster-topic`), shown beside this one's.
    pub cluster: Option<pipeline::cluster::Cluster>,
    pub audit: Arc<AuditLog>,
    /// Tokens by hash; empty means no authentication (loopback only).
    pub tokens: Vec<(String, Role, [u8; 32])>,
    pub ready: Arc<AtomicBool>,
    /// The configuration as the admin endpoint shows it (secrets left out).
    pub config_summary: Value,
}

impl Api {
    /// Parses the configured token hashes.
    pub fn tokens(tokens: &[ApiToken]) -> anyhow::Result<Vec<(String, Role, [u8; 32])>> {
        tokens
            .iter()
            .map(|t| {
                let hex = t.sha256.trim().to_ascii_lowercase();
                let bytes: Option<Vec<u8>> = (hex.len() == 64)
                    .then(|| {
                        (0..32)
                            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                            .collect()
                    })
                    .flatten();
                let hash: [u8; 32] = bytes
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "http token {:?}: sha256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)",
                            t.name
                        )
                    })?;
                Ok((t.name.clone(), t.role, hash))
            })
            .collect()
    }
}

/// Who was refused, for the audit: set on 401 and 403 answers, read by [`audit_refusals`].
#[derive(Debug, Clone)]
struct Refused {
    actor: String,
    role: &'static str,
}

use detector::{
    accept, acknowledge, export_baselines, get_alert, import_baselines, list_alerts, lock, relearn,
    resolve, services,
};
use reporting::{
    findings, get_report_file, list_reports, notifications, posture, report_on_demand,
};
use sql_search::{search, sql};

/// Audits every 401 and 403 the API answers, with the method and path asked for.
pub async fn audit_refusals(
    State(api): State<Arc<Api>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let action = format!("{} {}", request.method(), request.uri().path());
    let response = next.run(request).await;
    if let Some(r) = response.extensions().get::<Refused>() {
        let outcome = if response.status() == StatusCode::UNAUTHORIZED {
            "unauthorized"
        } else {
            "forbidden"
        };
        api.audit.record_as(&r.actor, r.role, &action, "", outcome);
    }
    response
}

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        if api.tokens.is_empty() {
            return Ok(Caller {
                name: "anonymous".into(),
                role: Role::Admin,
            });
        }
        let unauthorized = || ApiError::Unauthenticated;
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        let hash = Sha256::digest(token.trim().as_bytes());
        // Every configured hash is compared in full, so timing says nothing about which
        // one came close.
        let mut found = None;
        for (name, role, expected) in &api.tokens {
            let diff = expected
                .iter()
                .zip(hash.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(Caller {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        found.ok_or_else(unauthorized)
    }
}

/// The API's routes; give them their state with `.with_state(api)`.
pub fn router(api: Arc<Api>) -> axum::Router<Arc<Api>> {
    axum::Router::new()
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/api/v1/alerts/{id}/acknowledge", post(acknowledge))
        .route("/api/v1/alerts/{id}/resolve", post(resolve))
        .route("/api/v1/alerts/{id}/accept", post(accept))
        .route("/api/v1/services", get(services))
        .route("/api/v1/findings", get(findings))
        .route("/api/v1/posture", get(posture))
        .route("/api/v1/reports", get(list_reports))
        .route("/api/v1/reports/{file}", get(get_report_file))
        .route("/api/v1/report", get(report_on_demand))
        .route("/api/v1/notifications", get(notifications))
        .route("/api/v1/baselines", get(export_baselines))
        .route("/api/v1/baselines/import", post(import_baselines))
        .route("/api/v1/baselines/relearn", post(relearn))
        .route("/api/v1/baselines/lock", post(lock))
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/search", get(search))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/config", get(config))
        .layer(axum::middleware::from_fn_with_state(api, audit_refusals))
}

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn readyz(State(api): State<Arc<Api>>) -> Response {
    if api.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// A point in time given as RFC 3339 or as a duration back from now.
fn parse_since(s: &str) -> Result<Nanos, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Nanos(t.timestamp_nanos_opt().unwrap_or(i64::MIN)));
    }
    let back = humantime::parse_duration(s).map_err(|_| {
        ApiError::BadRequest(format!(
            "since: {s:?} is neither an RFC 3339 time nor a duration like 1h"
        ))
    })?;
    Ok(Nanos(Nanos::now().0.saturating_sub(
        i64::try_from(back.as_nanos()).unwrap_or(i64::MAX),
    )))
}

/// The other members a list shows: with `scope` `cluster` (the default) those of the
/// cluster topic, if there is one; with `local`, none.
fn scoped<'a>(
    api: &'a Api,
    scope: Option<&str>,
) -> Result<Option<&'a pipeline::cluster::Cluster>, ApiError> {
    match scope {
        None | Some("cluster") => Ok(api.cluster.as_ref()),
        Some("local") => Ok(None),
        Some(other) => Err(ApiError::BadRequest(format!(
            "scope {other:?}: expected cluster or local"
        ))),
    }
}

/// An alert's or a finding's JSON with the cluster member that holds it, when there is
/// a cluster.
fn with_member(mut v: Value, member: Option<&str>) -> Value {
    if let (Some(m), Some(o)) = (member, v.as_object_mut()) {
        o.insert("member".to_owned(), json!(m));
    }
    v
}

fn label<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn audit(State(api): State<Arc<Api>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(json!({ "entries": api.audit.entries() })))
}

async fn config(State(api): State<Arc<Api>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(api.config_summary.clone()))
}
