//! Conformance with records real sensors wrote: every row of `real_events.tsv` names a
//! record of the corpus in `../shared/datasets/real-events` (or `DRIFTWATCH_REAL_EVENTS`)
//! and what it must become. The corpus is third-party data kept outside the project:
//! when it is absent the test says so and checks nothing; the project's own fixtures
//! (`tests/golden/`) cover the same shapes without it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ingest::event::EventKind;
use ingest::{DecodeLimits, Decoded, Decoder, Event, Format, Provenance, ServiceKeyer};

fn corpus() -> Option<PathBuf> {
    let dir = match std::env::var_os("DRIFTWATCH_REAL_EVENTS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("../../shared/datasets/real-events"),
    };
    dir.join("MANIFEST.md").exists().then_some(dir)
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    // A value is taken as written but for these escapes.
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => panic!("unknown escape \\{other} in {s:?}"),
            None => panic!("a lone backslash ends {s:?}"),
        }
    }
    out
}

/// What one row expects.
struct Row {
    file: String,
    line: usize,
    outcome: String,
    fields: Vec<(String, String)>,
}

fn rows() -> Vec<Row> {
    let table = std::fs::read_to_string(
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("tests/real_events.tsv"),
    )
    .unwrap();
    table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let mut cols = l.split('\t');
            let file = cols.next().unwrap().to_owned();
            let line = cols.next().unwrap().parse().unwrap();
            let outcome = cols.next().unwrap().to_owned();
            let fields = cols
                .map(|c| {
                    let (k, v) = c.split_once('=').unwrap_or_else(|| panic!("{c:?}"));
                    (k.to_owned(), unescape(v))
                })
                .collect();
            Row {
                file,
                line,
                outcome,
                fields,
            }
        })
        .collect()
}

/// The fields an expectation may name, as the decoded event has them.
fn fields(e: &Event) -> BTreeMap<&'static str, String> {
    let w = &e.workload;
    let mut f = BTreeMap::new();
    for (k, v) in [
        ("namespace", &w.namespace),
        ("pod", &w.pod),
        ("container", &w.container_name),
        ("node", &w.node),
    ] {
        f.insert(k, v.clone().unwrap_or_default());
    }
    match &e.kind {
        EventKind::Log {
            stream, message, ..
        } => {
            f.insert("stream", stream.clone().unwrap_or_default());
            f.insert("message", message.clone());
        }
        EventKind::SensorAlert { rule, .. } => {
            f.insert("rule", rule.clone());
        }
        EventKind::FileAccess { path, .. } => {
            f.insert("path", path.clone());
        }
        EventKind::Container { action, .. } => {
            f.insert("action", action.clone());
        }
        EventKind::SensorHealth {
            sensor,
            report,
            lost,
            ..
        } => {
            f.insert("sensor", sensor.clone());
            f.insert("report", report.as_str().to_owned());
            f.insert("lost", lost.to_string());
        }
        _ => {}
    }
    if let Some(p) = e.kind.process() {
        f.insert("exe", p.exe.clone());
    }
    f
}

#[test]
fn every_listed_real_record_ends_as_its_row_says() {
    let Some(dir) = corpus() else {
        eprintln!(
            "real-events corpus absent (../shared/datasets/real-events, or set DRIFTWATCH_REAL_EVENTS): \
             conformance not checked"
        );
        return;
    };
    let rows = rows();
    let mut failures = Vec::new();
    let mut files: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for row in &rows {
        let records = files.entry(row.file.clone()).or_insert_with(|| {
            std::fs::read(dir.join(&row.file))
                .unwrap_or_else(|e| panic!("{}: {e}", row.file))
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        });
        let record = &records[row.line - 1];
        let format: Format = row.file.split('/').next().unwrap().parse().unwrap();
        let mut decoder = Decoder::new(DecodeLimits::default(), ServiceKeyer::default());
        let mut out = Vec::new();
        let got = decoder.decode(
            format,
            record,
            &Provenance::file(&row.file, row.line as i64),
            &mut out,
        );
        let at = format!("{}:{}", row.file, row.line);
        match (&got, row.outcome.as_str()) {
            (Ok(Decoded::Events { count: 1, .. }), kind) if out[0].kind.name() == kind => {
                let have = fields(&out[0]);
                for (key, want) in &row.fields {
                    let ok = match key.strip_suffix('^') {
                        Some(k) => have.get(k).is_some_and(|v| v.starts_with(want.as_str())),
                        None => have.get(key.as_str()) == Some(want),
                    };
                    if !ok {
                        failures.push(format!("{at}: {key}={want:?}, decoded {have:?}"));
                    }
                }
            }
            (Ok(Decoded::Ignored { why, .. }), o)
                if o.strip_prefix("ignored:")
                    .is_some_and(|w| w == "*" || w == *why) => {}
            (Err(e), o)
                if o.strip_prefix("dead:")
                    .is_some_and(|r| r == "*" || r == e.reason.as_str()) => {}
            _ => failures.push(format!("{at}: expected {}, got {got:?}", row.outcome)),
        }
    }
    eprintln!(
        "{} real records checked, {} as expected",
        rows.len(),
        rows.len() - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
