//! The log-template miner on the LogHub 2k samples, with the one default configuration
//! (no per-dataset tuning):
//!
//! 1. Grouping accuracy per dataset against both label sets, through the very command
//!    users run (`driftwatch templates -`, one raw message per line in, one
//!    `<id>\t<template>` per line out). GA: a message counts as correct when the set of
//!    messages grouped with it is exactly the set sharing its ground-truth template.
//! 2. Leave one dataset out: for each dataset, the configuration (similarity and
//!    variants before a merge, over a grid that holds the default) that scores best
//!    on the other seven is picked, and the held-out dataset is scored with it. The
//!    plain score beside it: where the two differ, the default is fitted to the data.
//! 3. Speed of the miner alone, one miner per dataset, on the samples repeated to at
//!    least a million lines, beside Drain3 (PyPI `drain3`, default configuration) on the
//!    same lines in the same run; the figure is the ratio of lines per second.
//!
//! `cargo bench --bench loghub` reads `../shared/datasets/loghub2k` beside the project
//! (or `DRIFTWATCH_LOGHUB`) and says so when the data is absent. Drain3 is installed
//! with pip when missing; `--no-drain3` leaves the comparison out.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use detect::templates::{Miner, MinerConfig};

/// Parses CSV (RFC 4180: quoted fields may hold commas, quotes and newlines).
fn records(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// (content, ground-truth template) of every line of a structured CSV. The template
/// text, not the event id, is the truth: the corrected label set rewrote templates
/// (merging and splitting groups) and kept the original ids.
fn labelled(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows = records(&text).into_iter();
    let header = rows.next().expect("header");
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column"))
    };
    let (content, template) = (col("Content"), col("EventTemplate"));
    rows.map(|f| (f[content].clone(), f[template].clone()))
        .collect()
}

/// One dataset's lines: (content, template, corrected template).
type Rows = Vec<(String, String, String)>;

/// Reads the LogHub samples: (dataset, its lines).
fn datasets(root: &Path) -> Vec<(String, Rows)> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let dir = root.join(&name);
            let original = labelled(&dir.join(format!("{name}_2k.log_structured.csv")));
            let corrected = labelled(&dir.join(format!("{name}_2k.log_structured_corrected.csv")));
            assert_eq!(
                original.len(),
                corrected.len(),
                "{name}: label sets differ in length"
            );
            let rows = original
                .into_iter()
                .zip(corrected)
                .map(|((content, t), (_, c))| (content.replace(['\n', '\r'], " "), t, c))
                .collect();
            (name, rows)
        })
        .collect()
}

/// The template id of every line, from `driftwatch templates -`.
fn templates_command(lines: &[&str]) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["templates", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run driftwatch templates");
    let mut input = String::new();
    for l in lines {
        input.push_str(l);
        input.push('\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("driftwatch templates");
    writer
        .join()
        .unwrap()
        .expect("write to driftwatch templates");
    assert!(out.status.success(), "driftwatch templates failed");
    let ids: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), lines.len(), "one output line per input line");
    ids
}

fn accuracy(root: &Path) {
    println!("grouping accuracy (driftwatch templates, default configuration)");
    println!(
        "{:<12} {:>8} {:>12} {:>10}",
        "dataset", "GA", "GA corrected", "templates"
    );
    let (mut sum, mut sum_corrected, mut n) = (0.0, 0.0, 0.0);
    for (name, rows) in datasets(root) {
        let lines: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let found = templates_command(&lines);
        let original: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        let corrected: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        let ga = grouping_accuracy(&original, &found);
        let ga_corrected = grouping_accuracy(&corrected, &found);
        let distinct = found.iter().collect::<std::collections::HashSet<_>>().len();
        println!("{name:<12} {ga:>8.3} {ga_corrected:>12.3} {distinct:>10}");
        sum += ga;
        sum_corrected += ga_corrected;
        n += 1.0;
    }
    println!(
        "{:<12} {:>8.3} {:>12.3}",
        "average",
        sum / n,
        sum_corrected / n
    );
}

/// The grid the leave-one-out run picks from; the defaults lie inside it.
const SIMILARITIES: [f64; 5] = [0.5, 0.6, 0.7, 0.8, 0.9];
const MERGE_AFTER: [usize; 6] = [2, 3, 4, 6, 8, 12];

/// The template id of every line through the library's miner with `config`, cut as
/// the command cuts lines.
fn mine(lines: &[&str], config: &MinerConfig) -> Vec<String> {
    let mut miner = Miner::new(config.clone());
    let ids: Vec<u32> = lines
        .iter()
        .map(|l| {
            let l = ingest::truncate_line(l, ingest::decode::DEFAULT_MAX_LOG_LINE_BYTES);
            miner.add(&l).id
        })
        .collect();
    ids.into_iter()
        .map(|id| miner.resolve(id).to_string())
        .collect()
}

fn leave_one_out(root: &Path) {
    let sets = datasets(root);
    let configs: Vec<MinerConfig> = SIMILARITIES
        .iter()
        .flat_map(|&similarity| {
            MERGE_AFTER
                .iter()
                .map(move |&merge_after_variants| MinerConfig {
                    similarity,
                    merge_after_variants,
                    ..MinerConfig::default()
                })
        })
        .collect();
    // scores[config][dataset] = (GA, GA corrected)
    let scores: Vec<Vec<(f64, f64)>> = configs
        .iter()
        .map(|config| {
            sets.iter()
                .map(|(_, rows)| {
                    let lines: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
                    let found = mine(&lines, config);
                    let original: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
                    let corrected: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
                    (
                        grouping_accuracy(&original, &found),
                        grouping_accuracy(&corrected, &found),
                    )
                })
                .collect()
        })
        .collect();
    let default = configs
        .iter()
        .position(|c| *c == MinerConfig::default())
        .expect("the grid holds the default");
    println!();
    println!(
        "leave one dataset out: configuration picked on the other {} (GA, original labels), \
         from {} on a grid",
        sets.len() - 1,
        configs.len()
    );
    println!(
        "{:<12} {:>10} {:>6} {:>8} {:>12} {:>10}",
        "held out", "similarity", "merge", "GA", "GA corrected", "default GA"
    );
    let (mut sum, mut sum_corrected, mut sum_default) = (0.0, 0.0, 0.0);
    for (held, (name, _)) in sets.iter().enumerate() {
        let on_others = |c: usize| -> f64 {
            (0..sets.len())
                .filter(|&d| d != held)
                .map(|d| scores[c][d].0)
                .sum()
        };
        // Ties go to the earlier configuration on the grid, the default's when it ties.
        let mut best = default;
        for c in 0..configs.len() {
            if on_others(c) > on_others(best) + 1e-9 {
                best = c;
            }
        }
        let (ga, ga_corrected) = scores[best][held];
        let default_ga = scores[default][held].0;
        println!(
            "{name:<12} {:>10.2} {:>6} {ga:>8.3} {ga_corrected:>12.3} {default_ga:>10.3}",
            configs[best].similarity, configs[best].merge_after_variants
        );
        sum += ga;
        sum_corrected += ga_corrected;
        sum_default += default_ga;
    }
    let n = sets.len() as f64;
    println!(
        "{:<12} {:>10} {:>6} {:>8.3} {:>12.3} {:>10.3}",
        "average",
        "",
        "",
        sum / n,
        sum_corrected / n,
        sum_default / n
    );
}

fn grouping_accuracy(truth: &[&str], found: &[String]) -> f64 {
    let mut by_truth: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_found: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (t, f)) in truth.iter().zip(found).enumerate() {
        by_truth.entry(t).or_default().push(i);
        by_found.entry(f).or_default().push(i);
    }
    let correct: usize = by_found
        .values()
        .filter(|g| by_truth[truth[g[0]]] == **g)
        .map(Vec::len)
        .sum();
    correct as f64 / truth.len() as f64
}

/// At least a million lines: every sample repeated the same number of times.
const SPEED_LINES: usize = 1_000_000;

fn speed(root: &Path, drain3: bool) {
    let sets = datasets(root);
    let total: usize = sets.iter().map(|(_, rows)| rows.len()).sum();
    let repeat = SPEED_LINES.div_ceil(total);
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut inputs = Vec::new();
    for (name, rows) in &sets {
        let mut lines = Vec::with_capacity(rows.len() * repeat);
        for _ in 0..repeat {
            lines.extend(rows.iter().map(|r| r.0.clone()));
        }
        let path = dir.path().join(format!("{name}.log"));
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        files.push(path);
        inputs.push(lines);
    }
    let lines_total: usize = inputs.iter().map(Vec::len).sum();
    println!();
    println!(
        "speed: {lines_total} lines ({repeat} passes over the samples), one miner per dataset, one core"
    );
    println!(
        "{:<34} {:>12} {:>10} {:>8}",
        "miner", "lines/s", "templates", "ratio"
    );
    // Best of three for driftwatch's miner; Drain3 runs once (it takes minutes).
    let mut best = f64::MAX;
    let mut templates = 0;
    for _ in 0..3 {
        let start = Instant::now();
        templates = 0;
        for lines in &inputs {
            let mut miner = Miner::default();
            for l in lines {
                std::hint::black_box(miner.add(l));
            }
            templates += miner.len();
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    let ours = lines_total as f64 / best;
    if !drain3 {
        println!(
            "{:<34} {ours:>12.0} {templates:>10} {:>8}",
            "driftwatch", "-"
        );
        return;
    }
    let Some((lines, seconds, clusters)) = run_drain3(&files) else {
        println!(
            "{:<34} {ours:>12.0} {templates:>10} {:>8}",
            "driftwatch", "-"
        );
        println!("drain3 could not be run (see above): no comparison");
        return;
    };
    assert_eq!(lines, lines_total, "drain3 read every line");
    let theirs = lines as f64 / seconds;
    println!(
        "{:<34} {theirs:>12.0} {clusters:>10} {:>8.2}",
        "drain3 (Python, default config)", 1.0
    );
    println!(
        "{:<34} {ours:>12.0} {templates:>10} {:>8.2}",
        "driftwatch",
        ours / theirs
    );
}

fn run_drain3(files: &[PathBuf]) -> Option<(usize, f64, usize)> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has = |python: &str| {
        Command::new(python)
            .args(["-c", "import drain3"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&python) {
        eprintln!("installing drain3 with pip");
        let ok = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "drain3"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !has(&python) {
            eprintln!("{python} -m pip install drain3 failed");
            return None;
        }
    }
    let script =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("benches/drain3_speed.py");
    // From an empty folder, so that no drain3.ini changes its defaults.
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(script)
        .args(files)
        .current_dir(cwd.path())
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("drain3: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((
        v["lines"].as_u64()? as usize,
        v["seconds"].as_f64()?,
        v["clusters"].as_u64()? as usize,
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let root = std::env::var_os("DRIFTWATCH_LOGHUB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
                .join("../shared/datasets/loghub2k")
        });
    if !root.is_dir() {
        println!(
            "LogHub samples not found at {}: nothing to evaluate",
            root.display()
        );
        return;
    }
    accuracy(&root);
    leave_one_out(&root);
    speed(&root, !args.iter().any(|a| a == "--no-drain3"));
}
