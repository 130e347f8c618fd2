//! Ingest throughput of the whole daemon while analysts read it, side by side in one run:
//!
//! - **quiet**: `driftwatch run`'s wiring (`daemon::start`: Kafka source, detection,
//!   store, log index, compliance, SQL and HTTP servers) drains records pre-produced to
//!   a mock cluster, with nobody reading;
//! - **readers**: the same, while 32 readers loop over the API as dashboards and
//!   analysts do: `/api/v1/baselines`, `/api/v1/alerts`, `/api/v1/search`, and SQL over
//!   `alerts` and over `events`. Each reader sends its next request as soon as the last
//!   is answered, after `--pause-ms` (default 0: as fast as the daemon answers).
//!
//! Rounds alternate (quiet, readers, quiet, ...), each with a fresh daemon and consumer
//! group over the same records; the median round of each counts. The ratio readers /
//! quiet is what a dashboard costs detection. The readers' own clients stand in for
//! machines elsewhere: they run on two threads of their own at nice 19, so that they
//! take what the daemon's threads leave; the daemon answers from its API and SQL
//! threads (nice 10 by default) as it would in production.
//!
//! `cargo bench --bench readers` (`-- --records N --rounds R --pause-ms P`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use driftwatch::config::Config;
use driftwatch::supervisor::Supervisor;
use ingest::{KafkaConfig, Nanos, TopicConfig};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::json;
use simulator::{Simulator, TOPICS};

#[path = "support/daemon.rs"]
mod daemon;
use daemon::send_waiting;

/// Partitions per topic: the mock broker keeps at most 5 MiB of batches per partition
/// and drops older ones silently, so the records are spread (and compressed) well
/// below that.
const PARTITIONS: i32 = 16;

const READERS: usize = 32;

struct Args {
    records: u64,
    rounds: usize,
    pause: Duration,
}

fn args() -> Args {
    let mut a = Args {
        records: 300_000,
        rounds: 3,
        pause: Duration::ZERO,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (argv[i].as_str(), value) {
            ("--records", Some(v)) => a.records = v,
            ("--rounds", Some(v)) => a.rounds = v as usize,
            ("--pause-ms", Some(v)) => a.pause = Duration::from_millis(v),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// Produces the simulated shop's records (every format, logs included) and returns how
/// many went out.
fn produce(brokers: &str, records: u64) -> u64 {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    // Two hours of event time: the services learn, then monitor.
    let start = Nanos(Nanos::now().0 - 2 * 3600 * 1_000_000_000);
    let mut sim = Simulator::new(0xbe7c4, start, 1_000, 24, 2);
    for _ in 0..records {
        let r = sim.next_record();
        send_waiting(
            &producer,
            BaseRecord::to(r.topic).key(&r.key).payload(&r.payload),
        );
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    records
}

fn config() -> Config {
    Config::parse("[http]\nlisten = \"127.0.0.1:0\"\n[postgres]\nlisten = \"127.0.0.1:0\"\n")
        .expect("config")
}

/// One reader: loops over its request until `stop`, counting answers.
async fn reader(
    i: usize,
    base: String,
    pause: Duration,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
) {
    let http = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        let request = match i % 5 {
            0 => http.get(format!("{base}/api/v1/baselines")),
            1 => http.get(format!("{base}/api/v1/alerts?limit=100")),
            2 => http.get(format!("{base}/api/v1/search?q=error&limit=50")),
            3 => http.post(format!("{base}/api/v1/sql")).json(&json!({
                "sql": "SELECT service, severity, count(*) AS n FROM alerts GROUP BY service, severity ORDER BY n DESC"
            })),
            _ => http.post(format!("{base}/api/v1/sql")).json(&json!({
                "sql": "SELECT service, count(*) AS n FROM events GROUP BY service ORDER BY n DESC LIMIT 20"
            })),
        };
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                served.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => panic!("reader {i}: {}", r.status()),
            Err(e) => panic!("reader {i}: {e}"),
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

/// One round: a fresh daemon drains the topics. Returns records/s and reads answered.
async fn round(
    brokers: &str,
    group: &str,
    records: u64,
    readers: bool,
    pause: Duration,
) -> (f64, u64) {
    let topics = TOPICS
        .iter()
        .map(|(t, f)| TopicConfig {
            name: (*t).to_owned(),
            format: f.parse().expect("format"),
        })
        .collect();
    let mut kafka = KafkaConfig::new(brokers.to_owned(), topics);
    kafka.group_id = group.to_owned();
    let mut sup = Supervisor::new();
    let started = Instant::now();
    let daemon = driftwatch::daemon::start(
        &config(),
        kafka,
        &mut sup,
        false,
        driftwatch::daemon::Role::All,
    )
    .await
    .expect("daemon");
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // The readers' side (their HTTP and PostgreSQL clients) stands in for dashboards on
    // other machines: threads of its own at the lowest priority, so that what the
    // bench measures is the daemon's cost of answering, not the clients' of asking.
    let clients = readers.then(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-readers")
            .on_thread_start(|| {
                let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
            })
            .enable_all()
            .build()
            .expect("the readers' runtime")
    });
    if let Some(clients) = &clients {
        let base = format!("http://{}", daemon.http_addr);
        for i in 0..READERS {
            tasks.push(clients.spawn(reader(i, base.clone(), pause, stop.clone(), served.clone())));
        }
    }
    loop {
        let seen = daemon.totals.load().records();
        if seen >= records {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "stalled at {seen} of {records}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("reader");
    }
    if let Some(clients) = clients {
        clients.shutdown_background();
    }
    sup.cancel.cancel();
    sup.wait().await.expect("daemon stopped cleanly");
    drop(daemon);
    (
        records as f64 / elapsed.as_secs_f64(),
        served.load(Ordering::Relaxed),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (topic, _) in TOPICS {
        cluster.create_topic(topic, PARTITIONS, 1).expect("topic");
    }
    cluster
        .create_topic("driftwatch-dead-letter", 1, 1)
        .expect("topic");
    let brokers = cluster.bootstrap_servers();
    let produced = produce(&brokers, a.records);
    println!(
        "{produced} records of the simulated shop in {} topics x {PARTITIONS} partitions; {} rounds each; \
         {READERS} readers, pause {} ms",
        TOPICS.len(),
        a.rounds,
        a.pause.as_millis()
    );
    let (mut quiet, mut busy, mut reads) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..a.rounds {
        for readers in [false, true] {
            let group = format!("bench-{r}-{readers}");
            let (rate, served) =
                runtime.block_on(round(&brokers, &group, produced, readers, a.pause));
            println!(
                "  round {r} {:<8} {rate:>10.0} records/s{}",
                if readers { "readers" } else { "quiet" },
                if readers {
                    format!(", {served} reads answered")
                } else {
                    String::new()
                }
            );
            if readers {
                busy.push(rate);
                reads.push(served as f64);
            } else {
                quiet.push(rate);
            }
        }
    }
    let (q, b) = (median(quiet), median(busy));
    println!("quiet    {q:>10.0} records/s (median)");
    println!(
        "readers  {b:>10.0} records/s (median), {:.0} reads answered per round",
        median(reads)
    );
    println!("ratio    {:.2}x", b / q);
}
