//! Prometheus metrics of the query surfaces.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    interface: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabels {
    interface: &'static str,
}

/// SQL statements by interface (`http`, `postgres`) and outcome, and HTTP query
/// latency.
#[derive(Clone, Debug)]
pub struct SqlMetrics {
    queries: Family<QueryLabels, Counter>,
    duration: Family<InterfaceLabels, Histogram>,
}

impl Default for SqlMetrics {
    fn default() -> Self {
        SqlMetrics {
            queries: Family::default(),
            // 1 ms to about 33 s.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
        }
    }
}

impl SqlMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = SqlMetrics::default();
        registry.register(
            "sql_queries",
            "SQL statements by interface (http, postgres) and outcome (ok, executed, rejected, invalid, timeout, too_large, error; \
             the PostgreSQL server counts statements it executes, and separately those that failed)",
            m.queries.clone(),
        );
        registry.register(
            "sql_query_duration_seconds",
            "Time to run an SQL query through the HTTP API",
            m.duration.clone(),
        );
        m
    }

    pub fn record(&self, interface: &'static str, outcome: &'static str) {
        self.queries
            .get_or_create(&QueryLabels { interface, outcome })
            .inc();
    }

    pub fn observe(&self, interface: &'static str, seconds: f64) {
        self.duration
            .get_or_create(&InterfaceLabels { interface })
            .observe(seconds);
    }
}
