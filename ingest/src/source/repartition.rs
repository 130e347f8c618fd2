//! The stateless stage: decoded events produced to the repartition topic in the native
//! form, keyed by service, so that the stateful stage reads all of a service's events
//! from one partition, whichever topic, node or sensor they came from (as Kafka
//! Streams repartitions before a stateful operator). Each event keeps the provenance
//! of its raw record, so alerts cite the sensor's record, not the copy.
//!
//! At-least-once, in order per service: the producer is idempotent (its own retries
//! neither reorder nor duplicate), and a batch's raw offsets are stored only once the
//! broker has acknowledged every event of it. A crash re-produces at most the
//! uncommitted tail; the stateful stage counts those copies into the alerts they
//! raised (an alert's id derives from its subject and first event time). An event the
//! broker refused past `message.timeout.ms` is produced again, after the events behind
//! it: only then can a service's order break.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Batch;
use super::kafka::{KafkaConfig, client_config};
use crate::error::SourceError;
use crate::metrics::IngestMetrics;

/// A refused event is produced again after this, doubling up to [`MAX_BACKOFF`]: the
/// topic may be missing or its leader moving; the raw consumer waits meanwhile.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long an event may wait for room in the producer's queue before it counts as
/// refused and is retried: the queue (librdkafka's 100,000 messages by default) is
/// full only while the broker is slower than the consumer.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Repartitioner {
    producer: FutureProducer,
    topic: String,
    metrics: IngestMetrics,
}

impl Repartitioner {
    /// An idempotent producer for `config.repartition_topic`, with the source's
    /// connection properties; lz4 unless the properties choose a codec.
    pub fn new(
        config: &KafkaConfig,
        topic: &str,
        metrics: IngestMetrics,
    ) -> Result<Self, SourceError> {
        let mut cc = client_config(config);
        cc.set("enable.idempotence", "true");
        if !config.properties.contains_key("compression.type") {
            // Events repeat their field names: lz4 shrinks them about fivefold for
            // little CPU, and the topic's brokers keep less.
            cc.set("compression.type", "lz4");
        }
        if !config.properties.contains_key("linger.ms") {
            // A batch of events goes out together anyway; waiting longer adds latency.
            cc.set("linger.ms", "5");
        }
        let producer: FutureProducer = cc.create().map_err(|source| SourceError::CreateClient {
            what: "repartition producer",
            source,
        })?;
        Ok(Repartitioner {
            producer,
            topic: topic.to_owned(),
            metrics,
        })
    }

    /// Produces every batch from `rx`, then stores its raw offsets. Returns when the
    /// source hangs up or `cancel` fires (what is not stored is re-read after a
    /// restart).
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Batch>,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        loop {
            let batch = tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                batch = rx.recv() => match batch {
                    Some(b) => b,
                    None => return Ok(()),
                },
            };
            let payloads: Vec<Vec<u8>> = batch
                .events
                .iter()
                .map(|e| serde_json::to_vec(e).expect("events serialize"))
                .collect();
            let mut waiting: Vec<usize> = (0..payloads.len()).collect();
            let mut backoff = FIRST_BACKOFF;
            while !waiting.is_empty() {
                let sends = waiting.iter().map(|&i| {
                    self.producer.send(
                        FutureRecord::to(&self.topic)
                            .key(&batch.events[i].service)
                            .payload(&payloads[i]),
                        QUEUE_TIMEOUT,
                    )
                });
                let results = futures::future::join_all(sends).await;
                let mut refused = Vec::new();
                let mut error = None;
                for (&i, result) in waiting.iter().zip(results) {
                    if let Err((e, _)) = result {
                        error = Some(e);
                        refused.push(i);
                    }
                }
                if refused.is_empty() {
                    break;
                }
                self.metrics.repartition_retry();
                warn!(topic = %self.topic, error = %error.map(|e| e.to_string()).unwrap_or_default(),
                    events = refused.len(), retry_in = ?backoff,
                    "The repartition topic refused events; they are produced again, and the raw topics wait.");
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                waiting = refused;
            }
            self.metrics.repartitioned(payloads.len() as u64);
            self.metrics.record(&batch.stats);
            batch.ack()?;
        }
    }
}
