//! The rate detector on the Numenta Anomaly Benchmark files beside the project
//! (`../shared/datasets/nab`, or `DRIFTWATCH_NAB`), through the very command users run:
//! `driftwatch anomaly-scores FILE` writes `timestamp,value,anomaly_score` for every row.
//! Those rows are kept in NAB's results layout (`<out>/driftwatch/<category>/
//! driftwatch_<file>.csv`, with the `label` column from the windows) and scored with
//! `benches/support/nab_score.rs`, a reimplementation of NAB's standard-profile window scoring (one
//! threshold for the whole corpus, chosen as NAB's sweeper does).
//!
//! Then, leave one category out: for each category, the detector's configuration (over
//! a grid that holds the default) and the corpus threshold that score best on the
//! other categories are picked, and the held-out category is scored with both. Where
//! that score falls short of the plain one, the defaults are fitted to the data.
//!
//! `cargo bench --bench nab [-- --results DIR]` prints the score per category and
//! overall; without the data it says so and stops.

use std::path::PathBuf;
use std::process::Command;

use detect::anomaly::{RateConfig, RateDetector, parse_nab_csv, parse_timestamp};
use nab_score::{FileScores, Labels, Profile, score_corpus, score_corpus_at};

// The whole scorer is shared with its tests; this bench uses the standard profile.
#[allow(dead_code)]
#[path = "support/nab_score.rs"]
mod nab_score;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let root = std::env::var_os("DRIFTWATCH_NAB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
                .join("../shared/datasets/nab")
        });
    if !root.join("data").is_dir() {
        println!(
            "NAB files not found at {}: nothing to evaluate",
            root.display()
        );
        return;
    }
    let results = args
        .iter()
        .position(|a| a == "--results")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    let results = results.unwrap_or_else(|| scratch.path().to_path_buf());
    let labels = Labels::from_windows_json(
        &std::fs::read_to_string(root.join("labels/combined_windows.json")).expect("NAB windows"),
    )
    .expect("NAB windows parse");

    let mut files = Vec::new();
    let mut categories: Vec<String> = std::fs::read_dir(root.join("data"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    categories.sort();
    for category in &categories {
        let mut names: Vec<String> = std::fs::read_dir(root.join("data").join(category))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".csv"))
            .collect();
        names.sort();
        for name in names {
            let path = root.join("data").join(category).join(&name);
            let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
                .arg("anomaly-scores")
                .arg(&path)
                .output()
                .expect("run driftwatch anomaly-scores");
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let key = format!("{category}/{name}");
            let windows = labels.windows_for(&key).to_vec();
            let text = String::from_utf8(out.stdout).unwrap();
            let mut rows = text.lines();
            assert_eq!(rows.next(), Some("timestamp,value,anomaly_score"));
            let (mut timestamps, mut scores) = (Vec::new(), Vec::new());
            let mut result = String::from("timestamp,value,anomaly_score,label\n");
            for row in rows {
                let mut f = row.split(',');
                let (t, v, s) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
                let secs = parse_timestamp(t).expect("timestamp");
                let score: f64 = s.parse().expect("score");
                assert!(
                    (0.0..=1.0).contains(&score),
                    "{key}: score {score} out of [0, 1]"
                );
                let label = windows.iter().any(|(a, b)| (*a..=*b).contains(&secs));
                result += &format!("{t},{v},{score},{}\n", u8::from(label));
                timestamps.push(secs);
                scores.push(score);
            }
            let dir = results.join("driftwatch").join(category);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("driftwatch_{name}")), result).unwrap();
            files.push(FileScores {
                name: key,
                timestamps,
                scores,
                windows,
            });
        }
    }
    let score = score_corpus(&files, &Profile::standard());
    println!(
        "NAB standard profile, {} files, one corpus threshold {:.3} (results in NAB's layout under {})",
        files.len(),
        score.threshold,
        results.display()
    );
    println!(
        "{:<24} {:>6} {:>9} {:>8} {:>8} {:>10}",
        "category", "files", "raw", "null", "perfect", "score"
    );
    for c in &score.categories {
        let n = files.iter().filter(|f| f.category() == c.category).count();
        println!(
            "{:<24} {n:>6} {:>9.3} {:>8.1} {:>8.1} {:>10.1}",
            c.category, c.raw, c.null, c.perfect, c.normalized
        );
    }
    let o = &score.overall;
    println!(
        "{:<24} {:>6} {:>9.3} {:>8.1} {:>8.1} {:>10.1}",
        "all",
        files.len(),
        o.raw,
        o.null,
        o.perfect,
        o.normalized
    );
    let detected: usize = score.files.iter().map(|f| f.detected_windows).sum();
    let windows: usize = score.files.iter().map(|f| f.scorable_windows).sum();
    let fps: usize = score.files.iter().map(|f| f.false_positives).sum();
    println!("windows detected {detected}/{windows}, false positives {fps}");
    without_anomalies(score.threshold);
    leave_one_out(&root, &files);
}

/// Series with no anomaly at all, made here (NAB's own `artificialNoAnomaly` files are
/// not among those beside the project): every point past NAB's probation that scores
/// at or above the corpus threshold is a false positive. Fourteen days of 5-minute
/// points each, from a fixed seed.
fn without_anomalies(threshold: f64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let day = |i: usize| (i % 288) as f64 / 288.0 * std::f64::consts::TAU;
    let len = 14 * 288;
    let mut series: Vec<(&str, Vec<f64>)> = Vec::new();
    series.push(("flat", vec![42.0; len]));
    series.push((
        "gaussian noise",
        (0..len).map(|_| 50.0 + 5.0 * rng.gauss()).collect(),
    ));
    series.push((
        "uniform noise",
        (0..len).map(|_| 20.0 + 60.0 * rng.uniform()).collect(),
    ));
    series.push((
        "daily cycle, small noise",
        (0..len)
            .map(|i| 50.0 + 30.0 * day(i).sin() + 2.0 * rng.gauss())
            .collect(),
    ));
    series.push((
        "daily square wave",
        (0..len)
            .map(|i| if (i / 144) % 2 == 0 { 20.0 } else { 80.0 })
            .collect(),
    ));
    series.push((
        "daily counts (Poisson-like)",
        (0..len)
            .map(|i| {
                let rate = 20.0 + 15.0 * day(i).sin();
                (rate + rate.sqrt() * rng.gauss()).max(0.0).round()
            })
            .collect(),
    ));
    series.push((
        "heavy-tailed (log-normal)",
        (0..len).map(|_| (1.0 + 1.2 * rng.gauss()).exp()).collect(),
    ));
    let probation = nab_score::probation_rows(len, Profile::standard().probation_fraction);
    println!();
    println!(
        "series without anomalies ({len} points each): false positives at the corpus threshold {threshold:.3}"
    );
    let t0 = 1_400_000_000_i64;
    let mut total = 0;
    for (name, values) in &series {
        let mut detector = RateDetector::new(&RateConfig::default());
        let fps = values
            .iter()
            .enumerate()
            .map(|(i, &v)| detector.update(t0 + 300 * i as i64, v))
            .skip(probation)
            .filter(|&s| s >= threshold)
            .count();
        total += fps;
        println!("{name:<30} {fps:>4}");
    }
    println!("{:<30} {total:>4}", "all");
}

/// xorshift64: the same series on every run and machine.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn gauss(&mut self) -> f64 {
        let (a, b) = (self.uniform().max(1e-12), self.uniform());
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    }
}

/// The grid the leave-one-out run picks from: the settings whose notes in
/// `detect/src/anomaly.rs` say they move the score, each at the default, half and
/// double.
fn grid() -> Vec<(String, RateConfig)> {
    let mut grid = Vec::new();
    for history in [1500, 3000, 6000] {
        for refractory in [200, 400, 800] {
            for scales in [vec![1, 16], vec![1, 8], vec![1, 32]] {
                for seasonal_alpha in [0.125, 0.25, 0.5] {
                    let name = format!(
                        "history {history}, refractory {refractory}, scales {scales:?}, \
                         seasonal alpha {seasonal_alpha}"
                    );
                    grid.push((
                        name,
                        RateConfig {
                            history,
                            refractory,
                            scales: scales.clone(),
                            seasonal_alpha,
                            ..RateConfig::default()
                        },
                    ));
                }
            }
        }
    }
    grid
}

/// Scores of every file with `config`, through the library (the command runs the
/// same detector with the default configuration).
fn run(series: &[Vec<(i64, f64)>], files: &[FileScores], config: &RateConfig) -> Vec<FileScores> {
    series
        .iter()
        .zip(files)
        .map(|(points, f)| {
            let mut detector = RateDetector::new(config);
            FileScores {
                name: f.name.clone(),
                timestamps: f.timestamps.clone(),
                scores: points.iter().map(|&(t, v)| detector.update(t, v)).collect(),
                windows: f.windows.clone(),
            }
        })
        .collect()
}

fn leave_one_out(root: &std::path::Path, files: &[FileScores]) {
    let profile = Profile::standard();
    let series: Vec<Vec<(i64, f64)>> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(root.join("data").join(&f.name)).unwrap();
            let points = parse_nab_csv(&text).unwrap_or_else(|e| panic!("{}: {e}", f.name));
            assert_eq!(points.len(), f.scores.len(), "{}", f.name);
            points
        })
        .collect();
    let grid = grid();
    let default = grid
        .iter()
        .position(|(_, c)| *c == RateConfig::default())
        .expect("the grid holds the default");
    let runs: Vec<Vec<FileScores>> = grid.iter().map(|(_, c)| run(&series, files, c)).collect();
    let mut categories: Vec<&str> = files.iter().map(FileScores::category).collect();
    categories.dedup();
    println!();
    println!(
        "leave one category out: configuration ({} on a grid) and threshold picked on the other categories",
        grid.len()
    );
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>14}  picked",
        "held out", "threshold", "score", "default", "default, thr."
    );
    let plain = score_corpus(&runs[default], &profile);
    let (mut raw, mut null, mut perfect) = (0.0, 0.0, 0.0);
    let mut default_threshold_only = (0.0, 0.0, 0.0);
    for held in &categories {
        let split = |run: &[FileScores], inside: bool| -> Vec<FileScores> {
            run.iter()
                .filter(|f| (f.category() == *held) == inside)
                .cloned()
                .collect()
        };
        let on_others: Vec<_> = runs
            .iter()
            .map(|run| score_corpus(&split(run, false), &profile))
            .collect();
        // Ties go to the earlier configuration, the default's when it ties.
        let mut c = default;
        for (i, s) in on_others.iter().enumerate() {
            if s.overall.normalized > on_others[c].overall.normalized + 1e-9 {
                c = i;
            }
        }
        let threshold = on_others[c].threshold;
        let held_out = score_corpus_at(&split(&runs[c], true), &profile, threshold);
        // The defaults kept, only the threshold taken from the other categories.
        let threshold_only = score_corpus_at(
            &split(&runs[default], true),
            &profile,
            on_others[default].threshold,
        );
        default_threshold_only.0 += threshold_only.overall.raw;
        default_threshold_only.1 += threshold_only.overall.null;
        default_threshold_only.2 += threshold_only.overall.perfect;
        let default_score = plain
            .categories
            .iter()
            .find(|s| s.category == *held)
            .map_or(f64::NAN, |s| s.normalized);
        println!(
            "{held:<24} {:>10.3} {:>10.1} {:>10.1} {:>14.1}  {}",
            threshold,
            held_out.overall.normalized,
            default_score,
            threshold_only.overall.normalized,
            grid[c].0
        );
        raw += held_out.overall.raw;
        null += held_out.overall.null;
        perfect += held_out.overall.perfect;
    }
    let (r, n, p) = default_threshold_only;
    println!(
        "{:<24} {:>10} {:>10.1} {:>10.1} {:>14.1}",
        "all",
        "",
        100.0 * (raw - null) / (perfect - null),
        plain.overall.normalized,
        100.0 * (r - n) / (p - n)
    );
    println!(
        "(default: the defaults with the corpus threshold; default, thr.: the defaults with \
         the threshold picked on the other categories)"
    );
}
