//! Grouping accuracy of the template miner on the LogHub 2k samples, against both label
//! sets, with the one default configuration (no per-dataset tuning).
//!
//! GA: a message counts as correct when the set of messages the miner grouped with it
//! is exactly the set sharing its ground-truth template.
//!
//! `cargo bench -p detect --bench loghub` reads `../shared/datasets/loghub2k` beside the
//! project (or `DRIFTWATCH_LOGHUB`); it says so and exits when the data is absent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use detect::templates::Miner;

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

fn grouping_accuracy(truth: &[String], found: &[u32]) -> f64 {
    let mut by_truth: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_found: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, (t, f)) in truth.iter().zip(found).enumerate() {
        by_truth.entry(t).or_default().push(i);
        by_found.entry(*f).or_default().push(i);
    }
    let correct: usize = by_found
        .values()
        .filter(|g| by_truth[truth[g[0]].as_str()] == **g)
        .map(Vec::len)
        .sum();
    correct as f64 / truth.len() as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = std::env::var_os("DRIFTWATCH_LOGHUB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/loghub2k")
        });
    if !root.is_dir() {
        println!(
            "LogHub samples not found at {}: nothing to evaluate",
            root.display()
        );
        return;
    }
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    println!(
        "{:<12} {:>10} {:>10} {:>10}",
        "dataset", "GA", "GA (corr.)", "templates"
    );
    let (mut sum, mut sum_corrected) = (0.0, 0.0);
    for name in &names {
        let dir = root.join(name);
        let original = labelled(&dir.join(format!("{name}_2k.log_structured.csv")));
        let corrected = labelled(&dir.join(format!("{name}_2k.log_structured_corrected.csv")));
        let mut miner = Miner::default();
        let found: Vec<u32> = original
            .iter()
            .map(|(content, _)| miner.add(content).id)
            .collect();
        let truth =
            |rows: &[(String, String)]| rows.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>();
        let ga = grouping_accuracy(&truth(&original), &found);
        let ga_corrected = grouping_accuracy(&truth(&corrected), &found);
        sum += ga;
        sum_corrected += ga_corrected;
        println!(
            "{name:<12} {ga:>10.3} {ga_corrected:>10.3} {:>10}",
            miner.templates().len()
        );
    }
    let n = names.len() as f64;
    println!(
        "{:<12} {:>10.3} {:>10.3}",
        "average",
        sum / n,
        sum_corrected / n
    );
}
