//! Alert delivery, measured two ways in one run:
//!
//! 1. 10,000 alerts through a notifier to a webhook receiver on loopback: deliveries a
//!    second, and the latency from handing an alert over to its receipt (p50, p99).
//!    Every notification goes through the outbox (written and fsynced) first.
//! 2. The effect on ingest: the same native records through `driftwatch replay` with
//!    delivery on and off, side by side (best of five each, alternating: runs vary by a
//!    fifth on two cores); the input raises 10,000 alerts, a new binary every 500 events
//!    once learning is over (an alert storm: one event in 500 raising an alert). A
//!    receiver normally runs on another machine; here it shares the two cores, so "on"
//!    is measured twice: with the receiver's threads at nice 19 (they take the cores
//!    only when ingest leaves them idle, as if elsewhere) and at nice 0 (competing with
//!    ingest as equals).
//!
//! `cargo bench --bench notify` (10,000 alerts); `-- --alerts N` for another count,
//! `-- --alert-every N` for another density (events per alert, 500 by default).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// Receipt times by item id.
type Receipts = Arc<Mutex<HashMap<String, Instant>>>;

async fn receiver() -> (String, Receipts, Arc<Mutex<u64>>) {
    let receipts: Receipts = Arc::default();
    let requests: Arc<Mutex<u64>> = Arc::default();
    let (r, n) = (receipts.clone(), requests.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |_: HeaderMap, body: axum::body::Bytes| {
            let (r, n) = (r.clone(), n.clone());
            async move {
                let now = Instant::now();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let mut r = r.lock().unwrap();
                for item in v["data"]["items"].as_array().into_iter().flatten() {
                    r.entry(item["id"].as_str().unwrap().to_owned())
                        .or_insert(now);
                }
                *n.lock().unwrap() += 1;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), receipts, requests)
}

/// A runtime for a receiver whose threads run at `nice`.
fn receiver_runtime(nice: i32) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || {
            rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)
                .expect("a thread may lower its own priority");
        })
        .build()
        .unwrap()
}

fn item(i: usize) -> notify::Item {
    notify::Item {
        source: "alert".into(),
        id: format!("alert-{i:06}"),
        dedup_key: format!("k{i}"),
        service: format!("shop/svc{}", i % 50),
        kind: "process".into(),
        severity: detect::Severity::High,
        summary: format!("process drift in shop/svc{}: /tmp/x{i}", i % 50),
        details: "never started during learning".into(),
        time: "2026-03-02T10:13:00Z".into(),
        resolved: false,
        references: vec![],
        mitre: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn write_input(path: &Path, alerts: usize, every: usize) -> usize {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let start = 1_772_445_600_000_000_000i64; // 2026-03-02T10:00:00Z
    // 15 minutes of learning at 10 events a second, then a new binary every `every`
    // events.
    let learning = 9_000;
    let total = learning + alerts * every;
    for i in 0..total {
        let time = start + i as i64 * 100_000_000;
        let exe = if i >= learning && (i - learning) % every == 0 {
            format!("/tmp/.cache/x{}", (i - learning) / every)
        } else {
            "/usr/local/bin/python3.12".to_owned()
        };
        writeln!(
            f,
            r#"{{"time":{time},"service":"shop/api","kind":"process_exec","process":{{"exe":"{exe}","parent_exe":"/usr/local/bin/gunicorn"}}}}"#
        )
        .unwrap();
    }
    f.flush().unwrap();
    total
}

/// Seconds the replay's pipeline took, and its alert count.
fn replay(input: &Path, config: &Path) -> (f64, u64, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["replay", "--no-progress", "--format", "native", "--output"])
        .arg(input.with_extension("out"))
        .arg("--config")
        .arg(config)
        .arg(input)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let field = |prefix: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_owned))
    };
    let secs = field("pipeline: ")
        .and_then(|l| l.split_once(" s,").and_then(|(s, _)| s.parse().ok()))
        .expect("replay reports its pipeline time");
    let alerts = field("alerts: ").and_then(|n| n.parse().ok()).unwrap_or(0);
    (secs, alerts, field("notifications: ").unwrap_or_default())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let alerts: usize = args
        .iter()
        .position(|a| a == "--alerts")
        .and_then(|i| args.get(i + 1))
        .map_or(10_000, |n| n.parse().expect("--alerts takes a number"));
    let every: usize = args
        .iter()
        .position(|a| a == "--alert-every")
        .and_then(|i| args.get(i + 1))
        .map_or(500, |n| n.parse().expect("--alert-every takes a number"));
    assert!(every >= 1, "--alert-every is at least 1");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();

    // 1. Deliveries.
    let (url, receipts, requests) = runtime.block_on(receiver());
    let (rate, p50, p99, took, n_requests) = runtime.block_on(async {
        let config: notify::NotifyConfig = toml::from_str(&format!(
            "outbox-dir = {:?}\n[[sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\nrate = 100000.0\n[[route]]\nname = \"all\"\nsink = \"hook\"\n",
            dir.path().join("outbox").display().to_string()
        ))
        .unwrap();
        let notifier = notify::Notifier::start(&config, notify::NotifyMetrics::default()).unwrap();
        let started = Instant::now();
        let mut handed = HashMap::new();
        for i in 0..alerts {
            let it = item(i);
            handed.insert(it.id.clone(), Instant::now());
            notifier.submit(it).await;
        }
        while receipts.lock().unwrap().len() < alerts {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed();
        let receipts = receipts.lock().unwrap();
        let mut latencies: Vec<Duration> = receipts
            .iter()
            .map(|(id, at)| at.duration_since(handed[id]))
            .collect();
        latencies.sort();
        (
            alerts as f64 / took.as_secs_f64(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            took,
            *requests.lock().unwrap(),
        )
    });
    println!(
        "notify benchmark: {alerts} alerts to a signed-webhook receiver on loopback, each through the outbox"
    );
    println!(
        "deliveries: {alerts} in {:.2} s = {rate:.0}/s ({n_requests} requests); latency from hand-over to receipt: p50 {:.1} ms, p99 {:.1} ms",
        took.as_secs_f64(),
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0
    );

    // 2. Ingest with delivery on and off.
    let (yielding, equal) = (receiver_runtime(19), receiver_runtime(0));
    let receivers = [
        ("on, receiver at nice 19", yielding.block_on(receiver())),
        ("on, receiver at nice 0", equal.block_on(receiver())),
    ];
    let input = dir.path().join("events.jsonl");
    let total = write_input(&input, alerts, every);
    let base = "[detect]\nlearning-period = \"10m\"\nmin-learning-events = 20\n[search]\nenabled = false\n[compliance]\nenabled = false\n";
    let off = dir.path().join("off.toml");
    std::fs::write(&off, base).unwrap();
    let on = dir.path().join("on.toml");
    let (mut best_off, mut best_on, mut summary, mut raised) =
        (f64::MAX, [f64::MAX; 2], String::new(), 0);
    for round in 0..5 {
        best_off = best_off.min(replay(&input, &off).0);
        for (r, (_, (url, _, _))) in receivers.iter().enumerate() {
            std::fs::write(
                &on,
                format!(
                    "{base}[notify]\noutbox-dir = {:?}\n[[notify.sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\nrate = 100000.0\n[[notify.route]]\nname = \"all\"\nsink = \"hook\"\n",
                    dir.path().join(format!("outbox-{round}-{r}")).display().to_string()
                ),
            )
            .unwrap();
            let (secs, n, s) = replay(&input, &on);
            best_on[r] = best_on[r].min(secs);
            (summary, raised) = (s, n);
        }
    }
    let rate_off = total as f64 / best_off;
    println!(
        "ingest: {total} native events raising {raised} alerts (one event in {every}), through `driftwatch replay`"
    );
    println!("{:<28} {:>12} {:>8}", "delivery", "events/s", "ratio");
    println!("{:<28} {:>12.0} {:>8.2}", "off", rate_off, 1.0);
    for ((label, _), best) in receivers.iter().zip(best_on) {
        let rate = total as f64 / best;
        println!("{label:<28} {rate:>12.0} {:>8.2}", rate / rate_off);
    }
    let seen: Vec<usize> = receivers
        .iter()
        .map(|(_, (_, receipts, _))| receipts.lock().unwrap().len())
        .collect();
    println!(
        "last run with delivery on: notifications {summary}; each receiver saw {seen:?} distinct alerts over its five runs"
    );
}
