//! The consumer's context: what librdkafka calls back into from inside the consumer's
//! poll. Rebalances (the revoke hook that writes state out first, and which partitions
//! were lost for good, for the read floors), the lag metric from statistics, and commit
//! results.

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::ClientContext;
use rdkafka::consumer::{ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use tracing::{debug, info, warn};

use crate::metrics::IngestMetrics;

/// The consumer's context: rebalance logging, the lag metric from statistics, and the
/// count of assignments (state kept per partition is restored after each).
pub struct SourceContext {
    pub(super) metrics: IngestMetrics,
    pub(super) assignments: Arc<std::sync::atomic::AtomicU64>,
    pub(super) on_revoke: Arc<std::sync::OnceLock<RevokeHook>>,
    pub(super) rebalanced: Arc<Rebalanced>,
}

/// What rebalances took from this member for good, for the read floors ([the source's
/// docs](super)). Written from librdkafka's rebalance callback, which runs inside the
/// consumer's poll, and read by the same task before its next record: the lock is
/// never contended.
#[derive(Default)]
pub(super) struct Rebalanced {
    /// Set when `partitions` has news; checked with every record.
    news: std::sync::atomic::AtomicBool,
    partitions: std::sync::Mutex<Handback>,
}

#[derive(Default)]
struct Handback {
    /// Revoked by the rebalance under way.
    revoked: Vec<(String, i32)>,
    /// Revoked and not handed back: their floors go.
    lost: Vec<(String, i32)>,
}

impl Rebalanced {
    fn revoked(&self, tpl: &TopicPartitionList) {
        let mut p = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        p.revoked.extend(
            tpl.elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition())),
        );
    }

    /// `assigned` is `None` when the rebalance failed: nothing counts as handed back.
    fn assigned(&self, assigned: Option<&TopicPartitionList>) {
        let mut guard = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let p = &mut *guard;
        for (topic, partition) in p.revoked.drain(..) {
            if assigned.is_none_or(|a| a.find_partition(&topic, partition).is_none()) {
                p.lost.push((topic, partition));
            }
        }
        if !p.lost.is_empty() {
            self.news.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Drops the floors of partitions lost since the last call.
    pub(super) fn forget(&self, floors: &mut Floors) {
        // A plain load on every record; the swap only after a rebalance lost something.
        if !self.news.load(std::sync::atomic::Ordering::Acquire)
            || !self.news.swap(false, std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        let lost = std::mem::take(
            &mut self
                .partitions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .lost,
        );
        for (topic, partition) in lost {
            if let Some(p) = floors.get_mut(&topic) {
                p.remove(&partition);
            }
        }
    }
}

/// The next offset to read per topic and partition: records below it were read in
/// this run while the member held the partition without a break.
pub(super) type Floors = HashMap<String, HashMap<i32, i64>>;

/// Called, blocking, before partitions are revoked: what holds state for them writes it
/// out first (the state changelog), so that the next owner starts from it.
pub type RevokeHook = Box<dyn Fn() + Send + Sync>;

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // The internal UA partition is -1: not a lag.
                if *partition >= 0
                    && let Some(lag) = lag(p)
                {
                    self.metrics.set_lag(topic, *partition, lag);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                info!(partitions = tpl.count(), "Partitions revoked.");
                self.rebalanced.revoked(tpl);
                if tpl.count() > 0
                    && let Some(hook) = self.on_revoke.get()
                {
                    hook();
                }
            }
            Rebalance::Assign(tpl) => {
                self.assignments
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                self.rebalanced.assigned(Some(tpl));
                info!(partitions = tpl.count(), "Partitions assigned.");
            }
            Rebalance::Error(e) => {
                warn!(error = %e, "Rebalance failed.");
                self.rebalanced.assigned(None);
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => debug!(partitions = offsets.count(), "Offsets committed."),
            // Nothing stored since the last commit: not an error.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                warn!(error = %e, "Offset commit failed; it is retried with the next commit.")
            }
        }
    }
}

/// A partition's lag: librdkafka's (its high watermark less the committed offset), or,
/// while nothing is committed yet, the high watermark less the next offset to fetch, so
/// that a partition held from its start by a batch it cannot read shows its backlog too.
/// `None` for partitions not fetched here (librdkafka reports -1 for them).
fn lag(p: &rdkafka::statistics::Partition) -> Option<i64> {
    if p.consumer_lag >= 0 {
        return Some(p.consumer_lag);
    }
    (p.fetch_state == "active" && p.hi_offset >= 0 && p.next_offset >= 0)
        .then(|| (p.hi_offset - p.next_offset.max(p.lo_offset)).max(0))
}
