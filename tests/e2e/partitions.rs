//! The same records through `driftwatch replay` (one file, in time order) and through
//! `driftwatch run` reading them live from four partitions, each service's events
//! spread over all four (as sensors publish by node) and three partitions falling
//! minutes behind the first and catching up again, as a slow node's shipper does. Both
//! raise the same alerts, rate alerts included: the clock follows the slowest
//! partition, not the newest record.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Killed, driftwatch, free_port, http_get, replay, sample};

const SERVICES: u32 = 4;
const MINUTES: u32 = 300;
const PARTITIONS: i32 = 4;

/// The records of minute `m`, each with its partition: every service runs its server
/// about 100 times a minute, round-robin over the partitions; one service bursts at
/// minute 230, and another runs a new program once at minute 240.
fn minute(m: u32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for s in 0..SERVICES {
        let n = if s == 2 && m == 230 {
            250
        } else {
            24 + (m + s) % 5
        };
        for i in 0..n {
            let second = i * 60 / n;
            out.push((
                (i % PARTITIONS as u32) as i32,
                record(s, m, second, "/app/bin/server"),
            ));
        }
    }
    if m == 240 {
        out.push((0, record(3, m, 30, "/usr/bin/nc")));
    }
    out
}

fn record(s: u32, m: u32, second: u32, exe: &str) -> String {
    json!({
        "time": format!("2026-03-02T{:02}:{:02}:{second:02}Z", m / 60, m % 60),
        "service": format!("shop/svc-{s}"),
        "kind": "process_exec",
        "process": { "exe": exe, "parent_exe": "/app/bin/entrypoint" },
    })
    .to_string()
}

/// How many minutes partitions 1 to 3 are behind partition 0 while it produces minute
/// `m`: none, then, once the rates are learned, four for twenty minutes in forty.
fn lag(m: u32) -> u32 {
    if m >= 215 && (m / 20) % 2 == 1 { 4 } else { 0 }
}

/// What both runs must agree on, per alert.
fn key(a: &Value) -> (String, String, String, String) {
    let field = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
    (
        field("kind"),
        field("service"),
        field("subject"),
        field("time"),
    )
}

fn config(path: &Path, brokers: &str, http: &str) {
    std::fs::write(
        path,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"partitions\"\n\
             [[kafka.topics]]\nname = \"falco-like\"\nformat = \"native\"\n\
             [http]\nlisten = \"{http}\"\n[postgres]\nlisten = \"127.0.0.1:0\"\n[search]\nenabled = false\n\
             [detect]\nlearning-period = \"10m\"\nmin-learning-events = 3\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_over_lagging_partitions_raises_what_a_replay_raises() {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("falco-like", PARTITIONS, 1).unwrap();
    cluster
        .create_topic("driftwatch-dead-letter", 1, 1)
        .unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let conf = dir.path().join("driftwatch.toml");
    config(&conf, &brokers, &http);

    // The replay: every record, in time order.
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
            conf.to_str().unwrap(),
            "--dead-letter",
            dir.path().join("dead.jsonl").to_str().unwrap(),
        ],
        None,
    );
    let expected: BTreeSet<_> = replayed
        .of_type("alert")
        .into_iter()
        .filter(|a| a["service"] != "driftwatch")
        .map(key)
        .collect();
    assert!(
        expected.iter().any(|k| k.0 == "rate"),
        "the burst raises a rate alert: {expected:?}"
    );
    assert!(expected.iter().any(|k| k.2.starts_with("/usr/bin/nc")));

    // The live run, with partitions 1 to 3 falling behind and catching up.
    let _daemon = Killed(
        driftwatch()
            .arg("run")
            .arg("--config")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    {
        use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
        let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let minutes: Vec<Vec<(i32, String)>> = (0..MINUTES).map(minute).collect();
        // The next minute each partition produces.
        let mut next = [0u32; PARTITIONS as usize];
        for step in 0..MINUTES + 4 {
            for p in 0..PARTITIONS {
                let upto = if p == 0 {
                    step.min(MINUTES - 1)
                } else {
                    step.saturating_sub(lag(step)).min(MINUTES - 1)
                };
                while next[p as usize] <= upto && step < MINUTES + 4 {
                    for (_, r) in minutes[next[p as usize] as usize]
                        .iter()
                        .filter(|(q, _)| *q == p)
                    {
                        producer
                            .send(
                                BaseRecord::<(), _>::to("falco-like")
                                    .partition(p)
                                    .payload(r),
                            )
                            .unwrap();
                    }
                    next[p as usize] += 1;
                }
            }
            producer.flush(Duration::from_secs(10)).unwrap();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(next.iter().all(|n| *n == MINUTES));
    }
    let started = Instant::now();
    loop {
        let metrics = http_get(&http, "/metrics").unwrap_or_default();
        let consumed = sample(
            &metrics,
            r#"driftwatch_records_consumed_total{topic="falco-like",format="native"}"#,
        )
        .unwrap_or(0.0);
        if consumed as usize == all.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "consumed {consumed} of {}",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past the next publish.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let body = http_get(&http, "/api/v1/alerts?limit=10000").unwrap();
    let shown: Value = serde_json::from_str(&body).unwrap();
    let live: BTreeSet<_> = shown["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["service"] != "driftwatch")
        .map(key)
        .collect();
    let only_live: Vec<_> = live.difference(&expected).collect();
    let only_replay: Vec<_> = expected.difference(&live).collect();
    assert!(
        only_live.is_empty() && only_replay.is_empty(),
        "only live: {only_live:#?}\nonly in the replay: {only_replay:#?}"
    );
}
