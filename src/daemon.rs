//! Wiring of the stages for `run` and `demo`: Kafka source → pipeline → store, plus the
//! HTTP endpoint, all under one supervisor.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use ingest::{DecodeLimits, Decoder, KafkaConfig, KafkaSource, ServiceKeyer};
use tokio::sync::mpsc;
use tracing::info;

use crate::config::Config;
use crate::supervisor::Supervisor;
use crate::wiring;
use crate::{http, surfaces, telemetry};
use pipeline::{Persistence, Stages};

/// What a started daemon exposes to its caller.
pub struct Daemon {
    pub stages: Stages,
    /// What the pipeline has counted, as last published.
    pub totals: pipeline::Totals,
    pub http_addr: SocketAddr,
    /// Where the PostgreSQL wire server listens, if it is enabled.
    pub postgres_addr: Option<SocketAddr>,
    pub api: Arc<crate::api::Api>,
    /// The data directory, held for as long as the daemon runs.
    pub data_dir_lock: Option<pipeline::DirLock>,
}

pub fn decoder(config: &Config) -> Decoder {
    let limits = DecodeLimits {
        max_record_bytes: config.ingest.max_record_bytes.0,
        max_future_skew: config.ingest.max_future_skew,
        max_past_skew: config.ingest.max_past_skew,
        ..DecodeLimits::default()
    };
    Decoder::new(limits, ServiceKeyer::new(config.ingest.service_key.clone()))
}

/// Starts the daemon's tasks under `sup`. Returns once everything is bound and subscribed.
/// `print_alerts` also prints each raised alert on stdout (the demo's view).
pub async fn start(
    config: &Config,
    kafka: KafkaConfig,
    sup: &mut Supervisor,
    print_alerts: bool,
) -> anyhow::Result<Daemon> {
    // Before the state is read: a second daemon, or a `baseline` command, on the same
    // data directory would overwrite the state file.
    let data_dir_lock = config
        .state
        .data_dir
        .as_deref()
        .map(pipeline::state::lock)
        .transpose()?;
    let restored = wiring::restore(config)?;
    let mut registry = telemetry::registry();
    let (stages, owner) = wiring::build(
        config,
        restored.detector,
        &mut registry,
        wiring::Mode {
            print: print_alerts,
            wall_clock: true,
        },
        sup,
    )?;
    let ingest_metrics = stages.ingest_metrics.clone();
    if let (Some(reports), Some(c)) = (stages.reports.clone(), stages.compliance.clone()) {
        // The wall clock moves schedules while no events arrive.
        let cancel = sup.cancel.clone();
        sup.spawn("reports", async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    _ = tick.tick() => reports.tick(&c).await,
                }
            }
        });
    }

    if let Some(n) = &stages.notifier {
        // Alerts restored open keep firing at Alertmanager.
        let open: Vec<notify::Item> = stages
            .views
            .load()
            .alerts()
            .filter(|a| a.status != detect::AlertStatus::Resolved)
            .map(|a| notify::Item::from_alert(a))
            .collect();
        n.resume_firing(&open);
        // Alerts raised or changed just before a crash may not have reached the
        // outbox: handed over again, they go out unless a sink took them already.
        n.submit_all(
            restored
                .journaled
                .iter()
                .map(notify::Item::from_alert)
                .collect(),
        )
        .await;
        let (watcher, cancel) = (stages.clone(), sup.cancel.clone());
        sup.spawn("outbox-alerts", async move {
            watcher.watch_outbox(cancel).await;
            Ok(())
        });
    }

    let sql_metrics = queries::metrics::SqlMetrics::register(&mut registry);
    let surfaces = surfaces::start(config, &stages, sql_metrics, sup).await?;
    let api = surfaces.api.clone();

    let listener = http::bind(config.http.listen).await?;
    let http_addr = listener
        .local_addr()
        .context("HTTP listener has no address")?;
    let router = http::router(Arc::new(registry))
        .merge(crate::api::router(api.clone()).with_state(api.clone()));
    let api_runtime = http::ApiRuntime::start(config.http.nice)?;
    sup.spawn(
        "http",
        api_runtime.serve(listener, router, config.http.limits(), sup.cancel.clone()),
    );

    let source = Arc::new(
        KafkaSource::new(kafka.clone(), ingest_metrics).context("cannot start the Kafka source")?,
    );
    // Letters the dead-letter topic refuses are kept beside the state.
    let spool = config
        .state
        .data_dir
        .as_ref()
        .map(|dir| dir.join("dead-letters.spool.jsonl"));
    let dead_letters = source.dead_letter_sink(spool)?;
    let (tx, rx) = mpsc::channel(source.channel_capacity());
    let decoder = decoder(config);
    let cancel = sup.cancel.clone();
    let consumer = source.clone();
    sup.spawn("kafka-source", async move {
        consumer
            .run(decoder, dead_letters, tx, cancel)
            .await
            .map_err(anyhow::Error::from)
    });

    let persistence = config
        .state
        .data_dir
        .clone()
        .zip(restored.journal)
        .map(|(dir, journal)| Persistence {
            dir,
            interval: config.state.snapshot_interval,
            source: source.clone(),
            restored: restored.offsets,
            journal,
        });
    let totals = pipeline::Totals::default();
    let pipeline = stages.clone();
    let shared_totals = totals.clone();
    sup.spawn("pipeline", async move {
        let applied = pipeline
            .apply_all(owner, rx, &shared_totals, persistence)
            .await;
        if let Some(indexer) = &pipeline.log_index {
            indexer.flush().await;
        }
        if let Some(c) = &pipeline.compliance {
            c.flush().await;
        }
        // Everything applied is acknowledged (also when the pipeline failed part way);
        // make the commit durable before leaving the group. With a data directory the
        // last state file's offsets are already committed and nothing else is stored.
        let committed = tokio::task::spawn_blocking(move || source.commit())
            .await
            .context("commit task panicked")?;
        match (&applied, committed) {
            (_, Ok(())) => info!("Pipeline drained; offsets committed."),
            (Ok(()), Err(e)) => {
                return Err(anyhow::Error::new(e).context("final offset commit failed"));
            }
            (Err(_), Err(e)) => tracing::error!(error = %e, "Final offset commit failed too."),
        }
        Ok(applied?)
    });
    info!(
        brokers = %kafka.brokers,
        topics = ?kafka.topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        group = %kafka.group_id,
        http = %http_addr,
        postgres = ?surfaces.postgres_addr,
        "driftwatch is consuming."
    );
    api.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let ready = api.ready.clone();
    let cancel = sup.cancel.clone();
    sup.spawn("readiness", async move {
        cancel.cancelled().await;
        ready.store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    Ok(Daemon {
        stages,
        totals,
        http_addr,
        postgres_addr: surfaces.postgres_addr,
        api,
        data_dir_lock,
    })
}
