//! Three daemons in one consumer group against a three-broker Kafka-protocol cluster,
//! with the repartition topic and the state changelog. Every service learns while the
//! three share the work; then one daemon is killed (SIGKILL) and every service runs a
//! new program within minutes. The survivors take the dead daemon's partitions over
//! with their baselines: no service learns again, every new program raises one alert
//! across the cluster, and together they raise what one replay of the records raises.
//! Through the cluster topic, each survivor's API and `alerts` table show all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::{Value, json};

use crate::common::{
    Killed, driftwatch, exec_record, free_port, http_get, http_post_json, replay, sample,
};

const SERVICES: u32 = 12;
/// Minutes of event time while the three share the work; services learn in the first
/// ten.
const BEFORE: u32 = 30;
/// Minutes after the kill: each service runs a new program within the first eight,
/// while a service that learned again from scratch would still be learning.
const AFTER: u32 = 15;

/// Minute `m`'s records: each with its service and the partition it is produced to.
fn minute(m: u32) -> Vec<(u32, i32, String)> {
    let mut out = Vec::new();
    for s in 0..SERVICES {
        for i in 0..6 {
            let exe = if i % 2 == 0 {
                "/app/bin/server"
            } else {
                "/app/bin/worker"
            };
            out.push((s, (i % 4) as i32, exec_record(s, m, i * 9, exe)));
        }
        if m == BEFORE + 1 + s % 8 {
            out.push((
                s,
                (s % 4) as i32,
                exec_record(s, m, 58, &format!("/usr/bin/tool-{s}")),
            ));
        }
    }
    out
}

struct Member {
    name: String,
    http: String,
    process: Option<Killed>,
}

fn config(dir: &Path, brokers: &str, http: &str, name: &str) -> PathBuf {
    let path = dir.join("driftwatch.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"scale\"\nrepartition-topic = \"driftwatch-events\"\n\
             cluster-topic = \"driftwatch-cluster\"\nmember = \"{name}\"\n\
             [[kafka.topics]]\nname = \"falco-like\"\nformat = \"native\"\n\
             [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
             [http]\nlisten = \"{http}\"\n[postgres]\nlisten = \"127.0.0.1:0\"\n[search]\nenabled = false\n\
             [detect]\nlearning-period = \"10m\"\nmin-learning-events = 3\n\
             [state]\ndata-dir = {data:?}\nsnapshot-interval = \"1s\"\nchangelog-topic = \"driftwatch-state\"\n",
            data = dir.join("data").display().to_string(),
        ),
    )
    .unwrap();
    path
}

fn consumed(http: &str) -> f64 {
    let metrics = http_get(http, "/metrics").unwrap_or_default();
    sample(
        &metrics,
        r#"driftwatch_records_consumed_total{topic="driftwatch-events",format="native"}"#,
    )
    .unwrap_or(0.0)
}

fn get(http: &str, path: &str, field: &str) -> Vec<Value> {
    let body = http_get(http, path).unwrap_or_default();
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v[field].as_array().cloned().unwrap_or_default()
}

fn produce(producer: &ThreadedProducer<DefaultProducerContext>, minutes: std::ops::Range<u32>) {
    for m in minutes {
        for (_, p, r) in minute(m) {
            producer
                .send(
                    BaseRecord::<(), _>::to("falco-like")
                        .partition(p)
                        .payload(&r),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_members_services_move_with_their_baselines() {
    let cluster = rdkafka::mocking::MockCluster::new(3).unwrap();
    cluster.create_topic("falco-like", 4, 1).unwrap();
    cluster.create_topic("driftwatch-events", 6, 1).unwrap();
    cluster.create_topic("driftwatch-state", 6, 1).unwrap();
    cluster.create_topic("driftwatch-cluster", 3, 1).unwrap();
    cluster
        .create_topic("driftwatch-dead-letter", 1, 1)
        .unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();

    // What one daemon replaying every record raises.
    let all: Vec<String> = (0..BEFORE + AFTER)
        .flat_map(|m| minute(m).into_iter().map(|(_, _, r)| r))
        .collect();
    let file = dir.path().join("records.jsonl");
    std::fs::write(&file, all.join("\n") + "\n").unwrap();
    let replay_dir = dir.path().join("replay");
    std::fs::create_dir_all(&replay_dir).unwrap();
    let replay_conf = config(&replay_dir, &brokers, "127.0.0.1:0", "replay");
    let key = |a: &Value| {
        (
            a["kind"].as_str().unwrap_or_default().to_owned(),
            a["service"].as_str().unwrap_or_default().to_owned(),
            a["subject"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let expected: BTreeSet<_> = replay(
        [
            file.to_str().unwrap(),
            "--format",
            "native",
            "--config",
            replay_conf.to_str().unwrap(),
            "--dead-letter",
            dir.path().join("dead.jsonl").to_str().unwrap(),
        ],
        None,
    )
    .of_type("alert")
    .into_iter()
    .map(key)
    .collect();
    let tools = expected
        .iter()
        .filter(|k| k.2.starts_with("/usr/bin/tool-"))
        .count();
    assert_eq!(tools, SERVICES as usize, "{expected:?}");

    let mut members: Vec<Member> = (0..3)
        .map(|i| {
            let member_dir = dir.path().join(format!("member-{i}"));
            std::fs::create_dir_all(&member_dir).unwrap();
            let http = format!("127.0.0.1:{}", free_port());
            let name = format!("member-{i}");
            let conf = config(&member_dir, &brokers, &http, &name);
            Member {
                name,
                http,
                process: Some(run(&conf)),
            }
        })
        .collect();
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("compression.type", "lz4")
        .create()
        .unwrap();

    // The three share the learning; every record is applied and in a state file.
    produce(&producer, 0..BEFORE);
    let before: usize = (0..BEFORE).map(|m| minute(m).len()).sum();
    let started = Instant::now();
    // Rebalances while members join make some records read twice (at-least-once): done
    // is every record read and nothing more for two seconds.
    let (mut last, mut still) = (Vec::new(), Instant::now());
    loop {
        let shares: Vec<f64> = members.iter().map(|m| consumed(&m.http)).collect();
        if shares != last {
            (last, still) = (shares.clone(), Instant::now());
        } else if shares.iter().sum::<f64>() as usize >= before
            && still.elapsed() > Duration::from_secs(2)
        {
            assert!(
                shares.iter().filter(|n| **n > 0.0).count() >= 2,
                "the work was not shared: {shares:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "consumed {shares:?} of {before}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The member that holds the most services dies.
    let held = |m: &Member| get(&m.http, "/api/v1/services", "services").len();
    let victim = (0..3).max_by_key(|i| held(&members[*i])).unwrap();
    let moved: BTreeSet<String> = get(&members[victim].http, "/api/v1/services", "services")
        .iter()
        .map(|s| s["service"].as_str().unwrap().to_owned())
        .collect();
    assert!(!moved.is_empty());
    members[victim].process.take();

    produce(&producer, BEFORE..BEFORE + AFTER);
    let survivors: Vec<&Member> = members.iter().filter(|m| m.process.is_some()).collect();
    let started = Instant::now();
    let union = loop {
        let mut union: BTreeMap<(String, String, String), usize> = BTreeMap::new();
        for m in &survivors {
            for a in get(&m.http, "/api/v1/alerts?limit=10000&scope=local", "alerts") {
                *union.entry(key(&a)).or_default() += 1;
            }
        }
        let found = union
            .keys()
            .filter(|k| k.2.starts_with("/usr/bin/tool-"))
            .count();
        if found == SERVICES as usize {
            break union;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{found} of {SERVICES} new programs alerted; moved services {moved:?}: {union:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Every later record is applied before the comparison.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // No service learned again: each kept its first learning.
    for m in &survivors {
        for s in get(&m.http, "/api/v1/services", "services") {
            assert_eq!(
                s["learning_since"]
                    .as_str()
                    .map(|t| t.starts_with("2026-03-02T10:0")),
                Some(true),
                "{s}"
            );
        }
    }
    let twice: Vec<_> = union.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "raised by two members: {twice:?}");
    let live: BTreeSet<_> = union.into_keys().collect();
    let only_live: Vec<_> = live.difference(&expected).collect();
    let only_replay: Vec<_> = expected.difference(&live).collect();
    assert!(
        only_live.is_empty() && only_replay.is_empty(),
        "only live: {only_live:#?}\nonly in the replay: {only_replay:#?}"
    );

    // Each survivor shows the whole cluster's alerts, once each, in its API and in SQL.
    let started = Instant::now();
    for m in &survivors {
        loop {
            let shown: Vec<_> = get(&m.http, "/api/v1/alerts?limit=10000", "alerts")
                .iter()
                .map(key)
                .collect();
            let body = http_post_json(
                &m.http,
                "/api/v1/sql",
                &json!({"sql": "SELECT kind, service, subject FROM alerts"}),
            )
            .unwrap_or_default();
            let rows: Vec<_> = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["rows"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(key)
                .collect();
            let (api, sql): (BTreeSet<_>, BTreeSet<_>) = (
                shown.iter().cloned().collect(),
                rows.iter().cloned().collect(),
            );
            if api == live && sql == live && shown.len() == live.len() && rows.len() == live.len() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} shows {} alerts by API and {} by SQL of the cluster's {}:\nAPI lacks {:?}\nSQL lacks {:?}",
                m.http,
                shown.len(),
                rows.len(),
                live.len(),
                live.difference(&api).collect::<Vec<_>>(),
                live.difference(&sql).collect::<Vec<_>>(),
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // SQL names the member that holds each alert, as the API does.
        let by_member = |alerts: &[Value]| -> BTreeSet<_> {
            alerts
                .iter()
                .map(|a| (key(a), a["member"].as_str().map(str::to_owned)))
                .collect()
        };
        let api = by_member(&get(&m.http, "/api/v1/alerts?limit=10000", "alerts"));
        let body = http_post_json(
            &m.http,
            "/api/v1/sql",
            &json!({"sql": "SELECT kind, service, subject, member FROM alerts"}),
        )
        .unwrap();
        let sql = by_member(
            serde_json::from_str::<Value>(&body).unwrap()["rows"]
                .as_array()
                .unwrap(),
        );
        assert!(api.iter().all(|(_, member)| member.is_some()), "{api:#?}");
        assert_eq!(sql, api, "{}: SQL's members differ from the API's", m.http);
        // Each alert names the survivor that raised it, by its configured name.
        let own: BTreeSet<_> = get(&m.http, "/api/v1/alerts?limit=10000&scope=local", "alerts")
            .iter()
            .map(key)
            .collect();
        for (alert, member) in &api {
            let member = member.as_deref().unwrap_or_default();
            assert!(
                survivors.iter().any(|s| s.name == member),
                "{alert:?} names {member}, not a survivor"
            );
            assert_eq!(
                own.contains(alert),
                member == m.name,
                "{alert:?} on {}",
                m.name
            );
        }
        // Findings too: the API shows the cluster's, as the `findings` table does.
        let started = Instant::now();
        loop {
            let shown = get(&m.http, "/api/v1/findings?limit=10000", "findings");
            let body = http_post_json(
                &m.http,
                "/api/v1/sql",
                &json!({"sql": "SELECT id FROM findings"}),
            )
            .unwrap_or_default();
            let rows = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["rows"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ids = |list: &[Value]| -> BTreeSet<String> {
                list.iter()
                    .filter_map(|f| f["id"].as_str().map(str::to_owned))
                    .collect()
            };
            let (api, sql) = (ids(&shown), ids(&rows));
            let own = get(
                &m.http,
                "/api/v1/findings?limit=10000&scope=local",
                "findings",
            );
            let members = shown.iter().filter(|f| f["member"].is_string()).count();
            if !sql.is_empty()
                && api == sql
                && shown.len() == api.len()
                && members == shown.len()
                && own.len() < shown.len()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} shows {} findings by API ({} its own, {members} with a member) and {} by SQL",
                m.http,
                shown.len(),
                own.len(),
                rows.len(),
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// A `driftwatch run` member alone in consumer group `group`, writing the cluster topic:
/// its process and HTTP address.
fn lone_member(dir: &Path, brokers: &str, name: &str, group: &str) -> (Killed, String) {
    std::fs::create_dir_all(dir).unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let path = dir.join("driftwatch.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"{group}\"\n\
             cluster-topic = \"driftwatch-cluster\"\nmember = \"{name}\"\n\
             [[kafka.topics]]\nname = \"falco-like\"\nformat = \"native\"\n\
             [http]\nlisten = \"{http}\"\n[postgres]\nlisten = \"127.0.0.1:0\"\n[search]\nenabled = false\n\
             [detect]\nlearning-period = \"10m\"\nmin-learning-events = 3\n\
             [state]\ndata-dir = {data:?}\n",
            data = dir.join("data").display().to_string(),
        ),
    )
    .unwrap();
    (run(&path), http)
}

/// `driftwatch run` with the config at `path`, its output discarded.
fn run(path: &Path) -> Killed {
    Killed(
        driftwatch()
            .args(["run", "--config"])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn finding_ids(findings: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = findings
        .iter()
        .filter_map(|f| f["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

/// A finding's id is its control, service and triggering record's, so a member that
/// reads records another member already checked (after a crash or a hand-over) makes the
/// findings that member published. The cluster's API and `findings` table show each once,
/// held by the member that has it now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_two_members_made_from_one_record_is_shown_once() {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("falco-like", 4, 1).unwrap();
    cluster.create_topic("driftwatch-cluster", 1, 1).unwrap();
    cluster
        .create_topic("driftwatch-dead-letter", 1, 1)
        .unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    // Each service on one partition, so both members read its records in one order.
    for m in 0..BEFORE + AFTER {
        for (service, _, r) in minute(m) {
            producer
                .send(
                    BaseRecord::<(), _>::to("falco-like")
                        .partition((service % 4) as i32)
                        .payload(&r),
                )
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    // The first member checks every record, publishes its findings, and is gone.
    let (first, http) = lone_member(&dir.path().join("first"), &brokers, "first", "one");
    // Done is findings made and none more for two seconds.
    let (mut made, mut still, started) = (Vec::new(), Instant::now(), Instant::now());
    loop {
        let now = finding_ids(&get(&http, "/api/v1/findings?limit=10000", "findings"));
        if now != made {
            (made, still) = (now, Instant::now());
        } else if !made.is_empty() && still.elapsed() > Duration::from_secs(2) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first member made {} findings",
            made.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(first);

    // The second reads the same records from the start, as a member taking the first's
    // partitions over from an older snapshot would.
    let (_second, http) = lone_member(&dir.path().join("second"), &brokers, "second", "two");
    let started = Instant::now();
    loop {
        let own = get(
            &http,
            "/api/v1/findings?limit=10000&scope=local",
            "findings",
        );
        if finding_ids(&own) == made {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the second member made {} findings, the first {}: {own:#?}",
            own.len(),
            made.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every record of the cluster topic is read: the first member's findings are there.
    let started = Instant::now();
    loop {
        let metrics = http_get(&http, "/metrics").unwrap_or_default();
        let read = sample(
            &metrics,
            r#"driftwatch_cluster_records_total{outcome="read"}"#,
        );
        if read.is_some_and(|n| n as usize >= made.len()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{read:?} of the cluster topic's records read: {}",
            metrics
                .lines()
                .filter(|l| l.contains("cluster"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;

    let shown = get(&http, "/api/v1/findings?limit=10000", "findings");
    assert_eq!(finding_ids(&shown), made, "the API shows a finding twice");
    assert!(
        shown.iter().all(|f| f["member"] == "second"),
        "a finding this member holds is shown as another's"
    );
    let body = http_post_json(
        &http,
        "/api/v1/sql",
        &json!({"sql": "SELECT id FROM findings ORDER BY id"}),
    )
    .unwrap();
    let rows = serde_json::from_str::<Value>(&body).unwrap()["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        finding_ids(&rows),
        made,
        "the findings table holds a finding twice"
    );
}
