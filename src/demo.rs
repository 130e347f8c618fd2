//! `driftwatch demo`: everything on one machine with no setup. An embedded
//! Kafka-protocol broker (librdkafka's mock cluster, on a loopback port any Kafka client
//! can reach), the workload simulator publishing into it, and the daemon consuming
//! through the same Kafka source `run` uses.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use ingest::{IngestStats, KafkaConfig, Nanos, TopicConfig};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::Config;
use crate::daemon;
use crate::supervisor::Supervisor;
use crate::telemetry;
use simulator::{Simulator, TOPICS};

pub struct Args {
    pub duration: Option<Duration>,
    pub rate: u64,
    pub speed: u64,
    pub bad_per_thousand: u64,
    pub http: SocketAddr,
    pub postgres: SocketAddr,
    pub report_every: Duration,
    /// Where the demo's compliance reports go.
    pub reports: std::path::PathBuf,
    /// A receiver for alerts and failing findings (a signed generic webhook).
    pub webhook: Option<String>,
}

/// The demo's PostgreSQL login and API tokens: printed at start, documented in the
/// README. Nothing but loopback is served.
pub const DEMO_PG_USER: &str = "driftwatch";
pub const DEMO_PG_PASSWORD: &str = "driftwatch";
pub const DEMO_TOKENS: [(&str, crate::api::Role, &str); 3] = [
    ("demo-viewer", crate::api::Role::Viewer, "demo-viewer-token"),
    (
        "demo-analyst",
        crate::api::Role::Analyst,
        "demo-analyst-token",
    ),
    ("demo-admin", crate::api::Role::Admin, "demo-admin-token"),
];

/// Partitions per demo topic: more than one, so the consumer group has something to balance.
const PARTITIONS: i32 = 3;
const DEAD_LETTER_TOPIC: &str = "driftwatch-dead-letter";

pub async fn demo(args: Args) -> anyhow::Result<()> {
    // The demo's tokens and password are printed and documented: anyone who can reach
    // it could use them.
    for (what, addr) in [("--http", args.http), ("--postgres", args.postgres)] {
        if !addr.ip().is_loopback() {
            anyhow::bail!(
                "demo {what} {addr}: the demo serves published tokens and passwords, so it listens on loopback only \
                 (use `driftwatch run` with your own tokens to serve beyond this machine)"
            );
        }
    }
    let mut config = Config::parse("")?;
    config.log.level = "info,rdkafka=warn".to_owned();
    config.http.listen = args.http;
    config.postgres.listen = args.postgres;
    config.postgres.users = vec![queries::pg::PgUser {
        name: DEMO_PG_USER.to_owned(),
        password: Some(DEMO_PG_PASSWORD.to_owned()),
        password_env: None,
    }];
    config.http.tokens = DEMO_TOKENS
        .iter()
        .map(|(name, role, token)| crate::api::ApiToken {
            name: (*name).to_owned(),
            role: *role,
            sha256: crate::api::token_hash(token),
        })
        .collect();
    // A compliance report every quarter hour of event time (15 s at the default speed),
    // over the last hour.
    config.reports.dir = args.reports.clone();
    config.reports.link_base = Some(format!("http://{}", args.http));
    config.reports.schedules = vec![compliance::ScheduleConfig {
        name: "demo".to_owned(),
        cron: "*/15 * * * *".to_owned(),
        frameworks: Vec::new(),
        services: Vec::new(),
        period: Duration::from_secs(3600),
        formats: vec![
            compliance::ReportFormat::Json,
            compliance::ReportFormat::Csv,
            compliance::ReportFormat::Html,
        ],
        webhook: None,
    }];
    if let Some(url) = &args.webhook {
        config.notify = toml::from_str(&format!(
            "outbox-dir = {:?}\nlink-base = \"http://{}\"\n[[sink]]\nname = \"webhook\"\ntype = \"webhook\"\nurl = {url:?}\nrate = 50.0\n[[route]]\nname = \"everything\"\nsink = \"webhook\"\nfindings = true\n",
            args.reports.join("outbox").display().to_string(),
            args.http
        ))
        .context("--webhook")?;
        config
            .notify
            .validate()
            .map_err(|e| anyhow::anyhow!("--webhook: {e}"))?;
    }
    // The simulator compresses time, so its events run ahead of the wall clock by design.
    config.ingest.max_future_skew = Duration::from_secs(365 * 24 * 3600);
    telemetry::init_logging(&config.log);

    // The mock cluster is not Send: it stays in this function, alive until the end.
    let cluster = MockCluster::new(1).context("cannot start the embedded Kafka broker")?;
    for (topic, _) in TOPICS.iter().chain([&(DEAD_LETTER_TOPIC, "")]) {
        cluster
            .create_topic(topic, PARTITIONS, 1)
            .with_context(|| format!("cannot create topic {topic}"))?;
    }
    let brokers = cluster.bootstrap_servers();
    let topics = TOPICS
        .iter()
        .map(|(name, format)| TopicConfig {
            name: (*name).to_owned(),
            format: format.parse().expect("known format"),
        })
        .collect();
    let mut kafka = KafkaConfig::new(brokers.clone(), topics);
    kafka.group_id = "driftwatch-demo".to_owned();
    kafka.dead_letter_topic = DEAD_LETTER_TOPIC.to_owned();

    let mut sup = Supervisor::new();
    sup.cancel_on_signals();
    let daemon = match daemon::start(&config, kafka, &mut sup, true, daemon::Role::All).await {
        Ok(d) => d,
        Err(e) => {
            sup.cancel.cancel();
            let _ = sup.wait().await;
            return Err(e);
        }
    };

    println!("driftwatch demo");
    println!("  Kafka broker (embedded): {brokers}");
    println!("    try: kcat -b {brokers} -L");
    println!(
        "    topics: {}",
        TOPICS
            .iter()
            .map(|(t, f)| format!("{t} ({f})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  metrics: http://{}/metrics", daemon.http_addr);
    println!(
        "  compliance reports (every 15 min of event time): {}/index.html",
        args.reports.display()
    );
    if let Some(pg) = daemon.postgres_addr {
        println!(
            "  SQL (PostgreSQL wire, also Grafana's PostgreSQL data source): user {DEMO_PG_USER}, password {DEMO_PG_PASSWORD}"
        );
        println!(
            "    try: psql \"postgres://{DEMO_PG_USER}:{DEMO_PG_PASSWORD}@{pg}/driftwatch\" -c 'SELECT * FROM alerts'"
        );
    }
    println!(
        "  API: http://{}/api/v1 (OpenAPI at /openapi.json); bearer tokens {}",
        daemon.http_addr,
        DEMO_TOKENS
            .iter()
            .map(|(_, role, token)| format!(
                "{token} ({})",
                serde_json::to_value(role)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "    try: curl -H 'Authorization: Bearer demo-viewer-token' http://{}/api/v1/alerts",
        daemon.http_addr
    );
    println!(
        "  simulating a shop: {} records/s, {}x event time{}",
        args.rate,
        args.speed,
        args.duration
            .map(|d| format!(", for {}", humantime::format_duration(d)))
            .unwrap_or_else(|| ", until Ctrl-C".into())
    );

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .context("cannot create the simulator's producer")?;
    let start = Nanos::now();
    let mut simulator = Simulator::new(0x5eed, start, args.rate, args.speed, args.bad_per_thousand);
    // Attacks begin a quarter hour (event time) after the services finished learning.
    let quiet = config.detect.learning_period + Duration::from_secs(15 * 60);
    simulator.schedule_attacks(
        start.saturating_add(quiet.as_nanos() as i64),
        Duration::from_secs(5 * 60),
    );
    println!(
        "  services learn for {} of event time; attacks start about {}s from now, one every {:.1}s",
        humantime::format_duration(config.detect.learning_period),
        quiet.as_secs() / args.speed.max(1),
        300.0 / args.speed.max(1) as f64
    );
    sup.spawn(
        "simulator",
        simulate(simulator, producer, args.rate, sup.cancel.clone()),
    );

    if let Some(url) = &args.webhook {
        println!("  alerts and failing findings are delivered to {url} (unsigned JSON webhook)");
    }
    let cancel = sup.cancel.clone();
    let totals = daemon.totals.clone();
    let events = daemon.stages.events.clone();
    let notifier = daemon.stages.notifier.clone();
    let every = args.report_every;
    sup.spawn("reporter", async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    let t = totals.load();
                    println!("{}", progress_line(&t, events.rows(), events.bytes()));
                    if let Some(n) = &notifier {
                        let statuses = n.statuses();
                        let count = |state: &str| statuses.iter().filter(|s| s.state == state).count();
                        println!(
                            "notifications: {} delivered, {} pending, {} failed",
                            count("delivered"),
                            count("pending"),
                            count("failed")
                        );
                    }
                }
            }
        }
    });
    if let Some(d) = args.duration {
        let cancel = sup.cancel.clone();
        sup.spawn("duration", async move {
            tokio::select! {
                () = tokio::time::sleep(d) => cancel.cancel(),
                () = cancel.cancelled() => {}
            }
            Ok(())
        });
    }
    let result = sup.wait().await;
    let t = daemon.totals.load();
    println!(
        "demo finished: {}",
        progress_line(
            &t,
            daemon.stages.events.rows(),
            daemon.stages.events.bytes()
        )
    );
    for ((topic, format), n) in &t.consumed {
        println!("  topic {topic} ({format}): {n} records");
    }
    drop(cluster);
    result
}

fn progress_line(t: &IngestStats, rows: usize, bytes: usize) -> String {
    let by_source = t
        .decoded
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "ingested {} records -> {} events ({by_source}); {} ignored, {} dead-lettered; events table {rows} rows, {:.1} MiB",
        t.records(),
        t.events(),
        t.ignored_records(),
        t.dead_letters(),
        bytes as f64 / (1024.0 * 1024.0)
    )
}

/// Publishes the simulator's records at `rate` per second until cancelled.
async fn simulate(
    mut sim: Simulator,
    producer: FutureProducer,
    rate: u64,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    // 20 ticks a second keep the stream smooth without a timer per record.
    const TICKS_PER_SECOND: u64 = 20;
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / TICKS_PER_SECOND));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut carry = 0u64;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        carry += rate;
        let n = carry / TICKS_PER_SECOND;
        carry %= TICKS_PER_SECOND;
        for _ in 0..n {
            let r = sim.next_record();
            let record = FutureRecord::to(r.topic).key(&r.key).payload(&r.payload);
            if let Err((e, _)) = producer.send_result(record) {
                warn!(error = %e, "Simulator could not enqueue a record.");
            }
        }
    }
    let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
    Ok(())
}
