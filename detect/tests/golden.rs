//! Golden detection cases: each `golden/<case>.input.jsonl` (events, any input format)
//! runs through a detector with short test windows, and the alerts it ends with are
//! compared with `golden/<case>.expected.jsonl`. `DRIFTWATCH_BLESS=1` rewrites the
//! expected files after a deliberate change; review the diff before committing it.

use std::path::Path;
use std::time::Duration;

use detect::{DetectConfig, Detector};
use ingest::{DecodeLimits, Decoder, Format, Provenance, ServiceKeyer};
use serde_json::json;

/// Ten minutes of learning and three events, so a case stays a few lines long.
fn test_config() -> DetectConfig {
    DetectConfig {
        learning_period: Duration::from_secs(600),
        min_learning_events: 3,
        image_grace: Duration::from_secs(600),
        dedup_window: Duration::from_secs(3600),
        correlation_window: Duration::from_secs(300),
        // A short window, measured every few lines, so a mix shift fits in a case.
        logs: detect::logs::LogConfig {
            mix_window: 40,
            mix_min_lines: 20,
            ..detect::logs::LogConfig::default()
        },
        ..DetectConfig::default()
    }
}

/// Decodes line `i` (0-based) of a case file and feeds its events to the detector.
fn feed(
    decoder: &mut Decoder,
    detector: &mut Detector,
    name: &str,
    i: usize,
    line: &str,
    raised: &mut Vec<detect::Alert>,
) {
    let mut events = Vec::new();
    decoder
        .decode(
            Format::Auto,
            line.as_bytes(),
            &Provenance::file(name, i as i64 + 1),
            &mut events,
        )
        .unwrap();
    for e in &events {
        detector.observe(e, raised);
    }
}

pub fn run_case(input: &Path) -> (Detector, usize) {
    let mut decoder = Decoder::new(DecodeLimits::default(), ServiceKeyer::default());
    let mut detector = Detector::new(test_config());
    let name = input.file_name().unwrap().to_string_lossy().into_owned();
    let mut raised = Vec::new();
    for (i, line) in std::fs::read_to_string(input).unwrap().lines().enumerate() {
        feed(&mut decoder, &mut detector, &name, i, line, &mut raised);
    }
    let n = raised.len();
    (detector, n)
}

fn render(detector: &Detector) -> String {
    let mut out = String::new();
    for a in detector.alerts() {
        let line = json!({
            "time": a.time, "service": a.service, "kind": a.kind, "severity": a.severity, "subject": a.subject,
            "count": a.count, "mitre": a.mitre.as_ref().map(|t| &t.id), "sensor_rules": a.sensor_rules,
            "evidence": a.evidence.iter().map(|p| p.offset).collect::<Vec<_>>(), "explanation": a.explanation,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

fn check(case: &str) {
    let dir =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("tests/golden");
    let (detector, _) = run_case(&dir.join(format!("{case}.input.jsonl")));
    let actual = render(&detector);
    let expected_path = dir.join(format!("{case}.expected.jsonl"));
    if std::env::var_os("DRIFTWATCH_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap();
    for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
        assert_eq!(a, e, "{case}: alert {} differs", i + 1);
    }
    assert_eq!(
        actual.lines().count(),
        expected.lines().count(),
        "{case}: alert counts differ"
    );
}

#[test]
fn new_processes_shells_package_managers_and_argument_patterns() {
    check("process");
}

#[test]
fn file_changes_fold_into_patterns_and_dropped_binaries_are_critical() {
    check("file");
}

#[test]
fn sensitive_reads_alert_even_while_learning() {
    check("sensitive");
}

#[test]
fn new_network_destinations() {
    check("network");
}

#[test]
fn temp_names_and_rotating_addresses_are_learned_as_shapes_and_networks() {
    check("churn");
}

#[test]
fn a_dimension_still_growing_after_learning_reports_at_low_but_a_shell_pages() {
    check("growing");
}

#[test]
fn exec_into_by_an_unusual_actor() {
    check("exec");
}

#[test]
fn a_new_image_opens_a_grace_period_instead_of_wiping_the_baseline() {
    check("grace");
}

#[test]
fn falco_alerts_join_the_drift_alert_about_the_same_act() {
    check("correlation");
}

#[test]
fn a_new_log_template_after_learning_weighed_by_what_it_says() {
    check("log_template");
}

#[test]
fn a_shift_in_the_log_template_mix() {
    check("log_mix");
}

/// A detector restored from a snapshot taken mid-stream ends with exactly the alerts of
/// an uninterrupted run: nothing lost, nothing raised twice.
#[test]
fn a_restart_from_a_snapshot_mid_stream_changes_nothing() {
    let dir =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("tests/golden");
    for case in [
        "process",
        "file",
        "sensitive",
        "network",
        "exec",
        "grace",
        "correlation",
        "log_template",
    ] {
        let input = dir.join(format!("{case}.input.jsonl"));
        let (whole, _) = run_case(&input);
        let lines: Vec<String> = std::fs::read_to_string(&input)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        for cut in 1..lines.len() {
            let mut decoder = Decoder::new(DecodeLimits::default(), ServiceKeyer::default());
            let mut detector = Detector::new(test_config());
            let mut raised = Vec::new();
            let name = input.file_name().unwrap().to_string_lossy().into_owned();
            for (i, line) in lines.iter().enumerate() {
                if i == cut {
                    // Through JSON and back, as the state file does.
                    let text = serde_json::to_string(&detector.snapshot()).unwrap();
                    detector =
                        Detector::restore(test_config(), serde_json::from_str(&text).unwrap())
                            .unwrap();
                }
                feed(&mut decoder, &mut detector, &name, i, line, &mut raised);
            }
            assert_eq!(
                render(&detector),
                render(&whole),
                "{case}: restart before line {}",
                cut + 1
            );
            let mut ids: Vec<&String> = raised.iter().map(|a| &a.id).collect();
            ids.dedup();
            assert_eq!(ids.len(), raised.len(), "{case}: an alert was raised twice");
        }
    }
}

/// The detector's tables hold a row per alert and per baseline entry, as the SQL
/// surfaces will read them.
#[test]
fn alerts_and_baselines_are_tables() {
    use arrow::array::{Array, AsArray};
    let dir =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("tests/golden");
    let (detector, _) = run_case(&dir.join("process.input.jsonl"));
    let alerts = detector.alerts_table();
    assert_eq!(alerts.num_rows(), detector.alerts().len());
    let subjects = alerts.column_by_name("subject").unwrap().as_string::<i32>();
    assert_eq!(
        subjects.value(0),
        "/bin/sh (parent /usr/local/bin/python3.12)"
    );
    let severity = alerts
        .column_by_name("severity")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(severity.value(0), "critical");
    let (logs, _) = run_case(&dir.join("log_template.input.jsonl"));
    let templates = logs.log_templates_table();
    let text = templates
        .column_by_name("template")
        .unwrap()
        .as_string::<i32>();
    let texts: Vec<&str> = (0..text.len()).map(|i| text.value(i)).collect();
    assert_eq!(
        texts,
        [
            "GET <*> <*> in <*>",
            "cache refreshed: <*> keys in <*>",
            "ERROR upstream <*> connection refused after <*> retries",
            "worker <*> terminated: segfault at <*> ip <*>",
        ]
    );
    let learned = templates.column_by_name("learned").unwrap().as_boolean();
    assert_eq!(
        (0..learned.len())
            .map(|i| learned.value(i))
            .collect::<Vec<_>>(),
        [true, true, false, false]
    );
    let baselines = detector.baselines_table();
    let entries: usize = detector.services().map(|(_, s)| s.baseline.len()).sum();
    assert_eq!(baselines.num_rows(), entries);
    assert!(baselines.column_by_name("origin").unwrap().null_count() == 0);
}
