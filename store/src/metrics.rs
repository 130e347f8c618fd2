//! Prometheus metrics of the store.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::{AppendOutcome, EventTable};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct StoreMetrics {
    rows: Gauge,
    bytes: Gauge,
    appended: Counter,
    evicted: Family<ReasonLabels, Counter>,
}

impl StoreMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = StoreMetrics::default();
        registry.register(
            "store_events_rows",
            "Rows held in the events table",
            m.rows.clone(),
        );
        registry.register(
            "store_events_bytes",
            "Arrow buffer bytes held by the events table",
            m.bytes.clone(),
        );
        registry.register(
            "store_events_appended",
            "Rows appended to the events table",
            m.appended.clone(),
        );
        registry.register(
            "store_events_evicted",
            "Rows dropped from the events table by retention (reason: time, bytes, too_old)",
            m.evicted.clone(),
        );
        m
    }

    pub fn record(&self, table: &EventTable, outcome: &AppendOutcome) {
        self.appended.inc_by(outcome.appended as u64);
        for (reason, n) in [
            ("time", outcome.evicted_by_time),
            ("bytes", outcome.evicted_by_bytes),
            ("too_old", outcome.too_old),
        ] {
            if n > 0 {
                self.evicted
                    .get_or_create(&ReasonLabels { reason })
                    .inc_by(n as u64);
            }
        }
        self.rows.set(table.rows() as i64);
        self.bytes.set(table.bytes() as i64);
    }
}
