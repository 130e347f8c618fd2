//! Counts of what happened to records, kept per batch and summed by the caller.
//!
//! Counting in a plain struct and publishing once per batch keeps atomic metric updates
//! off the per-record path; the same numbers feed the Prometheus metrics and the
//! summary `replay` prints.

use std::collections::BTreeMap;

use crate::dead_letter::Reason;
use crate::event::Source;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Records read, by origin (topic or file) and configured format.
    pub consumed: BTreeMap<(String, &'static str), u64>,
    /// Events produced, by source.
    pub decoded: BTreeMap<Source, u64>,
    /// Valid records that describe nothing driftwatch models, by source and why.
    pub ignored: BTreeMap<(Source, &'static str), u64>,
    /// Records dead-lettered, by format (as configured, or detected) and reason.
    pub dead_lettered: BTreeMap<(&'static str, Reason), u64>,
    /// Records kept after a repair, by source and repair (`lossy_utf8`,
    /// `truncated_line`).
    pub repaired: BTreeMap<(Source, &'static str), u64>,
    /// Batches the consumer could not read at all (a codec it lacks, a corrupt
    /// batch), by error: their records are neither events nor dead letters.
    pub unreadable: BTreeMap<&'static str, u64>,
}

impl IngestStats {
    pub fn add(&mut self, other: &IngestStats) {
        for (k, v) in &other.consumed {
            *self.consumed.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.decoded {
            *self.decoded.entry(*k).or_default() += v;
        }
        for (k, v) in &other.ignored {
            *self.ignored.entry(*k).or_default() += v;
        }
        for (k, v) in &other.dead_lettered {
            *self.dead_lettered.entry(*k).or_default() += v;
        }
        for (k, v) in &other.repaired {
            *self.repaired.entry(*k).or_default() += v;
        }
        for (k, v) in &other.unreadable {
            *self.unreadable.entry(*k).or_default() += v;
        }
    }

    pub fn records(&self) -> u64 {
        self.consumed.values().sum()
    }

    pub fn events(&self) -> u64 {
        self.decoded.values().sum()
    }

    pub fn dead_letters(&self) -> u64 {
        self.dead_lettered.values().sum()
    }

    pub fn ignored_records(&self) -> u64 {
        self.ignored.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        *self == IngestStats::default()
    }
}
