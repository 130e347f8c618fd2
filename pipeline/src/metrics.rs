//! The pipeline's metrics: time per stage and batch, alerts raised, services by phase,
//! commands and index batches queued, and what the state caps did.

use std::sync::{Arc, Mutex};

use detect::{Alert, DetectorView};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    kind: &'static str,
    severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// Metrics of the pipeline: time per stage and batch, alerts raised, services by phase.
#[derive(Clone, Debug)]
pub struct PipelineMetrics {
    stage_seconds: Family<StageLabels, Histogram>,
    alerts_raised: Family<AlertLabels, Counter>,
    services: Family<PhaseLabels, Gauge>,
    commands_queued: Gauge,
    pub(crate) index_queued: Gauge,
    pub(crate) index_kept: Gauge,
    pub(crate) batches_queued: Gauge,
    capped: Family<CapLabels, Counter>,
    sensor_lost: Family<SensorLabels, Counter>,
    /// Nodes with a `sensor_lost` series, so that a producer spraying node names
    /// cannot grow the metrics without bound.
    sensor_nodes: Arc<Mutex<std::collections::HashSet<String>>>,
    /// The detector's capacity counts last published.
    capped_seen: Arc<Mutex<detect::Capacity>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SensorLabels {
    sensor: String,
    node: String,
}

/// Nodes that get a series of their own in `sensor_events_lost_total`; the rest count
/// under `node="other"`. Far above any cluster's node count.
const SENSOR_NODES: usize = 4096;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapLabels {
    what: &'static str,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        PipelineMetrics {
            // 10 µs to about 5 s per batch.
            stage_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_01, 4.0, 10))
            }),
            alerts_raised: Family::default(),
            services: Family::default(),
            commands_queued: Gauge::default(),
            index_queued: Gauge::default(),
            index_kept: Gauge::default(),
            batches_queued: Gauge::default(),
            capped: Family::default(),
            sensor_lost: Family::default(),
            sensor_nodes: Arc::default(),
            capped_seen: Arc::default(),
        }
    }
}

impl PipelineMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = PipelineMetrics::default();
        registry.register(
            "pipeline_stage_duration_seconds",
            "Time a batch spends in each pipeline stage (detect, store, index)",
            m.stage_seconds.clone(),
        );
        registry.register(
            "alerts_raised",
            "Drift alerts raised, by kind and severity",
            m.alerts_raised.clone(),
        );
        registry.register(
            "services",
            "Services by lifecycle phase (learning, monitoring, locked)",
            m.services.clone(),
        );
        registry.register(
            "pipeline_commands_queued",
            "Commands (acknowledge, resolve, accept, import, relearn, lock) waiting for the pipeline; \
             when the queue is full, senders wait",
            m.commands_queued.clone(),
        );
        registry.register(
            "log_index_queue_depth",
            "Batches of log lines waiting for the log indexer (it holds 16; the pipeline waits when full)",
            m.index_queued.clone(),
        );
        registry.register(
            "log_index_kept_seconds",
            "How long the log index keeps lines: the store's retention, or less while the index is \
             over [search] max-bytes",
            m.index_kept.clone(),
        );
        registry.register(
            "pipeline_batches_queued",
            "Decoded batches waiting for the pipeline ([kafka] channel-capacity; when full, the consumer \
             pauses its partitions)",
            m.batches_queued.clone(),
        );
        registry.register(
            "sensor_events_lost",
            "Events sensors say they dropped (Falco's syscall event drops, Tetragon's rate limit), by \
             sensor and node: detection there is partly blind",
            m.sensor_lost.clone(),
        );
        registry.register(
            "state_capped",
            "What the state caps did: events of services beyond max-services not judged \
             (events_refused), idle services forgotten (services_evicted), alerts dropped past max-alerts \
             (alerts_evicted)",
            m.capped.clone(),
        );
        m
    }

    pub(crate) fn stage(&self, stage: &'static str, started: std::time::Instant) {
        self.stage_seconds
            .get_or_create(&StageLabels { stage })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts events a sensor says it lost on a node.
    pub(crate) fn sensor_lost(&self, sensor: &str, node: Option<&str>, lost: u64) {
        let node = node.unwrap_or("");
        let node = {
            let mut nodes = self.sensor_nodes.lock().expect("metrics lock poisoned");
            if nodes.contains(node) || nodes.len() < SENSOR_NODES && nodes.insert(node.to_owned()) {
                node
            } else {
                "other"
            }
        };
        self.sensor_lost
            .get_or_create(&SensorLabels {
                sensor: sensor.to_owned(),
                node: node.to_owned(),
            })
            .inc_by(lost);
    }

    pub(crate) fn raised(&self, alert: &Alert) {
        self.alerts_raised
            .get_or_create(&AlertLabels {
                kind: alert.kind.as_str(),
                severity: alert.severity.as_str(),
            })
            .inc();
    }

    /// Follows a published view: services by phase, what the caps did, commands queued.
    pub(crate) fn published(&self, view: &DetectorView, commands_queued: usize) {
        let [learning, monitoring, locked] = view.phases();
        for (phase, n) in [
            ("learning", learning),
            ("monitoring", monitoring),
            ("locked", locked),
        ] {
            self.services
                .get_or_create(&PhaseLabels { phase })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.commands_queued
            .set(i64::try_from(commands_queued).unwrap_or(i64::MAX));
        let now = view.capacity;
        let mut seen = self.capped_seen.lock().expect("metrics lock poisoned");
        for (what, total, before) in [
            ("events_refused", now.events_refused, seen.events_refused),
            (
                "services_evicted",
                now.services_evicted,
                seen.services_evicted,
            ),
            ("alerts_evicted", now.alerts_evicted, seen.alerts_evicted),
        ] {
            self.capped
                .get_or_create(&CapLabels { what })
                .inc_by(total.saturating_sub(before));
        }
        *seen = now;
    }
}
