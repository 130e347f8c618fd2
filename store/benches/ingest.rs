//! Ingest throughput, side by side in one run:
//!
//! - **bare**: an rdkafka consumer that reads every record and parses it into a
//!   `serde_json::Value`, nothing more: the floor any JSON-over-Kafka consumer pays;
//! - **driftwatch**: the real Kafka source (`KafkaSource`: batching, format decoding,
//!   dead-letter checks, offset storing) feeding the events table (`EventTable::append`,
//!   Arrow encoding), on a single-threaded runtime, i.e. one core for driftwatch's code;
//! - **decode only** and **decode + append** without Kafka, to show where time goes.
//!
//! Each is run `ROUNDS` times over the same records in a librdkafka mock cluster; the
//! best round counts. librdkafka's own fetch threads run in both Kafka cases alike.
//!
//! `cargo bench -p store --bench ingest` (`-- --events N` to change the count).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ingest::{
    DeadLetterSink, DecodeLimits, Decoder, Format, IngestMetrics, KafkaConfig, KafkaSource,
    Provenance, ServiceKeyer, TopicConfig,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};
use serde_json::json;
use store::{EventTable, StoreConfig};

const ROUNDS: usize = 3;
/// librdkafka's mock broker keeps 5 MiB per partition (`rdkafka_mock.c`).
const MOCK_PARTITION_KEEPS: usize = 5 * 1024 * 1024;

fn tetragon(i: u64) -> String {
    let pod = json!({
        "namespace": "shop", "name": format!("svc{}-6d9f7c8b5-x2x7q", i % 50),
        "container": { "id": "containerd://3f9a1c2b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8", "name": "app",
            "image": { "id": "ghcr.io/acme/app@sha256:aa11", "name": "ghcr.io/acme/app:1.8.2" } },
        "pod_labels": { "app": format!("svc{}", i % 50) }, "workload": format!("svc{}", i % 50), "workload_kind": "Deployment",
    });
    let process = json!({ "exec_id": "bm9kZS1hOjEyMzQ1Njc4OjQ0MQ==", "pid": 1000 + i % 30000, "uid": 1000, "cwd": "/app",
        "binary": "/usr/local/bin/python3.12", "arguments": format!("/app/worker.py --job {i}"), "flags": "execve clone",
        "start_time": "2026-03-02T10:15:02.000000001Z", "pod": pod });
    let parent = json!({ "binary": "/usr/local/bin/gunicorn", "pid": 1 });
    let time = format!(
        "2026-03-02T10:{:02}:{:02}.{:09}Z",
        (i / 60) % 60,
        i % 60,
        i % 1_000_000_000
    );
    let body = match i % 3 {
        0 => json!({ "process_exec": { "process": process, "parent": parent } }),
        1 => {
            json!({ "process_kprobe": { "process": process, "parent": parent, "function_name": "security_file_permission",
            "args": [ { "file_arg": { "path": format!("/tmp/upload-{i:x}") } }, { "int_arg": 2 } ], "action": "KPROBE_ACTION_POST" } })
        }
        _ => {
            json!({ "process_kprobe": { "process": process, "parent": parent, "function_name": "tcp_connect",
            "args": [ { "sock_arg": { "family": "AF_INET", "protocol": "IPPROTO_TCP", "saddr": "10.0.1.5",
                "daddr": format!("10.96.{}.{}", i % 200, i % 250), "sport": 40000 + i % 20000, "dport": 5432 } } ] } })
        }
    };
    let mut body = body;
    body["node_name"] = json!("node-a");
    body["time"] = json!(time);
    body.to_string()
}

fn native(i: u64) -> String {
    json!({
        "time": format!("2026-03-02T10:{:02}:{:02}.{:09}Z", (i / 60) % 60, i % 60, i),
        "source": "native",
        "workload": { "namespace": "shop", "pod": format!("svc{}-6d9f7c8b5-x2x7q", i % 50), "container_id": "3f9a1c2b7d4e",
            "image": { "repository": "ghcr.io/acme/app", "tag": "1.8.2" } },
        "kind": "process_exec",
        "process": { "exe": "/usr/local/bin/python3.12", "args": ["/app/worker.py", "--job", i.to_string()],
            "parent_exe": "/usr/local/bin/gunicorn", "pid": 1000 + i % 30000, "uid": 1000, "cwd": "/app" },
    })
    .to_string()
}

static GROUP: AtomicU32 = AtomicU32::new(0);

fn group() -> String {
    format!("bench-{}", GROUP.fetch_add(1, Ordering::Relaxed))
}

/// Reads every record and parses it into `serde_json::Value`.
fn bare_consumer(brokers: &str, topic: &str, n: usize) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group())
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    // Wait for the assignment before the clock starts: the group join is not ingest.
    let first = loop {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            break m.unwrap().detach();
        }
    };
    let start = Instant::now();
    let mut parsed = 0usize;
    let v: serde_json::Value = serde_json::from_slice(first.payload().unwrap()).unwrap();
    std::hint::black_box(v);
    parsed += 1;
    while parsed < n {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            std::hint::black_box(v);
            parsed += 1;
        }
    }
    start.elapsed()
}

/// The real source and the events table on one thread.
fn driftwatch(brokers: &str, topic: &str, format: Format, n: usize) -> (Duration, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut config = KafkaConfig::new(
            brokers,
            vec![TopicConfig {
                name: topic.to_owned(),
                format,
            }],
        );
        config.group_id = group();
        let source = KafkaSource::new(config, IngestMetrics::default()).unwrap();
        let table = EventTable::new(StoreConfig::default());
        let (tx, mut rx) = tokio::sync::mpsc::channel(source.channel_capacity());
        let cancel = tokio_util::sync::CancellationToken::new();
        let decoder = Decoder::new(DecodeLimits::default(), ServiceKeyer::default());
        let run = source.run(decoder, DeadLetterSink::Discard, tx, cancel.clone());
        let apply = async {
            let mut applied = 0usize;
            let mut start = None;
            while applied < n {
                let batch = rx.recv().await.unwrap();
                // The clock starts at the first batch: the group join is not ingest.
                start.get_or_insert_with(Instant::now);
                table.append(&batch.events);
                applied += batch.stats.records() as usize;
                batch.ack().unwrap();
            }
            cancel.cancel();
            start.unwrap().elapsed()
        };
        let (run, elapsed) = tokio::join!(run, apply);
        run.unwrap();
        (elapsed, table.rows())
    })
}

fn decode_only(records: &[String], format: Format, append: Option<&EventTable>) -> Duration {
    let mut decoder = Decoder::new(DecodeLimits::default(), ServiceKeyer::default());
    let provenance = Provenance::kafka("bench", 0, 0);
    let start = Instant::now();
    let mut events = Vec::with_capacity(1000);
    for chunk in records.chunks(1000) {
        for r in chunk {
            decoder
                .decode(format, r.as_bytes(), &provenance, &mut events)
                .unwrap();
        }
        if let Some(table) = append {
            table.append(&events);
        }
        events.clear();
    }
    start.elapsed()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .map_or(200_000, |v| v.parse().unwrap());
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    println!("ingest benchmark: {n} events per topic, best of {ROUNDS} rounds");
    println!(
        "{:<12} {:<26} {:>12} {:>10} {:>8}",
        "topic", "consumer", "events/s", "MiB/s", "ratio"
    );
    for (topic, format, make) in [
        ("tetragon", Format::Tetragon, tetragon as fn(u64) -> String),
        ("native", Format::Native, native),
    ] {
        let records: Vec<String> = (0..n as u64).map(make).collect();
        let bytes: usize = records.iter().map(String::len).sum();
        // A mock-cluster partition keeps only its last 5 MiB; spread the records so
        // none is dropped before it is read.
        let partitions = bytes.div_ceil(MOCK_PARTITION_KEEPS / 2).max(1);
        cluster.create_topic(topic, partitions as i32, 1).unwrap();
        for (i, r) in records.iter().enumerate() {
            let mut record = BaseRecord::<(), _>::to(topic)
                .payload(r)
                .partition((i % partitions) as i32);
            while let Err((e, back)) = producer.send(record) {
                assert!(
                    matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ),
                    "{e}"
                );
                record = back;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        producer.flush(Duration::from_secs(60)).unwrap();
        println!(
            "{topic:<12} {partitions} partitions, average record {} bytes",
            bytes / n
        );

        let best = |f: &mut dyn FnMut() -> Duration| (0..ROUNDS).map(|_| f()).min().unwrap();
        let bare = best(&mut || bare_consumer(&brokers, topic, n));
        let ours = best(&mut || {
            let (d, rows) = driftwatch(&brokers, topic, format, n);
            assert_eq!(rows, n, "every record lands in the table");
            d
        });
        let decode = best(&mut || decode_only(&records, format, None));
        let decode_append = best(&mut || {
            decode_only(
                &records,
                format,
                Some(&EventTable::new(StoreConfig::default())),
            )
        });
        let mib = |d: Duration| bytes as f64 / d.as_secs_f64() / (1024.0 * 1024.0);
        let line = |name: &str, d: Duration| {
            println!(
                "{topic:<12} {name:<26} {:>12.0} {:>10.1} {:>8.2}",
                rate(n, d),
                mib(d),
                bare.as_secs_f64() / d.as_secs_f64()
            );
        };
        line("bare rdkafka + Value", bare);
        line("driftwatch source + store", ours);
        line("decode only (no Kafka)", decode);
        line("decode + append (no Kafka)", decode_append);
    }
}
