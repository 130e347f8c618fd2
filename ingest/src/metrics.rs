//! Prometheus metrics of the ingest stage. Label sets are small and fixed: topics come
//! from the config, sources and reasons are enums; nothing per pod, user or command.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::stats::IngestStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumedLabels {
    topic: String,
    format: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IgnoredLabels {
    source: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLetterLabels {
    format: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: String,
}

/// The ingest metrics, registered once and shared by the sources.
#[derive(Clone, Debug, Default)]
pub struct IngestMetrics {
    records_consumed: Family<ConsumedLabels, Counter>,
    events_decoded: Family<SourceLabels, Counter>,
    records_ignored: Family<IgnoredLabels, Counter>,
    records_dead_lettered: Family<DeadLetterLabels, Counter>,
    records_repaired: Family<IgnoredLabels, Counter>,
    consumer_lag: Family<PartitionLabels, Gauge>,
    consumer_pauses: Counter,
    receive_errors: Counter,
    dead_letters_spooled: Counter,
    dead_letters_lost: Counter,
    unreadable: Family<ErrorLabels, Counter>,
    events_repartitioned: Counter,
    repartition_retries: Counter,
    records_already_read: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ErrorLabels {
    error: String,
}

impl IngestMetrics {
    /// Registers the metrics under `registry` (which carries the `driftwatch` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = IngestMetrics::default();
        registry.register(
            "records_consumed",
            "Records read from Kafka topics or replay files",
            m.records_consumed.clone(),
        );
        registry.register(
            "events_decoded",
            "Events decoded, by source",
            m.events_decoded.clone(),
        );
        registry.register(
            "records_ignored",
            "Valid records that describe nothing driftwatch models",
            m.records_ignored.clone(),
        );
        registry.register(
            "records_dead_lettered",
            "Records that could not be decoded and went to the dead-letter sink",
            m.records_dead_lettered.clone(),
        );
        registry.register(
            "records_repaired",
            "Records kept after a repair: invalid UTF-8 replaced (lossy_utf8), a log line cut (truncated_line)",
            m.records_repaired.clone(),
        );
        registry.register(
            "consumer_lag",
            "Messages between the consumer's position and the partition's end (librdkafka statistics)",
            m.consumer_lag.clone(),
        );
        registry.register(
            "consumer_pauses",
            "Times the Kafka consumer paused because the pipeline was full",
            m.consumer_pauses.clone(),
        );
        registry.register(
            "consumer_receive_errors",
            "Errors reported by the Kafka consumer while receiving",
            m.receive_errors.clone(),
        );
        registry.register(
            "dead_letters_spooled",
            "Dead letters the dead-letter topic refused, kept in the local spool file instead",
            m.dead_letters_spooled.clone(),
        );
        registry.register(
            "batches_unreadable",
            "Batches the Kafka consumer could not read at all (bad_compression, unsupported_compression, corrupt), \
             whose records are neither events nor dead letters",
            m.unreadable.clone(),
        );
        registry.register(
            "dead_letters_lost",
            "Dead letters neither the topic nor the spool took (each is logged)",
            m.dead_letters_lost.clone(),
        );
        registry.register(
            "events_repartitioned",
            "Decoded events produced, keyed by service, to the repartition topic",
            m.events_repartitioned.clone(),
        );
        registry.register(
            "repartition_retries",
            "Times events the repartition topic refused were produced again",
            m.repartition_retries.clone(),
        );
        registry.register(
            "records_already_read",
            "Records fetched again after a rebalance handed their partition straight back, \
             skipped because this member had read them in this run",
            m.records_already_read.clone(),
        );
        m
    }

    pub fn already_read(&self) {
        self.records_already_read.inc();
    }

    /// Publishes a batch's counts.
    pub fn record(&self, stats: &IngestStats) {
        for ((topic, format), n) in &stats.consumed {
            self.records_consumed
                .get_or_create(&ConsumedLabels {
                    topic: topic.clone(),
                    format: (*format).to_owned(),
                })
                .inc_by(*n);
        }
        for (source, n) in &stats.decoded {
            self.events_decoded
                .get_or_create(&SourceLabels {
                    source: source.as_str().to_owned(),
                })
                .inc_by(*n);
        }
        for ((source, reason), n) in &stats.ignored {
            self.records_ignored
                .get_or_create(&IgnoredLabels {
                    source: source.as_str().to_owned(),
                    reason: (*reason).to_owned(),
                })
                .inc_by(*n);
        }
        for ((format, reason), n) in &stats.dead_lettered {
            self.records_dead_lettered
                .get_or_create(&DeadLetterLabels {
                    format: (*format).to_owned(),
                    reason: reason.as_str().to_owned(),
                })
                .inc_by(*n);
        }
        self.record_repairs(stats);
    }

    fn record_repairs(&self, stats: &IngestStats) {
        for (error, n) in &stats.unreadable {
            self.unreadable
                .get_or_create(&ErrorLabels {
                    error: (*error).to_owned(),
                })
                .inc_by(*n);
        }
        for ((source, repair), n) in &stats.repaired {
            self.records_repaired
                .get_or_create(&IgnoredLabels {
                    source: source.as_str().to_owned(),
                    reason: (*repair).to_owned(),
                })
                .inc_by(*n);
        }
    }

    pub(crate) fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .get_or_create(&PartitionLabels {
                topic: topic.to_owned(),
                partition: partition.to_string(),
            })
            .set(lag);
    }

    pub(crate) fn repartitioned(&self, n: u64) {
        self.events_repartitioned.inc_by(n);
    }

    pub(crate) fn repartition_retry(&self) {
        self.repartition_retries.inc();
    }

    pub(crate) fn paused(&self) {
        self.consumer_pauses.inc();
    }

    pub(crate) fn receive_error(&self) {
        self.receive_errors.inc();
    }

    pub(crate) fn dead_letters_spooled(&self, n: u64) {
        self.dead_letters_spooled.inc_by(n);
    }

    pub(crate) fn dead_letters_lost(&self, n: u64) {
        self.dead_letters_lost.inc_by(n);
    }
}
