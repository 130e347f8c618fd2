//! The rate detector on the Numenta Anomaly Benchmark files beside the project
//! (`../shared/datasets/nab`, or `DRIFTWATCH_NAB`), through the very command users run:
//! `driftwatch anomaly-scores FILE` writes `timestamp,value,anomaly_score` for every row.
//! Those rows are kept in NAB's results layout (`<out>/driftwatch/<category>/
//! driftwatch_<file>.csv`, with the `label` column from the windows) and scored with
//! `benches/support/nab_score.rs`, a reimplementation of NAB's standard-profile window scoring (one
//! threshold for the whole corpus, chosen as NAB's sweeper does).
//!
//! `cargo bench --bench nab [-- --results DIR]` prints the score per category and
//! overall; without the data it says so and stops.

use std::path::PathBuf;
use std::process::Command;

use detect::anomaly::parse_timestamp;
use nab_score::{FileScores, Labels, Profile, score_corpus};

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
}
