//! Queries: the analyst's surfaces over the store. SQL through DataFusion ([`sql`]), the
//! PostgreSQL wire server ([`pg`]) and full-text log search (tantivy, [`search`]).
//!
//! DataFusion, pgwire and tantivy live here and nowhere else, so the crates below build
//! without them. Every scan reads a fresh snapshot of its table, so a query cannot block
//! ingest.

pub mod error;
pub mod guard;
pub mod indexer;
pub mod metrics;
pub mod pg;
pub mod search;
pub mod sql;

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use ingest::event::{EventKind, Provenance, Source, Workload};
    use ingest::{Event, Nanos};
    use store::{EventTable, StoreConfig};

    use super::*;

    #[tokio::test]
    async fn sql_counts_events_per_service_over_a_snapshot() {
        let table = EventTable::new(StoreConfig::default());
        let event = |service: &str| Event {
            time: Nanos(1_772_446_501_000_000_000),
            source: Source::Native,
            provenance: Provenance::default(),
            workload: Workload::default(),
            service: service.into(),
            kind: EventKind::Log {
                stream: None,
                message: "hello".into(),
                template_id: None,
            },
        };
        table.append(&[event("shop/api"), event("shop/api"), event("shop/db")]);
        let alerts = store::alerts_batch([store::AlertRow {
            id: "a1",
            time: 1,
            last_seen: 2,
            service: "shop/api",
            kind: "process",
            severity: "critical",
            subject: "/bin/sh (parent /app)",
            explanation: "never seen",
            mitre: None,
            count: 3,
            status: "open",
            dedup_key: "k",
            sensor_rules: None,
            evidence: "t/0@1".into(),
            member: None,
        }]);
        let table = std::sync::Arc::new(table);
        let events: sql::Reader = std::sync::Arc::new(move || table.snapshot().batches);
        let alerts_schema = alerts.schema();
        let alerts: sql::Reader = std::sync::Arc::new(move || vec![alerts.clone()]);
        let engine = sql::SqlEngine::new(
            vec![
                ("events", store::events_schema(), events),
                ("alerts", alerts_schema, alerts),
            ],
            sql::SqlLimits::default(),
        )
        .unwrap();
        let open = engine
            .query("SELECT sum(count) FROM alerts WHERE severity = 'critical'")
            .await
            .unwrap()
            .batches;
        assert_eq!(open[0].column(0).as_primitive::<Int64Type>().value(0), 3);
        let batches = engine
            .query("SELECT service, count(*) AS n FROM events GROUP BY service ORDER BY service")
            .await
            .unwrap()
            .batches;
        let counts = batches[0].column(1).as_primitive::<Int64Type>();
        assert_eq!((counts.value(0), counts.value(1)), (2, 1));
    }
}
