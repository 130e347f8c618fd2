//! A crash with deliveries pending: the demo delivers to a receiver that is down, is
//! killed (SIGKILL, no graceful stop) while its outbox holds notifications, and is
//! started again on the same outbox with the receiver up. Every notification that was
//! pending reaches the receiver, which deduplicates by `webhook-id`; none is lost.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};

use crate::common::{Killed, driftwatch, eventually, serve};

fn demo(reports: &Path, webhook: &str) -> Killed {
    Killed(
        driftwatch()
            .args([
                "demo",
                "--speed",
                "600",
                "--http",
                "127.0.0.1:0",
                "--postgres",
                "127.0.0.1:0",
                "--report-every",
                "1h",
                "--webhook",
                webhook,
                "--reports",
            ])
            .arg(reports)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The ids of the notifications the outbox holds.
fn pending(outbox: &Path) -> Vec<String> {
    notify::outbox::pending_ids(outbox)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_delivers_every_pending_notification_after_restart() {
    let up = Arc::new(AtomicBool::new(false));
    // Accepted deliveries by webhook-id.
    let delivered: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (state_up, state_delivered) = (up.clone(), delivered.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let (up, delivered) = (state_up.clone(), state_delivered.clone());
            async move {
                if !up.load(Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                *delivered.lock().unwrap().entry(id).or_default() += 1;
                StatusCode::OK
            }
        }),
    );
    let addr = serve(app).await;
    let webhook = format!("http://{addr}/hook");

    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let mut first = demo(dir.path(), &webhook);
    eventually(
        Duration::from_secs(90),
        "notifications pending in the outbox",
        || pending(&outbox).len() >= 3,
    )
    .await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let before_restart = pending(&outbox);
    assert!(before_restart.len() >= 3);

    up.store(true, Ordering::SeqCst);
    let _second = demo(dir.path(), &webhook);
    eventually(
        Duration::from_secs(90),
        "every pending notification delivered",
        || {
            let delivered = delivered.lock().unwrap();
            before_restart.iter().all(|id| delivered.contains_key(id))
        },
    )
    .await;
    // Delivered ones leave the outbox; each was accepted once.
    eventually(
        Duration::from_secs(30),
        "the old entries to leave the outbox",
        || {
            let now = pending(&outbox);
            before_restart.iter().all(|id| !now.contains(id))
        },
    )
    .await;
    let delivered = delivered.lock().unwrap();
    for id in &before_restart {
        assert_eq!(delivered[id], 1, "{id} accepted {} times", delivered[id]);
    }
}
