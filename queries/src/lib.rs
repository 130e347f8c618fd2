//! Queries: the analyst's surfaces over the store. SQL through DataFusion, and in time
//! the PostgreSQL wire server, the HTTP API, full-text log search (tantivy) and metrics.
//!
//! DataFusion (and later pgwire and tantivy) live here and nowhere else, so the crates
//! below build without them. Queries run over store snapshots, never over live tables,
//! so a query cannot block ingest.

use std::sync::Arc;

use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use store::EventsSnapshot;

/// A DataFusion session with the `events` table registered over a snapshot.
pub fn session(events: &EventsSnapshot) -> Result<SessionContext, DataFusionError> {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(events.schema.clone(), vec![events.batches.clone()])?;
    ctx.register_table("events", Arc::new(table))?;
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
            },
        };
        table.append(&[event("shop/api"), event("shop/api"), event("shop/db")]);
        let ctx = session(&table.snapshot()).unwrap();
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
