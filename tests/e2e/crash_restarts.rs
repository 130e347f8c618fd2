//! One `driftwatch run` killed with SIGKILL five times at random points while records
//! stream in and alerts go out to a webhook receiver, an analyst acknowledging an alert
//! just before each kill, then run to the end. No alert is paged twice under different
//! notification ids, none a receiver got vanishes, none is missing, and no
//! acknowledgement is lost.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Killed, alert_receiver, cluster, driftwatch, free_port, http_get, sample};

const SERVICES: u32 = 20;
const MINUTES: u32 = 400;
/// Events per service and minute.
const PER_MINUTE: u32 = 4;

/// Whether service `s` runs a new program in minute `m` (after learning ends).
fn drifts(s: u32, m: u32) -> bool {
    m >= 15 && (m + s).is_multiple_of(6)
}

/// One minute of event time: every service runs its two programs, and some a new one.
fn minute(m: u32) -> Vec<String> {
    let mut out = Vec::new();
    for s in 0..SERVICES {
        for i in 0..PER_MINUTE {
            let exe = if i % 2 == 0 {
                "/usr/local/bin/python3.12"
            } else {
                "/usr/bin/curl"
            };
            out.push(record(s, m, i * 5, exe));
        }
        if drifts(s, m) {
            out.push(record(s, m, 57, &format!("/opt/tool-{s}-{m}")));
        }
    }
    out
}

fn record(s: u32, m: u32, second: u32, exe: &str) -> String {
    json!({
        "time": format!("2026-03-02T{:02}:{:02}:{second:02}Z", 10 + m / 60, m % 60),
        "service": format!("shop/svc-{s}"),
        "kind": "process_exec",
        "process": { "exe": exe, "parent_exe": "/usr/local/bin/entrypoint" },
    })
    .to_string()
}

/// SplitMix64, seeded: the kill points are random and the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// A started `run` and its JSON log lines.
struct Daemon {
    child: Killed,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let mut child: Child = driftwatch()
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon {
            child: Killed(child),
            logs,
        }
    }

    /// Waits until it has applied records of its own (not only restored them).
    async fn wait_consuming(&self, http: &str) {
        let started = Instant::now();
        loop {
            if http_get(http, "/metrics")
                .ok()
                .and_then(|m| {
                    sample(
                        &m,
                        r#"driftwatch_records_consumed_total{topic="native",format="native"}"#,
                    )
                })
                .is_some_and(|n| n > 0.0)
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the daemon never consumed; logs:\n{}",
                self.logs.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn alerts(http: &str) -> Vec<Value> {
    let body = http_get(http, "/api/v1/alerts?limit=10000").unwrap_or_default();
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["alerts"].as_array().cloned().unwrap_or_default()
}

async fn post(http: &str, path: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{http}{path}"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_kills_page_no_alert_twice_and_lose_none() {
    let (_cluster, brokers) = cluster("native", 1);
    let (receiver, received) = alert_receiver(Arc::new(AtomicBool::new(true))).await;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("driftwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nformat = \"json\"\n[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"crashes\"\n\
             batch-size = 200\n\
             [[kafka.topics]]\nname = \"native\"\nformat = \"native\"\n\
             [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
             [http]\nlisten = \"{http}\"\n[postgres]\nlisten = \"127.0.0.1:0\"\n[search]\nenabled = false\n\
             [detect]\nlearning-period = \"10m\"\nmin-learning-events = 3\n\
             [state]\ndata-dir = {data:?}\nsnapshot-interval = \"3s\"\n\
             [notify]\noutbox-dir = {outbox:?}\n[notify.retry]\ninitial = \"100ms\"\nmax = \"500ms\"\n\
             [[notify.sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{receiver}/hook\"\n\
             [[notify.route]]\nname = \"all\"\nsink = \"hook\"\n",
            data = data.display().to_string(),
            outbox = data.join("outbox").display().to_string(),
        ),
    )
    .unwrap();

    // Records stream in for about a minute, a minute of event time every 150 ms, past
    // the last kill.
    let total: usize = (0..MINUTES).map(|m| minute(m).len()).sum();
    // Compressed: the mock broker keeps only 5 MiB of batches per partition, and the
    // topic must hold everything a killed daemon has not committed.
    let producer = {
        use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
        let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("compression.type", "lz4")
            .create()
            .unwrap();
        std::thread::spawn(move || {
            for m in 0..MINUTES {
                for r in minute(m) {
                    producer
                        .send(BaseRecord::<(), _>::to("native").payload(&r))
                        .unwrap();
                }
                producer.flush(Duration::from_secs(10)).unwrap();
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };

    let mut rng = Rng(0x6b11);
    let mut acknowledged = BTreeSet::new();
    for _ in 0..5 {
        let mut daemon = Daemon::start(&config);
        daemon.wait_consuming(&http).await;
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1800))).await;
        // An analyst acknowledges an open alert, well within a state file's interval
        // of the kill.
        if let Some(open) = alerts(&http)
            .iter()
            .filter(|a| a["status"] == "open" && a["service"] != "driftwatch")
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .find(|id| !acknowledged.contains(id))
        {
            assert_eq!(
                post(&http, &format!("/api/v1/alerts/{open}/acknowledge")).await,
                200
            );
            acknowledged.insert(open);
        }
        daemon.child.0.kill().unwrap();
        daemon.child.0.wait().unwrap();
    }
    assert!(!acknowledged.is_empty(), "no alert was open at any kill");
    producer.join().unwrap();

    // The last run goes to the end of the topic and delivers everything.
    let daemon = Daemon::start(&config);
    daemon.wait_consuming(&http).await;
    let drifted = (0..MINUTES)
        .flat_map(|m| {
            (0..SERVICES)
                .filter(move |s| drifts(*s, m))
                .map(move |s| (s, m))
        })
        .count();
    let started = Instant::now();
    loop {
        let metrics = http_get(&http, "/metrics").unwrap_or_default();
        let consumed = sample(
            &metrics,
            r#"driftwatch_records_consumed_total{topic="native",format="native"}"#,
        )
        .unwrap_or(0.0);
        let pending = notify::outbox::pending_ids(&data.join("outbox")).len();
        let state: Value = std::fs::read(data.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let offset = state["offsets"]["native"]["0"].as_u64().unwrap_or(0);
        if offset as usize == total && pending == 0 && consumed > 0.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not drained: offset {offset} of {total}, {pending} pending"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown = alerts(&http);
    Command::new("kill")
        .args(["-TERM", &daemon.child.0.id().to_string()])
        .status()
        .unwrap();

    let received = received.lock().unwrap().clone();
    // Each alert's trigger (and resolve) went out under one notification id.
    let mut ids: BTreeMap<(String, bool), BTreeSet<String>> = BTreeMap::new();
    for (webhook, alert, resolved) in &received {
        ids.entry((alert.clone(), *resolved))
            .or_default()
            .insert(webhook.clone());
    }
    let twice: Vec<_> = ids.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(twice.is_empty(), "paged under several ids: {twice:?}");

    // Nothing a receiver got vanished; every new program has one alert, delivered.
    let by_id: HashMap<&str, &Value> = shown
        .iter()
        .map(|a| (a["id"].as_str().unwrap(), a))
        .collect();
    let gone: Vec<&String> = ids
        .keys()
        .map(|(alert, _)| alert)
        .filter(|a| !by_id.contains_key(a.as_str()))
        .collect();
    assert!(gone.is_empty(), "delivered, then gone: {gone:?}");
    let tools: Vec<&Value> = shown
        .iter()
        .filter(|a| {
            a["subject"]
                .as_str()
                .unwrap_or_default()
                .starts_with("/opt/tool-")
        })
        .collect();
    let subjects: BTreeSet<String> = tools
        .iter()
        .map(|a| a["subject"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<String> = (0..MINUTES)
        .flat_map(|m| {
            (0..SERVICES)
                .filter(move |s| drifts(*s, m))
                .map(move |s| (s, m))
        })
        .map(|(s, m)| format!("/opt/tool-{s}-{m}"))
        .filter(|t| !subjects.iter().any(|s| s.starts_with(&format!("{t} "))))
        .collect();
    assert!(
        missing.is_empty(),
        "no alert for {} new programs: {missing:?}",
        missing.len()
    );
    assert_eq!(tools.len(), drifted, "one alert per new program");
    for a in &tools {
        let id = a["id"].as_str().unwrap().to_owned();
        assert!(
            ids.contains_key(&(id.clone(), false)),
            "{id} never delivered"
        );
    }
    // No acknowledgement was lost.
    for id in &acknowledged {
        let status = by_id.get(id.as_str()).map(|a| a["status"].clone());
        assert_eq!(
            status,
            Some(json!("acknowledged")),
            "the acknowledgement of {id} was lost"
        );
    }
}
