//! Alerts and findings of the whole cluster (`[kafka] cluster-topic`): every daemon
//! writes the alerts it raises or changes and the findings its checks make to one topic,
//! and reads every other daemon's back into its `alerts` and `findings` tables and its
//! API, as a Kafka Streams global table is read whole by every instance.
//!
//! What it guarantees, and what it does not. The topic is a view of the members' state,
//! never its source: each member's own alerts stay in its detector, which alone judges,
//! delivers and persists them, so nothing here can page or lose an alert. A member's
//! alerts are published with each view the pipeline publishes (at most every 250 ms),
//! keyed by alert id, so the newest record of an id is its newest state whichever
//! member wrote it (a service that moves is written by its new owner after the old
//! one); findings are keyed by finding id. Records are sent without waiting: one the
//! producer cannot queue, or the broker refuses, is dropped and counted
//! (`driftwatch_cluster_records_total{outcome="dropped"}`), and the alert shows on other
//! members at its next change. A member reads the topic from its start at every start,
//! so the tables fill within seconds of a start, and keeps at most `max-alerts` other
//! members' alerts (the oldest first go) and the newest [`FINDINGS_KEPT`] findings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use compliance::tables::FindingRecord;
use detect::Alert;
use ingest::Nanos;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientContext, error::KafkaError};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Other members' findings kept: as many as a member keeps of its own.
pub const FINDINGS_KEPT: usize = compliance::worker::FINDINGS_KEPT;

/// How often the reader publishes what it read: as often as the pipeline publishes.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// How long the reader waits for the topic's partitions before it tries again.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Records queued in the producer before sends are dropped: a burst of 100,000 alert
/// changes (the default `max-alerts`) fits.
const QUEUE_MESSAGES: &str = "100000";

/// The largest record: an alert or a finding with its evidence, well below this.
const MAX_RECORD_BYTES: &str = "1048576";

/// What the reader prefetches, in KiB: librdkafka's default (64 MiB) is meant for a
/// busy input, not for a view that changes a few times a second.
const PREFETCH_KIB: &str = "8192";

/// One record of the topic.
#[derive(Serialize, Deserialize)]
struct Record {
    /// The daemon that wrote it (its host name), shown beside what it holds.
    member: String,
    /// This run of that daemon: a member skips what it wrote itself.
    incarnation: String,
    #[serde(flatten)]
    item: Item,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Item {
    Alert(Box<Alert>),
    Finding(Box<FindingRecord>),
}

/// What this daemon read of the other members: their alerts and findings.
#[derive(Clone, Default)]
pub struct ClusterView {
    alerts: imbl::HashMap<String, Remote<Alert>>,
    /// The same alerts by (time of first occurrence, id), oldest first.
    by_time: imbl::OrdMap<(Nanos, String), ()>,
    findings: imbl::Vector<Remote<FindingRecord>>,
    finding_ids: imbl::HashSet<String>,
}

/// Something another member holds, with that member's name.
#[derive(Clone, Debug)]
pub struct Remote<T> {
    pub member: Arc<str>,
    pub item: Arc<T>,
}

impl ClusterView {
    /// Another member's alert by id.
    pub fn alert(&self, id: &str) -> Option<&Remote<Alert>> {
        self.alerts.get(id)
    }

    /// Other members' alerts, oldest first.
    pub fn alerts(&self) -> impl DoubleEndedIterator<Item = &Remote<Alert>> + '_ {
        self.by_time
            .keys()
            .filter_map(|(_, id)| self.alerts.get(id))
    }

    /// Other members' findings, oldest first as read.
    pub fn findings(&self) -> impl DoubleEndedIterator<Item = &Remote<FindingRecord>> + '_ {
        self.findings.iter()
    }

    fn put_alert(&mut self, member: Arc<str>, alert: Alert, max: usize) {
        let id = alert.id.clone();
        if let Some(old) = self.alerts.get(&id) {
            self.by_time.remove(&(old.item.time, id.clone()));
        }
        self.by_time.insert((alert.time, id.clone()), ());
        self.alerts.insert(
            id,
            Remote {
                member,
                item: Arc::new(alert),
            },
        );
        while self.alerts.len() > max {
            let Some((key, ())) = self.by_time.get_min().cloned() else {
                break;
            };
            self.by_time.remove(&key);
            self.alerts.remove(&key.1);
        }
    }

    fn put_finding(&mut self, member: Arc<str>, finding: FindingRecord) {
        // A finding is written once; a re-send after a restart is the same finding.
        if self.finding_ids.insert(finding.id.clone()).is_some() {
            return;
        }
        self.findings.push_back(Remote {
            member,
            item: Arc::new(finding),
        });
        if self.findings.len() > FINDINGS_KEPT
            && let Some(old) = self.findings.pop_front()
        {
            self.finding_ids.remove(&old.item.id);
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// `driftwatch_cluster_records_total{outcome}`: sent (taken by the broker), dropped
/// (not queued or refused), read (another member's), unreadable.
#[derive(Clone, Debug, Default)]
pub struct ClusterMetrics {
    records: Family<OutcomeLabels, Counter>,
}

impl ClusterMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ClusterMetrics::default();
        registry.register(
            "cluster_records",
            "Records of the cluster topic by outcome: sent (taken by the broker), dropped (not queued or refused), read (another member's), unreadable",
            m.records.clone(),
        );
        m
    }

    fn count(&self, outcome: &'static str, n: u64) {
        self.records
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(n);
    }
}

/// Counts what the broker took and refused.
struct Delivery {
    metrics: ClusterMetrics,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.metrics.count("sent", 1),
            Err((e, _)) => {
                self.metrics.count("dropped", 1);
                warn!(error = %e, "The cluster topic refused a record; other members see that alert at its next change.");
            }
        }
    }
}

/// This daemon's side of the cluster topic: what it writes, and what it read of the
/// other members. Cloning shares both.
#[derive(Clone)]
pub struct Cluster {
    topic: Arc<str>,
    member: Arc<str>,
    incarnation: Arc<str>,
    producer: Arc<ThreadedProducer<Delivery>>,
    view: Arc<ArcSwap<ClusterView>>,
    metrics: ClusterMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster topic's producer could not be created")]
    Producer(#[source] KafkaError),
    #[error("the cluster topic's reader could not be created")]
    Consumer(#[source] KafkaError),
}

/// Reads the topic into the view; run it on a thread of its own.
pub struct ClusterReader {
    consumer: BaseConsumer,
    topic: Arc<str>,
    incarnation: Arc<str>,
    view: Arc<ArcSwap<ClusterView>>,
    metrics: ClusterMetrics,
    max_alerts: usize,
}

impl Cluster {
    /// `client` holds the brokers and connection properties; `max_alerts` bounds the
    /// other members' alerts kept.
    /// Clients for `topic`; this daemon is `member` in the tables (the host name when
    /// `None`).
    pub fn new(
        topic: &str,
        member: Option<&str>,
        client: &ClientConfig,
        max_alerts: usize,
        metrics: ClusterMetrics,
    ) -> Result<(Cluster, ClusterReader), ClusterError> {
        let mut cc = client.clone();
        cc.set("compression.type", "lz4")
            .set("linger.ms", "50")
            .set("queue.buffering.max.messages", QUEUE_MESSAGES)
            .set("message.max.bytes", MAX_RECORD_BYTES);
        let producer: ThreadedProducer<Delivery> = cc
            .create_with_context(Delivery {
                metrics: metrics.clone(),
            })
            .map_err(ClusterError::Producer)?;
        let mut cc = client.clone();
        // Assigned, never subscribed: the group id only names the client to the broker,
        // and nothing is committed.
        cc.set("group.id", "driftwatch-cluster-reader")
            .set("queued.max.messages.kbytes", PREFETCH_KIB)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let consumer: BaseConsumer = cc.create().map_err(ClusterError::Consumer)?;
        let incarnation: Arc<str> = format!(
            "{:x}-{:x}",
            std::process::id(),
            Nanos::now().0 as u64 & 0xffff_ffff
        )
        .into();
        let topic: Arc<str> = topic.into();
        let view = Arc::new(ArcSwap::from_pointee(ClusterView::default()));
        let cluster = Cluster {
            topic: topic.clone(),
            member: member.map_or_else(member_name, str::to_owned).into(),
            incarnation: incarnation.clone(),
            producer: Arc::new(producer),
            view: view.clone(),
            metrics: metrics.clone(),
        };
        let reader = ClusterReader {
            consumer,
            topic,
            incarnation,
            view,
            metrics,
            max_alerts: max_alerts.max(1),
        };
        Ok((cluster, reader))
    }

    /// This daemon's name in the cluster tables.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// What this daemon read of the other members, as last published.
    pub fn load(&self) -> Arc<ClusterView> {
        self.view.load_full()
    }

    /// Queues alerts for the topic, without waiting.
    pub fn publish_alerts<'a>(&self, alerts: impl IntoIterator<Item = &'a Alert>) {
        for alert in alerts {
            let key = format!("alert/{}", alert.id);
            self.send(&key, Item::Alert(Box::new(alert.clone())));
        }
    }

    /// Queues findings for the topic, without waiting.
    pub fn publish_findings(&self, findings: &[compliance::Finding]) {
        for f in findings {
            let key = format!("finding/{}", f.id);
            self.send(&key, Item::Finding(Box::new(FindingRecord::of(f))));
        }
    }

    fn send(&self, key: &str, item: Item) {
        let record = Record {
            member: self.member.to_string(),
            incarnation: self.incarnation.to_string(),
            item,
        };
        let Ok(body) = serde_json::to_vec(&record) else {
            self.metrics.count("dropped", 1);
            return;
        };
        if let Err((e, _)) = self.producer.send(
            BaseRecord::<str, [u8]>::to(&self.topic)
                .key(key)
                .payload(body.as_slice()),
        ) {
            self.metrics.count("dropped", 1);
            warn!(error = %e, topic = %self.topic, "A record for the cluster topic was dropped; other members see that alert at its next change.");
        }
    }

    /// Waits up to `timeout` for queued records to reach the broker (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(timeout) {
            warn!(error = %e, "Records for the cluster topic were still queued at shutdown.");
        }
    }
}

impl ClusterReader {
    /// Reads from the start of every partition until `cancel`, publishing what changed
    /// at most every [`PUBLISH_INTERVAL`].
    pub fn run(self, cancel: &tokio_util::sync::CancellationToken) {
        while !cancel.is_cancelled() {
            match self.assign() {
                Ok(n) => {
                    info!(topic = %self.topic, partitions = n, "Reading the cluster topic.");
                    break;
                }
                Err(e) => {
                    warn!(topic = %self.topic, error = %e, "The cluster topic cannot be read yet; trying again.");
                    std::thread::sleep(Duration::from_secs(2));
                }
            }
        }
        let mut view = ClusterView::clone(&self.view.load());
        let mut members: HashMap<String, Arc<str>> = HashMap::new();
        let (mut dirty, mut published) = (false, Instant::now());
        while !cancel.is_cancelled() {
            if let Some(message) = self.consumer.poll(Duration::from_millis(100)) {
                match message {
                    Ok(m) => {
                        if let Some(payload) = m.payload() {
                            dirty |= self.apply(&mut view, &mut members, payload);
                        }
                    }
                    Err(e) => {
                        warn!(topic = %self.topic, error = %e, "Reading the cluster topic failed.")
                    }
                }
            }
            if dirty && published.elapsed() >= PUBLISH_INTERVAL {
                self.view.store(Arc::new(view.clone()));
                (dirty, published) = (false, Instant::now());
            }
        }
    }

    fn assign(&self) -> Result<usize, KafkaError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), METADATA_TIMEOUT)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == &*self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(&self.topic, *p, Offset::Beginning)?;
        }
        self.consumer.assign(&tpl)?;
        Ok(partitions.len())
    }

    /// Applies one record; true if the view changed.
    fn apply(
        &self,
        view: &mut ClusterView,
        members: &mut HashMap<String, Arc<str>>,
        payload: &[u8],
    ) -> bool {
        let Ok(record) = serde_json::from_slice::<Record>(payload) else {
            self.metrics.count("unreadable", 1);
            return false;
        };
        if *record.incarnation == *self.incarnation {
            return false;
        }
        self.metrics.count("read", 1);
        // One shared name per member, however many records it wrote.
        let member = members
            .entry(record.member.clone())
            .or_insert_with(|| record.member.as_str().into())
            .clone();
        match record.item {
            Item::Alert(alert) => view.put_alert(member, *alert, self.max_alerts),
            Item::Finding(finding) => view.put_finding(member, *finding),
        }
        true
    }
}

/// The host's name (a StatefulSet pod's name), or `driftwatch` when it cannot be read.
fn member_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "driftwatch".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str, time: i64, count: u64) -> Alert {
        let mut a: Alert = serde_json::from_value(serde_json::json!({
            "id": id, "time": "2026-03-02T10:00:00Z", "last_seen": "2026-03-02T10:00:00Z",
            "service": "shop/api", "kind": "process", "severity": "high",
            "subject": "/usr/bin/nc", "dimension": "process", "explanation": "x",
            "count": 1, "status": "open", "dedup_key": id, "evidence": [],
        }))
        .expect("an alert");
        a.time = Nanos(time);
        a.count = count;
        a
    }

    #[test]
    fn the_newest_record_of_an_alert_is_its_state() {
        let mut view = ClusterView::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        view.put_alert(a, alert("x", 5, 1), 10);
        view.put_alert(b, alert("x", 5, 7), 10);
        let kept: Vec<_> = view.alerts().collect();
        assert_eq!(kept.len(), 1);
        assert_eq!((&*kept[0].member, kept[0].item.count), ("b", 7));
    }

    #[test]
    fn other_members_alerts_are_bounded_oldest_first() {
        let mut view = ClusterView::default();
        let m: Arc<str> = "m".into();
        for i in 0..5 {
            view.put_alert(m.clone(), alert(&format!("a{i}"), i, 1), 3);
        }
        let ids: Vec<&str> = view.alerts().map(|r| r.item.id.as_str()).collect();
        assert_eq!(ids, ["a2", "a3", "a4"]);
        assert!(view.alert("a0").is_none());
    }
}
