//! The analyst's surfaces of a running daemon: the SQL engine over the live tables, the
//! PostgreSQL wire server, and the HTTP API next to `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use queries::metrics::SqlMetrics;
use queries::pg::PgServer;
use queries::sql::{Reader, SqlEngine};
use serde_json::json;

use crate::api::{Api, AuditLog};
use crate::config::Config;
use crate::supervisor::Supervisor;
use pipeline::Stages;

/// The tables SQL sees: `events`, `alerts`, `baselines`, `services`, `log_templates`,
/// `audit`, `findings`, `posture` and `notifications`, each read afresh by every query.
pub fn sql_engine(
    stages: &Stages,
    audit: Arc<AuditLog>,
    config: &Config,
) -> anyhow::Result<SqlEngine> {
    let events = stages.events.clone();
    // Built from the view the pipeline last published: a scan takes no lock the
    // pipeline needs, and the pipeline never waits for one.
    let from_detector = |table: fn(&detect::DetectorView) -> arrow::record_batch::RecordBatch| {
        let views = stages.views.clone();
        Arc::new(move || vec![table(&views.load())]) as Reader
    };
    let tables: Vec<(&str, arrow::datatypes::SchemaRef, Reader)> = vec![
        (
            "events",
            store::events_schema(),
            Arc::new(move || events.snapshot().batches),
        ),
        (
            "alerts",
            store::alerts_schema(),
            match stages.cluster.clone() {
                // This daemon's alerts, then the other members' it does not hold.
                Some(cluster) => {
                    let views = stages.views.clone();
                    Arc::new(move || {
                        let (view, others) = (views.load(), cluster.load());
                        let member = Some(cluster.member());
                        vec![
                            detect::alerts_batch(view.alerts().map(|a| (&**a, member))),
                            detect::alerts_batch(
                                others
                                    .alerts()
                                    .filter(|r| view.alert(&r.item.id).is_none())
                                    .map(|r| (r.item.as_ref(), Some(&*r.member))),
                            ),
                        ]
                    }) as Reader
                }
                None => from_detector(detect::DetectorView::alerts_table),
            },
        ),
        (
            "baselines",
            store::baselines_schema(),
            from_detector(detect::DetectorView::baselines_table),
        ),
        (
            "services",
            store::services_schema(),
            from_detector(detect::DetectorView::services_table),
        ),
        (
            "log_templates",
            store::log_templates_schema(),
            from_detector(detect::DetectorView::log_templates_table),
        ),
        (
            "audit",
            AuditLog::schema(),
            Arc::new(move || vec![audit.table()]),
        ),
        (
            "findings",
            store::findings_schema(),
            match (stages.compliance.clone(), stages.cluster.clone()) {
                // This daemon's findings, then the other members' it does not hold.
                (Some(c), Some(cluster)) => Arc::new(move || {
                    c.findings_tables(cluster.load().findings().map(|r| r.item.as_ref()))
                }) as Reader,
                (Some(c), None) => Arc::new(move || vec![c.findings_table()]) as Reader,
                (None, _) => Arc::new(Vec::new),
            },
        ),
        (
            "posture",
            store::posture_schema(),
            match stages.compliance.clone() {
                Some(c) => Arc::new(move || vec![c.posture_table()]) as Reader,
                None => Arc::new(Vec::new),
            },
        ),
        (
            "notifications",
            store::notifications_schema(),
            match stages.notifier.clone() {
                Some(n) => Arc::new(move || vec![notifications_table(&n)]) as Reader,
                None => Arc::new(Vec::new),
            },
        ),
    ];
    SqlEngine::new(tables, config.sql.clone()).context("cannot set up the SQL engine")
}

/// Delivery status per alert (or finding) and sink.
fn notifications_table(n: &notify::Notifier) -> arrow::record_batch::RecordBatch {
    let statuses = n.statuses();
    store::notifications_batch(statuses.iter().map(|s| {
        store::NotificationRow {
            item: &s.item,
            source: &s.source,
            sink: &s.sink,
            notification: &s.notification,
            state: &s.state,
            attempts: i64::from(s.attempts),
            last_error: s.last_error.as_deref(),
            updated: chrono::DateTime::parse_from_rfc3339(&s.updated)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .unwrap_or(0),
        }
    }))
}

/// What `start` made.
pub struct Surfaces {
    pub api: Arc<Api>,
    pub postgres_addr: Option<SocketAddr>,
}

/// Starts the PostgreSQL wire server (on the SQL runtime) and builds the API state.
pub async fn start(
    config: &Config,
    stages: &Stages,
    sql_metrics: SqlMetrics,
    sup: &mut Supervisor,
) -> anyhow::Result<Surfaces> {
    let audit = Arc::new(AuditLog::open(config.state.data_dir.as_deref())?);
    let engine = Arc::new(sql_engine(stages, audit.clone(), config)?);
    let mut postgres_addr = None;
    if config.postgres.enabled {
        let pg = config.postgres.clone();
        let e = engine.clone();
        let metrics = sql_metrics.clone();
        // Bound on the SQL runtime, so that its connections are served there too.
        let server = engine
            .runtime()
            .spawn(async move { PgServer::bind(&pg, &e, metrics).await })
            .await
            .context("PostgreSQL server setup panicked")??;
        postgres_addr = Some(
            server
                .local_addr()
                .context("PostgreSQL listener has no address")?,
        );
        let serving = engine.runtime().spawn(server.serve(sup.cancel.clone()));
        // The task holds the engine, so its runtime outlives the server.
        let keep = engine.clone();
        sup.spawn("postgres", async move {
            let served = serving.await;
            drop(keep);
            match served {
                Ok(()) => Ok(()),
                Err(e) if e.is_cancelled() => Ok(()),
                Err(e) => Err(anyhow::anyhow!("PostgreSQL server panicked: {e}")),
            }
        });
    }
    let api = Arc::new(Api {
        views: stages.views.clone(),
        commands: stages.commands.clone(),
        sql: engine,
        sql_metrics,
        search: stages.log_index.as_ref().map(|i| i.searcher.clone()),
        compliance: stages.compliance.clone(),
        reports_dir: config.reports.dir.clone(),
        notifier: stages.notifier.clone(),
        cluster: stages.cluster.clone(),
        audit,
        tokens: Api::tokens(&config.http.tokens)?,
        ready: Arc::new(AtomicBool::new(false)),
        config_summary: summary(config),
    });
    Ok(Surfaces { api, postgres_addr })
}

/// The configuration without secrets: no Kafka properties, passwords or token hashes.
fn summary(config: &Config) -> serde_json::Value {
    json!({
        "kafka": config.kafka.as_ref().map(|k| json!({
            "brokers": k.brokers,
            "group_id": k.group_id,
            "topics": k.topics.iter().map(|t| json!({"name": t.name, "format": t.format.to_string()})).collect::<Vec<_>>(),
            "dead_letter_topic": k.dead_letter_topic,
            "repartition_topic": k.repartition_topic,
            "cluster_topic": k.cluster_topic,
            "member": k.member,
        })),
        "http": {
            "listen": config.http.listen.to_string(),
            "tokens": config.http.tokens.iter().map(|t| json!({"name": t.name, "role": t.role})).collect::<Vec<_>>(),
        },
        "postgres": {
            "enabled": config.postgres.enabled,
            "listen": config.postgres.listen.to_string(),
            "users": config.postgres.users.iter().map(|u| u.name.clone()).collect::<Vec<_>>(),
            "tls": config.postgres.tls_cert.is_some(),
        },
        "sql": {
            "timeout": humantime::format_duration(config.sql.timeout).to_string(),
            "memory_bytes": config.sql.memory_bytes,
            "max_rows": config.sql.max_rows,
            "threads": config.sql.threads,
        },
        "store": {
            "retention": humantime::format_duration(config.store.retention).to_string(),
            "max_bytes": config.store.max_bytes.0,
        },
        "state": {
            "data_dir": config.state.data_dir,
        },
        "search": {
            "enabled": config.search.enabled,
        },
    })
}
