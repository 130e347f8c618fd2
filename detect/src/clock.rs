//! The detector's event-time clock, robust to a few records dated in the future.
//!
//! Event time is what the sender says. The clock decides when rate buckets close and
//! whether a late record still counts as learning material, so one record dated an
//! hour ahead must not move it: if it did, every service's rate buckets would close an
//! hour early and real events would count into nothing for that hour. The clock is
//! therefore the [`OUTLIERS`]+1-th latest of the last [`WINDOW`] event times: up to
//! [`OUTLIERS`] future-dated records among them move nothing. An event more than the
//! slack ahead of both the latest credible event and the clock is an outlier; it is
//! judged for drift like any event, but not counted in rates.
//!
//! The clock is read for every event, so it is kept up to date as times come in, not
//! computed from the window: the [`OUTLIERS`]+1 latest times are held sorted, and the
//! window is scanned again only when a time among them leaves it (in a stream that
//! moves forward, the time that leaves is the oldest, so hardly ever).
//!
//! Beside it, [`Progress`] keeps each input partition's own clock, and [`OwnProgress`]
//! each service's own records' clock per partition, for the one question the shared
//! clock cannot answer the same way in every run: whether a record is late.

use std::collections::{HashMap, VecDeque};

use ingest::Provenance;

/// Event times the clock is taken over.
pub const WINDOW: usize = 1024;

/// Future-dated records among the window that cannot move the clock.
pub const OUTLIERS: usize = 3;

/// How many of the latest times decide the clock.
const KEPT: usize = OUTLIERS + 1;

#[derive(Debug, Clone)]
pub struct Clock {
    recent: VecDeque<i64>,
    /// The [`KEPT`] latest times of `recent` (all of them while it holds fewer), latest
    /// first.
    latest: Vec<i64>,
    /// The latest credible event time.
    last: i64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            recent: VecDeque::with_capacity(WINDOW),
            latest: Vec::with_capacity(KEPT + 1),
            last: i64::MIN,
        }
    }
}

impl Clock {
    /// The clock, in nanoseconds since the epoch (`i64::MIN` before any event): the
    /// [`OUTLIERS`]+1-th latest recent event time.
    pub fn now(&self) -> i64 {
        self.latest_but_outliers().unwrap_or(i64::MIN)
    }

    fn latest_but_outliers(&self) -> Option<i64> {
        self.latest.last().copied()
    }

    /// Puts `time` among the latest times if it is one of them.
    fn keep_if_latest(&mut self, time: i64) {
        if self.latest.len() == KEPT && time <= self.latest[KEPT - 1] {
            return;
        }
        let at = self.latest.partition_point(|&t| t >= time);
        self.latest.insert(at, time);
        self.latest.truncate(KEPT);
    }

    /// Takes an event time in; returns whether it is credible: at most `slack` ahead
    /// of the latest credible event or of the clock. So a steady stream, however
    /// sparse, stays credible; a record far ahead of both is not; and after a real jump
    /// forward (a replay's gap, a quiet night) the first [`OUTLIERS`] events at the new
    /// time are outliers, the next ones not.
    pub fn note(&mut self, time: i64, slack: i64) -> bool {
        let mut rescan = false;
        if self.recent.len() == WINDOW
            && let Some(gone) = self.recent.pop_front()
        {
            // A time at or above the last kept one may be one of them.
            rescan = self.latest.last().is_some_and(|&l| gone >= l);
        }
        self.recent.push_back(time);
        if rescan {
            self.latest.clear();
            for i in 0..self.recent.len() {
                self.keep_if_latest(self.recent[i]);
            }
        } else {
            self.keep_if_latest(time);
        }
        let credible = time <= self.last.saturating_add(slack)
            // Only for an event ahead of the latest credible one: rare in a dense stream.
            || self
                .latest_but_outliers()
                .is_some_and(|clock| time <= clock.saturating_add(slack));
        if credible {
            self.last = self.last.max(time);
        }
        credible
    }
}

/// Topics (or replayed files) whose partitions have a progress of their own.
pub const MAX_ORIGINS: usize = 64;

/// Partitions below this number have a progress of their own: a topic's partitions
/// are numbered from 0, and more than this many is beyond any deployment's need.
pub const MAX_PARTITIONS: i32 = 4096;

/// Each input partition's progress: the newest credible event time it has delivered.
///
/// Partitions interleave however the consumer group reads them (a member catching up
/// reads one partition's backlog before another's, members start at different
/// moments), but each partition is in the order its sensor wrote it. So whether a
/// record is late is asked of its own partition, and the same records get the same
/// answer however their partitions interleave. A record with no partition of its own
/// here (beyond [`MAX_ORIGINS`] or [`MAX_PARTITIONS`]) has none: callers fall back to
/// the [`Clock`]. Not kept across restarts: after one, a partition's progress starts
/// again at its first record.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// Per origin, the newest time of each partition by slot (a file's is slot 0,
    /// partition `p`'s is `p + 1`); `i64::MIN` for one never seen.
    origins: HashMap<String, Vec<i64>>,
}

fn slot(p: &Provenance) -> Option<usize> {
    match p.partition {
        None => Some(0),
        Some(n) if (0..MAX_PARTITIONS).contains(&n) => Some(n as usize + 1),
        Some(_) => None,
    }
}

/// Partitions one service's records have a progress of their own in: a service's
/// records come from a handful (a sensor's partition per node, a repartition topic's
/// one); beyond this, [`Progress`] answers.
pub const MAX_OWN: usize = 16;

/// One service's progress in each input partition its records come from: the newest
/// credible time of its own records there.
///
/// A partition's records for one service are in the order the sensor wrote them, and
/// stay so wherever they go: a decode stage that repartitions by service keeps each
/// raw partition's order within each service's stream, but the streams of different
/// services are read at different paces (one repartition partition ahead of another).
/// So whether a service's record is late in its partition is asked of that service's
/// own records there; another service read further ahead in the same raw partition
/// says nothing about it. Not kept across restarts, as [`Progress`] is not.
#[derive(Debug, Default, Clone)]
pub struct OwnProgress {
    /// (origin, partition, newest time), in order of first appearance.
    slots: Vec<(Box<str>, Option<i32>, i64)>,
}

impl OwnProgress {
    /// Takes a credible time of the service's record into its partition's progress.
    pub fn advance(&mut self, p: &Provenance, time: i64) {
        if let Some(slot) = self
            .slots
            .iter_mut()
            .find(|(o, n, _)| *n == p.partition && **o == *p.origin)
        {
            slot.2 = slot.2.max(time);
        } else if self.slots.len() < MAX_OWN {
            self.slots
                .push((p.origin.as_str().into(), p.partition, time));
        }
    }

    /// The newest time of the service's records in `p`'s partition; `None` for one
    /// it has no slot for.
    pub fn newest(&self, p: &Provenance) -> Option<i64> {
        self.slots
            .iter()
            .find(|(o, n, _)| *n == p.partition && **o == *p.origin)
            .map(|s| s.2)
    }
}

impl Progress {
    /// Takes a credible event's time into its partition's progress.
    pub fn advance(&mut self, p: &Provenance, time: i64) {
        let Some(slot) = slot(p) else { return };
        let set = |times: &mut Vec<i64>| {
            if times.len() <= slot {
                times.resize(slot + 1, i64::MIN);
            }
            times[slot] = times[slot].max(time);
        };
        // One lookup for the common case, an origin already seen.
        if let Some(times) = self.origins.get_mut(p.origin.as_str()) {
            set(times);
        } else if self.origins.len() < MAX_ORIGINS {
            set(self.origins.entry(p.origin.clone()).or_default());
        }
    }

    /// The newest time `p`'s partition has delivered; `None` for a partition never
    /// seen or beyond the bounds.
    pub fn newest(&self, p: &Provenance) -> Option<i64> {
        let times = self.origins.get(p.origin.as_str())?;
        times.get(slot(p)?).copied().filter(|&t| t != i64::MIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;

    #[test]
    fn one_record_an_hour_ahead_moves_nothing() {
        let mut c = Clock::default();
        for i in 0..100 {
            assert!(c.note(i * 1_000_000_000, MIN));
        }
        assert!(!c.note(100 * 1_000_000_000 + 60 * MIN, MIN));
        assert!(c.now() < 100 * 1_000_000_000, "{}", c.now());
        // Real events after it are credible, and move the clock as before.
        assert!(c.note(101 * 1_000_000_000, MIN));
    }

    #[test]
    fn a_real_jump_forward_is_followed_after_a_few_events() {
        let mut c = Clock::default();
        for i in 0..100 {
            assert!(
                c.note(i * MIN / 2, MIN),
                "a sparse steady stream is credible"
            );
        }
        let later = 1000 * MIN;
        let credible: Vec<bool> = (0..6).map(|i| c.note(later + i, MIN)).collect();
        assert_eq!(credible, [false, false, false, true, true, true]);
        assert!(c.now() >= later);
    }

    /// The clock as its definition says: the `OUTLIERS`+1-th latest of the window.
    fn by_definition(recent: &VecDeque<i64>) -> i64 {
        let mut all: Vec<i64> = recent.iter().copied().collect();
        all.sort_unstable_by(|a, b| b.cmp(a));
        all.get(OUTLIERS)
            .or(all.last())
            .copied()
            .unwrap_or(i64::MIN)
    }

    #[test]
    fn the_clock_kept_up_to_date_is_the_one_the_definition_gives() {
        // Times that mostly move forward, with jitter, repeats, runs backwards (a
        // replay's second file) and outliers far ahead, over several windows.
        let mut c = Clock::default();
        let mut state: u64 = 0x5eed;
        let mut base: i64 = 0;
        for i in 0..(WINDOW * 6) {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let roll = (state >> 33) % 100;
            base += 1_000;
            if i == WINDOW * 3 {
                base -= 500_000_000;
            }
            let time = match roll {
                0 => base + 3_600_000_000_000,
                1..=10 => base - (state >> 40) as i64 % 50_000,
                11..=15 => base,
                _ => base + (state >> 40) as i64 % 5_000,
            };
            c.note(time, MIN);
            assert_eq!(c.now(), by_definition(&c.recent), "after {i} times");
        }
    }

    #[test]
    fn each_partition_keeps_its_own_progress_within_bounds() {
        let mut p = Progress::default();
        let raw = |partition| Provenance::kafka("raw", partition, 0);
        p.advance(&raw(0), 30 * MIN);
        p.advance(&raw(1), 5 * MIN);
        p.advance(&raw(1), 4 * MIN);
        assert_eq!(p.newest(&raw(0)), Some(30 * MIN));
        assert_eq!(p.newest(&raw(1)), Some(5 * MIN));
        assert_eq!(p.newest(&raw(2)), None);
        assert_eq!(p.newest(&Provenance::file("raw", 1)), None);
        // Beyond the bounds: no progress of its own, and nothing kept.
        p.advance(&raw(MAX_PARTITIONS), MIN);
        assert_eq!(p.newest(&raw(MAX_PARTITIONS)), None);
        for i in 0..MAX_ORIGINS * 2 {
            p.advance(&Provenance::file(&format!("f{i}"), 1), MIN);
        }
        assert_eq!(p.origins.len(), MAX_ORIGINS);
        assert_eq!(
            p.newest(&Provenance::file(&format!("f{}", MAX_ORIGINS + 1), 1)),
            None
        );
    }

    #[test]
    fn the_first_event_sets_the_clock() {
        let mut c = Clock::default();
        assert!(c.note(5 * MIN, MIN));
        assert_eq!(c.now(), 5 * MIN);
    }
}
