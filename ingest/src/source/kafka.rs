//! The Kafka source: a consumer group over one or more topics, each with its format.
//!
//! At-least-once: `enable.auto.offset.store` is forced off and an offset is stored
//! only when the pipeline acknowledges the batch holding its record; librdkafka's
//! auto-commit then commits stored offsets, and shutdown commits them synchronously. A
//! crash replays at most the uncommitted tail and never skips a record. A batch that
//! cannot be read (corrupt, or compressed past repair) is not skipped either: librdkafka
//! reports it without its partition, which stays at it; the report is counted and
//! alerted on, and the partition's lag shows what waits behind it.
//!
//! No record twice within one run: a rebalance that hands a partition straight back to
//! this member (another member joined or left) makes librdkafka fetch it again from the
//! last commit, which can lie well behind what was read (with a data directory, commits
//! follow the state file). Those records are already in the pipeline's state, or on
//! their way there in order, so the source skips every record below the next offset it
//! read of that partition. That floor is kept only while the member holds the partition
//! without a break: one revoked and not handed back in the same rebalance is read again
//! from the commit when it returns, since its state may have moved elsewhere meanwhile.
//! A run that starts from a state file starts from its offsets as floors
//! ([`KafkaSource::already_read`]): the commit that follows each file may not have
//! happened before a crash.
//!
//! Backpressure: batches go to the pipeline over a bounded channel. When it stays full
//! the consumer pauses its assignment (librdkafka stops fetching), keeps polling so the
//! group stays healthy, waits for room and resumes; nothing queues without bound.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

mod context;

use context::{Floors, Rebalanced};
pub use context::{RevokeHook, SourceContext};

use super::{Ack, Batch, Pending};
use crate::dead_letter::{DeadLetterSink, KafkaLetters};
use crate::decode::{Decoder, Format};
use crate::error::SourceError;
use crate::event::Provenance;
use crate::metrics::IngestMetrics;

/// Kafka source settings (`[kafka]` in the config file).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    #[serde(default = "default_group_id")]
    pub group_id: String,
    pub topics: Vec<TopicConfig>,
    /// Where undecodable records go, with their error and provenance.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// With it, decoding and detection are two stages joined by this topic: decoded
    /// events are produced to it keyed by service (native form), and detection reads
    /// it, so that one daemon holds each service's whole baseline (`run --role`).
    #[serde(default)]
    pub repartition_topic: Option<String>,
    /// With it, every daemon writes the alerts and findings it makes to this topic and
    /// reads the other daemons' back into its tables and API, so any daemon shows the
    /// whole cluster's.
    #[serde(default)]
    pub cluster_topic: Option<String>,
    /// This daemon's name in the cluster's tables and API (`member`); the host name
    /// when unset. Set it when several daemons share a host.
    #[serde(default)]
    pub member: Option<String>,
    /// Records per batch handed to the pipeline.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// A partly filled batch is handed over after this long.
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Batches in flight between the consumer and the pipeline before it pauses.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// librdkafka properties passed through as they are (`security.protocol`,
    /// `sasl.mechanisms`, `ssl.ca.location`, …). `enable.auto.offset.store` is always
    /// false: at-least-once delivery depends on it.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// One topic and the format of its records.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TopicConfig {
    pub name: String,
    #[serde(default = "default_format")]
    pub format: Format,
}

impl KafkaConfig {
    /// The brokers and connection properties, for the daemon's other Kafka clients.
    pub fn client_config(&self) -> ClientConfig {
        client_config(self)
    }

    /// A config with every default, for these brokers and topics.
    pub fn new(brokers: impl Into<String>, topics: Vec<TopicConfig>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            group_id: default_group_id(),
            topics,
            dead_letter_topic: default_dead_letter_topic(),
            repartition_topic: None,
            cluster_topic: None,
            member: None,
            batch_size: default_batch_size(),
            flush_interval: default_flush_interval(),
            channel_capacity: default_channel_capacity(),
            properties: BTreeMap::new(),
        }
    }
}

fn default_group_id() -> String {
    "driftwatch".to_owned()
}
fn default_dead_letter_topic() -> String {
    "driftwatch-dead-letter".to_owned()
}
/// 1,000 records amortise a store append (one Arrow batch) while keeping a batch's
/// latency in the milliseconds.
fn default_batch_size() -> usize {
    1_000
}
/// 200 ms bounds the delay a quiet topic adds before its events are seen.
fn default_flush_interval() -> Duration {
    Duration::from_millis(200)
}
/// 8 batches of 1,000 keep both cores busy without holding more than a few MiB.
fn default_channel_capacity() -> usize {
    8
}
fn default_format() -> Format {
    Format::Auto
}

/// How long a batch may wait for room in the channel before the consumer pauses its
/// partitions. Pausing makes librdkafka drop what it prefetched and fetch it again on
/// resume, so it is for a pipeline that is really behind, not for a moment's jitter.
const PAUSE_AFTER: Duration = Duration::from_millis(500);

/// How often librdkafka reports statistics (the source of the lag metric), unless the
/// config sets `statistics.interval.ms` itself.
const DEFAULT_STATISTICS_INTERVAL_MS: &str = "5000";

/// librdkafka's default `message.max.bytes`, the largest record its producer sends.
const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// How long a dead letter may wait for the broker before it is spooled: long enough for
/// a leader election, short enough that a missing topic costs seconds per batch.
const DEAD_LETTER_TIMEOUT_MS: &str = "10000";

pub type Consumer = StreamConsumer<SourceContext>;

/// A running consumer group member.
pub struct KafkaSource {
    consumer: Arc<Consumer>,
    formats: HashMap<String, Format>,
    config: KafkaConfig,
    metrics: IngestMetrics,
    assignments: Arc<std::sync::atomic::AtomicU64>,
    on_revoke: Arc<std::sync::OnceLock<RevokeHook>>,
    rebalanced: Arc<Rebalanced>,
    /// Floors to start from ([`KafkaSource::already_read`]), taken by `run`.
    restored: std::sync::Mutex<Floors>,
}

pub(crate) fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.brokers);
    for (k, v) in &config.properties {
        cc.set(k, v);
    }
    cc
}

impl KafkaSource {
    /// Creates the consumer and subscribes to the configured topics.
    pub fn new(config: KafkaConfig, metrics: IngestMetrics) -> Result<Self, SourceError> {
        let mut cc = client_config(&config);
        cc.set("group.id", &config.group_id);
        if !config.properties.contains_key("auto.offset.reset") {
            cc.set("auto.offset.reset", "earliest");
        }
        if !config.properties.contains_key("statistics.interval.ms") {
            cc.set("statistics.interval.ms", DEFAULT_STATISTICS_INTERVAL_MS);
        }
        cc.set("enable.auto.offset.store", "false");
        let assignments = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let on_revoke = Arc::new(std::sync::OnceLock::new());
        let rebalanced = Arc::new(Rebalanced::default());
        let consumer: Consumer = cc
            .create_with_context(SourceContext {
                metrics: metrics.clone(),
                assignments: assignments.clone(),
                on_revoke: on_revoke.clone(),
                rebalanced: rebalanced.clone(),
            })
            .map_err(|source| SourceError::CreateClient {
                what: "consumer",
                source,
            })?;
        let topics: Vec<String> = config.topics.iter().map(|t| t.name.clone()).collect();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|source| SourceError::Subscribe {
                topics: topics.clone(),
                source,
            })?;
        let formats = config
            .topics
            .iter()
            .map(|t| (t.name.clone(), t.format))
            .collect();
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            formats,
            config,
            metrics,
            assignments,
            on_revoke,
            rebalanced,
            restored: std::sync::Mutex::default(),
        })
    }

    /// Sets what runs before this member's partitions are revoked (once).
    pub fn on_revoke(&self, hook: RevokeHook) {
        let _ = self.on_revoke.set(hook);
    }

    /// Records below these next offsets are already in the state this run starts from
    /// (a state file's): skipped when fetched, as records read earlier in the run are.
    /// A commit that lagged the state file when the daemon died would otherwise count
    /// them twice. Call before [`KafkaSource::run`].
    pub fn already_read<'a>(&self, next: impl IntoIterator<Item = (&'a str, i32, i64)>) {
        let mut floors = self.restored.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, partition, offset) in next {
            floors
                .entry(topic.to_owned())
                .or_default()
                .insert(partition, offset);
        }
    }

    /// How many assignments this member has had: it changes with every rebalance.
    pub fn assignments(&self) -> u64 {
        self.assignments.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The partitions of `topic` this member holds now.
    pub fn assigned(&self, topic: &str) -> Vec<i32> {
        self.consumer
            .assignment()
            .map(|tpl| {
                tpl.elements_for_topic(topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A client configuration with the source's connection properties (brokers,
    /// security), for other clients of the same cluster.
    pub fn client_config(&self) -> ClientConfig {
        client_config(&self.config)
    }

    /// A producer for the dead-letter topic, with the same connection properties.
    /// Letters the topic refuses are spooled to `spool` (a file in the data directory).
    pub fn dead_letter_sink(&self, spool: Option<PathBuf>) -> Result<DeadLetterSink, SourceError> {
        let mut cc = client_config(&self.config);
        cc.set("enable.idempotence", "true");
        // A letter not delivered in this long is spooled instead: librdkafka's default
        // (5 minutes) would hold ingestion up that long for a missing topic.
        if !self.config.properties.contains_key("message.timeout.ms") {
            cc.set("message.timeout.ms", DEAD_LETTER_TIMEOUT_MS);
        }
        let max_bytes = self
            .config
            .properties
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(LIBRDKAFKA_MESSAGE_MAX_BYTES);
        let producer: FutureProducer = cc.create().map_err(|source| SourceError::CreateClient {
            what: "dead-letter producer",
            source,
        })?;
        Ok(DeadLetterSink::Kafka(KafkaLetters::new(
            producer,
            self.config.dead_letter_topic.clone(),
            max_bytes,
            spool,
            self.metrics.clone(),
        )))
    }

    pub fn channel_capacity(&self) -> usize {
        self.config.channel_capacity.max(1)
    }

    /// Consumes until `cancel` fires, handing batches to `tx`. Returns when cancelled
    /// or when the pipeline hangs up; unacknowledged records are simply not committed.
    pub async fn run(
        &self,
        decoder: Decoder,
        mut dead_letters: DeadLetterSink,
        tx: mpsc::Sender<Batch>,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        let mut pending = Pending::new(decoder);
        // Per topic, then partition: a record's topic is looked up, not copied.
        let mut offsets: HashMap<String, HashMap<i32, i64>> = HashMap::new();
        let mut floors =
            std::mem::take(&mut *self.restored.lock().unwrap_or_else(|e| e.into_inner()));
        let batch_size = self.config.batch_size.max(1);
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let flush_due = tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                () = sleep_until(deadline) => true,
                msg = self.consumer.recv() => {
                    self.accept(msg, &mut pending, &mut offsets, &mut floors);
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.config.flush_interval);
                    pending.records() >= batch_size
                }
            };
            if !flush_due {
                continue;
            }
            // Due, even with nothing to hand over (every record skipped): a deadline
            // left in the past would win every later select.
            deadline = None;
            if pending.is_empty() {
                continue;
            }
            let (events, partitions, stats) = pending.take(&mut dead_letters).await?;
            let ack = Ack::Kafka {
                consumer: self.consumer.clone(),
                offsets: offsets
                    .iter_mut()
                    .flat_map(|(topic, partitions)| {
                        partitions.drain().map(|(p, o)| ((topic.clone(), p), o))
                    })
                    .collect(),
            };
            let batch = Batch {
                events,
                partitions,
                stats,
                ack,
            };
            // A full channel for a moment is ordinary; only a pipeline that stays
            // behind is backpressure worth pausing the partitions for.
            let batch = match tx.send_timeout(batch, PAUSE_AFTER).await {
                Ok(()) => continue,
                Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                    return Err(SourceError::PipelineClosed);
                }
                Err(mpsc::error::SendTimeoutError::Timeout(batch)) => batch,
            };
            self.metrics.paused();
            self.pause();
            debug!("Pipeline full; consumer paused.");
            // Keep polling while paused: librdkafka serves rebalances and liveness
            // from the poll loop. Records it still delivers join the next batch.
            let permit = loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Ok(()),
                    permit = tx.reserve() => break permit.map_err(|_| SourceError::PipelineClosed)?,
                    msg = self.consumer.recv() => {
                        self.accept(msg, &mut pending, &mut offsets, &mut floors);
                        // A rebalance may have assigned partitions that are not paused.
                        self.pause();
                    }
                }
            };
            permit.send(batch);
            let assignment = self.consumer.assignment().unwrap_or_default();
            if let Err(e) = self.consumer.resume(&assignment) {
                warn!(error = %e, "Resuming the consumer failed.");
            }
            if pending.records() > 0 {
                deadline = Some(tokio::time::Instant::now());
            }
        }
    }

    /// Decodes one received message into the pending batch.
    fn accept(
        &self,
        msg: KafkaResult<rdkafka::message::BorrowedMessage<'_>>,
        pending: &mut Pending,
        offsets: &mut HashMap<String, HashMap<i32, i64>>,
        floors: &mut Floors,
    ) {
        self.rebalanced.forget(floors);
        match msg {
            Ok(m) => {
                let topic = m.topic();
                let floor = match floors.get_mut(topic) {
                    Some(p) => p.entry(m.partition()).or_insert(i64::MIN),
                    None => floors
                        .entry(topic.to_owned())
                        .or_default()
                        .entry(m.partition())
                        .or_insert(i64::MIN),
                };
                if m.offset() < *floor {
                    // Handed straight back by a rebalance and fetched again from the
                    // last commit: already read in this run.
                    self.metrics.already_read();
                    debug!(
                        topic,
                        partition = m.partition(),
                        offset = m.offset(),
                        "Record read before in this run skipped."
                    );
                    return;
                }
                *floor = m.offset() + 1;
                let format = self.formats.get(topic).copied().unwrap_or(Format::Auto);
                let provenance = Provenance::kafka(topic, m.partition(), m.offset());
                pending.push(format, m.payload().unwrap_or_default(), provenance);
                match offsets.get_mut(topic) {
                    Some(p) => p.insert(m.partition(), m.offset()),
                    None => offsets
                        .entry(topic.to_owned())
                        .or_default()
                        .insert(m.partition(), m.offset()),
                };
            }
            Err(e) => match unreadable(&e) {
                // Records librdkafka cannot give us: said loudly and handed to the
                // pipeline (which raises an alert), never a silent stall.
                Some(kind) => {
                    error!(error = %e, kind, "A batch of records cannot be read; its records are lost to driftwatch.");
                    pending.unreadable(kind);
                }
                // librdkafka recovers from broker and network errors by itself; these
                // are reports, not reasons to stop.
                None => {
                    self.metrics.receive_error();
                    warn!(error = %e, "Kafka consumer reported an error.");
                }
            },
        }
    }

    fn pause(&self) {
        let assignment = self.consumer.assignment().unwrap_or_default();
        if let Err(e) = self.consumer.pause(&assignment) {
            warn!(error = %e, "Pausing the consumer failed; relying on librdkafka's bounded fetch queue.");
        }
    }

    /// Synchronously commits explicit offsets of the partitions assigned to this member (the next record to read, per
    /// partition): for callers that commit only what a state file already holds.
    pub fn commit_offsets<'a>(
        &self,
        next: impl IntoIterator<Item = (&'a str, i32, i64)>,
    ) -> Result<(), SourceError> {
        // Only partitions this member owns now: committing for one a rebalance moved to
        // another member would move that member's progress back.
        let assigned = self.consumer.assignment().unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in next {
            if assigned.find_partition(topic, partition).is_some() {
                tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
                    .expect("a fresh list accepts any offset");
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(SourceError::Commit)
    }

    /// Commits stored offsets synchronously (on shutdown, after the pipeline drained).
    pub fn commit(&self) -> Result<(), SourceError> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(e) => Err(SourceError::Commit(e)),
        }
    }
}

/// Whether a consumer error means records that cannot be read (rather than a broker
/// or network hiccup librdkafka recovers from), and which kind.
fn unreadable(e: &KafkaError) -> Option<&'static str> {
    match e {
        KafkaError::MessageConsumption(code) | KafkaError::MessageConsumptionFatal(code) => {
            match code {
                RDKafkaErrorCode::BadCompression => Some("bad_compression"),
                RDKafkaErrorCode::UnsupportedCompressionType => Some("unsupported_compression"),
                RDKafkaErrorCode::BadMessage
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord => Some("corrupt"),
                _ => None,
            }
        }
        _ => None,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

pub(super) fn store_offsets(
    consumer: &Consumer,
    offsets: &HashMap<(String, i32), i64>,
) -> Result<(), SourceError> {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for ((topic, partition), offset) in offsets {
        // The committed offset is the next record to read.
        tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1))
            .expect("a fresh list accepts any offset");
    }
    match consumer.store_offsets(&tpl) {
        Ok(()) => Ok(()),
        // A partition revoked since the batch was read can no longer store offsets; its
        // new owner re-reads from the last commit (at-least-once, never a skip).
        Err(KafkaError::StoreOffset(
            RDKafkaErrorCode::State | RDKafkaErrorCode::UnknownPartition,
        )) => {
            debug!("Offsets of a revoked partition were not stored; the new owner re-reads them.");
            Ok(())
        }
        Err(source) => {
            let ((topic, partition), offset) = offsets
                .iter()
                .next()
                .map(|(k, v)| (k.clone(), *v))
                .unwrap_or_default();
            Err(SourceError::StoreOffset {
                topic,
                partition,
                offset,
                source,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_that_cannot_be_read_are_told_apart_from_hiccups() {
        let consumption = KafkaError::MessageConsumption;
        assert_eq!(
            unreadable(&consumption(RDKafkaErrorCode::BadCompression)),
            Some("bad_compression")
        );
        assert_eq!(
            unreadable(&consumption(RDKafkaErrorCode::UnsupportedCompressionType)),
            Some("unsupported_compression")
        );
        assert_eq!(
            unreadable(&consumption(RDKafkaErrorCode::InvalidMessage)),
            Some("corrupt")
        );
        assert_eq!(
            unreadable(&consumption(RDKafkaErrorCode::BrokerTransportFailure)),
            None
        );
        assert_eq!(
            unreadable(&consumption(RDKafkaErrorCode::PartitionEOF)),
            None
        );
    }
}
