//! Queries: the analyst's surfaces over the store. SQL through DataFusion, full-text log
//! search (tantivy, [`search`]), and in time the PostgreSQL wire server and HTTP API.
//!
//! DataFusion and tantivy (and later pgwire) live here and nowhere else, so the crates
//! below build without them. Queries run over store snapshots, never over live tables,
//! so a query cannot block ingest.

pub mod metrics;
pub mod pg;
pub mod search;
pub mod sql;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use store::EventsSnapshot;

/// A DataFusion session with the `events` table registered over a snapshot, and any
/// further tables (`alerts`, `baselines`) as given.
pub fn session(
    events: &EventsSnapshot,
    tables: &[(&str, RecordBatch)],
) -> Result<SessionContext, DataFusionError> {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(events.schema.clone(), vec![events.batches.clone()])?;
    ctx.register_table("events", Arc::new(table))?;
    for (name, batch) in tables {
        ctx.register_table(
            *name,
            Arc::new(MemTable::try_new(
                batch.schema(),
                vec![vec![batch.clone()]],
            )?),
        )?;
    }
    Ok(ctx)
}

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
        }]);
        let ctx = session(&table.snapshot(), &[("alerts", alerts)]).unwrap();
        let open = ctx
            .sql("SELECT sum(count) FROM alerts WHERE severity = 'critical'")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(open[0].column(0).as_primitive::<Int64Type>().value(0), 3);
        let batches = ctx
            .sql("SELECT service, count(*) AS n FROM events GROUP BY service ORDER BY service")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let counts = batches[0].column(1).as_primitive::<Int64Type>();
        assert_eq!((counts.value(0), counts.value(1)), (2, 1));
    }
}
