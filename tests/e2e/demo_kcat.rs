//! `driftwatch demo` with a real outside Kafka client: `kcat` lists the embedded
//! broker's topics and produces into it, and the daemon consumes what it produced.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{driftwatch, eventually, http_get, require_program, sample};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_sees_the_demo_broker_and_what_it_produces_is_ingested() {
    let kcat = require_program("kcat");
    let reports = tempfile::tempdir().unwrap();
    let mut demo = driftwatch()
        .args([
            "demo",
            "--duration",
            "90s",
            "--http",
            "127.0.0.1:0",
            "--postgres",
            "127.0.0.1:0",
            "--rate",
            "200",
            "--report-every",
            "1h",
            "--reports",
        ])
        .arg(reports.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let (mut broker, mut metrics) = (None, None);
    while broker.is_none() || metrics.is_none() {
        let line = lines
            .next()
            .expect("demo exited before printing its addresses")
            .unwrap();
        if let Some(b) = line.trim().strip_prefix("Kafka broker (embedded): ") {
            broker = Some(b.to_owned());
        }
        if let Some(m) = line.trim().strip_prefix("metrics: http://") {
            metrics = Some(m.trim_end_matches("/metrics").to_owned());
        }
    }
    let (broker, metrics) = (broker.unwrap(), metrics.unwrap());
    assert!(
        broker.starts_with("127.0.0.1:"),
        "the embedded broker listens on loopback: {broker}"
    );
    std::thread::spawn(move || for _ in lines {});

    let listing = Command::new(&kcat)
        .args(["-b", &broker, "-L", "-m", "10"])
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "kcat -L failed: {}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    for topic in ["tetragon", "falco", "k8s-audit", "docker", "logs", "native"] {
        assert!(
            listing.contains(&format!("topic \"{topic}\"")),
            "kcat does not list {topic}:\n{listing}"
        );
    }

    // The demo writes to `native` too (the CDN edges it reaches by name): what kcat
    // adds is counted from here.
    let before = http_get(&metrics, "/metrics").unwrap_or_default();
    let count = |body: &str, name: &str| sample(body, name).unwrap_or(0.0);
    let consumed = r#"driftwatch_records_consumed_total{topic="native",format="native"}"#;
    let not_json = r#"driftwatch_records_dead_lettered_total{format="native",reason="not_json"}"#;
    let decoded = r#"driftwatch_events_decoded_total{source="native"}"#;
    let mut producer = Command::new(&kcat)
        .args(["-b", &broker, "-P", "-t", "native"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let stdin = producer.stdin.as_mut().unwrap();
        for i in 0..5 {
            writeln!(stdin, r#"{{"time":"2026-03-02T10:15:0{i}Z","kind":"log","service":"kcat/test","message":"from kcat {i}"}}"#).unwrap();
        }
        writeln!(stdin, "not json, from kcat").unwrap();
    }
    assert!(producer.wait().unwrap().success());

    let mut body = String::new();
    // librdkafka reports lag with its statistics, every 5 s.
    eventually(
        Duration::from_secs(60),
        "the kcat records and the lag in the demo's metrics",
        || {
            body = http_get(&metrics, "/metrics").unwrap_or_default();
            count(&body, consumed) >= count(&before, consumed) + 6.0
                && count(&body, not_json) >= count(&before, not_json) + 1.0
                && count(&body, decoded) >= count(&before, decoded) + 5.0
                && body.contains("driftwatch_consumer_lag{")
        },
    )
    .await;
    assert!(body.contains("driftwatch_build_info{"));

    // Ctrl-C stops it cleanly.
    Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    let status = demo.wait().unwrap();
    assert!(status.success(), "demo exited with {status}");
}
