//! The Kafka source end to end, in process: a mock cluster, records produced with
//! rdkafka, the daemon's own wiring (`daemon::start`, as `run` uses it), and the events
//! table read back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use driftwatch::config::Config;
use driftwatch::daemon;
use driftwatch::supervisor::Supervisor;
use ingest::{DeadLetter, IngestMetrics, KafkaConfig, KafkaSource, Reason, TopicConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use serde_json::json;
use store::{EventTable, EventsSnapshot};
use tokio::sync::mpsc;

use crate::common::{cluster, eventually};

const TIME: &str = "2026-03-02T10:15:02.000000002Z";

fn tetragon_exec(id: u64) -> String {
    json!({
        "process_exec": { "process": {
            "pid": id, "binary": "/usr/bin/curl", "arguments": "-s http://api:8080/health",
            "pod": { "namespace": "shop", "name": "checkout-6d9f7c8b5-x2x7q", "workload": "checkout" },
        }},
        "node_name": "node-a", "time": TIME,
    })
    .to_string()
}

fn fluent_bit(id: u64) -> String {
    json!({
        "@timestamp": 1_772_446_502.25, "log": format!("m-{id}\n"), "stream": "stdout",
        "kubernetes": { "pod_name": "api-7c9d8f6b4d-k2m9z", "namespace_name": "shop", "container_name": "api" },
    })
    .to_string()
}

fn falco(id: u64) -> String {
    json!({
        "time": TIME, "rule": "Terminal shell in container", "priority": "Notice", "source": "syscall",
        "output_fields": { "evt.time": 1_772_446_501_123_456_789u64, "proc.pid": id, "proc.exepath": "/bin/bash",
            "k8s.ns.name": "shop", "k8s.pod.name": "checkout-6d9f7c8b5-x2x7q", "fd.name": null, "user.name": "<NA>" },
    })
    .to_string()
}

fn native(id: u64) -> String {
    json!({ "time": TIME, "source": "native", "service": "shop/custom", "kind": "log", "message": format!("m-{id}") })
        .to_string()
}

/// The marker each valid record carries into the table: `pid:<id>` or `m-<id>`.
fn markers(snapshot: &EventsSnapshot) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for batch in &snapshot.batches {
        let pids = batch
            .column_by_name("pid")
            .unwrap()
            .as_primitive::<Int64Type>();
        let messages = batch.column_by_name("message").unwrap().as_string::<i32>();
        for row in 0..batch.num_rows() {
            let marker = if pids.is_valid(row) {
                format!("pid:{}", pids.value(row))
            } else {
                messages.value(row).to_owned()
            };
            *seen.entry(marker).or_default() += 1;
        }
    }
    seen
}

async fn produce(brokers: &str, records: &[(&str, String)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let sends = records.iter().map(|(topic, payload)| {
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::<(), _>::to(topic).payload(payload),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    });
    futures::future::join_all(sends).await;
}

fn test_config() -> Config {
    Config::parse("[http]\nlisten = \"127.0.0.1:0\"\n[postgres]\nlisten = \"127.0.0.1:0\"\n")
        .unwrap()
}

fn topic(name: &str, format: &str) -> TopicConfig {
    TopicConfig {
        name: name.to_owned(),
        format: format.parse().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_produced_record_is_applied_exactly_once_and_bad_ones_are_dead_lettered() {
    let cluster = MockCluster::new(1).unwrap();
    for t in ["tetragon", "logs", "mixed", "driftwatch-dead-letter"] {
        cluster.create_topic(t, 3, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();

    let mut records = Vec::new();
    let mut expected = Vec::new();
    for id in 0..3_000u64 {
        let (topic, payload, marker) = match id % 4 {
            0 => ("tetragon", tetragon_exec(id), format!("pid:{id}")),
            1 => ("logs", fluent_bit(id), format!("m-{id}")),
            2 => ("mixed", falco(id), format!("pid:{id}")),
            _ => ("mixed", native(id), format!("m-{id}")),
        };
        records.push((topic, payload));
        expected.push(marker);
    }
    let bad = [
        ("mixed", "not json at all".to_owned(), Reason::NotJson),
        (
            "tetragon",
            tetragon_exec(1)[..40].to_owned(),
            Reason::Truncated,
        ),
        (
            "mixed",
            r#"{"neither":"falco","nor":"tetragon"}"#.to_owned(),
            Reason::UnknownFormat,
        ),
        (
            "logs",
            r#"{"@timestamp":1772446502.25,"stream":"stdout"}"#.to_owned(),
            Reason::WrongShape,
        ),
        (
            "tetragon",
            tetragon_exec(7).replace(TIME, "1970-01-01T00:00:00Z"),
            Reason::AbsurdValue,
        ),
    ];
    for round in 0..4 {
        for (topic, payload, _) in &bad {
            records.insert(round * 700 + 3, (topic, payload.clone()));
        }
    }
    produce(&brokers, &records).await;

    let mut kafka = KafkaConfig::new(
        brokers.clone(),
        vec![
            topic("tetragon", "tetragon"),
            topic("logs", "fluent-bit"),
            topic("mixed", "auto"),
        ],
    );
    kafka.batch_size = 250;
    let mut sup = Supervisor::new();
    let d = daemon::start(&test_config(), kafka, &mut sup, false, daemon::Role::All)
        .await
        .unwrap();
    let total = records.len() as u64;
    let totals = d.totals.clone();
    eventually(
        Duration::from_secs(60),
        "every record to be consumed",
        || totals.load().records() == total,
    )
    .await;
    sup.cancel.cancel();
    sup.wait().await.unwrap();

    let seen = markers(&d.stages.events.snapshot());
    for marker in &expected {
        assert_eq!(
            seen.get(marker),
            Some(&1),
            "{marker} applied {:?} times",
            seen.get(marker)
        );
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "no event beyond the produced ones"
    );
    let stats = d.totals.load();
    assert_eq!(stats.dead_letters(), 4 * bad.len() as u64);
    for (_, _, reason) in &bad {
        let n: u64 = stats
            .dead_lettered
            .iter()
            .filter(|((_, r), _)| r == reason)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(n, 4, "{reason}");
    }

    // The dead letters are in their topic, each with its error and where it came from.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "dead-letter-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["driftwatch-dead-letter"]).unwrap();
    let mut letters: Vec<DeadLetter> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while letters.len() < 4 * bad.len() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            letters.push(serde_json::from_slice(m.payload().unwrap()).unwrap());
        }
    }
    assert_eq!(letters.len(), 4 * bad.len());
    for letter in &letters {
        assert!(["tetragon", "logs", "mixed"].contains(&letter.provenance.origin.as_str()));
        assert!(letter.provenance.partition.is_some());
        assert!(!letter.error.is_empty());
        assert!(bad.iter().any(|(t, p, r)| *t == letter.provenance.origin
            && *p == letter.payload
            && *r == letter.reason));
    }
}

/// Runs `source` into `tx` with the daemon's decoder until `cancel`.
fn run_source(
    source: &Arc<KafkaSource>,
    tx: mpsc::Sender<ingest::Batch>,
    cancel: &tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Result<(), ingest::SourceError>> {
    let source = source.clone();
    let dead_letters = source.dead_letter_sink(None).unwrap();
    let decoder = daemon::decoder(&test_config());
    let cancel = cancel.clone();
    tokio::spawn(async move { source.run(decoder, dead_letters, tx, cancel).await })
}

/// Starts a consumer in group `group` by hand, applies batches until `stop_after`
/// records were applied, then aborts it the way a crash would: no drain, no final
/// commit. Returns the table it filled.
async fn run_until_crash(brokers: &str, group: &str, stop_after: u64) -> Arc<EventTable> {
    let mut kafka = KafkaConfig::new(brokers.to_owned(), vec![topic("tetragon", "tetragon")]);
    kafka.group_id = group.to_owned();
    kafka.batch_size = 100;
    kafka.channel_capacity = 1;
    // Commit often, so that the crash lands after some commits, as a real one would.
    kafka
        .properties
        .insert("auto.commit.interval.ms".into(), "100".into());
    let source = Arc::new(KafkaSource::new(kafka, IngestMetrics::default()).unwrap());
    let (stages, owner) = driftwatch::wiring::build(
        &test_config(),
        detect::Detector::new(detect::DetectConfig::default()),
        &mut prometheus_client::registry::Registry::default(),
        driftwatch::wiring::Mode {
            print: false,
            wall_clock: false,
        },
        None,
        &mut Supervisor::new(),
    )
    .unwrap();
    let (tx, rx) = mpsc::channel(source.channel_capacity());
    let cancel = tokio_util::sync::CancellationToken::new();
    let consumer = run_source(&source, tx, &cancel);
    let totals = pipeline::Totals::default();
    let pipeline = {
        let (stages, totals) = (stages.clone(), totals.clone());
        tokio::spawn(async move { stages.apply_all(owner, rx, &totals, None).await })
    };
    eventually(Duration::from_secs(60), "the first batches", || {
        totals.load().records() >= stop_after
    })
    .await;
    consumer.abort();
    pipeline.abort();
    let _ = consumer.await;
    let _ = pipeline.await;
    drop(source);
    stages.events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stopped_mid_stream_resumes_without_skipping() {
    let (_cluster, brokers) = cluster("tetragon", 2);
    const N: u64 = 20_000;
    let records: Vec<_> = (0..N).map(|id| ("tetragon", tetragon_exec(id))).collect();
    produce(&brokers, &records).await;

    // First run: killed after its first few batches.
    let first = run_until_crash(&brokers, "resume-group", 300).await;
    let first_seen = markers(&first.snapshot());
    assert!(
        (first_seen.len() as u64) < N,
        "the first run consumed everything before it was stopped; the test proves nothing"
    );

    // Second run, same group, the daemon's own wiring: picks up where the commits say.
    let mut kafka = KafkaConfig::new(brokers.clone(), vec![topic("tetragon", "tetragon")]);
    kafka.group_id = "resume-group".to_owned();
    let mut sup = Supervisor::new();
    let d = daemon::start(&test_config(), kafka, &mut sup, false, daemon::Role::All)
        .await
        .unwrap();
    let events = d.stages.events.clone();
    eventually(Duration::from_secs(90), "the rest of the topic", || {
        let mut seen = markers(&first.snapshot());
        for (k, v) in markers(&events.snapshot()) {
            *seen.entry(k).or_default() += v;
        }
        seen.len() as u64 == N
    })
    .await;
    sup.cancel.cancel();
    sup.wait().await.unwrap();

    let second_seen = markers(&d.stages.events.snapshot());
    for id in 0..N {
        let key = format!("pid:{id}");
        assert!(
            first_seen.contains_key(&key) || second_seen.contains_key(&key),
            "{key} was skipped"
        );
    }
    // At-least-once, not at-most-everything: the second run did not start from scratch.
    assert!(
        (second_seen.len() as u64) < N,
        "the second run re-read the whole topic"
    );
}

/// A pipeline that stops taking batches makes the consumer pause its partitions (and
/// count it); once the pipeline takes batches again the consumer resumes, and every
/// record arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pipeline_pauses_the_consumer_which_resumes_without_loss() {
    let (_cluster, brokers) = cluster("tetragon", 2);
    const N: u64 = 5_000;
    let records: Vec<_> = (0..N).map(|id| ("tetragon", tetragon_exec(id))).collect();
    produce(&brokers, &records).await;

    let mut kafka = KafkaConfig::new(brokers, vec![topic("tetragon", "tetragon")]);
    kafka.group_id = "backpressure".to_owned();
    kafka.batch_size = 100;
    kafka.channel_capacity = 1;
    let mut registry = prometheus_client::registry::Registry::default();
    let source = Arc::new(KafkaSource::new(kafka, IngestMetrics::register(&mut registry)).unwrap());
    let (tx, mut rx) = mpsc::channel(source.channel_capacity());
    let cancel = tokio_util::sync::CancellationToken::new();
    let consumer = run_source(&source, tx, &cancel);
    let pauses = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("consumer_pauses_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Nobody takes batches: the channel fills and the consumer pauses.
    eventually(Duration::from_secs(30), "the consumer to pause", || {
        pauses() >= 1
    })
    .await;

    // The pipeline takes batches again: the rest arrives, each record once.
    let mut seen: HashMap<u32, usize> = HashMap::new();
    while seen.len() < N as usize {
        let batch = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("the consumer resumed")
            .expect("the source is running");
        for event in &batch.events {
            if let ingest::EventKind::ProcessExec { process } = &event.kind {
                *seen.entry(process.pid.unwrap()).or_default() += 1;
            }
        }
        batch.ack().unwrap();
    }
    assert!(seen.values().all(|&n| n == 1), "a record arrived twice");
    cancel.cancel();
    consumer.await.unwrap().unwrap();
}
