//! Notifications move with the state. A daemon raises alerts while the receiver is
//! down, writes its state (and the changelog) and commits past their records, then is
//! killed (SIGKILL) and never comes back. Another daemon, with a data directory of its
//! own, takes its partitions over from the changelog and sends what the dead one had
//! not delivered: every alert reaches the receiver, each under one `webhook-id`. And
//! what the dead one had delivered, since its last state file, is not sent again: the
//! alerts it journaled to the changelog, marked delivered, are adopted. A changelog
//! broker that stops answering holds pages back only briefly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::Value;

use crate::common::{
    Killed, Received, alert_receiver, driftwatch, eventually, exec_record, free_port, http_get,
};

const SERVICES: u32 = 4;
/// The minute each service runs a program it never ran (learning takes ten).
const DRIFT: u32 = 12;

fn minute(m: u32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for s in 0..SERVICES {
        out.push(((s % 2) as i32, exec_record(s, m, 0, "/app/bin/server")));
        if m == DRIFT {
            out.push((
                (s % 2) as i32,
                exec_record(s, m, 30, &format!("/usr/bin/tool-{s}")),
            ));
        }
    }
    out
}

fn produce(producer: &ThreadedProducer<DefaultProducerContext>, minutes: std::ops::Range<u32>) {
    for m in minutes {
        for (p, r) in minute(m) {
            producer
                .send(BaseRecord::<(), _>::to("raw").partition(p).payload(&r))
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// A `driftwatch run` member with a data directory in `dir`, writing its state (and the
/// changelog) every `snapshot`; returns it, its outbox and its HTTP address.
fn member(dir: &Path, brokers: &str, receiver: &str, snapshot: &str) -> (Killed, PathBuf, String) {
    std::fs::create_dir_all(dir).unwrap();
    let data = dir.join("data");
    let outbox = data.join("outbox");
    let config = dir.join("driftwatch.toml");
    let http = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"handover\"\nrepartition-topic = \"events\"\n\
             [[kafka.topics]]\nname = \"raw\"\nformat = \"native\"\n\
             [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
             [http]\nlisten = \"{http}\"\n[postgres]\nlisten = \"127.0.0.1:0\"\n\
             [search]\nenabled = false\n[compliance]\nenabled = false\n\
             [detect]\nlearning-period = \"10m\"\nmin-learning-events = 3\n\
             [state]\ndata-dir = {data:?}\nsnapshot-interval = \"{snapshot}\"\nchangelog-topic = \"state\"\n\
             [notify]\noutbox-dir = {outbox:?}\n[notify.retry]\ninitial = \"100ms\"\nmax = \"500ms\"\n\
             [[notify.sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{receiver}/hook\"\n\
             [[notify.route]]\nname = \"all\"\nsink = \"hook\"\n",
            data = data.display().to_string(),
            outbox = outbox.display().to_string(),
        ),
    )
    .unwrap();
    let process = Killed(
        driftwatch()
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (process, outbox, http)
}

type Cluster = rdkafka::mocking::MockCluster<'static, DefaultProducerContext>;

/// A mock cluster with the members' topics (raw, repartition and changelog, two
/// partitions each), its address, and a producer to it.
fn members_cluster() -> (Cluster, String, ThreadedProducer<DefaultProducerContext>) {
    let (cluster, brokers) = crate::common::cluster("raw", 2);
    for topic in ["events", "state"] {
        cluster.create_topic(topic, 2, 1).unwrap();
    }
    let producer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    (cluster, brokers, producer)
}

/// (webhook-id, alert id) of every delivery of an alert's trigger.
fn triggers(received: &Received) -> Vec<(String, String)> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, resolved)| !resolved)
        .map(|(webhook, alert, _)| (webhook.clone(), alert.clone()))
        .collect()
}

/// Whether the receiver took the trigger of each of `raised`.
fn delivered_all(raised: &BTreeSet<String>, received: &Received) -> bool {
    let got = triggers(received);
    raised.iter().all(|a| got.iter().any(|(_, g)| g == a))
}

/// The alerts a member shows (none while it does not answer).
fn alerts(http: &str) -> Vec<Value> {
    let body = http_get(http, "/api/v1/alerts?limit=1000").unwrap_or_default();
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["alerts"].as_array().cloned().unwrap_or_default()
}

/// The ids of the alerts a member shows about its services' new programs.
fn tool_alerts(http: &str) -> BTreeSet<String> {
    alerts(http)
        .iter()
        .filter(|a| {
            a["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("/usr/bin/tool-"))
        })
        .filter_map(|a| a["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_members_undelivered_alerts_are_sent_by_the_next_owner() {
    let up = Arc::new(AtomicBool::new(false));
    let (receiver, got) = alert_receiver(up.clone()).await;

    let (_cluster, brokers, producer) = members_cluster();
    let dir = tempfile::tempdir().unwrap();

    // The first member raises an alert per service; the receiver is down.
    let (mut first, outbox, http) = member(&dir.path().join("first"), &brokers, &receiver, "1s");
    produce(&producer, 0..DRIFT + 4);
    eventually(
        Duration::from_secs(90),
        "an alert per service, pending in the outbox",
        || {
            tool_alerts(&http).len() == SERVICES as usize
                && !notify::outbox::pending_ids(&outbox).is_empty()
        },
    )
    .await;
    let raised = tool_alerts(&http);
    // Several state files (and changelog writes, and commits) later, it dies for good.
    tokio::time::sleep(Duration::from_secs(4)).await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert!(!notify::outbox::pending_ids(&outbox).is_empty());
    assert!(triggers(&got).is_empty());

    // The next owner starts from the committed offsets and the changelog; the stream
    // goes on.
    up.store(true, Ordering::SeqCst);
    let (_second, _, _) = member(&dir.path().join("second"), &brokers, &receiver, "1s");
    produce(&producer, DRIFT + 4..DRIFT + 8);
    eventually(
        Duration::from_secs(90),
        "every service's alert delivered",
        || delivered_all(&raised, &got),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = triggers(&got);
    let mut ids: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (webhook, alert) in got.iter() {
        ids.entry(alert.as_str())
            .or_default()
            .insert(webhook.as_str());
    }
    assert_eq!(ids.len(), SERVICES as usize, "{got:?}");
    assert!(ids.keys().all(|a| raised.contains(*a)), "{got:?}");
    for (alert, webhooks) in &ids {
        assert_eq!(
            webhooks.len(),
            1,
            "{alert} paged under several ids: {webhooks:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_dead_member_delivered_since_its_last_state_file_is_not_paged_again() {
    let (receiver, got) = alert_receiver(Arc::new(AtomicBool::new(true))).await;

    let (_cluster, brokers, producer) = members_cluster();
    let dir = tempfile::tempdir().unwrap();

    // The first member writes no state file while it runs (the first is due in an
    // hour), so it commits nothing: its alerts, delivered, are only in its journals.
    let (mut first, _, http) = member(&dir.path().join("first"), &brokers, &receiver, "1h");
    produce(&producer, 0..DRIFT + 4);
    eventually(
        Duration::from_secs(90),
        "an alert per service, delivered",
        || {
            let raised = tool_alerts(&http);
            raised.len() == SERVICES as usize && delivered_all(&raised, &got)
        },
    )
    .await;
    let raised = tool_alerts(&http);
    // Time for the delivery to be marked in the changelog; then it dies for good.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    // The next owner reads every record again, from the start, and learns again.
    let (_second, _, http) = member(&dir.path().join("second"), &brokers, &receiver, "1s");
    produce(&producer, DRIFT + 4..DRIFT + 8);
    eventually(
        Duration::from_secs(90),
        "the next owner holds the dead member's alerts",
        || tool_alerts(&http) == raised,
    )
    .await;
    // The records read again count into them, and page nobody.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let shown = alerts(&http);
    let counts: BTreeMap<&str, u64> = shown
        .iter()
        .filter_map(|a| Some((a["id"].as_str()?, a["count"].as_u64()?)))
        .filter(|(id, _)| raised.contains(*id))
        .collect();
    let got = triggers(&got);
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, alert) in got.iter() {
        *times.entry(alert.as_str()).or_default() += 1;
    }
    assert_eq!(times.len(), SERVICES as usize, "{got:?}");
    for (alert, n) in &times {
        assert_eq!(*n, 1, "{alert} paged {n} times: {got:?}");
    }
    assert!(counts.values().all(|&c| c >= 2), "{counts:?}");
    // The dead member's journal keys are the next owner's now: deleted once its own
    // state file holds their alerts.
    eventually(
        Duration::from_secs(30),
        "no journaled alert left in the changelog",
        || journaled_in_changelog(&brokers).is_empty(),
    )
    .await;
}

/// The alert ids whose newest record in the changelog is a journal record, not deleted.
fn journaled_in_changelog(brokers: &str) -> BTreeSet<String> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "handover-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut newest: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    for partition in 0..2 {
        let (low, high) = reader
            .fetch_watermarks("state", partition, Duration::from_secs(5))
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset("state", partition, rdkafka::Offset::Offset(low))
            .unwrap();
        reader.assign(&tpl).unwrap();
        let mut next = low;
        while next < high {
            let Some(m) = reader.poll(Duration::from_secs(5)) else {
                break;
            };
            let m = m.unwrap();
            next = m.offset() + 1;
            if let Some(key) = m.key() {
                newest.insert(key.to_vec(), m.payload().is_some());
            }
        }
    }
    newest
        .into_iter()
        .filter(|(key, alive)| *alive && key.starts_with(b"\0alert "))
        .map(|(key, _)| String::from_utf8_lossy(&key[7..]).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_broker_that_stops_answering_holds_pages_back_only_briefly() {
    let (receiver, got) = alert_receiver(Arc::new(AtomicBool::new(true))).await;
    // Two brokers: the inputs, the repartition topic and every group on the first, the
    // changelog's partitions led by the second.
    let cluster = rdkafka::mocking::MockCluster::new(2).unwrap();
    for topic in ["raw", "events", "state"] {
        cluster.create_topic(topic, 2, 1).unwrap();
    }
    cluster
        .create_topic("driftwatch-dead-letter", 1, 1)
        .unwrap();
    for partition in 0..2 {
        for topic in ["raw", "events"] {
            cluster.partition_leader(topic, partition, Some(1)).unwrap();
        }
        cluster
            .partition_leader("state", partition, Some(2))
            .unwrap();
    }
    cluster
        .partition_leader("driftwatch-dead-letter", 0, Some(1))
        .unwrap();
    for group in ["handover", "handover-decode"] {
        cluster
            .coordinator(rdkafka::mocking::MockCoordinator::Group(group.into()), 1)
            .unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_member, _, http) = member(&dir.path().join("member"), &brokers, &receiver, "1h");
    produce(&producer, 0..DRIFT);
    eventually(Duration::from_secs(90), "every service learned", || {
        let body = http_get(&http, "/api/v1/services").unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let services = v["services"].as_array().cloned().unwrap_or_default();
        services.len() == SERVICES as usize && services.iter().all(|s| s["phase"] == "monitoring")
    })
    .await;
    // The changelog's broker now answers after two minutes; the services drift.
    cluster
        .broker_round_trip_time(2, Duration::from_secs(120))
        .unwrap();
    produce(&producer, DRIFT..DRIFT + 4);
    eventually(
        Duration::from_secs(40),
        "an alert per service delivered while the changelog does not answer",
        || {
            let raised = tool_alerts(&http);
            raised.len() == SERVICES as usize && delivered_all(&raised, &got)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_since_the_last_state_file_moves_with_the_alert() {
    let (receiver, _) = alert_receiver(Arc::new(AtomicBool::new(true))).await;
    let (_cluster, brokers, producer) = members_cluster();
    let dir = tempfile::tempdir().unwrap();
    let first_dir = dir.path().join("first");
    let (mut first, _, http) = member(&first_dir, &brokers, &receiver, "2s");
    produce(&producer, 0..DRIFT + 4);
    eventually(
        Duration::from_secs(90),
        "an alert per service, in a state file",
        || {
            let raised = tool_alerts(&http);
            let state =
                std::fs::read_to_string(first_dir.join("data/state.json")).unwrap_or_default();
            raised.len() == SERVICES as usize && raised.iter().all(|a| state.contains(a.as_str()))
        },
    )
    .await;
    // The changelog follows the state file; then an analyst acknowledges an alert, and
    // the member dies before its next state file.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acknowledged = tool_alerts(&http).into_iter().next().unwrap();
    let status = reqwest::Client::new()
        .post(format!(
            "http://{http}/api/v1/alerts/{acknowledged}/acknowledge"
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    let (_second, _, http) = member(&dir.path().join("second"), &brokers, &receiver, "2s");
    produce(&producer, DRIFT + 4..DRIFT + 8);
    eventually(
        Duration::from_secs(90),
        "the next owner holds the alert, acknowledged",
        || {
            alerts(&http)
                .iter()
                .any(|a| a["id"] == acknowledged.as_str() && a["status"] == "acknowledged")
        },
    )
    .await;
}
