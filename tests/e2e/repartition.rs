//! Decoding and detection as two daemons joined by the repartition topic: sensors
//! publish a service's records on every partition (by node), the decode daemon
//! (`run --role decode`) produces them keyed by service, and the detect daemon
//! (`run --role detect`) reads each service whole from one partition. Every service
//! lands on exactly one partition, alerts cite the sensor's own records, and the
//! detect daemon raises what a replay of the same records raises.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

use crate::common::{Killed, driftwatch, exec_record, free_port, http_get, replay, sample};

const SERVICES: u32 = 8;
const MINUTES: u32 = 30;
const RAW_PARTITIONS: i32 = 4;
const REPARTITIONED: i32 = 6;

/// Minute `m`'s records, each with its raw partition: every service runs its server
/// eight times, round-robin over the partitions; service `s` runs a new program at
/// minute 15 + s.
fn minute(m: u32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for s in 0..SERVICES {
        for i in 0..8 {
            out.push(((i % 4) as i32, exec_record(s, m, i * 7, "/app/bin/server")));
        }
        if m == 15 + s {
            out.push((
                (s % 4) as i32,
                exec_record(s, m, 59, &format!("/usr/bin/tool-{s}")),
            ));
        }
    }
    out
}

fn config(path: &Path, brokers: &str, http: &str) {
    std::fs::write(
        path,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"split\"\nrepartition-topic = \"driftwatch-events\"\n\
             [[kafka.topics]]\nname = \"falco-like\"\nformat = \"native\"\n\
             [http]\nlisten = \"{http}\"\n[postgres]\nlisten = \"127.0.0.1:0\"\n[search]\nenabled = false\n\
             [detect]\nlearning-period = \"10m\"\nmin-learning-events = 3\n"
        ),
    )
    .unwrap();
}

fn start(config: &Path, role: &str) -> Killed {
    Killed(
        driftwatch()
            .args(["run", "--role", role, "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decode_and_a_detect_daemon_keep_each_service_on_one_partition() {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster
        .create_topic("falco-like", RAW_PARTITIONS, 1)
        .unwrap();
    cluster
        .create_topic("driftwatch-events", REPARTITIONED, 1)
        .unwrap();
    cluster
        .create_topic("driftwatch-dead-letter", 1, 1)
        .unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let (decode_http, detect_http) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (decode_conf, detect_conf) = (
        dir.path().join("decode.toml"),
        dir.path().join("detect.toml"),
    );
    config(&decode_conf, &brokers, &decode_http);
    config(&detect_conf, &brokers, &detect_http);

    let all: Vec<String> = (0..MINUTES)
        .flat_map(|m| minute(m).into_iter().map(|(_, r)| r))
        .collect();
    let file = dir.path().join("records.jsonl");
    std::fs::write(&file, all.join("\n") + "\n").unwrap();
    let replayed = replay(
        [
            file.to_str().unwrap(),
            "--format",
            "native",
            "--config",
            detect_conf.to_str().unwrap(),
            "--dead-letter",
            dir.path().join("dead.jsonl").to_str().unwrap(),
        ],
        None,
    );
    let key = |a: &Value| {
        (
            a["kind"].as_str().unwrap().to_owned(),
            a["service"].as_str().unwrap().to_owned(),
            a["subject"].as_str().unwrap().to_owned(),
        )
    };
    let expected: BTreeSet<_> = replayed.of_type("alert").into_iter().map(key).collect();
    assert_eq!(
        expected
            .iter()
            .filter(|k| k.2.starts_with("/usr/bin/tool-"))
            .count(),
        SERVICES as usize
    );

    let _decode = start(&decode_conf, "decode");
    let _detect = start(&detect_conf, "detect");
    {
        use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
        let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        for m in 0..MINUTES {
            for (p, r) in minute(m) {
                producer
                    .send(
                        BaseRecord::<(), _>::to("falco-like")
                            .partition(p)
                            .payload(&r),
                    )
                    .unwrap();
            }
            producer.flush(Duration::from_secs(10)).unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    let started = Instant::now();
    loop {
        let metrics = http_get(&detect_http, "/metrics").unwrap_or_default();
        let consumed = sample(
            &metrics,
            r#"driftwatch_records_consumed_total{topic="driftwatch-events",format="native"}"#,
        )
        .unwrap_or(0.0);
        if consumed as usize == all.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the detect daemon consumed {consumed} of {}",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let decode_metrics = http_get(&decode_http, "/metrics").unwrap();
    assert_eq!(
        sample(&decode_metrics, "driftwatch_events_repartitioned_total"),
        Some(all.len() as f64)
    );

    // The repartition topic: every event once, each service on one partition, keyed
    // by it, citing its raw record.
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "inspect")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&["driftwatch-events"]).unwrap();
    let mut partitions: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    let mut read = 0;
    let started = Instant::now();
    while read < all.len() {
        assert!(started.elapsed() < Duration::from_secs(30), "read {read}");
        let Some(m) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let event: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(
            m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            event["service"].as_str().map(str::to_owned)
        );
        assert_eq!(event["provenance"]["origin"], "falco-like", "{event}");
        partitions
            .entry(event["service"].as_str().unwrap().to_owned())
            .or_default()
            .insert(m.partition());
        read += 1;
    }
    assert_eq!(partitions.len(), SERVICES as usize);
    assert!(partitions.values().all(|p| p.len() == 1), "{partitions:?}");

    // Past the next publish: the detect daemon raised what the replay raised.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let body = http_get(&detect_http, "/api/v1/alerts?limit=10000").unwrap();
    let shown: Value = serde_json::from_str(&body).unwrap();
    let shown = shown["alerts"].as_array().unwrap();
    let live: BTreeSet<_> = shown.iter().map(key).collect();
    assert_eq!(live, expected);
    for a in shown {
        assert_eq!(a["evidence"][0]["origin"], "falco-like", "{a}");
    }
}
