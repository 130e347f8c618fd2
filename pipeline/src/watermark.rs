//! Event-time watermarks per input partition: the detector's clock moves to the oldest
//! of the partitions' newest event times (the low watermark), not to the newest event
//! of any batch, so a partition that lags the others does not find its buckets closed,
//! and a replay and a live run over the same records close the same buckets.
//!
//! A partition (a Kafka topic's partition, or a replayed file) that delivered no event
//! for [`IDLE`] of wall-clock time stops holding the watermark back: a quiet or
//! revoked partition must not stop the clock for everyone.

use std::time::{Duration, Instant};

use ingest::{Event, Nanos};

/// Ten seconds: longer than a busy partition goes without a fetch, even while the
/// consumer pauses for a slow pipeline; shorter than a rate bucket, so a partition gone
/// quiet (or moved to another daemon) delays silence detection by less than one.
pub const IDLE: Duration = Duration::from_secs(10);

struct Mark {
    origin: String,
    partition: Option<i32>,
    newest: Nanos,
    seen: Instant,
}

#[derive(Default)]
pub struct Watermarks {
    /// Few: one per partition this daemon reads.
    marks: Vec<Mark>,
}

impl Watermarks {
    /// Takes a batch's events in: each partition's newest event time.
    pub fn saw(&mut self, events: &[Event], now: Instant) {
        let mut last: Option<usize> = None;
        for e in events {
            let p = &e.provenance;
            let i = match last {
                Some(i)
                    if self.marks[i].partition == p.partition
                        && self.marks[i].origin == p.origin =>
                {
                    i
                }
                _ => match self
                    .marks
                    .iter()
                    .position(|m| m.partition == p.partition && m.origin == p.origin)
                {
                    Some(i) => i,
                    None => {
                        self.marks.push(Mark {
                            origin: p.origin.clone(),
                            partition: p.partition,
                            newest: e.time,
                            seen: now,
                        });
                        self.marks.len() - 1
                    }
                },
            };
            let mark = &mut self.marks[i];
            mark.newest = mark.newest.max(e.time);
            mark.seen = now;
            last = Some(i);
        }
    }

    /// The low watermark: the oldest newest event time of the partitions that
    /// delivered an event within [`IDLE`]; with none, the newest of all (nothing
    /// lags). `None` before any event. Partitions idle for long are forgotten.
    pub fn low(&mut self, now: Instant) -> Option<Nanos> {
        let active = |m: &Mark| now.saturating_duration_since(m.seen) < IDLE;
        self.marks
            .retain(|m| now.saturating_duration_since(m.seen) < 360 * IDLE);
        self.marks
            .iter()
            .filter(|m| active(m))
            .map(|m| m.newest)
            .min()
            .or_else(|| self.marks.iter().map(|m| m.newest).max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest::event::{Process, Workload};
    use ingest::{EventKind, Provenance, Source};

    fn event(partition: i32, secs: i64) -> Event {
        Event {
            time: Nanos(secs * 1_000_000_000),
            source: Source::Native,
            provenance: Provenance::kafka("falco", partition, 0),
            workload: Workload::default(),
            service: "shop/api".into(),
            kind: EventKind::ProcessExec {
                process: Process::default(),
            },
        }
    }

    #[test]
    fn the_clock_waits_for_the_lagging_partition() {
        let mut w = Watermarks::default();
        let t = Instant::now();
        assert_eq!(w.low(t), None);
        w.saw(&[event(0, 600), event(1, 60), event(0, 660)], t);
        assert_eq!(w.low(t), Some(Nanos(60 * 1_000_000_000)));
        w.saw(&[event(1, 700)], t);
        assert_eq!(w.low(t), Some(Nanos(660 * 1_000_000_000)));
    }

    #[test]
    fn a_quiet_partition_stops_holding_it_back() {
        let mut w = Watermarks::default();
        let t = Instant::now();
        w.saw(&[event(0, 600), event(1, 60)], t);
        let later = t + IDLE + Duration::from_secs(1);
        w.saw(&[event(0, 900)], later);
        assert_eq!(w.low(later), Some(Nanos(900 * 1_000_000_000)));
        // Everything quiet: the newest of all.
        let quiet = later + IDLE;
        assert_eq!(w.low(quiet), Some(Nanos(900 * 1_000_000_000)));
    }
}
