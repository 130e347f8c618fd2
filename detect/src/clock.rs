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

use std::collections::VecDeque;

/// Event times the clock is taken over.
pub const WINDOW: usize = 1024;

/// Future-dated records among the window that cannot move the clock.
pub const OUTLIERS: usize = 3;

#[derive(Debug, Clone)]
pub struct Clock {
    recent: VecDeque<i64>,
    /// The latest credible event time.
    last: i64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            recent: VecDeque::with_capacity(WINDOW),
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
        let mut latest: Vec<i64> = self.recent.iter().copied().collect();
        let k = OUTLIERS.min(latest.len().checked_sub(1)?);
        let (_, kth, _) = latest.select_nth_unstable_by(k, |a, b| b.cmp(a));
        Some(*kth)
    }

    /// Takes an event time in; returns whether it is credible: at most `slack` ahead
    /// of the latest credible event or of the clock. So a steady stream, however
    /// sparse, stays credible; a record far ahead of both is not; and after a real jump
    /// forward (a replay's gap, a quiet night) the first [`OUTLIERS`] events at the new
    /// time are outliers, the next ones not.
    pub fn note(&mut self, time: i64, slack: i64) -> bool {
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(time);
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

    #[test]
    fn the_first_event_sets_the_clock() {
        let mut c = Clock::default();
        assert!(c.note(5 * MIN, MIN));
        assert_eq!(c.now(), 5 * MIN);
    }
}
