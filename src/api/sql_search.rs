//! SQL and log search.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ingest::Nanos;
use queries::search::SearchQuery;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Api, ApiError, ApiJson, ApiQuery, Caller, Role, parse_since};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SqlRequest {
    sql: String,
}

pub(super) async fn sql(
    State(api): State<Arc<Api>>,
    caller: Caller,
    ApiJson(req): ApiJson<SqlRequest>,
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
            // The rows are written once, as JSON, straight into the answer (the result
            // is already bounded by the SQL limits).
            let mut body = Vec::new();
            body.extend_from_slice(b"{\"columns\":");
            serde_json::to_writer(&mut body, &columns)?;
            body.extend_from_slice(b",\"rows\":");
            let before = body.len();
            {
                let mut writer = arrow::json::ArrayWriter::new(&mut body);
                for b in &out.batches {
                    writer.write(b)?;
                }
                writer.finish()?;
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
            Err(e.into())
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchParams {
    #[serde(default)]
    q: String,
    service: Option<String>,
    since: Option<String>,
    until: Option<String>,
    template: Option<u32>,
    limit: Option<usize>,
}

pub(super) async fn search(
    State(api): State<Arc<Api>>,
    caller: Caller,
    ApiQuery(p): ApiQuery<SearchParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let index = api.search.clone().ok_or_else(|| {
        ApiError::NotFound("log search is disabled ([search] enabled = false)".into())
    })?;
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
    let hits = tokio::task::spawn_blocking(move || index.search(&query)).await??;
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
