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

/// How long a rebalance waits for the pipeline to write the state of the partitions
/// it gives up: a state file and the changelog take a second or two; well within the
/// group's rebalance timeout (`max.poll.interval.ms`, five minutes by default).
const REVOKE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a stopping daemon waits for its last alert changes to reach the cluster
/// topic: they are a view for the other members, so a stop waits little for them.
const CLUSTER_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Which stages a daemon runs (`run --role`). With `[kafka] repartition-topic`,
/// decoding and detection are stages joined by that topic, each balanced by a
/// consumer group of its own (`<group-id>-decode` over the raw topics, `<group-id>`
/// over the repartition topic); without it, one stage does both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Every stage.
    #[default]
    All,
    /// Only decoding: raw topics in, events keyed by service out. Stateless.
    Decode,
    /// Only detection over the repartition topic, with the API and the surfaces.
    Detect,
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
    role: Role,
) -> anyhow::Result<Daemon> {
    if role == Role::Decode {
        anyhow::bail!(
            "the decode role runs without the detection stages: start it with start_decode"
        );
    }
    if role == Role::Detect && kafka.repartition_topic.is_none() {
        anyhow::bail!(
            "--role detect needs [kafka] repartition-topic: without it one stage decodes and detects"
        );
    }
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
    let cluster = match &kafka.cluster_topic {
        Some(topic) => {
            let (cluster, reader) = pipeline::cluster::Cluster::new(
                topic,
                kafka.member.as_deref(),
                &kafka.client_config(),
                config.detect.max_alerts,
                pipeline::cluster::ClusterMetrics::register(&mut registry),
            )
            .context("cannot start the cluster topic's clients")?;
            let cancel = sup.cancel.clone();
            sup.spawn_thread("cluster-reader", move || reader.run(&cancel))?;
            Some(cluster)
        }
        None => None,
    };
    let (stages, owner) = wiring::build(
        config,
        restored.detector,
        &mut registry,
        wiring::Mode {
            print: print_alerts,
            wall_clock: true,
        },
        cluster,
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

    // With a repartition topic, detection reads it (and this daemon may decode too).
    let (source_config, decoder) = match &kafka.repartition_topic {
        Some(topic) => {
            if role == Role::All {
                spawn_decode_stage(config, &kafka, topic, ingest_metrics.clone(), sup)?;
            }
            let mut detect = kafka.clone();
            detect.topics = vec![ingest::TopicConfig {
                name: topic.clone(),
                format: ingest::Format::Native,
            }];
            (detect, decoder(config).keeping_provenance())
        }
        None => (kafka.clone(), decoder(config)),
    };
    let source = Arc::new(
        KafkaSource::new(source_config, ingest_metrics).context("cannot start the Kafka source")?,
    );
    // Letters the dead-letter topic refuses are kept beside the state.
    let spool = config
        .state
        .data_dir
        .as_ref()
        .map(|dir| dir.join("dead-letters.spool.jsonl"));
    let dead_letters = source.dead_letter_sink(spool)?;
    // The state file holds its records already, and the commit after it may not have
    // happened before a crash. With a changelog the group's commits decide instead.
    if config.state.changelog_topic.is_none() || kafka.repartition_topic.is_none() {
        source.already_read(
            restored
                .offsets
                .iter()
                .flat_map(|(t, parts)| parts.iter().map(move |(p, o)| (t.as_str(), *p, *o))),
        );
    }
    let (tx, rx) = mpsc::channel(source.channel_capacity());
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
        .map(|(dir, journal)| -> anyhow::Result<Persistence> {
            let changelog = match (&config.state.changelog_topic, &kafka.repartition_topic) {
                (Some(topic), Some(input)) => Some(
                    pipeline::changelog::Changelog::new(topic, input, source.clone())
                        .context("cannot start the state changelog")?,
                ),
                _ => None,
            };
            // Before partitions are revoked, the pipeline writes their state out,
            // so that the next owner adopts it; the rebalance waits for it.
            let flushes = changelog.as_ref().map(|_| {
                let (tx, rx) = mpsc::channel::<std::sync::mpsc::SyncSender<()>>(1);
                source.on_revoke(Box::new(move || {
                    let (done, finished) = std::sync::mpsc::sync_channel(1);
                    if tx.try_send(done).is_err() {
                        return;
                    }
                    let wait = || {
                        if finished.recv_timeout(REVOKE_FLUSH_TIMEOUT).is_err() {
                            tracing::warn!("The state was not written before the partitions were revoked; their next owner re-reads more.");
                        }
                    };
                    match tokio::runtime::Handle::try_current() {
                        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                            tokio::task::block_in_place(wait);
                        }
                        _ => wait(),
                    }
                }));
                rx
            });
            Ok(Persistence {
                flushes,
                dir,
                interval: config.state.snapshot_interval,
                source: source.clone(),
                // With a changelog the group's committed offsets, written after it by
                // whoever held each partition last, are the ones to keep: this file's
                // may be older, and committing them would move a partition back.
                restored: if changelog.is_some() {
                    pipeline::Offsets::new()
                } else {
                    restored.offsets
                },
                journal,
                changelog,
            })
        })
        .transpose()?;
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
        if let Some(c) = pipeline.cluster.clone() {
            let _ = tokio::task::spawn_blocking(move || c.flush(CLUSTER_FLUSH_TIMEOUT)).await;
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

/// The decode stage: the raw topics, decoded, produced keyed by service to the
/// repartition topic, in a consumer group of its own (`<group-id>-decode`).
fn spawn_decode_stage(
    config: &Config,
    kafka: &KafkaConfig,
    topic: &str,
    metrics: ingest::IngestMetrics,
    sup: &mut Supervisor,
) -> anyhow::Result<()> {
    let mut raw = kafka.clone();
    raw.group_id = format!("{}-decode", kafka.group_id);
    raw.repartition_topic = None;
    let source = Arc::new(
        KafkaSource::new(raw.clone(), metrics.clone())
            .context("cannot start the decode stage's Kafka source")?,
    );
    let spool = config
        .state
        .data_dir
        .as_ref()
        .map(|dir| dir.join("decode-dead-letters.spool.jsonl"));
    let dead_letters = source.dead_letter_sink(spool)?;
    let repartitioner = ingest::Repartitioner::new(&raw, topic, metrics)
        .context("cannot start the repartition producer")?;
    let (tx, rx) = mpsc::channel(source.channel_capacity());
    let (decoder, cancel, consumer) = (decoder(config), sup.cancel.clone(), source.clone());
    sup.spawn("decode-source", async move {
        consumer
            .run(decoder, dead_letters, tx, cancel)
            .await
            .map_err(anyhow::Error::from)
    });
    let cancel = sup.cancel.clone();
    sup.spawn("repartition", async move {
        let produced = repartitioner.run(rx, cancel).await;
        // What was produced is acknowledged: make the commit durable before leaving.
        let committed = tokio::task::spawn_blocking(move || source.commit())
            .await
            .context("commit task panicked")?;
        produced?;
        committed.context("final offset commit of the decode stage failed")
    });
    info!(topics = ?raw.topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        group = %raw.group_id, to = topic, "The decode stage is consuming.");
    Ok(())
}

/// A daemon that only decodes (`run --role decode`): the decode stage and the
/// `/metrics` and `/healthz` endpoint. It keeps no state.
pub async fn start_decode(
    config: &Config,
    kafka: KafkaConfig,
    sup: &mut Supervisor,
) -> anyhow::Result<SocketAddr> {
    let Some(topic) = kafka.repartition_topic.clone() else {
        anyhow::bail!("--role decode needs [kafka] repartition-topic: the topic it produces to");
    };
    let mut registry = telemetry::registry();
    let metrics = ingest::IngestMetrics::register(&mut registry);
    spawn_decode_stage(config, &kafka, &topic, metrics, sup)?;
    let listener = http::bind(config.http.listen).await?;
    let addr = listener
        .local_addr()
        .context("HTTP listener has no address")?;
    let runtime = http::ApiRuntime::start(config.http.nice)?;
    sup.spawn(
        "http",
        runtime.serve(
            listener,
            http::router(Arc::new(registry)),
            config.http.limits(),
            sup.cancel.clone(),
        ),
    );
    Ok(addr)
}
