//! The notifier's metrics, per sink.

use super::*;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SinkLabels {
    sink: String,
}

/// Delivery metrics per sink.
#[derive(Clone, Debug)]
pub struct NotifyMetrics {
    pub(super) sent: Family<SinkLabels, Counter>,
    pub(super) failed: Family<SinkLabels, Counter>,
    pub(super) retried: Family<SinkLabels, Counter>,
    pub(super) refused: Family<SinkLabels, Counter>,
    pub(super) pending: Family<SinkLabels, Gauge>,
    pub(super) latency: Family<SinkLabels, Histogram, fn() -> Histogram>,
    pub(super) limit: Gauge,
    pub(super) queued: Gauge,
}

impl Default for NotifyMetrics {
    fn default() -> Self {
        NotifyMetrics {
            sent: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            refused: Family::default(),
            pending: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            limit: Gauge::default(),
            queued: Gauge::default(),
        }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0])
}

impl NotifyMetrics {
    pub fn register(registry: &mut Registry) -> NotifyMetrics {
        let m = NotifyMetrics::default();
        registry.register(
            "notifications_sent",
            "Notifications a receiver accepted",
            m.sent.clone(),
        );
        registry.register(
            "notifications_failed",
            "Notifications a receiver refused for good (a 4xx other than 408 and 429)",
            m.failed.clone(),
        );
        registry.register(
            "notifications_retried",
            "Delivery attempts that will be retried",
            m.retried.clone(),
        );
        registry.register(
            "notifications_refused",
            "Notifications not queued because the outbox was full or could not be written",
            m.refused.clone(),
        );
        registry.register(
            "notifications_pending",
            "Notifications waiting in the outbox",
            m.pending.clone(),
        );
        registry.register(
            "notifications_outbox_limit",
            "Notifications the outbox holds at most ([notify] max-pending)",
            m.limit.clone(),
        );
        registry.register(
            "notify_queue_depth",
            "Alerts and findings submitted and not yet routed to the outbox (at most 1,024 \
             batches wait; then the submitter waits)",
            m.queued.clone(),
        );
        registry.register(
            "notification_latency_seconds",
            "From the notification's making to a receiver accepting it",
            m.latency.clone(),
        );
        m
    }

    pub(super) fn labels(sink: &str) -> SinkLabels {
        SinkLabels {
            sink: sink.to_owned(),
        }
    }
}
