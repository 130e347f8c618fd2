//! A real Alertmanager (Debian's `prometheus-alertmanager`) receives driftwatch's alerts
//! and routes them to a webhook receiver on loopback: the alert arrives with its
//! labels, the periodic re-sends of a firing alert do not make new notifications, and
//! resolving it in driftwatch resolves it there.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::common::{Killed, eventually, free_port, require_program, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_routes_driftwatch_alerts_without_duplicates_and_resolves_them() {
    let binary = require_program("prometheus-alertmanager");
    let dir = tempfile::tempdir().unwrap();

    // The receiver Alertmanager routes to.
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/am",
        axum::routing::post(move |body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                state
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                "ok"
            }
        }),
    );
    let receiver = serve(app).await;

    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: test\n  group_by: ['alertname', 'service', 'dedup_key']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: test\n    webhook_configs:\n      - url: http://{receiver}/am\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let _am = Killed(
        Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let am = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready = Arc::new(Mutex::new(false));
    for _ in 0..100 {
        if client
            .get(format!("{am}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            *ready.lock().unwrap() = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(*ready.lock().unwrap(), "alertmanager did not become ready");

    // driftwatch's notifier with an Alertmanager sink that re-sends every second.
    let notify_config: notify::NotifyConfig = toml::from_str(&format!(
        "outbox-dir = {:?}\nlink-base = \"http://127.0.0.1:8484\"\n[[sink]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"{am}\"\nresend-interval = \"1s\"\nrate = 20.0\n[[route]]\nname = \"all\"\nsink = \"am\"\n",
        dir.path().join("outbox").display().to_string()
    ))
    .unwrap();
    let notifier =
        notify::Notifier::start(&notify_config, notify::NotifyMetrics::default()).unwrap();
    let alert: detect::Alert = serde_json::from_value(serde_json::json!({
        "id": "1d73a3fec81cda70", "time": "2026-03-02T10:13:00Z", "last_seen": "2026-03-02T10:13:00Z",
        "service": "shop/api", "kind": "process", "severity": "critical",
        "subject": "/bin/sh (parent /usr/local/bin/python3.12)", "dimension": "process",
        "explanation": "never seen during learning", "evidence": [], "dedup_key": "9f1c2b7a5e3d4c21",
        "count": 1, "status": "open"
    }))
    .unwrap();
    notifier.submit(notify::Item::from_alert(&alert)).await;

    let firing = |seen: &[Value]| {
        seen.iter()
            .filter(|n| n["status"] == "firing")
            .cloned()
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(20), "the firing notification", || {
        !firing(&seen.lock().unwrap()).is_empty()
    })
    .await;
    let first = firing(&seen.lock().unwrap())[0].clone();
    let labels = &first["alerts"][0]["labels"];
    assert_eq!(labels["alertname"], "DriftwatchDrift");
    assert_eq!(labels["service"], "shop/api");
    assert_eq!(labels["kind"], "process");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(
        first["alerts"][0]["generatorURL"],
        "http://127.0.0.1:8484/api/v1/alerts/1d73a3fec81cda70"
    );
    // Several re-sends later, still one notification: Alertmanager knows it is the same.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let statuses = notifier.statuses();
    assert!(
        statuses.iter().all(|s| s.state == "delivered"),
        "{statuses:?}"
    );
    let alerts: Vec<Value> = client
        .get(format!("{am}/api/v2/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(firing(&seen.lock().unwrap()).len(), 1);

    // Resolved in driftwatch: Alertmanager ends it and tells its receiver.
    let mut resolved = alert.clone();
    resolved.status = detect::AlertStatus::Resolved;
    notifier.submit(notify::Item::from_alert(&resolved)).await;
    eventually(Duration::from_secs(20), "the resolved notification", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|n| n["status"] == "resolved")
    })
    .await;
    let seen = seen.lock().unwrap();
    let resolved = seen.iter().find(|n| n["status"] == "resolved").unwrap();
    assert_eq!(
        resolved["alerts"][0]["labels"]["dedup_key"],
        "9f1c2b7a5e3d4c21"
    );
    assert_eq!(
        firing(&seen).len(),
        1,
        "no duplicate firing notification: {seen:#?}"
    );
}

/// The Prometheus rules shipped for driftwatch's own delivery health pass `promtool`'s
/// checks and unit tests, and name metrics driftwatch exports.
#[tokio::test]
async fn the_delivery_alerting_rules_pass_promtool_and_name_real_metrics() {
    let promtool = require_program("promtool");
    let dir =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("grafana/prometheus");
    for args in [
        ["check", "rules", "driftwatch-rules.yml"],
        ["test", "rules", "driftwatch-rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut registry = driftwatch::telemetry::registry();
    let metrics = notify::NotifyMetrics::register(&mut registry);
    let outbox = tempfile::tempdir().unwrap();
    let config: notify::NotifyConfig = toml::from_str(&format!(
        "outbox-dir = {:?}\nmax-pending = 500\n[[sink]]\nname = \"s\"\ntype = \"slack\"\nurl = \"http://127.0.0.1:1/\"\n",
        outbox.path().display().to_string()
    ))
    .unwrap();
    let _notifier = notify::Notifier::start(&config, metrics).unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("driftwatch_notifications_outbox_limit 500"),
        "{text}"
    );
    let rules = std::fs::read_to_string(dir.join("driftwatch-rules.yml")).unwrap();
    for name in [
        "driftwatch_notifications_refused_total",
        "driftwatch_notifications_pending",
        "driftwatch_notifications_failed_total",
    ] {
        assert!(rules.contains(name));
        // Counters are declared without `_total`; their samples carry it.
        let declared = name.trim_end_matches("_total");
        assert!(
            text.contains(&format!("# TYPE {declared} ")),
            "{declared} not exported:\n{text}"
        );
    }
}
