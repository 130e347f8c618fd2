//! Scoring of anomaly scores against labelled windows, as the Numenta Anomaly
//! Benchmark (NAB v1.x, `nab/sweeper.py`) does it, so detectors such as
//! [`detect::anomaly::RateDetector`] can be measured on the NAB corpus and compared with
//! published results.
//!
//! # The rules
//!
//! **Profile.** A cost matrix of weights `A_TP`, `A_FP`, `A_FN` (stored positive here:
//! the standard profile is `tp = 1.0, fp = 0.11, fn = 1.0`; NAB's `tnWeight` is
//! unused). `0.11` makes a false positive cost about a tenth of a missed window.
//!
//! **Probation.** The first `min(floor(0.15 * n), 0.15 * 5000)` rows of an `n`-row file
//! (at most 750) are not scored at all: detectors are learning there.
//!
//! **Windows.** Each label window `[start, end]` (timestamps) covers the rows from the
//! first row at `start` to the first row at `end` (NAB looks both up by equality; when
//! a bound is not a row's timestamp this uses the first row at or after `start` and
//! the last at or before `end`). Its width is `W = end_idx - start_idx + 1` rows. A
//! window with no row past probation is not scored (neither TP nor FN).
//!
//! **Scaled sigmoid.** `S(p) = 2 / (1 + e^(5p)) - 1 = tanh(-5p / 2)` for `p <= 3`,
//! and `-1` for `p > 3`. `p` is a position relative to a window's *end*: `-1` at its
//! start, about `0` at its end, positive after it.
//!
//! **Row weights.** Each scorable row gets the weight it would add if detected:
//!
//! * inside a window, row `i`: `A_TP * S(-(end_idx - i + 1) / W) / S(-1)`, so the
//!   first row of the window is worth exactly `A_TP` and the value falls towards the
//!   end (`S(-1/W)`, near 0, for the last row): early detection pays;
//! * outside, after the nearest preceding window (end `e`, width `W`):
//!   `A_FP * S((i - e) / (W - 1))`, a negative weight that is small right after the
//!   window (a late detection of it) and reaches `-A_FP` three window-widths on;
//! * outside, before any window: `-A_FP`.
//!
//! **File score at threshold `th`.** A row is a detection when its anomaly score is
//! `>= th`. Each scorable window contributes `-A_FN` if none of its rows is detected,
//! otherwise the largest weight of its detected rows (the earliest detection: only
//! the first detection in a window counts). Every detected row outside windows adds
//! its (negative) weight. Rows never add anything as true negatives.
//!
//! **Threshold.** One threshold for the whole corpus, found by NAB's sweep: rows of all
//! files sorted by anomaly score, descending; the candidates are "detect nothing"
//! (NAB labels it 1.1) and each distinct score (detect every row scoring at least it);
//! the candidate with the largest total score wins, the higher threshold on ties.
//!
//! **Normalisation.** `100 * (raw - null) / (perfect - null)`, where `null` is the
//! score of a detector that never fires (`-A_FN` per scorable window) and `perfect`
//! the score of one that fires on the first row of every window and nowhere else
//! (`A_TP` per label window that covers a row; like NAB's runner this includes windows
//! inside the probation period). Per category the same formula is applied to the
//! category's own sums at the corpus threshold.
//!
//! NaN anomaly scores are never detections. NAB divides by zero for a one-row window
//! followed by rows; here such rows get the far weight `-A_FP`.

use std::collections::BTreeMap;

use detect::anomaly::parse_timestamp;

/// Weights of a NAB application profile (all stored positive; see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Reward for detecting a window at its first row.
    pub tp_weight: f64,
    /// Cost of a false positive far from any window.
    pub fp_weight: f64,
    /// Cost of a window with no detection.
    pub fn_weight: f64,
    /// Leading fraction of each file that is not scored (NAB: 0.15).
    pub probation_fraction: f64,
}

impl Profile {
    /// NAB's "standard" profile: TP 1.0, FP 0.11, FN 1.0.
    pub const fn standard() -> Self {
        Profile {
            tp_weight: 1.0,
            fp_weight: 0.11,
            fn_weight: 1.0,
            probation_fraction: 0.15,
        }
    }
    /// NAB's "reward_low_FP_rate" profile: FP costs 0.22.
    pub const fn reward_low_fp_rate() -> Self {
        Profile {
            fp_weight: 0.22,
            ..Profile::standard()
        }
    }
    /// NAB's "reward_low_FN_rate" profile: a missed window costs 2.0.
    pub const fn reward_low_fn_rate() -> Self {
        Profile {
            fn_weight: 2.0,
            ..Profile::standard()
        }
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile::standard()
    }
}

/// Label windows per data file, keyed like NAB's `combined_windows.json`
/// (`"category/file.csv"`), as epoch seconds `(start, end)` sorted by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub windows: BTreeMap<String, Vec<(i64, i64)>>,
}

impl Labels {
    /// Parses `combined_windows.json`: `{"cat/file.csv": [["start", "end"], ...], ...}`
    /// with timestamps like `2014-04-10 07:15:00.000000`.
    pub fn from_windows_json(text: &str) -> Result<Labels, String> {
        let raw: BTreeMap<String, Vec<(String, String)>> =
            serde_json::from_str(text).map_err(|e| format!("label windows: {e}"))?;
        let mut windows = BTreeMap::new();
        for (file, list) in raw {
            let mut out = Vec::with_capacity(list.len());
            for (s, e) in &list {
                let start = parse_timestamp(s)
                    .ok_or_else(|| format!("label windows: {file}: bad timestamp {s:?}"))?;
                let end = parse_timestamp(e)
                    .ok_or_else(|| format!("label windows: {file}: bad timestamp {e:?}"))?;
                if end < start {
                    return Err(format!(
                        "label windows: {file}: window ends before it starts"
                    ));
                }
                out.push((start, end));
            }
            out.sort_unstable();
            windows.insert(file, out);
        }
        Ok(Labels { windows })
    }

    /// The windows of `file` (empty when the file has none or is unknown).
    pub fn windows_for(&self, file: &str) -> &[(i64, i64)] {
        self.windows.get(file).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Parses `combined_labels.json` (`{"cat/file.csv": ["timestamp", ...], ...}`): the
/// labelled anomaly instants, at the centre of each window.
pub fn label_points_from_json(text: &str) -> Result<BTreeMap<String, Vec<i64>>, String> {
    let raw: BTreeMap<String, Vec<String>> =
        serde_json::from_str(text).map_err(|e| format!("labels: {e}"))?;
    raw.into_iter()
        .map(|(file, list)| -> Result<(String, Vec<i64>), String> {
            let mut points = list
                .iter()
                .map(|s| {
                    parse_timestamp(s).ok_or_else(|| format!("labels: {file}: bad timestamp {s:?}"))
                })
                .collect::<Result<Vec<i64>, String>>()?;
            points.sort_unstable();
            Ok((file, points))
        })
        .collect()
}

/// One data file's anomaly scores, ready for scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct FileScores {
    /// `"category/file.csv"`; the category is the part before the first `/`.
    pub name: String,
    /// Row timestamps in epoch seconds, in file order.
    pub timestamps: Vec<i64>,
    /// Anomaly score of each row (same length as `timestamps`).
    pub scores: Vec<f64>,
    /// Label windows (epoch seconds), e.g. from [`Labels::windows_for`].
    pub windows: Vec<(i64, i64)>,
}

impl FileScores {
    /// The category: `name` up to its first `/` (empty if there is none).
    pub fn category(&self) -> &str {
        self.name.split_once('/').map_or("", |(c, _)| c)
    }
}

/// Result of one file at the chosen threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct FileResult {
    pub name: String,
    pub category: String,
    /// The file's NAB score (sum of window and false-positive contributions).
    pub raw: f64,
    /// Score of the never-firing detector: `-A_FN * scorable_windows`.
    pub null: f64,
    /// Score of the perfect detector: `A_TP * windows`.
    pub perfect: f64,
    /// Label windows of the file that cover at least one row.
    pub windows: usize,
    /// Windows with at least one row past probation.
    pub scorable_windows: usize,
    /// Scorable windows with at least one detection.
    pub detected_windows: usize,
    /// Detected rows outside every window, past probation.
    pub false_positives: usize,
    /// Rows not scored at the start of the file.
    pub probation_rows: usize,
}

/// Sums and normalised score of a set of files (one category or the corpus).
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryScore {
    pub category: String,
    pub raw: f64,
    pub null: f64,
    pub perfect: f64,
    /// `100 * (raw - null) / (perfect - null)`; 0 when there is no window.
    pub normalized: f64,
}

/// Result of [`score_corpus`].
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusScore {
    /// The corpus-wide threshold (1.1, or +inf if some score exceeds 1.1, means
    /// "detect nothing" was best).
    pub threshold: f64,
    /// Totals over all files.
    pub overall: CategoryScore,
    /// Per category, sorted by name.
    pub categories: Vec<CategoryScore>,
    /// Per file, in input order.
    pub files: Vec<FileResult>,
}

/// NAB's scaled sigmoid `S(p)`: `2 / (1 + e^(5p)) - 1` for `p <= 3`, else `-1`.
pub fn scaled_sigmoid(p: f64) -> f64 {
    if p > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * p).exp()) - 1.0
    }
}

/// Number of leading rows of an `n`-row file that are not scored:
/// rows `i < min(floor(f * n), f * 5000)`.
pub fn probation_rows(n: usize, fraction: f64) -> usize {
    let limit = (fraction * n as f64).floor().min(fraction * 5000.0);
    if limit > 0.0 {
        (limit.ceil() as usize).min(n)
    } else {
        0
    }
}

/// Per-row weights of one file (see the module doc).
struct Prepared {
    /// Weight of each row if detected.
    weight: Vec<f64>,
    /// Index (into this file's windows) of the window holding each row.
    window: Vec<Option<usize>>,
    probation: usize,
    /// Windows covering at least one row.
    windows: usize,
    /// Per window: has a row past probation.
    scorable: Vec<bool>,
}

/// Row index range of each window; windows covering no row, or starting inside an
/// earlier window, are dropped.
fn window_rows(ts: &[i64], windows: &[(i64, i64)]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &(s, e) in windows {
        let si = ts
            .iter()
            .position(|&t| t == s)
            .or_else(|| ts.iter().position(|&t| t >= s));
        let ei = ts
            .iter()
            .position(|&t| t == e)
            .or_else(|| ts.iter().rposition(|&t| t <= e));
        if let (Some(si), Some(ei)) = (si, ei) {
            if si > ei || out.last().is_some_and(|&(_, pe)| si <= pe) {
                continue;
            }
            out.push((si, ei));
        }
    }
    out
}

fn prepare(file: &FileScores, profile: &Profile) -> Prepared {
    let n = file.timestamps.len().min(file.scores.len());
    let spans = window_rows(&file.timestamps[..n], &file.windows);
    let probation = probation_rows(n, profile.probation_fraction);
    let mut weight = vec![0.0; n];
    let mut window = vec![None; n];
    let max_tp = scaled_sigmoid(-1.0);
    let mut prev: Option<(usize, f64)> = None; // (end row, width) of the last window
    let mut k = 0;
    let mut i = 0;
    while i < n {
        if k < spans.len() && i == spans[k].0 {
            let (s, e) = spans[k];
            let width = (e - s + 1) as f64;
            for j in s..=e {
                weight[j] =
                    scaled_sigmoid(-((e - j + 1) as f64) / width) * profile.tp_weight / max_tp;
                window[j] = Some(k);
            }
            prev = Some((e, width));
            k += 1;
            i = e + 1;
            continue;
        }
        weight[i] = match prev {
            None => -profile.fp_weight,
            // A one-row window gives 0/0 in NAB; treat the row as far away.
            Some((_, w)) if w <= 1.0 => -profile.fp_weight,
            Some((e, w)) => scaled_sigmoid((i - e) as f64 / (w - 1.0)) * profile.fp_weight,
        };
        i += 1;
    }
    let scorable = spans.iter().map(|&(_, e)| e >= probation).collect();
    Prepared {
        weight,
        window,
        probation,
        windows: spans.len(),
        scorable,
    }
}

/// A score usable as a detection threshold: NaN is never a detection, -0 is 0.
fn usable(score: f64) -> Option<f64> {
    if score.is_nan() {
        None
    } else {
        Some(score + 0.0)
    }
}

/// Scores one file at `threshold` (rows scoring `>= threshold` are detections).
pub fn score_file(file: &FileScores, profile: &Profile, threshold: f64) -> FileResult {
    score_prepared(file, &prepare(file, profile), profile, threshold)
}

fn score_prepared(
    file: &FileScores,
    p: &Prepared,
    profile: &Profile,
    threshold: f64,
) -> FileResult {
    let mut best: Vec<Option<f64>> = vec![None; p.windows];
    let mut fp = 0.0;
    let mut fp_rows = 0;
    for i in p.probation..p.weight.len() {
        let Some(s) = usable(file.scores[i]) else {
            continue;
        };
        if s < threshold {
            continue;
        }
        match p.window[i] {
            Some(w) => {
                let v = p.weight[i];
                if best[w].is_none_or(|b| v > b) {
                    best[w] = Some(v);
                }
            }
            None => {
                fp += p.weight[i];
                fp_rows += 1;
            }
        }
    }
    let mut raw = fp;
    let mut scorable = 0;
    let mut detected = 0;
    for (w, b) in best.iter().enumerate() {
        if !p.scorable[w] {
            continue;
        }
        scorable += 1;
        match b {
            Some(v) => {
                raw += v;
                detected += 1;
            }
            None => raw -= profile.fn_weight,
        }
    }
    FileResult {
        name: file.name.clone(),
        category: file.category().to_string(),
        raw,
        null: -profile.fn_weight * scorable as f64,
        perfect: profile.tp_weight * p.windows as f64,
        windows: p.windows,
        scorable_windows: scorable,
        detected_windows: detected,
        false_positives: fp_rows,
        probation_rows: p.probation,
    }
}

/// NAB's threshold sweep over all files at once; returns `(threshold, total score)`
/// of the best candidate.
fn best_threshold(files: &[FileScores], prepared: &[Prepared], profile: &Profile) -> (f64, f64) {
    struct Row {
        score: f64,
        slot: Option<usize>, // index into `window_best`, None for outside windows
        weight: f64,
    }
    let mut rows = Vec::new();
    let mut window_best: Vec<f64> = Vec::new();
    let mut total_windows = 0.0;
    let mut max_score = f64::NEG_INFINITY;
    for (file, p) in files.iter().zip(prepared) {
        let base = window_best.len();
        for &sc in &p.scorable {
            window_best.push(-profile.fn_weight);
            if sc {
                total_windows -= profile.fn_weight;
            }
        }
        for i in p.probation..p.weight.len() {
            let Some(score) = usable(file.scores[i]) else {
                continue;
            };
            max_score = max_score.max(score);
            rows.push(Row {
                score,
                slot: p.window[i].map(|w| base + w),
                weight: p.weight[i],
            });
        }
    }
    // Stable: equal scores keep file and row order, as Python's sorted() does.
    rows.sort_by(|a, b| b.score.total_cmp(&a.score));

    let mut cur = if max_score < 1.1 { 1.1 } else { f64::INFINITY };
    let mut fp_sum = 0.0;
    let mut best = (cur, fp_sum + total_windows);
    for row in &rows {
        if row.score != cur {
            let total = fp_sum + total_windows;
            if total > best.1 {
                best = (cur, total);
            }
            cur = row.score;
        }
        match row.slot {
            None => fp_sum += row.weight,
            Some(slot) => {
                if row.weight > window_best[slot] {
                    total_windows += row.weight - window_best[slot];
                    window_best[slot] = row.weight;
                }
            }
        }
    }
    let total = fp_sum + total_windows;
    if total > best.1 {
        best = (cur, total);
    }
    best
}

fn normalized(raw: f64, null: f64, perfect: f64) -> f64 {
    if perfect - null > 0.0 {
        100.0 * (raw - null) / (perfect - null)
    } else {
        0.0
    }
}

fn summarize(category: &str, files: &[&FileResult]) -> CategoryScore {
    let raw = files.iter().map(|f| f.raw).sum();
    let null = files.iter().map(|f| f.null).sum();
    let perfect = files.iter().map(|f| f.perfect).sum();
    CategoryScore {
        category: category.to_string(),
        raw,
        null,
        perfect,
        normalized: normalized(raw, null, perfect),
    }
}

/// Scores a corpus the NAB way: one threshold for all files (the sweep's best), then
/// each file at that threshold, with normalised scores overall and per category.
pub fn score_corpus(files: &[FileScores], profile: &Profile) -> CorpusScore {
    let prepared: Vec<Prepared> = files.iter().map(|f| prepare(f, profile)).collect();
    let (threshold, _) = best_threshold(files, &prepared, profile);
    score_prepared_corpus(files, &prepared, profile, threshold)
}

/// Scores a corpus at a given threshold (chosen elsewhere, as on other files).
pub fn score_corpus_at(files: &[FileScores], profile: &Profile, threshold: f64) -> CorpusScore {
    let prepared: Vec<Prepared> = files.iter().map(|f| prepare(f, profile)).collect();
    score_prepared_corpus(files, &prepared, profile, threshold)
}

fn score_prepared_corpus(
    files: &[FileScores],
    prepared: &[Prepared],
    profile: &Profile,
    threshold: f64,
) -> CorpusScore {
    let results: Vec<FileResult> = files
        .iter()
        .zip(prepared)
        .map(|(f, p)| score_prepared(f, p, profile, threshold))
        .collect();
    let mut by_category: BTreeMap<&str, Vec<&FileResult>> = BTreeMap::new();
    for r in &results {
        by_category.entry(r.category.as_str()).or_default().push(r);
    }
    let categories = by_category.iter().map(|(c, fs)| summarize(c, fs)).collect();
    let all: Vec<&FileResult> = results.iter().collect();
    let overall = summarize("overall", &all);
    CorpusScore {
        threshold,
        overall,
        categories,
        files: results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, scores: Vec<f64>, windows: Vec<(i64, i64)>) -> FileScores {
        let timestamps = (0..scores.len() as i64).map(|i| i * 300).collect();
        FileScores {
            name: name.into(),
            timestamps,
            scores,
            windows,
        }
    }

    /// Ten rows at 5-minute steps, one window over rows 3..=5 (W = 3), standard profile.
    ///
    /// Probation: floor(0.15 * 10) = 1, so row 0 (score 0.9) is ignored.
    /// Row weights, using S(p) = 2/(1+e^(5p)) - 1 = tanh(-5p/2):
    /// * row 1 (score 0.8): before any window, -0.11.
    /// * row 4 (score 0.7): in the window, p = -(5 - 4 + 1)/3 = -2/3,
    ///   S(-2/3)/S(-1) = tanh(5/3)/tanh(5/2) = 0.931109/0.986614 = 0.943742.
    /// * row 7 (score 0.6): after the window, p = (7 - 5)/(3 - 1) = 1,
    ///   0.11 * S(1) = 0.11 * tanh(-5/2) = -0.108528.
    ///
    /// Candidate thresholds and totals (the window starts at -1):
    /// * 1.1 (nothing):            -1
    /// * 0.8 (row 1):              -1 - 0.11                        = -1.11
    /// * 0.7 (rows 1, 4):          -0.11 + 0.943742                 =  0.833742
    /// * 0.6 (rows 1, 4, 7):       0.833742 - 0.108528              =  0.725215
    /// * 0.0 (rows 1..=9): rows 1, 2: -0.22; row 3 (window start): +1;
    ///   rows 6..=9 at p = 0.5, 1, 1.5, 2: 0.11 * (tanh(-1.25) + tanh(-2.5) +
    ///   tanh(-3.75) + tanh(-5)) = 0.11 * -3.833687 = -0.421706; total 0.358294.
    ///
    /// Best: threshold 0.7, raw 0.833742; null = -1, perfect = 1, so the normalised
    /// score is 100 * (0.833742 + 1) / 2 = 91.687.
    #[test]
    fn hand_computed_example() {
        let mut scores = vec![0.0; 10];
        scores[0] = 0.9;
        scores[1] = 0.8;
        scores[4] = 0.7;
        scores[7] = 0.6;
        let f = file("cat/a.csv", scores, vec![(900, 1500)]);
        let r = score_corpus(&[f], &Profile::standard());
        assert_eq!(r.threshold, 0.7);
        assert!(
            (r.overall.raw - 0.833_742_261).abs() < 1e-6,
            "{}",
            r.overall.raw
        );
        assert!((r.overall.normalized - 91.687_113).abs() < 1e-4);
        assert_eq!(r.files[0].detected_windows, 1);
        assert_eq!(r.files[0].false_positives, 1);
        assert_eq!(r.files[0].probation_rows, 1);
        assert_eq!(r.categories.len(), 1);
        assert_eq!(r.categories[0].category, "cat");
    }

    #[test]
    fn a_corpus_scored_at_its_own_best_threshold_scores_as_the_sweep() {
        let mut scores = vec![0.0; 10];
        scores[1] = 0.8;
        scores[4] = 0.7;
        let f = file("cat/a.csv", scores, vec![(900, 1500)]);
        let best = score_corpus(std::slice::from_ref(&f), &Profile::standard());
        let at = score_corpus_at(
            std::slice::from_ref(&f),
            &Profile::standard(),
            best.threshold,
        );
        assert_eq!(at.overall.raw, best.overall.raw);
        // Above every score nothing is detected: the null score.
        let none = score_corpus_at(&[f], &Profile::standard(), 0.9);
        assert_eq!(none.overall.normalized, 0.0);
    }

    #[test]
    fn null_scores_zero_and_perfect_scores_hundred() {
        let windows = vec![(300 * 300, 300 * 340), (300 * 600, 300 * 650)];
        let n = 1000;
        let null = file("a/x.csv", vec![0.0; n], windows.clone());
        let r = score_corpus(std::slice::from_ref(&null), &Profile::standard());
        assert_eq!(r.overall.normalized, 0.0);
        assert_eq!(r.overall.raw, -2.0);

        let mut s = vec![0.0; n];
        s[300] = 1.0;
        s[600] = 1.0;
        let perfect = file("b/y.csv", s, windows);
        let r = score_corpus(&[null, perfect], &Profile::standard());
        assert_eq!(r.threshold, 1.0);
        assert!((r.categories[1].normalized - 100.0).abs() < 1e-9);
        assert!((r.overall.normalized - 50.0).abs() < 1e-9);
    }

    #[test]
    fn probation_and_sigmoid() {
        assert_eq!(probation_rows(4032, 0.15), 604);
        assert_eq!(probation_rows(22_695, 0.15), 750);
        assert_eq!(probation_rows(10, 0.15), 1);
        assert!((scaled_sigmoid(-1.0) - 0.986_614_3).abs() < 1e-6);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
        assert!(scaled_sigmoid(0.0).abs() < 1e-12);
    }

    #[test]
    fn parses_windows_json() {
        let text = r#"{"realKnownCause/nyc_taxi.csv": [
            ["2014-11-25 12:00:00.000000", "2014-11-29 19:00:00.000000"],
            ["2014-10-30 15:30:00.000000", "2014-11-03 22:30:00.000000"]],
            "artificialNoAnomaly/art_flatline.csv": []}"#;
        let l = Labels::from_windows_json(text).unwrap();
        let w = l.windows_for("realKnownCause/nyc_taxi.csv");
        assert_eq!(w.len(), 2);
        assert!(w[0].0 < w[1].0);
        assert_eq!(w[0].0, parse_timestamp("2014-10-30 15:30:00").unwrap());
        assert!(
            l.windows_for("artificialNoAnomaly/art_flatline.csv")
                .is_empty()
        );
        assert!(l.windows_for("missing.csv").is_empty());
        let p = label_points_from_json(r#"{"a/b.csv": ["2014-04-11 00:00:00"]}"#).unwrap();
        assert_eq!(p["a/b.csv"], vec![1_397_174_400]);
    }
}
