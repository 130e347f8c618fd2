//! The state changelog (`[state] changelog-topic`): each service's detection state, with
//! its alerts, in a compacted Kafka topic keyed by service, in the partition of the
//! repartition topic that carries the service's events. It is what lets a partition
//! move between daemons without its services learning again, as a Kafka Streams
//! state store's changelog does.
//!
//! Written at every state file, before the offsets are committed: for each service of
//! a partition this member holds whose state changed, one record. So the committed
//! offsets of a partition never run ahead of its changelog, and whoever holds the
//! partition next resumes from those offsets with that state. Read after every
//! rebalance, before the first event of each partition is judged: the newest record of
//! each service is adopted when this daemon holds an older copy or none
//! ([`detect::Detector::adopt`]).
//!
//! What a move loses is what a crash loses ([`crate::state`]): behaviour and repeat
//! counts since the last state file, learned and counted again from the re-read
//! records. Alerts raised since then by a daemon that died are raised again by the new
//! owner, under the same alert id.
//!
//! Notifications travel with the state: each record names the service's alerts whose
//! latest trigger or resolve some sink had not taken when it was written, and the
//! member that adopts the record sends those again. Delivery is at least once: an
//! alert delivered after the record was written and before its owner died is sent
//! again, with the same alert id and dedup key (receivers deduplicate by those; the
//! `webhook-id` of a notification that bundles several alerts differs).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use detect::{Alert, Detector, DetectorSnapshot, ServiceSnapshot};
use ingest::KafkaSource;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// The largest service record: a service at `max-baseline-entries` (10,000 entries of
/// about 100 bytes) with its templates and alerts. The topic must allow it too
/// (`max.message.bytes`); lz4 shrinks it several times on the wire.
const MAX_RECORD_BYTES: &str = "16777216";

/// How long reading one partition of the changelog may take before the restore gives
/// up on it (its services then learn from scratch, and a warning says so).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// One service's record in the changelog.
#[derive(Serialize, Deserialize)]
struct ServiceRecord {
    service: ServiceSnapshot,
    alerts: Vec<Alert>,
    /// Ids of those alerts not delivered everywhere when the record was written.
    #[serde(default)]
    undelivered: Vec<String>,
}

pub struct Changelog {
    topic: String,
    /// The repartition topic: its partitions are the changelog's.
    input: String,
    source: Arc<KafkaSource>,
    producer: FutureProducer,
    /// The partition each service's events come from.
    owner: HashMap<String, i32>,
    /// Partitions read back since the last rebalance, and which rebalance that was.
    restored: HashSet<i32>,
    generation: u64,
    /// What was last written per service, to write only what changed.
    written: HashMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("the changelog producer could not be created")]
    Create(#[source] rdkafka::error::KafkaError),
    #[error("the changelog topic {topic} refused {failed} service records")]
    Refused {
        topic: String,
        failed: usize,
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

impl Changelog {
    pub fn new(topic: &str, input: &str, source: Arc<KafkaSource>) -> Result<Self, ChangelogError> {
        let mut cc = source.client_config();
        cc.set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("message.max.bytes", MAX_RECORD_BYTES);
        let producer: FutureProducer = cc.create().map_err(ChangelogError::Create)?;
        Ok(Changelog {
            topic: topic.to_owned(),
            input: input.to_owned(),
            source,
            producer,
            owner: HashMap::new(),
            restored: HashSet::new(),
            generation: u64::MAX,
            written: HashMap::new(),
        })
    }

    /// Before a batch is judged: reads back the partitions among `partitions` not read
    /// since the last rebalance, and has the detector adopt their services. Returns
    /// the alerts their previous owner had not delivered everywhere, as the detector
    /// holds them now: the caller sends them.
    pub async fn restore(&mut self, detector: &mut Detector, partitions: &[i32]) -> Vec<Alert> {
        let mut handed = Vec::new();
        let generation = self.source.assignments();
        if generation != self.generation {
            self.generation = generation;
            self.restored.clear();
            // Services of partitions another member holds now are its to judge: it
            // adopted them from the changelog, written before they were revoked.
            let held: HashSet<i32> = self.source.assigned(&self.input).into_iter().collect();
            let gone: Vec<String> = self
                .owner
                .iter()
                .filter(|(_, p)| !held.contains(p))
                .map(|(s, _)| s.clone())
                .collect();
            for service in &gone {
                detector.release(service);
                self.owner.remove(service);
                self.written.remove(service);
            }
            if !gone.is_empty() {
                info!(
                    services = gone.len(),
                    "Services of revoked partitions released."
                );
            }
        }
        let mut wanted: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| *p >= 0 && !self.restored.contains(p))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        for partition in wanted {
            self.restored.insert(partition);
            let (topic, source) = (self.topic.clone(), self.source.clone());
            let read =
                tokio::task::spawn_blocking(move || read_partition(&source, &topic, partition))
                    .await;
            let records = match read {
                Ok(Ok(records)) => records,
                Ok(Err(e)) => {
                    warn!(topic = %self.topic, partition, error = %e, "Reading the state changelog failed; this partition's services not held here learn from scratch.");
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "The changelog reader panicked.");
                    continue;
                }
            };
            let (mut services, mut alerts, mut undelivered) = (Vec::new(), Vec::new(), Vec::new());
            for r in records {
                self.owner.insert(r.service.service.clone(), partition);
                services.push(r.service);
                alerts.extend(r.alerts);
                undelivered.extend(r.undelivered);
            }
            let (read, adopted) = (services.len(), detector.adopt(services, alerts));
            let before = handed.len();
            handed.extend(
                undelivered
                    .iter()
                    .filter_map(|id| detector.alert(id))
                    .cloned(),
            );
            info!(
                partition,
                services = read,
                adopted,
                undelivered = handed.len() - before,
                "State changelog read back."
            );
        }
        handed
    }

    /// Notes the partition a service's events come from.
    pub fn saw(&mut self, service: &str, partition: i32) {
        if partition >= 0 && self.owner.get(service) != Some(&partition) {
            self.owner.insert(service.to_owned(), partition);
        }
    }

    /// Writes the services of partitions this member holds whose state (or whose
    /// alerts' delivery: `undelivered`, [`notify::Notifier::undelivered`]) changed since
    /// the last write, and waits for the broker to take them all.
    pub async fn write(
        &mut self,
        snapshot: &DetectorSnapshot,
        undelivered: &HashSet<String>,
    ) -> Result<usize, ChangelogError> {
        let held: HashSet<i32> = self.source.assigned(&self.input).into_iter().collect();
        let mut alerts: HashMap<&str, Vec<&Alert>> = HashMap::new();
        for a in &snapshot.alerts {
            alerts.entry(a.service.as_str()).or_default().push(a);
        }
        let mut records = Vec::new();
        for s in &snapshot.services {
            let Some(&partition) = self.owner.get(&s.service) else {
                continue;
            };
            if !held.contains(&partition) {
                continue;
            }
            let theirs = alerts
                .get(s.service.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let pending: Vec<&str> = theirs
                .iter()
                .filter(|a| undelivered.contains(&a.id))
                .map(|a| a.id.as_str())
                .collect();
            let version = version(s, theirs, &pending);
            if self.written.get(&s.service) == Some(&version) {
                continue;
            }
            let body = serde_json::to_vec(&serde_json::json!({
                "service": s, "alerts": theirs, "undelivered": pending,
            }))
            .expect("snapshots serialize");
            records.push((s.service.clone(), partition, body, version));
        }
        let sends = records.iter().map(|(service, partition, body, _)| {
            self.producer.send(
                FutureRecord::to(&self.topic)
                    .key(service)
                    .partition(*partition)
                    .payload(body),
                Duration::from_secs(5),
            )
        });
        let results = futures::future::join_all(sends).await;
        let mut failed = 0;
        let mut error = None;
        for (result, (service, _, _, version)) in results.into_iter().zip(&records) {
            match result {
                Ok(_) => {
                    self.written.insert(service.clone(), *version);
                }
                Err((e, _)) => {
                    failed += 1;
                    error = Some(e);
                }
            }
        }
        match error {
            Some(source) => Err(ChangelogError::Refused {
                topic: self.topic.clone(),
                failed,
                source,
            }),
            None => Ok(records.len()),
        }
    }
}

/// What changes when a service's record would: its events, its alerts' counts and
/// statuses, and which of them are undelivered.
fn version(s: &ServiceSnapshot, alerts: &[&Alert], undelivered: &[&str]) -> u64 {
    let mut parts = vec![s.service.clone(), s.events.to_string()];
    for a in alerts {
        parts.push(format!("{}:{}:{:?}", a.id, a.count, a.status));
    }
    parts.extend(undelivered.iter().map(|id| format!("undelivered {id}")));
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    detect::stable_hash(&parts)
}

/// Reads one partition of the changelog to its end: the newest record of each service.
fn read_partition(
    source: &KafkaSource,
    topic: &str,
    partition: i32,
) -> Result<Vec<ServiceRecord>, rdkafka::error::KafkaError> {
    let mut cc = source.client_config();
    cc.set("group.id", "driftwatch-changelog-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.message.max.bytes", MAX_RECORD_BYTES);
    let consumer: BaseConsumer = cc.create()?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    let mut newest: HashMap<String, Option<ServiceRecord>> = HashMap::new();
    if high > low {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let started = std::time::Instant::now();
        let mut next = low;
        while next < high {
            if started.elapsed() > RESTORE_TIMEOUT {
                warn!(
                    topic,
                    partition,
                    read = next - low,
                    of = high - low,
                    "Reading the state changelog took too long; what was read is kept."
                );
                break;
            }
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message?;
            next = message.offset() + 1;
            let Some(key) = message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
            else {
                continue;
            };
            // A record that does not parse (another version's) counts as none.
            let record = message
                .payload()
                .and_then(|p| serde_json::from_slice::<ServiceRecord>(p).ok());
            newest.insert(key, record);
        }
    }
    Ok(newest.into_values().flatten().collect())
}
