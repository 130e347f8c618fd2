//! The pipeline stage: applies decoded batches to the store, publishes their counts,
//! and only then acknowledges them to the source (which stores their Kafka offsets).

use std::sync::{Arc, Mutex};

use ingest::{Batch, IngestMetrics, IngestStats};
use store::{EventTable, StoreMetrics};
use tokio::sync::mpsc;

/// Shared state every stage of one daemon uses.
#[derive(Clone)]
pub struct Stages {
    pub events: Arc<EventTable>,
    pub ingest_metrics: IngestMetrics,
    pub store_metrics: StoreMetrics,
}

impl Stages {
    /// Applies batches until the source hangs up, adding their counts to `totals`.
    pub async fn apply_all(
        &self,
        mut rx: mpsc::Receiver<Batch>,
        totals: &Mutex<IngestStats>,
    ) -> anyhow::Result<()> {
        while let Some(batch) = rx.recv().await {
            let outcome = self.events.append(&batch.events);
            self.store_metrics.record(&self.events, &outcome);
            self.ingest_metrics.record(&batch.stats);
            totals
                .lock()
                .expect("totals lock poisoned")
                .add(&batch.stats);
            batch.ack()?;
        }
        Ok(())
    }
}
