//! The `events` table: Arrow record batches partitioned by event time, with retention
//! by event time and by bytes, and consistent snapshots for readers.
//!
//! Appends take a short write lock to insert finished batches (the Arrow encoding
//! happens before the lock); a snapshot takes a read lock and clones the batch list,
//! which only bumps reference counts. A reader therefore sees every batch appended
//! before its snapshot and none after, and never blocks ingest for longer than a clone.

use std::collections::BTreeMap;
use std::sync::RwLock;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use ingest::event::Event;
use ingest::time::Nanos;

use crate::config::StoreConfig;
use crate::schema::{EventColumns, events_schema};

/// What one append did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    pub appended: usize,
    /// Rows dropped because they were older than the retention when they arrived.
    pub too_old: usize,
    pub evicted_by_time: usize,
    pub evicted_by_bytes: usize,
}

#[derive(Default)]
struct Partition {
    batches: Vec<RecordBatch>,
    bytes: usize,
    rows: usize,
}

#[derive(Default)]
struct Inner {
    /// Partition start (ns) → batches whose events fall in `[start, start + width)`.
    partitions: BTreeMap<i64, Partition>,
    bytes: usize,
    rows: usize,
    /// The latest event time appended: "now" for event-time retention.
    watermark: Option<Nanos>,
}

/// The in-memory `events` table.
pub struct EventTable {
    config: StoreConfig,
    inner: RwLock<Inner>,
}

/// A consistent, immutable view of the table.
#[derive(Clone)]
pub struct EventsSnapshot {
    pub schema: SchemaRef,
    /// Oldest partition first.
    pub batches: Vec<RecordBatch>,
}

impl EventsSnapshot {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

impl EventTable {
    pub fn new(config: StoreConfig) -> Self {
        EventTable {
            config,
            inner: RwLock::new(Inner::default()),
        }
    }

    fn partition_width(&self) -> i64 {
        i64::try_from(self.config.partition.as_nanos())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    fn retention(&self) -> i64 {
        i64::try_from(self.config.retention.as_nanos()).unwrap_or(i64::MAX)
    }

    /// Appends events, then enforces retention.
    pub fn append(&self, events: &[Event]) -> AppendOutcome {
        let mut outcome = AppendOutcome::default();
        if events.is_empty() {
            return outcome;
        }
        let width = self.partition_width();
        let watermark = {
            let inner = self.inner.read().expect("store lock poisoned");
            let batch_max = events.iter().map(|e| e.time).max().expect("non-empty");
            inner.watermark.map_or(batch_max, |w| w.max(batch_max))
        };
        let horizon = watermark.0.saturating_sub(self.retention());

        // Group by partition (a batch almost always falls in one) and encode outside the lock.
        let mut groups: BTreeMap<i64, Vec<&Event>> = BTreeMap::new();
        for e in events {
            if e.time.0 < horizon {
                outcome.too_old += 1;
                continue;
            }
            groups
                .entry(e.time.0.div_euclid(width) * width)
                .or_default()
                .push(e);
        }
        let encoded: Vec<(i64, RecordBatch)> = groups
            .into_iter()
            .map(|(start, group)| {
                let mut columns = EventColumns::with_capacity(group.len());
                for e in group {
                    columns.push(e);
                }
                (start, columns.finish())
            })
            .collect();

        let mut inner = self.inner.write().expect("store lock poisoned");
        inner.watermark = Some(inner.watermark.map_or(watermark, |w| w.max(watermark)));
        for (start, batch) in encoded {
            let bytes = batch.get_array_memory_size();
            let rows = batch.num_rows();
            outcome.appended += rows;
            let p = inner.partitions.entry(start).or_default();
            p.batches.push(batch);
            p.bytes += bytes;
            p.rows += rows;
            inner.bytes += bytes;
            inner.rows += rows;
        }
        // Event-time retention: whole partitions that ended before the horizon.
        while let Some(entry) = inner.partitions.first_entry() {
            if entry.key().saturating_add(width) > horizon {
                break;
            }
            let p = entry.remove();
            inner.bytes -= p.bytes;
            inner.rows -= p.rows;
            outcome.evicted_by_time += p.rows;
        }
        // Byte retention: oldest batches first, until under the cap.
        while inner.bytes > self.config.max_bytes.0 {
            let Some(mut entry) = inner.partitions.first_entry() else {
                break;
            };
            let p = entry.get_mut();
            let batch = p.batches.remove(0);
            let (bytes, rows) = (batch.get_array_memory_size(), batch.num_rows());
            p.bytes -= bytes;
            p.rows -= rows;
            if p.batches.is_empty() {
                entry.remove();
            }
            inner.bytes -= bytes;
            inner.rows -= rows;
            outcome.evicted_by_bytes += rows;
        }
        outcome
    }

    /// A consistent view of every row appended so far and still retained.
    pub fn snapshot(&self) -> EventsSnapshot {
        let inner = self.inner.read().expect("store lock poisoned");
        EventsSnapshot {
            schema: events_schema(),
            batches: inner
                .partitions
                .values()
                .flat_map(|p| p.batches.iter().cloned())
                .collect(),
        }
    }

    pub fn rows(&self) -> usize {
        self.inner.read().expect("store lock poisoned").rows
    }

    pub fn bytes(&self) -> usize {
        self.inner.read().expect("store lock poisoned").bytes
    }

    /// The latest event time appended.
    pub fn watermark(&self) -> Option<Nanos> {
        self.inner.read().expect("store lock poisoned").watermark
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow::array::{Array, AsArray};
    use ingest::event::{EventKind, Provenance, Source, Workload};

    use super::*;
    use crate::config::ByteSize;

    const HOUR: i64 = 3_600 * 1_000_000_000;
    const T0: i64 = 1_772_445_600 * 1_000_000_000;

    fn log(t: i64, message: &str) -> Event {
        Event {
            time: Nanos(t),
            source: Source::Native,
            provenance: Provenance::file("t", 1),
            workload: Workload::default(),
            service: "shop/api".into(),
            kind: EventKind::Log {
                stream: None,
                message: message.into(),
                template_id: None,
            },
        }
    }

    fn table(retention_h: u64, max_bytes: u64) -> EventTable {
        EventTable::new(StoreConfig {
            retention: Duration::from_secs(retention_h * 3600),
            max_bytes: ByteSize(max_bytes as usize),
            partition: Duration::from_secs(3600),
        })
    }

    #[test]
    fn a_snapshot_sees_every_appended_row_and_later_appends_do_not_change_it() {
        let t = table(24, 1 << 30);
        t.append(&[log(T0, "a"), log(T0 + 1, "b")]);
        let snap = t.snapshot();
        t.append(&[log(T0 + 2, "c")]);
        assert_eq!(snap.rows(), 2);
        assert_eq!(t.snapshot().rows(), 3);
        let messages = snap.batches[0]
            .column_by_name("message")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(messages.value(1), "b");
    }

    #[test]
    fn partitions_older_than_the_retention_are_evicted_by_event_time() {
        let t = table(2, 1 << 30);
        t.append(&[log(T0, "old")]);
        let outcome = t.append(&[log(T0 + 5 * HOUR, "new")]);
        assert_eq!(outcome.evicted_by_time, 1);
        assert_eq!(t.rows(), 1);
    }

    #[test]
    fn rows_arriving_already_past_the_retention_are_not_kept() {
        let t = table(2, 1 << 30);
        t.append(&[log(T0 + 5 * HOUR, "new")]);
        let outcome = t.append(&[log(T0, "late")]);
        assert_eq!((outcome.too_old, t.rows()), (1, 1));
    }

    #[test]
    fn the_byte_cap_evicts_the_oldest_batches_first() {
        let probe = table(24, 1 << 30);
        probe.append(&[log(T0, "x")]);
        let one_batch = probe.bytes();
        let t = table(24, (one_batch * 2 + one_batch / 2) as u64);
        for i in 0..4 {
            t.append(&[log(T0 + i, "x")]);
        }
        assert!(t.bytes() <= one_batch * 2 + one_batch / 2);
        let times = t
            .snapshot()
            .batches
            .iter()
            .map(|b| {
                b.column(0)
                    .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                    .value(0)
            })
            .collect::<Vec<_>>();
        assert_eq!(times, vec![T0 + 2, T0 + 3]);
        assert!(
            t.snapshot()
                .batches
                .iter()
                .all(|b| b.column(0).null_count() == 0)
        );
    }
}
