//! `driftwatch run` as a process against a broker: it consumes, serves metrics, and on
//! SIGTERM drains and commits, so the group's committed offsets cover what it read.

use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::common::{cluster, driftwatch, eventually, free_port, http_get, produce, sample};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_consumes_serves_metrics_and_commits_on_sigterm() {
    let (_cluster, brokers) = cluster("falco", 1);
    let alert = std::fs::read_to_string(crate::common::fixtures().join("mixed.jsonl")).unwrap();
    let falco_line = alert.lines().next().unwrap();
    produce(&brokers, "falco", std::iter::repeat_n(falco_line, 100));

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("driftwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nformat = \"json\"\n[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"run-test\"\n\
             [[kafka.topics]]\nname = \"falco\"\nformat = \"falco\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[postgres]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let daemon = driftwatch()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    eventually(
        Duration::from_secs(60),
        "100 falco events in the metrics",
        || {
            let body = http_get(&addr, "/metrics").unwrap_or_default();
            sample(&body, r#"driftwatch_events_decoded_total{source="falco"}"#) == Some(100.0)
        },
    )
    .await;
    assert_eq!(http_get(&addr, "/healthz").unwrap(), "ok\n");

    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let out = daemon.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "run exited with {}: {logs}",
        out.status
    );
    // JSON logs, one object per line, as configured.
    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "{logs}"
    );
    assert!(logs.contains("offsets committed"), "{logs}");

    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "run-test")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("falco", 0);
    let committed = probe
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        committed.find_partition("falco", 0).unwrap().offset(),
        Offset::Offset(100)
    );
}

#[test]
fn run_without_a_kafka_section_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let out = driftwatch()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no [kafka] section"));
}
