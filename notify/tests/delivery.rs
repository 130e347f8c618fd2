//! Delivery against real HTTP receivers on loopback that fail on demand: retries with
//! backoff, `Retry-After`, final 4xx, a dead sink beside a live one, grouping, signed
//! webhooks, and an outbox that resumes after its runtime is torn down.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use notify::sign::Secret;
use notify::{Item, Notifier, NotifyConfig, NotifyMetrics};
use serde_json::{Value, json};

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// What a receiver saw: when, the headers that matter, the body.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    status: u16,
    id: Option<String>,
    signature_ok: Option<bool>,
    body: Value,
}

#[derive(Clone, Default)]
struct Receiver {
    /// Statuses to answer, in order (then 200); `(429, n)` adds `Retry-After: n`.
    script: Arc<Mutex<VecDeque<(u16, Option<u64>)>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    async fn start(script: &[(u16, Option<u64>)]) -> (String, Receiver) {
        let r = Receiver {
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            seen: Arc::default(),
        };
        let state = r.clone();
        let handler = move |headers: HeaderMap, body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let (status, after) = state
                    .script
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or((200, None));
                let header = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let signature_ok = header("webhook-signature").map(|sig| {
                    let ts: i64 = header("webhook-timestamp").unwrap().parse().unwrap();
                    let fresh = (chrono::Utc::now().timestamp() - ts).abs() <= 300;
                    fresh
                        && Secret::parse(SECRET).unwrap().verify(
                            &header("webhook-id").unwrap(),
                            ts,
                            &body,
                            &sig,
                        )
                });
                state.seen.lock().unwrap().push(Seen {
                    at: Instant::now(),
                    status,
                    id: header("webhook-id"),
                    signature_ok,
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                let mut response = StatusCode::from_u16(status).unwrap().into_response();
                if let Some(s) = after {
                    response.headers_mut().insert(
                        "retry-after",
                        HeaderValue::from_str(&s.to_string()).unwrap(),
                    );
                }
                response
            }
        };
        // Webhooks and Slack post to /hook; Alertmanager sinks to /hook/api/v2/alerts.
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(handler.clone()))
            .route("/hook/api/v2/alerts", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/hook"), r)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn item(id: &str, service: &str) -> Item {
    Item {
        source: "alert".into(),
        id: id.into(),
        dedup_key: format!("k-{id}"),
        service: service.into(),
        kind: "process".into(),
        severity: detect::Severity::High,
        summary: format!("process drift in {service}: {id}"),
        details: "never seen during learning".into(),
        time: "2026-03-02T10:13:00Z".into(),
        resolved: false,
        references: vec![],
        mitre: None,
    }
}

fn config(outbox: &std::path::Path, sinks: &str, routes: &str) -> NotifyConfig {
    toml::from_str(&format!(
        "outbox-dir = {:?}\n[retry]\ninitial = \"50ms\"\nmax = \"200ms\"\n{sinks}\n{routes}",
        outbox.display().to_string()
    ))
    .unwrap()
}

/// Items a Slack receiver got, over all its messages (one `• ` line each).
fn slack_items(rx: &Receiver) -> usize {
    rx.seen()
        .iter()
        .map(|s| {
            s.body["text"]
                .as_str()
                .unwrap_or_default()
                .matches("\n• ")
                .count()
        })
        .sum()
}

/// Items a notifier has delivered, over all sinks.
fn delivered(notifier: &Notifier) -> usize {
    notifier
        .statuses()
        .iter()
        .filter(|s| s.state == "delivered")
        .count()
}

async fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn failures_are_retried_with_backoff_and_retry_after_then_delivered_once_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (url, receiver) =
        Receiver::start(&[(500, None), (503, None), (429, Some(1)), (200, None)]).await;
    let cfg = config(
        dir.path(),
        &format!(
            "[[sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nrate = 100.0"
        ),
        "[[route]]\nname = \"all\"\nsink = \"hook\"",
    );
    let notifier = Notifier::start(&cfg, NotifyMetrics::default()).unwrap();
    notifier.submit(item("a1", "shop/api")).await;
    until("delivery", Duration::from_secs(10), || {
        receiver.seen().iter().any(|s| s.status == 200)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = receiver.seen();
    assert_eq!(
        seen.iter().map(|s| s.status).collect::<Vec<_>>(),
        [500, 503, 429, 200]
    );
    // One id across every attempt, each attempt signed and fresh.
    assert!(
        seen.iter()
            .all(|s| s.id == seen[0].id && s.signature_ok == Some(true))
    );
    // Retry-After: 1 was honoured.
    assert!(seen[3].at - seen[2].at >= Duration::from_millis(950));
    assert_eq!(seen[3].body["data"]["items"][0]["id"], "a1");
    assert_eq!(seen[3].body["id"], json!(seen[0].id));
    let status = notifier.statuses();
    assert_eq!(status.len(), 1);
    assert_eq!(
        (status[0].state.as_str(), status[0].attempts),
        ("delivered", 4)
    );
    // Delivered means gone from the outbox.
    until("the outbox to empty", Duration::from_secs(2), || {
        notify::outbox::pending_ids(dir.path()).is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_400_is_final_and_a_dead_sink_holds_up_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let (live, live_rx) = Receiver::start(&[]).await;
    let (refusing, refusing_rx) = Receiver::start(&[(400, None)]).await;
    let cfg = config(
        dir.path(),
        &format!(
            "[[sink]]\nname = \"dead\"\ntype = \"slack\"\nurl = \"http://127.0.0.1:1/hook\"\n\
             [[sink]]\nname = \"live\"\ntype = \"slack\"\nurl = \"{live}\"\nrate = 100.0\n\
             [[sink]]\nname = \"refusing\"\ntype = \"webhook\"\nurl = \"{refusing}\""
        ),
        "[[route]]\nname = \"a\"\nsink = \"dead\"\n[[route]]\nname = \"b\"\nsink = \"live\"\n\
         [[route]]\nname = \"c\"\nsink = \"refusing\"\nmin-severity = \"critical\"",
    );
    let notifier = Notifier::start(&cfg, NotifyMetrics::default()).unwrap();
    let mut critical = item("c1", "shop/db");
    critical.severity = detect::Severity::Critical;
    notifier.submit(item("a1", "shop/api")).await;
    notifier.submit(critical).await;
    until("both on the live sink", Duration::from_secs(5), || {
        slack_items(&live_rx) == 2
    })
    .await;
    until("the refusal", Duration::from_secs(5), || {
        notifier.statuses().iter().any(|s| s.state == "failed")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The refusing receiver saw the critical one once, never again, and only it.
    assert_eq!(refusing_rx.seen().len(), 1);
    assert_eq!(refusing_rx.seen()[0].body["data"]["items"][0]["id"], "c1");
    let failed = std::fs::read_to_string(dir.path().join("failed.jsonl")).unwrap();
    assert_eq!(failed.lines().count(), 1);
    assert!(failed.contains("400 Bad Request") && failed.contains("\"c1\""));
    let statuses = notifier.statuses();
    let dead: Vec<_> = statuses.iter().filter(|s| s.sink == "dead").collect();
    assert_eq!(dead.len(), 2);
    // Still pending there, in order: the first is being retried, the second waits.
    assert!(dead.iter().all(|s| s.state == "pending"), "{dead:?}");
    assert!(
        dead.iter().any(|s| s.item == "a1" && s.attempts >= 2),
        "{dead:?}"
    );
    assert!(
        live_rx.seen()[0].body["text"]
            .as_str()
            .unwrap()
            .contains("process drift")
    );
}

#[tokio::test]
async fn a_burst_about_one_service_becomes_one_notification() {
    let dir = tempfile::tempdir().unwrap();
    let (url, rx) = Receiver::start(&[]).await;
    let cfg = config(
        dir.path(),
        &format!(
            "[[sink]]\nname = \"chat\"\ntype = \"slack\"\nurl = \"{url}\"\ngroup-window = \"300ms\""
        ),
        "[[route]]\nname = \"all\"\nsink = \"chat\"",
    );
    let notifier = Notifier::start(&cfg, NotifyMetrics::default()).unwrap();
    for id in ["a1", "a2", "a3"] {
        notifier.submit(item(id, "shop/api")).await;
    }
    // Later, so that its group is due later and goes out on its own.
    tokio::time::sleep(Duration::from_millis(150)).await;
    notifier.submit(item("b1", "shop/db")).await;
    until("two messages", Duration::from_secs(5), || {
        rx.seen().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let texts: Vec<String> = rx
        .seen()
        .iter()
        .map(|s| s.body["text"].as_str().unwrap().to_owned())
        .collect();
    let api = texts
        .iter()
        .find(|t| t.contains("3 alerts about shop/api"))
        .expect("grouped");
    for id in ["a1", "a2", "a3"] {
        assert!(api.contains(id));
    }
    assert!(texts.iter().any(|t| t.contains("shop/db: b1")));
}

#[test]
fn the_outbox_resumes_after_the_runtime_is_torn_down() {
    let dir = tempfile::tempdir().unwrap();
    // First life: the receiver is down; the notification waits in the outbox.
    let first = tokio::runtime::Runtime::new().unwrap();
    first.block_on(async {
        let cfg = config(
            dir.path(),
            "[[sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/hook\"",
            "[[route]]\nname = \"all\"\nsink = \"hook\"",
        );
        let notifier = Notifier::start(&cfg, NotifyMetrics::default()).unwrap();
        notifier.submit(item("a1", "shop/api")).await;
        until("an attempt", Duration::from_secs(5), || {
            notifier.statuses().iter().any(|s| s.attempts >= 1)
        })
        .await;
    });
    first.shutdown_background();
    // Second life: the receiver is up; the same notification arrives, once.
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let (url, rx) = Receiver::start(&[]).await;
        let cfg = config(
            dir.path(),
            &format!("[[sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\""),
            "[[route]]\nname = \"all\"\nsink = \"hook\"",
        );
        let _notifier = Notifier::start(&cfg, NotifyMetrics::default()).unwrap();
        until("the resumed delivery", Duration::from_secs(5), || {
            rx.seen().len() == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = rx.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].body["data"]["items"][0]["id"], "a1");
        assert!(seen[0].id.as_deref().unwrap().starts_with("msg_"));
        assert_eq!(seen[0].signature_ok, None, "no secret, no signature");
    });
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_the_retry_keeps_the_id() {
    let dir = tempfile::tempdir().unwrap();
    // The first answer comes after a second; the sink waits 200 ms.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let state = state.clone();
            async move {
                let first = state.lock().unwrap().is_empty();
                let id = headers["webhook-id"].to_str().unwrap().to_owned();
                state.lock().unwrap().push(id);
                if first {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let cfg = config(
        dir.path(),
        &format!(
            "[[sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{addr}/hook\"\ntimeout = \"200ms\""
        ),
        "[[route]]\nname = \"all\"\nsink = \"hook\"",
    );
    let notifier = Notifier::start(&cfg, NotifyMetrics::default()).unwrap();
    notifier.submit(item("a1", "shop/api")).await;
    until(
        "delivery after the timeout",
        Duration::from_secs(10),
        || notifier.statuses().iter().any(|s| s.state == "delivered"),
    )
    .await;
    let status = &notifier.statuses()[0];
    assert!(status.attempts >= 2, "{status:?}");
    let seen = seen.lock().unwrap();
    // Both attempts carried the same id, so a receiver that deduplicates keeps one.
    assert!(
        seen.len() >= 2 && seen.iter().all(|id| *id == seen[0]),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_full_outbox_reports_itself_keeps_room_for_driftwatchs_own_alert_and_clears() {
    let dir = tempfile::tempdir().unwrap();
    // Down for the first six attempts, then up.
    let (url, receiver) = Receiver::start(&[(503, None); 6]).await;
    let mut cfg = config(
        dir.path(),
        &format!("[[sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\nrate = 1000.0\n"),
        "[[route]]\nname = \"all\"\nsink = \"hook\"\n",
    );
    cfg.max_pending = 2;
    let notifier = Notifier::start(&cfg, NotifyMetrics::default()).unwrap();
    let mut health = notifier.outbox_health();
    assert!(!health.borrow().full);
    // Apart (items routed together to a webhook would be one notification).
    for id in ["a1", "a2", "a3", "a4"] {
        notifier.submit(item(id, "shop/api")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::timeout(Duration::from_secs(5), health.wait_for(|h| h.refused == 2))
        .await
        .expect("the outbox reports itself full")
        .unwrap();
    let h = *health.borrow();
    assert!(h.full && h.limit == 2 && h.pending == 2, "{h:?}");
    // driftwatch's alert about itself still finds room.
    notifier
        .submit(item("outbox-full", detect::HEALTH_SERVICE))
        .await;
    tokio::time::timeout(Duration::from_secs(10), health.wait_for(|h| !h.full))
        .await
        .expect("the outbox drains once the receiver is up")
        .unwrap();
    until(
        "every held notification delivered",
        Duration::from_secs(5),
        || delivered(&notifier) == 3,
    )
    .await;
    let delivered: Vec<String> = receiver
        .seen()
        .iter()
        .filter(|s| s.status == 200)
        .flat_map(|s| s.body["data"]["items"].as_array().unwrap().clone())
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(delivered, ["a1", "a2", "outbox-full"]);
}

#[tokio::test]
async fn the_delivery_thread_runs_at_the_configured_nice_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        dir.path(),
        "[[sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/hook\"\n",
        "",
    );
    cfg.nice = 7;
    let _notifier = Notifier::start(&cfg, NotifyMetrics::default()).unwrap();
    // /proc/self/task/<tid>/stat: field 19 is the nice value (after the name in parentheses).
    let nice_of_notify = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "notify")
            })
            .filter_map(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
                let after = stat.rsplit_once(')')?.1;
                after.split_whitespace().nth(16)?.parse::<i32>().ok()
            })
            .collect::<Vec<_>>()
    };
    until(
        "the delivery thread to lower its priority",
        Duration::from_secs(5),
        || nice_of_notify().contains(&7),
    )
    .await;
}

#[tokio::test]
async fn notifications_waiting_together_go_out_as_one_request_and_tried_ids_never_change() {
    let dir = tempfile::tempdir().unwrap();
    // a1's first attempt is put off for a second, so the others wait behind it.
    let (url, receiver) = Receiver::start(&[(429, Some(1))]).await;
    let cfg = config(
        dir.path(),
        &format!(
            "[[sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\nrate = 1000.0\nsecret = \"{SECRET}\""
        ),
        "[[route]]\nname = \"all\"\nsink = \"hook\"\n",
    );
    let notifier = Notifier::start(&cfg, NotifyMetrics::default()).unwrap();
    notifier.submit(item("a1", "shop/api")).await;
    until("a first attempt", Duration::from_secs(5), || {
        !receiver.seen().is_empty()
    })
    .await;
    // These wait while a1 is retried, each its own notification (handed over apart).
    for id in ["a2", "a3", "a4", "a5"] {
        notifier.submit(item(id, "shop/db")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until("every item delivered", Duration::from_secs(10), || {
        delivered(&notifier) == 5
    })
    .await;
    let seen = receiver.seen();
    let ok: Vec<&Seen> = seen.iter().filter(|s| s.status == 200).collect();
    // a1 keeps the id it was first tried with; the four waiting went out as one
    // request, signed, under an id of its own.
    assert_eq!(seen[1].id, seen[0].id, "{seen:?}");
    assert_eq!(ok.len(), 2, "{seen:?}");
    let ids = |s: &Seen| -> Vec<String> {
        s.body["data"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(ok[0]), ["a1"]);
    assert_eq!(ids(ok[1]), ["a2", "a3", "a4", "a5"]);
    assert_ne!(ok[1].id, ok[0].id);
    assert_eq!(ok[1].signature_ok, Some(true));
    let statuses = notifier.statuses();
    let merged = statuses.iter().find(|s| s.item == "a2").unwrap();
    assert_eq!(Some(&merged.notification), ok[1].id.as_ref());
    until("the outbox to empty", Duration::from_secs(2), || {
        notify::outbox::pending_ids(dir.path()).is_empty()
    })
    .await;
}

#[tokio::test]
async fn items_routed_together_to_a_webhook_are_one_notification() {
    let dir = tempfile::tempdir().unwrap();
    let (url, receiver) = Receiver::start(&[]).await;
    let cfg = config(
        dir.path(),
        &format!("[[sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\nrate = 1000.0\n"),
        "[[route]]\nname = \"all\"\nsink = \"hook\"\n",
    );
    let notifier = Notifier::start(&cfg, NotifyMetrics::default()).unwrap();
    notifier
        .submit_all(
            (0..150)
                .map(|i| item(&format!("b{i}"), "shop/api"))
                .collect(),
        )
        .await;
    until("every item delivered", Duration::from_secs(5), || {
        delivered(&notifier) == 150
    })
    .await;
    // At most 100 items a request: two requests, in order.
    let seen = receiver.seen();
    let sizes: Vec<usize> = seen
        .iter()
        .map(|s| s.body["data"]["items"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [100, 50]);
    assert_eq!(seen[1].body["data"]["items"][0]["id"], "b100");
}

#[tokio::test]
async fn alerts_open_at_start_are_sent_again_to_alertmanager_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (url, receiver) = Receiver::start(&[]).await;
    let cfg = config(
        dir.path(),
        &format!(
            "[[sink]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"{url}\"\nresend-interval = \"200ms\"\n"
        ),
        "[[route]]\nname = \"high\"\nsink = \"am\"\nmin-severity = \"high\"\n",
    );
    let notifier = Notifier::start(&cfg, NotifyMetrics::default()).unwrap();
    let mut low = item("l1", "shop/api");
    low.severity = detect::Severity::Low;
    let mut gone = item("r1", "shop/api");
    gone.resolved = true;
    notifier.resume_firing(&[item("o1", "shop/api"), low, gone]);
    until("a re-send", Duration::from_secs(5), || {
        !receiver.seen().is_empty()
    })
    .await;
    // Only the open alert its route takes, and nothing was queued as new.
    let keys: Vec<String> = receiver.seen()[0]
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["dedup_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["k-o1"]);
    assert!(notifier.statuses().is_empty());
}

/// What a member hands over with a service's state: an alert is undelivered while it
/// waits in a group, while any sink has not taken it, and no longer once all have;
/// findings are not alerts.
#[tokio::test]
async fn an_alert_is_undelivered_until_every_sink_took_it() {
    let dir = tempfile::tempdir().unwrap();
    let (chat_url, chat) = Receiver::start(&[]).await;
    let refusals = [(503, None); 5];
    let (hook_url, hook) = Receiver::start(&refusals).await;
    let cfg = config(
        dir.path(),
        &format!(
            "[[sink]]\nname = \"chat\"\ntype = \"slack\"\nurl = \"{chat_url}\"\ngroup-window = \"300ms\"\n\
             [[sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{hook_url}\""
        ),
        "[[route]]\nname = \"chat\"\nsink = \"chat\"\n[[route]]\nname = \"hook\"\nsink = \"hook\"",
    );
    let notifier = Notifier::start(&cfg, NotifyMetrics::default()).unwrap();
    let mut finding = item("f1", "shop/api");
    finding.source = "finding".into();
    notifier
        .submit_all(vec![item("a1", "shop/api"), finding])
        .await;
    let undelivered = |n: &Notifier| n.undelivered().into_iter().collect::<Vec<_>>();
    assert_eq!(undelivered(&notifier), ["a1"]);
    until("the webhook to refuse it", Duration::from_secs(5), || {
        !hook.seen().is_empty()
    })
    .await;
    // Refused by the webhook, which retries for half a second more.
    assert_eq!(undelivered(&notifier), ["a1"]);
    until("both sinks to take it", Duration::from_secs(5), || {
        !chat.seen().is_empty() && hook.seen().iter().any(|s| s.status == 200)
    })
    .await;
    until("nothing undelivered", Duration::from_secs(5), || {
        notifier.undelivered().is_empty()
    })
    .await;
}
