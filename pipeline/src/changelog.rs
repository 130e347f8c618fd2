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
//! records. Alerts raised since then are not lost: they are journaled (below).
//!
//! Notifications travel with the state: each record names the service's alerts whose
//! latest trigger or resolve some sink had not taken when it was written, and the
//! member that adopts the record sends those again.
//!
//! Between two state files, alerts are journaled here as they are in the data
//! directory's journal ([`crate::journal`]): every alert raised or changed is written,
//! keyed by its id in its service's partition, and the broker has taken it before it is
//! handed to delivery; once every sink has taken it, the same key is written again,
//! marked delivered (within [`Changelog::MARK_EVERY`]). The next state file's service
//! record holds those alerts, and their keys are then deleted (tombstones). A member
//! that takes a partition over adopts the journaled alerts too, so the records it
//! re-reads count into them instead of raising them again, sends only those not marked
//! delivered, and from then on marks and deletes their keys as its own. Delivery is at
//! least once: an alert a sink took in the moments before its owner died, too late to
//! be marked, is sent again, with the same alert id and dedup key (receivers
//! deduplicate by those; the `webhook-id` of a notification that bundles several
//! alerts differs).

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

/// How long a record may wait for the broker's acknowledgement. A healthy cluster takes
/// one in milliseconds and a leader election in a few seconds; past this the broker is
/// taken to be away, rather than librdkafka's own limit (`message.timeout.ms`, five
/// minutes by default) holding pages back: alerts go to delivery unjournaled (should
/// this member die, the next owner sends them again), and a state file's offsets stay
/// uncommitted until a later write is taken. The record itself stays queued.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// Keys of journaled alerts start with this, then the alert's id: a NUL, which the
/// workload names a service is named after (Kubernetes, Docker) cannot hold.
const JOURNAL_KEY: &str = "\u{0}alert ";

/// One alert journaled between state files.
#[derive(Serialize, Deserialize)]
struct JournalRecord {
    alert: Alert,
    /// Whether every sink had taken the alert's latest trigger or resolve.
    delivered: bool,
}

/// What one partition of the changelog holds: the newest record of each key, with its
/// offset.
#[derive(Default)]
struct Partition {
    services: Vec<(i64, ServiceRecord)>,
    journal: Vec<(i64, JournalRecord)>,
}

/// An alert journaled by this member and not yet in a state file's record.
struct Journaled {
    partition: i32,
    alert: Alert,
    delivered: bool,
}

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
    /// Alerts journaled since their service's last record, by alert id.
    journaled: HashMap<String, Journaled>,
    /// How many of them are not marked delivered (asked before every batch).
    awaiting: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("the changelog producer could not be created")]
    Create(#[source] rdkafka::error::KafkaError),
    #[error("the changelog topic {topic} refused, or did not take in time, {failed} records")]
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
            journaled: HashMap::new(),
            awaiting: 0,
        })
    }

    /// How often journaled alerts are checked for delivery (and marked): as often as
    /// views are published.
    pub const MARK_EVERY: Duration = Duration::from_millis(250);

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
            // Their journaled alerts are the new owner's to mark (the state written on
            // revoke holds them, unless that write failed).
            self.journaled.retain(|_, j| held.contains(&j.partition));
            self.count_awaiting();
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
            let mut records = match read {
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
            let journaled = records.journal.len();
            let (alerts, delivered): (Vec<Alert>, HashMap<String, bool>) =
                newest_alerts(&mut records)
                    .into_iter()
                    .map(|(id, (alert, delivered))| (alert, (id, delivered)))
                    .unzip();
            let mut services = Vec::with_capacity(records.services.len());
            for (_, r) in records.services {
                self.owner.insert(r.service.service.clone(), partition);
                services.push(r.service);
            }
            let mut from_journal = Vec::with_capacity(journaled);
            for (_, j) in records.journal {
                self.owner
                    .entry(j.alert.service.clone())
                    .or_insert(partition);
                from_journal.push(j.alert.id);
            }
            let (read, adopted) = (services.len(), detector.adopt(services, alerts));
            // Their keys are this member's now: marked once its sinks take what is
            // pending, deleted once its own state file holds them.
            for id in from_journal {
                if let Some(alert) = detector.alert(&id) {
                    let delivered = delivered.get(&id).copied().unwrap_or(true);
                    self.journaled.insert(
                        id,
                        Journaled {
                            partition,
                            alert: alert.clone(),
                            delivered,
                        },
                    );
                }
            }
            self.count_awaiting();
            let mut pending: Vec<&Alert> = delivered
                .iter()
                .filter(|(_, delivered)| !**delivered)
                .filter_map(|(id, _)| detector.alert(id))
                .collect();
            pending.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
            info!(
                partition,
                services = read,
                adopted,
                journaled,
                undelivered = pending.len(),
                "State changelog read back."
            );
            handed.extend(pending.into_iter().cloned());
        }
        handed
    }

    /// Journals alerts just raised or changed, in their services' partitions (those this
    /// member holds), and waits for the broker to take them: call before handing them
    /// to delivery. Alerts of services whose partition is unknown (driftwatch's own
    /// health) are not journaled.
    pub async fn journal(&mut self, alerts: &[Alert]) -> Result<(), ChangelogError> {
        let held: HashSet<i32> = self.source.assigned(&self.input).into_iter().collect();
        let records: Vec<(i32, String, Vec<u8>, &Alert)> = alerts
            .iter()
            .filter_map(|a| {
                let partition = *self.owner.get(&a.service)?;
                held.contains(&partition).then(|| {
                    let body = serde_json::to_vec(&JournalRecord {
                        alert: a.clone(),
                        delivered: false,
                    })
                    .expect("alerts serialize");
                    (partition, journal_key(&a.id), body, a)
                })
            })
            .collect();
        let (taken, refused) = self
            .send_all(
                records
                    .iter()
                    .map(|(partition, key, body, _)| (key.as_str(), *partition, body.as_slice())),
            )
            .await;
        for (taken, (partition, _, _, alert)) in taken.into_iter().zip(&records) {
            if taken {
                self.journaled.insert(
                    alert.id.clone(),
                    Journaled {
                        partition: *partition,
                        alert: (*alert).clone(),
                        delivered: false,
                    },
                );
            }
        }
        self.count_awaiting();
        refused.map_or(Ok(()), Err)
    }

    /// Sends records (key, partition, payload) and waits for the broker to take each;
    /// returns which it took and, if it refused any, how many with the last reason.
    async fn send_all(
        &self,
        records: impl Iterator<Item = (&str, i32, &[u8])>,
    ) -> (Vec<bool>, Option<ChangelogError>) {
        let sends = records.map(|(key, partition, body)| {
            tokio::time::timeout(
                ACK_WAIT,
                self.producer.send(
                    FutureRecord::to(&self.topic)
                        .key(key)
                        .partition(partition)
                        .payload(body),
                    Duration::from_secs(5),
                ),
            )
        });
        let results = futures::future::join_all(sends).await;
        let mut failed = 0;
        let mut error = None;
        let taken = results
            .into_iter()
            .map(|r| match r {
                Ok(Ok(_)) => true,
                Ok(Err((e, _))) => {
                    failed += 1;
                    error = Some(e);
                    false
                }
                Err(_) => {
                    failed += 1;
                    error = Some(rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
                    ));
                    false
                }
            })
            .collect();
        let refused = error.map(|source| ChangelogError::Refused {
            topic: self.topic.clone(),
            failed,
            source,
        });
        (taken, refused)
    }

    /// Whether some journaled alert is not yet marked delivered.
    pub fn awaiting_delivery(&self) -> bool {
        self.awaiting > 0
    }

    fn count_awaiting(&mut self) {
        self.awaiting = self.journaled.values().filter(|j| !j.delivered).count();
    }

    /// Marks delivered the journaled alerts that no sink still holds (`undelivered`:
    /// [`notify::Notifier::undelivered`]). The marks are queued, not waited for: one
    /// lost to a crash leaves the alert to be sent again by the next owner.
    pub fn mark_delivered(&mut self, undelivered: &HashSet<String>) {
        for (id, j) in &mut self.journaled {
            if j.delivered || undelivered.contains(id) {
                continue;
            }
            j.delivered = true;
            let body = serde_json::to_vec(&JournalRecord {
                alert: j.alert.clone(),
                delivered: true,
            })
            .expect("alerts serialize");
            // Sent whether or not the future is awaited: the producer holds the record.
            let _ = self.producer.send_result(
                FutureRecord::to(&self.topic)
                    .key(&journal_key(id))
                    .partition(j.partition)
                    .payload(&body),
            );
        }
        self.count_awaiting();
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
        let (taken, refused) = self
            .send_all(records.iter().map(|(service, partition, body, _)| {
                (service.as_str(), *partition, body.as_slice())
            }))
            .await;
        // Alerts the written records now hold leave the journal.
        let mut held_now: HashSet<&str> = HashSet::new();
        for (taken, (service, _, _, version)) in taken.into_iter().zip(&records) {
            if taken {
                self.written.insert(service.clone(), *version);
                held_now.insert(service.as_str());
            }
        }
        let recorded: HashSet<&str> = snapshot
            .alerts
            .iter()
            .filter(|a| held_now.contains(a.service.as_str()))
            .map(|a| a.id.as_str())
            .collect();
        let (topic, producer) = (&self.topic, &self.producer);
        self.journaled.retain(|id, j| {
            if !recorded.contains(id.as_str()) {
                return true;
            }
            // A tombstone lost to a crash leaves a journal record older than the
            // service's: the reader goes by the newer.
            let _ = producer.send_result(
                FutureRecord::<String, [u8]>::to(topic)
                    .key(&journal_key(id))
                    .partition(j.partition),
            );
            false
        });
        self.count_awaiting();
        refused.map_or(Ok(records.len()), Err)
    }
}

/// Each alert a partition holds, by id, as its newest record (by offset) has it, and
/// whether every sink took its latest trigger or resolve, as that record says: its
/// service's record (which names those not taken) or its journal record. So an
/// analyst's change journaled after the service's record is the alert, and a journal
/// record older than its service's (its tombstone lost) says nothing new. Takes the
/// alerts out of the records.
fn newest_alerts(partition: &mut Partition) -> HashMap<String, (Alert, bool)> {
    let mut newest: HashMap<String, (i64, Alert, bool)> = HashMap::new();
    let services = partition.services.iter_mut().flat_map(|(offset, r)| {
        let undelivered = &r.undelivered;
        std::mem::take(&mut r.alerts).into_iter().map(move |a| {
            let delivered = !undelivered.contains(&a.id);
            (*offset, a, delivered)
        })
    });
    let journal = partition
        .journal
        .iter()
        .map(|(offset, j)| (*offset, j.alert.clone(), j.delivered));
    for (offset, alert, delivered) in services.chain(journal) {
        if newest
            .get(&alert.id)
            .is_none_or(|(seen, _, _)| *seen < offset)
        {
            newest.insert(alert.id.clone(), (offset, alert, delivered));
        }
    }
    newest
        .into_iter()
        .map(|(id, (_, alert, delivered))| (id, (alert, delivered)))
        .collect()
}

/// The key of an alert's journal record.
fn journal_key(id: &str) -> String {
    format!("{JOURNAL_KEY}{id}")
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

/// Reads one partition of the changelog to its end: the newest record of each service
/// and of each journaled alert.
fn read_partition(
    source: &KafkaSource,
    topic: &str,
    partition: i32,
) -> Result<Partition, rdkafka::error::KafkaError> {
    let mut cc = source.client_config();
    cc.set("group.id", "driftwatch-changelog-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.message.max.bytes", MAX_RECORD_BYTES);
    let consumer: BaseConsumer = cc.create()?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    // The newest payload of each key (`None`: deleted), with its offset.
    let mut newest: HashMap<Vec<u8>, (i64, Option<Vec<u8>>)> = HashMap::new();
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
            let Some(key) = message.key() else {
                continue;
            };
            newest.insert(
                key.to_vec(),
                (message.offset(), message.payload().map(<[u8]>::to_vec)),
            );
        }
    }
    let mut read = Partition::default();
    for (key, (offset, payload)) in newest {
        let Some(payload) = payload else { continue };
        // A record that does not parse (another version's) counts as none.
        if key.starts_with(JOURNAL_KEY.as_bytes()) {
            if let Ok(r) = serde_json::from_slice::<JournalRecord>(&payload) {
                read.journal.push((offset, r));
            }
        } else if let Ok(r) = serde_json::from_slice::<ServiceRecord>(&payload) {
            read.services.push((offset, r));
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: &str) -> Alert {
        serde_json::from_value(serde_json::json!({
            "id": id, "time": "2026-03-02T10:00:00Z", "last_seen": "2026-03-02T10:00:00Z",
            "service": "shop/api", "kind": "process", "severity": "high",
            "subject": "/usr/bin/nc", "dimension": "process", "explanation": "x",
            "count": 1, "status": "open", "dedup_key": id, "evidence": [],
        }))
        .expect("an alert")
    }

    fn service_record(alerts: &[&str], undelivered: &[&str]) -> ServiceRecord {
        serde_json::from_value(serde_json::json!({
            "service": {
                "service": "shop/api", "phase": "monitoring", "learning_since": 0,
                "events": 10, "baseline": [],
            },
            "alerts": alerts.iter().map(|id| alert(id)).collect::<Vec<_>>(),
            "undelivered": undelivered,
        }))
        .expect("a service record")
    }

    fn journal(id: &str, delivered: bool) -> JournalRecord {
        JournalRecord {
            alert: alert(id),
            delivered,
        }
    }

    /// Per alert, whether it was delivered, as [`newest_alerts`] says.
    fn delivered(p: &mut Partition) -> HashMap<String, bool> {
        newest_alerts(p)
            .into_iter()
            .map(|(id, (_, delivered))| (id, delivered))
            .collect()
    }

    #[test]
    fn a_journaled_alert_marked_delivered_is_not_sent_again() {
        let mut p = Partition {
            services: vec![],
            journal: vec![(3, journal("a", true)), (4, journal("b", false))],
        };
        let d = delivered(&mut p);
        assert_eq!(d.get("a"), Some(&true));
        assert_eq!(d.get("b"), Some(&false));
    }

    #[test]
    fn an_alert_changed_after_its_services_record_is_adopted_as_changed() {
        let mut acknowledged = journal("a", false);
        acknowledged.alert.status = detect::AlertStatus::Acknowledged;
        let mut stale = journal("b", false);
        stale.alert.status = detect::AlertStatus::Acknowledged;
        let mut p = Partition {
            services: vec![(5, service_record(&["a", "b"], &[]))],
            journal: vec![(7, acknowledged), (2, stale)],
        };
        let mut alerts: Vec<Alert> = newest_alerts(&mut p)
            .into_values()
            .map(|(a, _)| a)
            .collect();
        alerts.sort_by(|x, y| x.id.cmp(&y.id));
        let status: Vec<_> = alerts.iter().map(|a| (a.id.as_str(), a.status)).collect();
        assert_eq!(
            status,
            [
                ("a", detect::AlertStatus::Acknowledged),
                ("b", detect::AlertStatus::Open)
            ]
        );
    }

    #[test]
    fn the_newer_of_a_service_record_and_a_journal_record_decides() {
        let mut p = Partition {
            // "a" was pending when the service was written, then delivered; "b" was
            // journaled before the service record, whose tombstone was lost.
            services: vec![(5, service_record(&["a", "b"], &["a"]))],
            journal: vec![(7, journal("a", true)), (2, journal("b", false))],
        };
        let d = delivered(&mut p);
        assert_eq!(d.get("a"), Some(&true));
        assert_eq!(d.get("b"), Some(&true));
        let mut p = Partition {
            services: vec![(5, service_record(&["a"], &["a"]))],
            journal: vec![(2, journal("a", true))],
        };
        assert_eq!(delivered(&mut p).get("a"), Some(&false));
    }
}
