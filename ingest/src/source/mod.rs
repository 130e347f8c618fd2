//! Sources: Kafka topics (`run`, `demo`) and JSON-lines files (`replay`). Both hand the
//! pipeline [`Batch`]es of decoded events over a bounded channel; a batch's offsets are
//! stored only when the pipeline acknowledges it, after the events were applied.

pub mod kafka;
pub mod repartition;
pub mod replay;

use std::collections::HashMap;
use std::sync::Arc;

use crate::dead_letter::{DeadLetter, DeadLetterSink};
use crate::decode::{Decoded, Decoder, Format};
use crate::error::SourceError;
use crate::event::{Event, Provenance};
use crate::stats::IngestStats;

/// Decoded events ready for the pipeline, with what is needed to acknowledge them.
pub struct Batch {
    pub events: Vec<Event>,
    /// The Kafka partition each event's record was read from, by index (-1 for a
    /// file): in the detect stage, the repartition topic's partition, which holds the
    /// event's service. An event's provenance may name another (its raw record's).
    pub partitions: Vec<i32>,
    pub stats: IngestStats,
    ack: Ack,
}

enum Ack {
    None,
    Kafka {
        consumer: Arc<kafka::Consumer>,
        offsets: HashMap<(String, i32), i64>,
    },
}

impl Batch {
    /// The last offset of each Kafka partition in the batch (none for replays).
    pub fn offsets(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        let map = match &self.ack {
            Ack::Kafka { offsets, .. } => Some(offsets),
            Ack::None => None,
        };
        map.into_iter()
            .flatten()
            .map(|((topic, partition), offset)| (topic.as_str(), *partition, *offset))
    }

    /// Marks the batch applied: for Kafka, stores the offset after each partition's last
    /// record so the next commit includes it. Call only once the events are applied.
    pub fn ack(self) -> Result<(), SourceError> {
        match self.ack {
            Ack::None => Ok(()),
            Ack::Kafka { consumer, offsets } => kafka::store_offsets(&consumer, &offsets),
        }
    }
}

/// Decodes records into a pending batch and collects dead letters for it.
pub(crate) struct Pending {
    decoder: Decoder,
    events: Vec<Event>,
    partitions: Vec<i32>,
    stats: IngestStats,
    dead: Vec<DeadLetter>,
    records: usize,
}

impl Pending {
    pub(crate) fn new(decoder: Decoder) -> Self {
        Pending {
            decoder,
            events: Vec::new(),
            partitions: Vec::new(),
            stats: IngestStats::default(),
            dead: Vec::new(),
            records: 0,
        }
    }

    pub(crate) fn records(&self) -> usize {
        self.records
    }

    /// Whether there is anything to hand over: records, or batches that could not be
    /// read (which must reach the pipeline, to be said, even with no record at all).
    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0 && self.stats.unreadable.is_empty()
    }

    /// Counts a batch the consumer could not read.
    pub(crate) fn unreadable(&mut self, error: &'static str) {
        *self.stats.unreadable.entry(error).or_default() += 1;
    }

    /// Decodes one record. Bad records become dead letters; nothing here fails.
    pub(crate) fn push(&mut self, format: Format, payload: &[u8], provenance: Provenance) {
        self.records += 1;
        // A batch spans a handful of topics: find its counter without copying the
        // topic name for every record.
        let counter = self
            .stats
            .consumed
            .iter_mut()
            .find(|((origin, f), _)| *origin == provenance.origin && *f == format.as_str())
            .map(|(_, n)| n);
        match counter {
            Some(n) => *n += 1,
            None => {
                self.stats
                    .consumed
                    .insert((provenance.origin.clone(), format.as_str()), 1);
            }
        }
        let partition = provenance.partition.unwrap_or(-1);
        let decoded = self
            .decoder
            .decode(format, payload, &provenance, &mut self.events);
        self.partitions.resize(self.events.len(), partition);
        match decoded {
            Ok(Decoded::Events {
                source,
                count,
                repairs,
            }) => {
                *self.stats.decoded.entry(source).or_default() += count as u64;
                if repairs.lossy_utf8 {
                    *self
                        .stats
                        .repaired
                        .entry((source, "lossy_utf8"))
                        .or_default() += 1;
                }
                if repairs.truncated_lines > 0 {
                    *self
                        .stats
                        .repaired
                        .entry((source, "truncated_line"))
                        .or_default() += u64::from(repairs.truncated_lines);
                }
            }
            Ok(Decoded::Ignored { source, why }) => {
                *self.stats.ignored.entry((source, why)).or_default() += 1;
            }
            Err(error) => {
                *self
                    .stats
                    .dead_lettered
                    .entry((format.as_str(), error.reason))
                    .or_default() += 1;
                self.dead.push(DeadLetter::new(
                    provenance,
                    format.as_str(),
                    &error,
                    payload,
                ));
            }
        }
    }

    /// Writes the dead letters (durably) and returns the decoded events and counts.
    pub(crate) async fn take(
        &mut self,
        sink: &mut DeadLetterSink,
    ) -> Result<(Vec<Event>, Vec<i32>, IngestStats), SourceError> {
        sink.write(&self.dead).await?;
        self.dead.clear();
        self.records = 0;
        // The next batch is likely as large: room for it now, instead of growing
        // (and touching fresh pages) record by record.
        let room = self.events.len();
        Ok((
            std::mem::replace(&mut self.events, Vec::with_capacity(room)),
            std::mem::replace(&mut self.partitions, Vec::with_capacity(room)),
            std::mem::take(&mut self.stats),
        ))
    }
}
