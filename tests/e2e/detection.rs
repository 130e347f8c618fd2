//! Detection end to end: the demo's attacks are caught and explained, a long benign run
//! raises nothing, and `replay` writes alerts as JSON lines.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use detect::{DetectConfig, Detector};
use driftwatch::simulator::Simulator;
use ingest::{DecodeLimits, Decoder, Format, Nanos, Provenance, ServiceKeyer};

use crate::common::{binary, fixtures};

/// Four hours of the simulated shop after its hour of learning: not one alert.
#[test]
fn a_long_benign_run_after_learning_raises_no_alerts() {
    let start = Nanos(1_772_445_600_000_000_000);
    // 500 records a second at 60x: 0.12 s of event time per record.
    let mut sim = Simulator::new(7, start, 500, 60, 0);
    let mut decoder = Decoder::new(
        DecodeLimits {
            max_future_skew: Duration::from_secs(u32::MAX as u64),
            ..DecodeLimits::default()
        },
        ServiceKeyer::default(),
    );
    let mut detector = Detector::new(DetectConfig::default());
    let mut raised = Vec::new();
    let mut events = Vec::new();
    let mut monitored = 0;
    for i in 0..150_000i64 {
        let record = sim.next_record();
        events.clear();
        decoder
            .decode(
                Format::Auto,
                &record.payload,
                &Provenance::kafka(record.topic, 0, i),
                &mut events,
            )
            .unwrap();
        for e in &events {
            detector.observe(e, &mut raised);
        }
        if detector
            .services()
            .all(|(_, s)| s.phase == detect::Phase::Monitoring)
        {
            monitored += 1;
        }
    }
    assert!(
        monitored > 100_000,
        "the services monitored for only {monitored} records"
    );
    assert!(
        raised.is_empty(),
        "false positives: {:#?}",
        raised
            .iter()
            .map(|a| (&a.service, &a.subject))
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_demo_catches_and_explains_each_injected_attack() {
    let mut demo = Command::new(binary())
        .args([
            "demo",
            "--duration",
            "25s",
            "--speed",
            "600",
            "--http",
            "127.0.0.1:0",
            "--postgres",
            "127.0.0.1:0",
            "--report-every",
            "1h",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines: Vec<String> = BufReader::new(demo.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .collect();
    assert!(demo.wait().unwrap().success());
    let alerts: Vec<&String> = lines.iter().filter(|l| l.starts_with("ALERT ")).collect();
    let expected = [
        "ALERT Critical process shop/api: /bin/sh (parent /usr/local/bin/python3.12)",
        "ALERT High process shop/worker: /usr/bin/apt-get (parent /bin/sh)",
        "ALERT Medium file shop/checkout: write /tmp/.x/kworker",
        "ALERT Critical process shop/checkout: /tmp/.x/kworker (parent /bin/sh)",
        "ALERT High file shop/frontend: write /etc/cron.d/backdoor",
        "ALERT High network shop/postgres: connect tcp 203.0.113.50:4444",
        "ALERT Critical exec shop/api: mallory@example.com ran sh",
    ];
    for e in expected {
        assert!(
            alerts.iter().any(|a| a.as_str() == e),
            "missing {e:?} in:\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(
        alerts.len(),
        expected.len(),
        "unexpected alerts:\n{}",
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("was never seen for shop/api in 1h")),
        "no explanation:\n{}",
        lines.join("\n")
    );
}

#[test]
fn replay_writes_alerts_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fast.toml");
    std::fs::write(
        &config,
        "[detect]\nlearning-period = \"10m\"\nmin-learning-events = 3\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["replay", "--no-progress", "--config"])
        .arg(&config)
        .arg(fixtures().join("drift.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Alerts first, then the findings of the controls they and the events fired.
    let (alerts, findings): (Vec<_>, Vec<_>) =
        lines.into_iter().partition(|l| l["type"] == "alert");
    assert_eq!(alerts.len(), 3, "{alerts:#?}");
    assert!(findings.iter().all(|f| f["type"] == "finding"));
    let shell = alerts[0]["id"].as_str().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["alert"] == shell && f["status"] == "fail" && f["control"] == "DW-RT-015"),
        "the shell alert fails the application-spawned-shell control: {findings:#?}"
    );
    assert_eq!(
        alerts[0]["subject"],
        "/bin/sh (parent /usr/local/bin/python3.12)"
    );
    assert_eq!(alerts[0]["count"], 2);
    assert_eq!(alerts[0]["severity"], "critical");
    assert_eq!(alerts[0]["mitre"]["id"], "T1059.004");
    assert!(String::from_utf8_lossy(&out.stderr).contains("alerts: 3"));
}
