//! A full outbox raises an alert about driftwatch itself: `driftwatch run` delivers to a
//! PagerDuty Events v2 receiver (one event per notification) that is down, its outbox
//! (max-pending 5) fills and refuses notifications, and driftwatch opens a critical
//! `delivery` alert (service `driftwatch`) in its API. That alert is delivered too,
//! from the room the outbox keeps for it, once the receiver is back; when the outbox
//! has drained the alert is resolved, in the API and at the receiver.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use crate::common::{
    Killed, cluster, driftwatch, eventually, free_port, http_get, produce, sample, serve,
};

/// Native records: 11 minutes of one service's usual process, then 30 new binaries
/// (each a drift alert once learning is over).
fn records() -> Vec<String> {
    let start = chrono::Utc::now().timestamp_nanos_opt().unwrap() - 30 * 60 * 1_000_000_000;
    let line = |i: i64, exe: &str| {
        format!(
            r#"{{"time":{},"service":"shop/api","kind":"process_exec","process":{{"exe":"{exe}","parent_exe":"/usr/local/bin/gunicorn"}}}}"#,
            start + i * 1_000_000_000
        )
    };
    let mut out: Vec<String> = (0..660)
        .map(|i| line(i, "/usr/local/bin/python3.12"))
        .collect();
    out.extend((0..30).map(|n| line(660 + n, &format!("/tmp/.cache/x{n}"))));
    out
}

fn alerts(addr: &str, kind: &str) -> Vec<Value> {
    let body = http_get(addr, &format!("/api/v1/alerts?kind={kind}")).unwrap_or_default();
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["alerts"].as_array().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_raises_a_delivered_alert_that_resolves_when_it_drains() {
    // The receiver: 503 while down; keeps every event it accepts.
    let up = Arc::new(AtomicBool::new(false));
    let events: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (state_up, state_events) = (up.clone(), events.clone());
    let app = axum::Router::new().route(
        "/v2/enqueue",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (up, events) = (state_up.clone(), state_events.clone());
            async move {
                if !up.load(Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                events
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                StatusCode::ACCEPTED
            }
        }),
    );
    let receiver = serve(app).await;

    let (_cluster, brokers) = cluster("events", 1);
    produce(&brokers, "events", records());

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("driftwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"outbox-test\"\n\
             [[kafka.topics]]\nname = \"events\"\nformat = \"native\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n[postgres]\nlisten = \"127.0.0.1:0\"\n\
             [detect]\nlearning-period = \"10m\"\nmin-learning-events = 20\n\
             [compliance]\nenabled = false\n\
             [notify]\noutbox-dir = {:?}\nmax-pending = 5\n\
             [notify.retry]\ninitial = \"100ms\"\nmax = \"300ms\"\n\
             [[notify.sink]]\nname = \"hook\"\ntype = \"pagerduty\"\nurl = \"http://{receiver}/v2/enqueue\"\n\
             routing-key = \"R0UT1NGKEY\"\nrate = 1000.0\n\
             [[notify.route]]\nname = \"all\"\nsink = \"hook\"\n",
            dir.path().join("outbox").display().to_string()
        ),
    )
    .unwrap();
    let _daemon = Killed(
        driftwatch()
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{port}");

    // Thirty drift alerts, five places: the outbox fills and driftwatch says so.
    eventually(
        Duration::from_secs(60),
        "an open delivery alert about driftwatch",
        || {
            alerts(&addr, "delivery")
                .iter()
                .any(|a| a["status"] == "open")
        },
    )
    .await;
    let alert = alerts(&addr, "delivery").remove(0);
    assert_eq!(alert["service"], "driftwatch");
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["subject"], "notification outbox full");
    let explanation = alert["explanation"].as_str().unwrap();
    assert!(explanation.contains("max-pending = 5"), "{explanation}");
    let metrics = http_get(&addr, "/metrics").unwrap();
    let refused = sample(
        &metrics,
        r#"driftwatch_notifications_refused_total{sink="hook"}"#,
    )
    .unwrap();
    assert!(refused >= 1.0, "{refused}");
    assert_eq!(
        sample(
            &metrics,
            r#"driftwatch_alerts_raised_total{kind="delivery",severity="critical"}"#
        ),
        Some(1.0)
    );

    // The receiver comes back: the held notifications go out, the alert about the
    // outbox among them, and once the outbox has drained the alert is resolved.
    up.store(true, Ordering::SeqCst);
    eventually(
        Duration::from_secs(60),
        "the delivery alert resolved in the API",
        || {
            alerts(&addr, "delivery")
                .iter()
                .any(|a| a["id"] == alert["id"] && a["status"] == "resolved")
        },
    )
    .await;
    let key = format!("driftwatch-{}", alert["dedup_key"].as_str().unwrap());
    let about = |action: &str| {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["dedup_key"] == key.as_str() && e["event_action"] == action)
            .count()
    };
    eventually(
        Duration::from_secs(30),
        "the receiver to get the alert and its resolution",
        || about("trigger") == 1 && about("resolve") == 1,
    )
    .await;
    let events = events.lock().unwrap();
    let trigger = events
        .iter()
        .find(|e| e["dedup_key"] == key.as_str())
        .unwrap();
    assert_eq!(trigger["payload"]["group"], "delivery");
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(
        trigger["payload"]["summary"],
        "driftwatch: notification outbox full"
    );
    // Drift alerts were held too (the first five), and delivered.
    assert!(
        events
            .iter()
            .filter(|e| e["payload"]["group"] == "process")
            .count()
            >= 5,
        "{events:?}"
    );
}
