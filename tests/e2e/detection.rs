//! Detection end to end: the demo's attacks are caught and explained, a long benign run
//! raises nothing, and `replay` writes alerts as JSON lines.

use ingest::Nanos;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;

use crate::common::{driftwatch, exec_record, fixtures, replay};

/// The simulated shop, with its churn, for `hours` of event time at `rate` records a
/// second of wall time at 60x (at 100, 0.6 s of event time a record), the attacks
/// injected from `attacks_from` every three hours.
fn simulate_at(seed: u64, hours: i64, attacks_from: i64, rate: u64) -> simulator::DetectionRun {
    let start = Nanos(1_772_445_600_000_000_000);
    let hour = 3600 * 1_000_000_000i64;
    simulator::detect(
        seed,
        start,
        Nanos(start.0 + hours * hour),
        rate,
        Nanos(start.0 + attacks_from * hour),
    )
}

fn simulate(seed: u64, hours: i64, attacks_from: i64) -> simulator::DetectionRun {
    simulate_at(seed, hours, attacks_from, 100)
}

/// Nothing above low but the attacks, and each attack alerted on its own service.
fn quiet_but_each_attack(seed: u64, run: &simulator::DetectionRun) {
    let (detector, raised, injected) = (&run.detector, &run.alerts, &run.injected);
    assert!(
        detector
            .services()
            .all(|(_, s)| s.phase == detect::Phase::Monitoring),
        "seed {seed}: a service never finished learning"
    );
    // One baseline per workload, whatever its pods' names and the format that named them.
    let mut services: Vec<&String> = detector.services().map(|(name, _)| name).collect();
    services.sort();
    assert_eq!(
        services,
        [
            "billing-cron",
            "shop/api",
            "shop/checkout",
            "shop/frontend",
            "shop/postgres",
            "shop/worker"
        ],
        "seed {seed}"
    );
    assert_eq!(injected.len(), 6, "seed {seed}: {injected:?}");
    let attack_of = |a: &detect::Alert| injected.iter().find(|i| i.explains(&a.service, a.time));
    let noise: Vec<_> = raised
        .iter()
        .filter(|a| a.severity > detect::Severity::Low && attack_of(a).is_none())
        .map(|a| (&a.service, a.severity, &a.subject, &a.explanation))
        .collect();
    assert!(noise.is_empty(), "seed {seed}: false positives: {noise:#?}");
    for attack in injected {
        assert!(
            raised
                .iter()
                .any(|a| a.severity > detect::Severity::Low
                    && attack_of(a).is_some_and(|i| i == attack)),
            "seed {seed}: attack {} ({}) raised nothing above low",
            attack.attack,
            simulator::ATTACKS[attack.attack]
        );
    }
}

/// A day of the simulated shop after its hour of learning, with temp files of several
/// runtimes, rotating object-storage and CDN addresses, a cleanup job, rescheduled pods
/// and image rollouts: nothing above low but the attacks, and each attack alerted on
/// its own service within three minutes.
#[test]
fn a_churning_day_raises_nothing_above_low_but_each_attack() {
    for seed in [7, 11] {
        quiet_but_each_attack(seed, &simulate(seed, 25, 2));
    }
}

/// The same day at a fifth of the rate: each service learns from a few hundred events
/// in its hour, so it has seen only a few of its temp names and rotating addresses,
/// often fewer than a shape or a network is learned from. What it meets later of their
/// kind is reported at low until it has seen enough to learn it.
#[test]
fn a_sparsely_learned_churning_day_raises_nothing_above_low_but_each_attack() {
    for seed in [7, 11] {
        quiet_but_each_attack(seed, &simulate_at(seed, 25, 2, 20));
    }
}

/// The generalisations behind that quiet day are in the baseline, explained: the
/// temp-file shapes and the object-storage network, each with what it was learned from.
#[test]
fn the_shop_learns_its_temp_file_shapes_and_rotating_networks() {
    let detector = simulate(7, 2, 99).detector;
    let entries = |service: &str| {
        detector
            .service(service)
            .unwrap()
            .baseline
            .iter()
            .map(|(k, e)| (k.key.clone(), e.learned_from))
            .collect::<Vec<_>>()
    };
    let worker = entries("shop/worker");
    // A key that starts and ends so; the alphabet between may hold `_` and `-`, which
    // the first names cannot rule out.
    let learned = |list: &[(String, u32)], key: &str| {
        let (start, end) = key.split_once('*').unwrap_or((key, ""));
        list.iter()
            .find(|(k, _)| k.starts_with(start) && k.ends_with(end) && k.len() > key.len() - 2)
            .map(|(_, n)| *n)
            .unwrap_or_else(|| panic!("no {key} in {list:#?}"))
    };
    assert!(learned(&worker, "write /tmp/tmp<[a-z0-9_*]{8}>") >= 4);
    assert!(learned(&worker, "write /tmp/tmp.<[A-Za-z0-9*]{10}>") >= 4);
    assert!(learned(&worker, "connect tcp 52.216.8.0/23:443*") >= 4);
    let checkout = entries("shop/checkout");
    assert!(learned(&checkout, "write /tmp/receipt<[0-9]+>.pdf*") >= 4);
    let api = entries("shop/api");
    assert!(learned(&api, "connect tcp 151.101.0.0/22:443*") >= 4);
    let frontend = entries("shop/frontend");
    assert!(
        learned(
            &frontend,
            "connect tcp d<[a-z0-9*]{13}>.cdn.acme-assets.net:443"
        ) >= 4
    );
    // Exact destinations a service only ever used a few of stay exact.
    assert!(api.iter().any(|(k, _)| k == "connect tcp 10.96.20.15:5432"));
}

#[test]
fn the_demo_catches_and_explains_each_injected_attack() {
    let mut demo = driftwatch()
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
    // One finding per cause: the shell fires DW-RT-015 by its event and by its alert.
    let findings: Vec<&String> = lines.iter().filter(|l| l.starts_with("FINDING ")).collect();
    assert!(
        findings
            .iter()
            .any(|f| f.starts_with("FINDING fail DW-RT-015 shop/api")),
        "no finding for the shell:\n{}",
        lines.join("\n")
    );
    let mut unique = findings.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        findings.len(),
        "a finding printed twice:\n{}",
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
    let replayed = replay(
        [
            std::ffi::OsStr::new("--config"),
            config.as_os_str(),
            fixtures().join("drift.jsonl").as_os_str(),
        ],
        None,
    );
    let lines = replayed.lines;
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
    assert!(replayed.stderr.contains("alerts: 3"), "{}", replayed.stderr);
}

/// Native records of one service reaching a CDN whose edge names rotate, and Kafka
/// brokers by their StatefulSet names: `replay` through the real binary.
#[test]
fn rotating_named_destinations_stay_quiet_and_a_new_domain_pages() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fast.toml");
    std::fs::write(
        &config,
        "[detect]\nlearning-period = \"10m\"\nmin-learning-events = 3\n[compliance]\nenabled = false\n",
    )
    .unwrap();
    // SplitMix64: the edge names are random, the run the same every time.
    let mut state = 0x5eed_u64;
    let mut label = || {
        (0..13)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[((z ^ (z >> 31)) % 36) as usize])
            })
            .collect::<String>()
    };
    let start = 1_772_445_600i64; // 2026-03-02T10:00:00Z
    let workload =
        r#"{"namespace":"shop","pod":"assets-6d9f-x2x7q","container_id":"4c1d2e3f5a6b"}"#;
    let record = |second: i64, kind: &str| {
        format!(
            r#"{{"time":{},"workload":{workload},{kind}}}"#,
            (start + second) * 1_000_000_000
        )
    };
    let connect = |second: i64, address: &str, name: &str, port: u16| {
        record(
            second,
            &format!(
                r#""kind":"network","direction":"connect","address":"{address}","port":{port},"protocol":"tcp","dns_name":"{name}","process":{{"exe":"/app/assets"}}"#
            ),
        )
    };
    let mut lines = vec![record(
        0,
        r#""kind":"process_exec","process":{"exe":"/app/assets","args":["--serve"]}"#,
    )];
    // Learning: two edges and two brokers, too few for a shape.
    lines.push(connect(
        60,
        "13.32.1.5",
        &format!("d{}.cdn.example.net", label()),
        443,
    ));
    lines.push(connect(
        120,
        "13.32.8.9",
        &format!("d{}.cdn.example.net", label()),
        443,
    ));
    lines.push(connect(
        180,
        "10.96.40.10",
        "kafka-0.kafka.shop.svc.cluster.local",
        9092,
    ));
    lines.push(connect(
        240,
        "10.96.40.11",
        "kafka-1.kafka.shop.svc.cluster.local",
        9092,
    ));
    // Monitoring: a day of new edges, the third broker, then a new domain.
    for i in 0..200 {
        let second = 900 + i * 400;
        let address = format!("13.32.{}.{}", i % 200, 1 + i % 250);
        lines.push(connect(
            second,
            &address,
            &format!("d{}.cdn.example.net", label()),
            443,
        ));
    }
    lines.push(connect(
        81_000,
        "10.96.40.12",
        "kafka-2.kafka.shop.svc.cluster.local",
        9092,
    ));
    lines.push(connect(
        82_000,
        "10.96.40.13",
        "kafka-3.kafka.shop.svc.cluster.local",
        9092,
    ));
    lines.push(connect(
        83_000,
        "64.225.45.153",
        "raiz3gjkgtfhkkc.not-reverse-shell.com",
        443,
    ));
    let input = lines.join("\n") + "\n";
    let replayed = replay(
        [
            std::ffi::OsStr::new("--format"),
            std::ffi::OsStr::new("native"),
            std::ffi::OsStr::new("--config"),
            config.as_os_str(),
            std::ffi::OsStr::new("-"),
        ],
        Some(&input),
    );
    let alerts: Vec<&serde_json::Value> = replayed
        .lines
        .iter()
        .filter(|l| l["type"] == "alert")
        .collect();
    let above_low: Vec<&serde_json::Value> = alerts
        .iter()
        .copied()
        .filter(|a| a["severity"] != "low")
        .collect();
    assert_eq!(above_low.len(), 1, "{above_low:#?}");
    assert_eq!(
        above_low[0]["subject"],
        "connect tcp raiz3gjkgtfhkkc.not-reverse-shell.com:443"
    );
    assert_eq!(above_low[0]["severity"], "high");
    // The edges' shape is learned from kin, and said so.
    assert!(
        alerts.iter().any(|a| a["explanation"]
            .as_str()
            .is_some_and(|e| e.contains(".cdn.example.net:443` is learned"))),
        "{alerts:#?}"
    );
    assert!(
        alerts.len() <= 6,
        "a few low alerts, not one per edge: {alerts:#?}"
    );
}

/// The same records, read partition after partition (as a member catching up on a
/// backlog reads them) or in time order, raise the same alerts. Each service's server
/// and worker write to different partitions (here, files); the worker's partition is
/// read after the server's has gone half an hour past the end of learning.
#[test]
fn partitions_read_one_after_another_raise_what_time_order_raises() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fast.toml");
    std::fs::write(
        &config,
        "[detect]\nlearning-period = \"10m\"\nmin-learning-events = 3\n[compliance]\nenabled = false\n",
    )
    .unwrap();
    let (mut servers, mut workers, mut in_order) = (Vec::new(), Vec::new(), Vec::new());
    for minute in 0..40 {
        for service in 0..3 {
            let server = exec_record(service, minute, 0, "/app/bin/server");
            let worker = exec_record(service, minute, 30, "/app/bin/worker");
            servers.push(server.clone());
            workers.push(worker.clone());
            in_order.extend([server, worker]);
            if minute == 25 && service == 1 {
                let tool = exec_record(service, minute, 45, "/usr/bin/tool");
                workers.push(tool.clone());
                in_order.push(tool);
            }
        }
    }
    // Backdated into learning behind its own partition: judged either way.
    let backdated = exec_record(2, 5, 10, "/usr/bin/nc");
    servers.push(backdated.clone());
    in_order.push(backdated);
    let write = |name: &str, lines: &[String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    };
    let alerts = |files: &[PathBuf]| -> BTreeSet<(String, String)> {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--format".as_ref(),
            "native".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ];
        args.extend(files.iter().map(|f| f.as_os_str()));
        replay(args, None)
            .of_type("alert")
            .iter()
            .map(|a| {
                (
                    a["service"].as_str().unwrap().to_owned(),
                    a["subject"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let in_time_order = alerts(&[write("all.jsonl", &in_order)]);
    let expected: BTreeSet<(String, String)> = [
        ("shop/svc-1", "/usr/bin/tool (parent /app/bin/entrypoint)"),
        ("shop/svc-2", "/usr/bin/nc (parent /app/bin/entrypoint)"),
    ]
    .into_iter()
    .map(|(s, t)| (s.to_owned(), t.to_owned()))
    .collect();
    assert_eq!(in_time_order, expected);
    let one_after_another = alerts(&[
        write("servers.jsonl", &servers),
        write("workers.jsonl", &workers),
    ]);
    assert_eq!(one_after_another, in_time_order);
}
