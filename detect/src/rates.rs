//! Rate drift: per service, events counted in fixed buckets of event time per event
//! kind (and per frequent log template), each series scored by a [`RateDetector`] as
//! its buckets close. Buckets close when the detector's clock passes them: the low
//! watermark of the input partitions ([`crate::Detector::advance`]), so a service that
//! falls silent is noticed without any event of its own, and the counts do not depend
//! on how partitions interleave. A series counts at most [`MAX_OPEN_BUCKETS`] ahead of
//! its oldest open bucket; an event further ahead closes the oldest by itself.
//!
//! Events later than their series' oldest open bucket count into nothing: a rate is
//! about the present, and reopening a scored bucket would score it twice.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::Deserialize;

use crate::anomaly::{Direction, RateConfig, RateDetector};

/// Rate settings (`[detect.rate]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RateSettings {
    /// Counting bucket.
    #[serde(default = "default_bucket", with = "humantime_serde")]
    pub bucket: Duration,
    /// A closed bucket scoring at least this (0 to 1) raises a `rate` alert.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// A finding must also move the count this many events away from the mean of the
    /// recent buckets, and four Poisson standard deviations (`4·√mean`): a detector
    /// judges shape, and a count going from 2 to 9 is a new record but no incident.
    #[serde(default = "default_min_change")]
    pub min_change: u64,
    /// The most frequent learned log templates that get a series of their own.
    #[serde(default = "default_top_templates")]
    pub top_templates: usize,
    /// The detector (`[detect.rate.detector]`); its defaults serve every series.
    #[serde(default)]
    pub detector: RateConfig,
}

impl Default for RateSettings {
    fn default() -> Self {
        RateSettings {
            bucket: default_bucket(),
            threshold: default_threshold(),
            min_change: default_min_change(),
            top_templates: default_top_templates(),
            detector: RateConfig::default(),
        }
    }
}

/// One minute: the resolution of the Grafana panels, and short enough to see a burst.
fn default_bucket() -> Duration {
    Duration::from_secs(60)
}
/// 0.9: on per-minute counts with a daily cycle the detector scores noise above 0.8
/// about once in five days per series; NAB's best corpus threshold (0.51) pages too
/// often for a security team.
fn default_threshold() -> f64 {
    0.9
}
/// Ten events a bucket: below it a change is noise for any service worth watching.
fn default_min_change() -> u64 {
    10
}
/// Three: the templates that make up most of a service's lines.
fn default_top_templates() -> usize {
    3
}

/// Buckets of silence replayed into a series at most: a day of minutes. A longer gap
/// starts the series over.
const MAX_GAP_BUCKETS: i64 = 1440;

/// How far ahead of the clock a series counts, in buckets: a partition may lag the
/// others by this much (16 minutes at the default bucket) before the leading ones
/// close buckets by themselves, and the lagging one's events for them count into
/// nothing.
pub const MAX_OPEN_BUCKETS: i64 = 16;

/// One counted series.
#[derive(Debug, Clone)]
struct Series {
    /// The oldest open bucket.
    bucket: i64,
    /// Counts of the open buckets, from `bucket` on.
    counts: VecDeque<u64>,
    detector: RateDetector,
}

/// A closed bucket that scored.
#[derive(Debug, Clone, PartialEq)]
pub struct RateFinding {
    pub series: String,
    /// Start of the bucket, seconds since the epoch.
    pub bucket_start: i64,
    pub value: u64,
    pub score: f64,
    pub direction: Direction,
    /// The counts of the buckets before it (the latest last, at most 10).
    pub recent: Vec<u64>,
}

/// One service's series.
#[derive(Debug, Clone, Default)]
pub struct RateState {
    series: HashMap<String, (Series, Vec<u64>)>,
    /// Log templates with a series of their own.
    pub(crate) templates: Vec<u32>,
}

impl RateState {
    /// Counts one event into `name` at `bucket`. Returns a finding only when the event
    /// is more than [`MAX_OPEN_BUCKETS`] ahead and closed buckets itself (the strongest
    /// of them).
    pub(crate) fn count(
        &mut self,
        name: &str,
        bucket: i64,
        settings: &RateSettings,
    ) -> Option<RateFinding> {
        let Some((series, recent)) = self.series.get_mut(name) else {
            self.series.insert(
                name.to_owned(),
                (
                    Series {
                        bucket,
                        counts: VecDeque::from([1]),
                        detector: RateDetector::new(&settings.detector),
                    },
                    Vec::new(),
                ),
            );
            return None;
        };
        let found = if bucket - series.bucket >= MAX_OPEN_BUCKETS {
            close(
                name,
                series,
                recent,
                bucket - MAX_OPEN_BUCKETS + 1,
                settings,
            )
        } else {
            None
        };
        if let Ok(i) = usize::try_from(bucket - series.bucket) {
            if series.counts.len() <= i {
                series.counts.resize(i + 1, 0);
            }
            series.counts[i] += 1;
        }
        found
    }

    /// Closes every bucket before `bucket`: the strongest finding of each series.
    pub(crate) fn advance(&mut self, bucket: i64, settings: &RateSettings) -> Vec<RateFinding> {
        let mut found: Vec<RateFinding> = self
            .series
            .iter_mut()
            .filter_map(|(name, (series, recent))| close(name, series, recent, bucket, settings))
            .collect();
        found.sort_by(|a, b| a.series.cmp(&b.series));
        found
    }

    pub fn series(&self) -> impl Iterator<Item = &String> {
        self.series.keys()
    }
}

fn close(
    name: &str,
    series: &mut Series,
    recent: &mut Vec<u64>,
    upto: i64,
    settings: &RateSettings,
) -> Option<RateFinding> {
    if upto <= series.bucket {
        return None;
    }
    let secs = settings.bucket.as_secs().max(1) as i64;
    if upto - series.bucket > MAX_GAP_BUCKETS {
        // Silent for over a day: start over rather than replay a day of zeros.
        let passed = usize::try_from(upto - series.bucket).unwrap_or(usize::MAX);
        series.counts.drain(..passed.min(series.counts.len()));
        series.bucket = upto;
        series.detector = RateDetector::new(&settings.detector);
        recent.clear();
        return None;
    }
    let mut best: Option<RateFinding> = None;
    while series.bucket < upto {
        let count = series.counts.pop_front().unwrap_or(0);
        let score = series.detector.update(series.bucket * secs, count as f64);
        if score >= settings.threshold
            && significant(count, recent, settings.min_change)
            && best.as_ref().is_none_or(|b| score > b.score)
        {
            best = Some(RateFinding {
                series: name.to_owned(),
                bucket_start: series.bucket * secs,
                value: count,
                score,
                direction: series.detector.last_direction(),
                recent: recent.clone(),
            });
        }
        if recent.len() == 10 {
            recent.remove(0);
        }
        recent.push(count);
        series.bucket += 1;
    }
    best
}

/// ln(n!): exact sums below 64, Stirling's series above (error below 1e-10).
fn ln_factorial(n: u64) -> f64 {
    if n < 64 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x * x)
}

/// How likely a count at least as far from `mean` as `value` is when the rate is steady
/// (a Poisson tail: above the mean for a spike, below it for a drop).
pub fn poisson_tail(value: u64, mean: f64) -> f64 {
    let lambda = mean.max(0.5);
    let ln_p = |i: u64| -lambda + i as f64 * lambda.ln() - ln_factorial(i);
    let mut sum = 0.0;
    if value as f64 >= lambda {
        // Terms fall from `value` upwards; a few hundred cover any tail that matters.
        for i in value..value.saturating_add(2000) {
            let term = ln_p(i).exp();
            sum += term;
            if term < sum * 1e-12 {
                break;
            }
        }
    } else {
        for i in (0..=value).rev() {
            let term = ln_p(i).exp();
            sum += term;
            if term < sum * 1e-12 {
                break;
            }
        }
    }
    sum.min(1.0)
}

/// Whether `value` is far enough from the recent mean to matter (see
/// [`RateSettings::min_change`]).
fn significant(value: u64, recent: &[u64], min_change: u64) -> bool {
    if recent.is_empty() {
        return false;
    }
    let mean = recent.iter().sum::<u64>() as f64 / recent.len() as f64;
    let change = (value as f64 - mean).abs();
    change >= min_change as f64 && change >= 4.0 * mean.max(1.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_tails_match_their_exact_values() {
        // P(X >= 21 | 8.6) and P(X <= 0 | 14), from the series' definitions.
        assert!(
            (poisson_tail(21, 8.6) - 2.4529e-4).abs() < 1e-8,
            "{}",
            poisson_tail(21, 8.6)
        );
        assert!((poisson_tail(0, 14.0) - (-14.0f64).exp()).abs() < 1e-12);
        assert!(poisson_tail(10, 10.0) > 0.4);
        // Large counts stay finite and tiny far out.
        assert!(poisson_tail(12_000, 10_000.0) < 1e-60);
    }

    #[test]
    fn a_burst_after_a_steady_rate_is_found_when_its_bucket_closes() {
        let settings = RateSettings::default();
        let mut state = RateState::default();
        let mut found = Vec::new();
        // Three days of 20 events a minute (with a little wobble), then 400 in one.
        let minutes = 3 * 1440;
        for m in 0..minutes {
            for _ in 0..(20 + m % 3) {
                found.extend(state.count("process_exec", m, &settings));
            }
            // The clock follows a bucket behind.
            found.extend(state.advance(m - 1, &settings));
        }
        assert!(found.is_empty(), "{found:?}");
        for _ in 0..400 {
            found.extend(state.count("process_exec", minutes, &settings));
        }
        assert!(found.is_empty(), "the burst's bucket is still open");
        let closed = state.advance(minutes + 1, &settings);
        assert_eq!(closed.len(), 1, "{closed:?}");
        assert_eq!(closed[0].value, 400);
        assert_eq!(closed[0].direction, Direction::Up);
    }

    /// The same events, counted in two orders that two partitions could interleave
    /// them in (one running up to ten minutes ahead), close into the same buckets.
    #[test]
    fn counts_do_not_depend_on_how_partitions_interleave() {
        let settings = RateSettings::default();
        let events: Vec<i64> = (0..600)
            .flat_map(|m| std::iter::repeat_n(m, 20 + (m % 7) as usize))
            .collect();
        // Every other event goes to each partition.
        let a: Vec<i64> = events.iter().step_by(2).copied().collect();
        let b: Vec<i64> = events.iter().skip(1).step_by(2).copied().collect();
        let run = |lead: i64| {
            let mut state = RateState::default();
            let mut closed = Vec::new();
            let (mut i, mut j) = (0, 0);
            while i < a.len() || j < b.len() {
                // Partition a runs `lead` buckets ahead of b; the clock is the slower one.
                if i < a.len() && (j == b.len() || a[i] <= b[j] + lead) {
                    state.count("process_exec", a[i], &settings);
                    i += 1;
                } else {
                    state.count("process_exec", b[j], &settings);
                    j += 1;
                }
                let low = match (a.get(i), b.get(j)) {
                    (Some(x), Some(y)) => (*x).min(*y),
                    (Some(x), None) | (None, Some(x)) => *x,
                    (None, None) => 600,
                };
                closed.extend(state.advance(low - 1, &settings));
            }
            let (series, recent) = &state.series["process_exec"];
            (closed, series.bucket, recent.clone())
        };
        assert_eq!(run(0), run(10));
    }

    #[test]
    fn silence_is_a_drop_once_the_clock_passes() {
        let settings = RateSettings::default();
        let mut state = RateState::default();
        let minutes = 3 * 1440;
        for m in 0..minutes {
            for _ in 0..(30 + m % 4) {
                state.count("log", m, &settings);
            }
            assert!(state.advance(m - 1, &settings).is_empty());
        }
        let found = state.advance(minutes + 30, &settings);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].value, 0);
        assert_eq!(found[0].direction, Direction::Down);
    }
}
