//! The HTTP API (JSON) under `/api/v1`, described by `/openapi.json`: alerts, services
//! and baselines, SQL, log search and the audit log, behind bearer tokens with roles.
//!
//! `/metrics`, `/healthz`, `/readyz` and `/openapi.json` need no token, so Prometheus
//! and load balancers can reach them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, StringBuilder, TimestampNanosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use detect::{Alert, AlertStatus, Command, Outcome};
use ingest::Nanos;
use queries::metrics::SqlMetrics;
use queries::search::{LogSearcher, SearchQuery};
use queries::sql::{SqlEngine, SqlError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::baseline::{self, BaselineFile};

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
            let mut e = ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} has role {}; this needs {}",
                    self.name,
                    self.role.as_str(),
                    role.as_str()
                ),
            );
            e.refused = Some(Refused {
                actor: self.name.clone(),
                role: self.role.as_str(),
            });
            Err(e)
        }
    }
}

/// An error answer: `{"error": "…"}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Set on 401 and 403: who was refused, for the audit.
    refused: Option<Refused>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            refused: None,
        }
    }

    fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, what)
    }

    fn bad_request(what: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.message }));
        let mut response = if self.status == StatusCode::UNAUTHORIZED {
            (
                self.status,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"driftwatch\"")],
                body,
            )
                .into_response()
        } else {
            (self.status, body).into_response()
        };
        if let Some(r) = self.refused {
            response.extensions_mut().insert(r);
        }
        response
    }
}

/// One audited call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub time: DateTime<Utc>,
    pub actor: String,
    /// The caller's role; `none` for a caller without a valid token.
    pub role: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
}

/// Audit entries kept in memory for the `audit` table and the API.
pub const AUDIT_KEPT: usize = 100_000;

/// The audit log of mutating calls and of refused ones (401, 403); also written to the
/// daemon's log, and, with a data directory, to `audit.jsonl` there, so that it survives
/// a restart. The file is appended to per entry and rewritten with the entries kept
/// when it has grown to twice their number.
#[derive(Debug, Default)]
pub struct AuditLog {
    entries: Mutex<VecDeque<AuditEntry>>,
    file: Option<Mutex<AuditFile>>,
}

#[derive(Debug)]
struct AuditFile {
    path: std::path::PathBuf,
    lines: usize,
}

impl AuditLog {
    /// The audit log, restored from `dir/audit.jsonl` when a directory is given.
    pub fn open(dir: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let Some(dir) = dir else {
            return Ok(AuditLog::default());
        };
        std::fs::create_dir_all(dir)?;
        let path = dir.join("audit.jsonl");
        let mut entries = VecDeque::new();
        let mut lines = 0;
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if !text.is_empty() && !text.ends_with('\n') {
                    // A torn last line is ended, so that the next entry starts a line.
                    use anyhow::Context as _;
                    use std::io::Write;
                    std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .and_then(|mut f| f.write_all(b"\n"))
                        .with_context(|| format!("cannot repair {}", path.display()))?;
                }
                for line in text.lines() {
                    lines += 1;
                    // A line cut by a crash is skipped; the rest is kept.
                    if let Ok(e) = serde_json::from_str::<AuditEntry>(line) {
                        if entries.len() == AUDIT_KEPT {
                            entries.pop_front();
                        }
                        entries.push_back(e);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(
                    anyhow::Error::from(e).context(format!("cannot read {}", path.display()))
                );
            }
        }
        Ok(AuditLog {
            entries: Mutex::new(entries),
            file: Some(Mutex::new(AuditFile { path, lines })),
        })
    }

    pub fn record(&self, caller: &Caller, action: &str, target: &str, outcome: &str) {
        self.record_as(&caller.name, caller.role.as_str(), action, target, outcome);
    }

    /// Records a call by anyone, a caller without a valid token included.
    pub fn record_as(&self, actor: &str, role: &str, action: &str, target: &str, outcome: &str) {
        info!(actor, role, action, target, outcome, "Audit.");
        let entry = AuditEntry {
            time: Utc::now(),
            actor: actor.to_owned(),
            role: role.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: outcome.to_owned(),
        };
        let mut entries = self.entries.lock().expect("audit lock poisoned");
        if entries.len() == AUDIT_KEPT {
            entries.pop_front();
        }
        entries.push_back(entry.clone());
        if let Some(file) = &self.file {
            let mut file = file.lock().expect("audit lock poisoned");
            if let Err(e) = file.append(&entry, &entries) {
                warn!(path = %file.path.display(), error = %e, "The audit file could not be written; the entry is in the log.");
            }
        }
    }

    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries
            .lock()
            .expect("audit lock poisoned")
            .iter()
            .cloned()
            .collect()
    }

    pub fn schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        Arc::new(Schema::new(vec![
            Field::new("time", ts, false),
            Field::new("actor", DataType::Utf8, false),
            Field::new("role", DataType::Utf8, false),
            Field::new("action", DataType::Utf8, false),
            Field::new("target", DataType::Utf8, false),
            Field::new("outcome", DataType::Utf8, false),
        ]))
    }

    /// The `audit` table.
    pub fn table(&self) -> RecordBatch {
        let entries = self.entries.lock().expect("audit lock poisoned");
        let mut time = TimestampNanosecondBuilder::new().with_timezone("UTC");
        let mut cols: Vec<StringBuilder> = (0..5).map(|_| StringBuilder::new()).collect();
        for e in entries.iter() {
            time.append_value(e.time.timestamp_nanos_opt().unwrap_or(i64::MAX));
            cols[0].append_value(&e.actor);
            cols[1].append_value(&e.role);
            cols[2].append_value(&e.action);
            cols[3].append_value(&e.target);
            cols[4].append_value(&e.outcome);
        }
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(time.finish())];
        arrays.extend(cols.iter_mut().map(|c| Arc::new(c.finish()) as ArrayRef));
        RecordBatch::try_new(Self::schema(), arrays).expect("audit columns match the schema")
    }
}

/// Everything the API reads and changes.
pub struct Api {
    /// What the pipeline last published of the detector.
    pub views: detect::Views,
    /// Changes for the detector, applied by the pipeline.
    pub commands: crate::pipeline::Commands,
    pub sql: Arc<SqlEngine>,
    pub sql_metrics: SqlMetrics,
    pub search: Option<LogSearcher>,
    pub compliance: Option<compliance::worker::Compliance>,
    /// Where scheduled reports and their index are written.
    pub reports_dir: std::path::PathBuf,
    /// Alert delivery, when configured: resolving an alert resolves it downstream.
    pub notifier: Option<notify::Notifier>,
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

impl AuditFile {
    fn append(&mut self, entry: &AuditEntry, kept: &VecDeque<AuditEntry>) -> std::io::Result<()> {
        use std::io::Write;
        if self.lines >= 2 * AUDIT_KEPT {
            // Rewritten with what is kept, atomically.
            let tmp = self.path.with_extension("jsonl.tmp");
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            for e in kept {
                serde_json::to_writer(&mut out, e)?;
                out.write_all(b"\n")?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            self.lines = kept.len();
            return Ok(());
        }
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(&line)?;
        self.lines += 1;
        Ok(())
    }
}

/// Who was refused, for the audit: set on 401 and 403 answers, read by [`audit_refusals`].
#[derive(Debug, Clone)]
struct Refused {
    actor: String,
    role: &'static str,
}

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
        let unauthorized = || {
            let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            e.refused = Some(Refused {
                actor: "unauthenticated".into(),
                role: "none",
            });
            e
        };
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertFilter {
    service: Option<String>,
    kind: Option<String>,
    severity: Option<String>,
    status: Option<String>,
    /// RFC 3339 time or a duration back from now (`1h`).
    since: Option<String>,
    limit: Option<usize>,
}

/// A point in time given as RFC 3339 or as a duration back from now.
fn parse_since(s: &str) -> Result<Nanos, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Nanos(t.timestamp_nanos_opt().unwrap_or(i64::MIN)));
    }
    let back = humantime::parse_duration(s).map_err(|_| {
        ApiError::bad_request(format!(
            "since: {s:?} is neither an RFC 3339 time nor a duration like 1h"
        ))
    })?;
    Ok(Nanos(Nanos::now().0.saturating_sub(
        i64::try_from(back.as_nanos()).unwrap_or(i64::MAX),
    )))
}

fn label<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn list_alerts(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Query(f): Query<AlertFilter>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let since = f.since.as_deref().map(parse_since).transpose()?;
    let limit = f.limit.unwrap_or(1000).min(10_000);
    let view = api.views.load();
    // Newest first, from the view's time order: stops at the limit.
    let alerts: Vec<&Alert> = view
        .alerts()
        .rev()
        .map(AsRef::as_ref)
        .filter(|a| f.service.as_ref().is_none_or(|s| &a.service == s))
        .filter(|a| f.kind.as_ref().is_none_or(|k| a.kind.as_str() == k))
        .filter(|a| f.severity.as_ref().is_none_or(|s| &label(&a.severity) == s))
        .filter(|a| f.status.as_ref().is_none_or(|s| &label(&a.status) == s))
        .filter(|a| since.is_none_or(|t| a.last_seen >= t))
        .take(limit)
        .collect();
    Ok(Json(json!({ "alerts": alerts })))
}

async fn get_alert(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let view = api.views.load();
    let alert = view
        .alert(&id)
        .ok_or_else(|| ApiError::not_found(format!("no alert {id:?}")))?;
    Ok(Json(json!(alert.as_ref())))
}

/// Has the pipeline apply a command, and waits until it has.
async fn command(api: &Api, command: Command) -> Result<Outcome, ApiError> {
    api.commands
        .apply(command)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
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
                n.submit(notify::Item::from_alert(&alert));
            }
            api.audit.record(caller, action, id, "ok");
            Ok(Json(json!(alert)))
        }
        _ => {
            api.audit.record(caller, action, id, "not found");
            Err(ApiError::not_found(format!("no alert {id:?}")))
        }
    }
}

async fn acknowledge(
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

async fn resolve(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_status(&api, &caller, &id, AlertStatus::Resolved, "alert.resolve").await
}

async fn accept(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Analyst)?;
    match command(&api, Command::Accept { id: id.clone() }).await? {
        Outcome::Alert(Some(alert)) => {
            api.audit.record(&caller, "alert.accept", &id, "ok");
            Ok(Json(json!(alert)))
        }
        _ => {
            api.audit.record(&caller, "alert.accept", &id, "refused");
            Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "no alert {id:?} that can be accepted (rate and baseline-cap alerts cannot)"
                ),
            ))
        }
    }
}

async fn services(State(api): State<Arc<Api>>, caller: Caller) -> Result<Json<Value>, ApiError> {
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
struct ServiceParam {
    service: Option<String>,
}

async fn export_baselines(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Query(p): Query<ServiceParam>,
) -> Result<Json<BaselineFile>, ApiError> {
    caller.require(Role::Viewer)?;
    let view = api.views.load();
    let file = match &p.service {
        Some(s) => {
            let service = view
                .services
                .get(s)
                .ok_or_else(|| ApiError::not_found(format!("no service {s:?}")))?;
            baseline::from_services(std::iter::once(&service.snapshot))
        }
        None => baseline::from_services(view.services.values().map(|s| &s.snapshot)),
    };
    Ok(Json(file))
}

async fn import_baselines(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    let file: BaselineFile = serde_json::from_slice(&body).map_err(|e| {
        api.audit.record(&caller, "baseline.import", "", "invalid");
        ApiError::bad_request(format!("not a baseline file: {e}"))
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
            api.audit.record(&caller, "baseline.import", &target, "ok");
            Ok(Json(json!({ "added": added })))
        }
        Outcome::Imported(Err(e)) => {
            api.audit
                .record(&caller, "baseline.import", &target, "failed");
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))
        }
        other => unreachable!("an import answers with what it imported, not {other:?}"),
    }
}

async fn relearn(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Query(p): Query<ServiceParam>,
) -> Result<Json<Value>, ApiError> {
    control(&api, &caller, p, "baseline.relearn", |service| {
        Command::Relearn { service }
    })
    .await
}

async fn lock(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Query(p): Query<ServiceParam>,
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
        .ok_or_else(|| ApiError::bad_request("the service parameter is required"))?;
    let done = matches!(
        command(api, make(service.clone())).await?,
        Outcome::Service(true)
    );
    api.audit.record(
        caller,
        action,
        &service,
        if done { "ok" } else { "not found" },
    );
    if done {
        Ok(Json(json!({ "service": service, "done": action })))
    } else {
        Err(ApiError::not_found(format!("no service {service:?}")))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
}

async fn sql(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Json(req): Json<SqlRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let result = api.sql.query(&req.sql).await;
    match result {
        Ok(out) => {
            api.sql_metrics.record("http", "ok");
            api.sql_metrics.observe("http", out.elapsed.as_secs_f64());
            let columns: Vec<Value> = out
                .schema
                .fields()
                .iter()
                .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
                .collect();
            let internal = |e: &dyn std::fmt::Display| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            };
            // The rows are written once, as JSON, straight into the answer (the result
            // is already bounded by the SQL limits).
            let mut body = Vec::new();
            body.extend_from_slice(b"{\"columns\":");
            serde_json::to_writer(&mut body, &columns).map_err(|e| internal(&e))?;
            body.extend_from_slice(b",\"rows\":");
            let before = body.len();
            {
                let mut writer = arrow::json::ArrayWriter::new(&mut body);
                for b in &out.batches {
                    writer.write(b).map_err(|e| internal(&e))?;
                }
                writer.finish().map_err(|e| internal(&e))?;
            }
            if body.len() == before {
                body.extend_from_slice(b"[]");
            }
            body.extend_from_slice(
                format!(
                    ",\"truncated\":{},\"elapsed_ms\":{}}}",
                    out.truncated,
                    out.elapsed.as_secs_f64() * 1000.0
                )
                .as_bytes(),
            );
            Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        Err(e) => {
            api.sql_metrics.record("http", e.outcome());
            let status = match e {
                SqlError::ReadOnly(_) => StatusCode::FORBIDDEN,
                SqlError::Invalid(_) => StatusCode::BAD_REQUEST,
                SqlError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                SqlError::TooLarge(_) | SqlError::Failed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            Err(ApiError::new(status, e.to_string()))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    #[serde(default)]
    q: String,
    service: Option<String>,
    since: Option<String>,
    until: Option<String>,
    template: Option<u32>,
    limit: Option<usize>,
}

async fn search(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Query(p): Query<SearchParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let index = api
        .search
        .clone()
        .ok_or_else(|| ApiError::not_found("log search is disabled ([search] enabled = false)"))?;
    let to_time = |n: Nanos| DateTime::<Utc>::from_timestamp_nanos(n.0);
    let query = SearchQuery {
        text: p.q,
        service: p.service,
        since: p
            .since
            .as_deref()
            .map(parse_since)
            .transpose()?
            .map(to_time),
        until: p
            .until
            .as_deref()
            .map(parse_since)
            .transpose()?
            .map(to_time),
        template_id: p.template,
        limit: p.limit.unwrap_or(SearchQuery::default().limit),
    };
    let hits = tokio::task::spawn_blocking(move || index.search(&query))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let hits: Vec<Value> = hits
        .iter()
        .map(|h| {
            json!({
                "time": h.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "service": h.service,
                "container": h.container,
                "stream": h.stream,
                "template_id": h.template_id,
                "line": h.line,
            })
        })
        .collect();
    Ok(Json(json!({ "hits": hits })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FindingFilter {
    service: Option<String>,
    control: Option<String>,
    status: Option<String>,
    /// `pci-dss`, `nist-800-53`, …
    framework: Option<String>,
    alert: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

fn compliance(api: &Api) -> Result<&compliance::worker::Compliance, ApiError> {
    api.compliance
        .as_ref()
        .ok_or_else(|| ApiError::not_found("compliance is disabled ([compliance] enabled = false)"))
}

fn refers_to(references: &[String], framework: &str) -> bool {
    references
        .iter()
        .any(|r| r.split_once(':').is_some_and(|(f, _)| f == framework))
}

async fn findings(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Query(f): Query<FindingFilter>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let c = compliance(&api)?;
    let since = f.since.as_deref().map(parse_since).transpose()?;
    let limit = f.limit.unwrap_or(1000).min(10_000);
    let view = c.view();
    // Newest first.
    let found: Vec<&compliance::Finding> = view
        .findings
        .iter()
        .rev()
        .map(AsRef::as_ref)
        .filter(|x| f.service.as_ref().is_none_or(|s| *x.service == **s))
        .filter(|x| f.control.as_ref().is_none_or(|s| *x.control == **s))
        .filter(|x| f.status.as_ref().is_none_or(|s| x.status.as_str() == s))
        .filter(|x| {
            f.framework
                .as_ref()
                .is_none_or(|fw| refers_to(&x.references, fw))
        })
        .filter(|x| {
            f.alert
                .as_ref()
                .is_none_or(|a| x.alert.as_deref() == Some(a.as_str()))
        })
        .filter(|x| since.is_none_or(|t| x.time >= t))
        .take(limit)
        .collect();
    Ok(Json(json!({ "findings": found })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostureFilter {
    service: Option<String>,
    framework: Option<String>,
    status: Option<String>,
}

async fn posture(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Query(f): Query<PostureFilter>,
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

async fn list_reports(
    State(api): State<Arc<Api>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let dir = api.reports_dir.clone();
    let index = tokio::task::spawn_blocking(move || crate::reports::read_index(&dir))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({ "reports": index })))
}

/// A file of a scheduled report; only files the index lists are served.
async fn get_report_file(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let dir = api.reports_dir.clone();
    let listed = crate::reports::read_index(&dir)
        .iter()
        .any(|e| e.files.values().any(|f| *f == file));
    let format = file
        .rsplit_once('.')
        .and_then(|(_, ext)| crate::reports::Format::parse(ext));
    let (true, Some(format)) = (listed, format) else {
        return Err(ApiError::not_found(format!("no report file {file:?}")));
    };
    let body = tokio::fs::read(dir.join(&file))
        .await
        .map_err(|_| ApiError::not_found(format!("no report file {file:?}")))?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
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
async fn report_on_demand(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Query(q): Query<ReportQuery>,
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
    let frameworks = crate::reports::parse_frameworks(&split(&q.framework))
        .map_err(|e| ApiError::bad_request(format!("framework: {e:#}")))?;
    let services = split(&q.service);
    let format = match q.format.as_deref() {
        None => crate::reports::Format::Json,
        Some(f) => crate::reports::Format::parse(f).ok_or_else(|| {
            ApiError::bad_request(format!("format: {f:?} is not json, csv or html"))
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
    let r = crate::reports::build(c, &request, None).await;
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        format.render(&r),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationFilter {
    /// An alert or finding id.
    item: Option<String>,
    sink: Option<String>,
    /// `pending`, `delivered` or `failed`.
    state: Option<String>,
}

/// Delivery status per alert (or finding) and sink.
async fn notifications(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Query(f): Query<NotificationFilter>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let statuses: Vec<notify::Status> = api
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

async fn audit(State(api): State<Arc<Api>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(json!({ "entries": api.audit.entries() })))
}

async fn config(State(api): State<Arc<Api>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(api.config_summary.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_log_survives_a_restart_and_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(Some(dir.path())).unwrap();
        log.record_as("ops", "admin", "baseline.lock", "shop/api", "ok");
        log.record_as(
            "unauthenticated",
            "none",
            "GET /api/v1/config",
            "",
            "unauthorized",
        );
        drop(log);
        // A crash in the middle of an append.
        let path = dir.path().join("audit.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"time\":\"2026-");
        std::fs::write(&path, text).unwrap();
        let log = AuditLog::open(Some(dir.path())).unwrap();
        let entries = log.entries();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].outcome, "unauthorized");
        log.record_as("ops", "admin", "baseline.relearn", "shop/api", "ok");
        assert_eq!(AuditLog::open(Some(dir.path())).unwrap().entries().len(), 3);
    }
}
