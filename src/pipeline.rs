//! The pipeline stage: applies decoded batches to the store and to detection, publishes
//! their counts, and only then acknowledges them to the source (which stores their
//! Kafka offsets).

use std::sync::{Arc, Mutex};

use detect::{Alert, Detector};
use ingest::{Batch, IngestMetrics, IngestStats};
use store::{EventTable, StoreMetrics};
use tokio::sync::mpsc;
use tracing::warn;

/// Shared state every stage of one daemon uses.
#[derive(Clone)]
pub struct Stages {
    pub events: Arc<EventTable>,
    pub detector: Arc<Mutex<Detector>>,
    pub ingest_metrics: IngestMetrics,
    pub store_metrics: StoreMetrics,
    /// Print each raised alert on stdout as a readable line (the demo does).
    pub print_alerts: bool,
}

impl Stages {
    /// Applies batches until the source hangs up, adding their counts to `totals`.
    pub async fn apply_all(
        &self,
        mut rx: mpsc::Receiver<Batch>,
        totals: &Mutex<IngestStats>,
    ) -> anyhow::Result<()> {
        let mut raised = Vec::new();
        while let Some(batch) = rx.recv().await {
            let outcome = self.events.append(&batch.events);
            self.store_metrics.record(&self.events, &outcome);
            {
                let mut detector = self.detector.lock().expect("detector lock poisoned");
                for event in &batch.events {
                    detector.observe(event, &mut raised);
                }
            }
            for alert in raised.drain(..) {
                self.announce(&alert);
            }
            self.ingest_metrics.record(&batch.stats);
            totals
                .lock()
                .expect("totals lock poisoned")
                .add(&batch.stats);
            batch.ack()?;
        }
        Ok(())
    }

    fn announce(&self, alert: &Alert) {
        warn!(
            id = %alert.id, service = %alert.service, kind = alert.kind.as_str(), severity = ?alert.severity,
            subject = %alert.subject, "Drift alert."
        );
        if self.print_alerts {
            println!(
                "ALERT {:?} {} {}: {}\n      {}{}",
                alert.severity,
                alert.kind.as_str(),
                alert.service,
                alert.subject,
                alert.explanation,
                alert
                    .mitre
                    .as_ref()
                    .map(|t| format!(" [{} {}]", t.id, t.name))
                    .unwrap_or_default()
            );
        }
    }
}
