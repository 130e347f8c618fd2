//! Golden decoder tests: each `golden/<format>.input.jsonl` is decoded line by line and
//! the result compared with `golden/<format>.expected.jsonl` beside it. A line's result
//! is the native JSON of each event it produced, or `{"line":N,"ignored":why}`, or
//! `{"line":N,"dead_letter":reason}`. The file name says the format; `bad` is read with
//! format detection.
//!
//! After a deliberate change of behaviour, `DRIFTWATCH_BLESS=1 cargo test -p ingest
//! --test golden` rewrites the expected files; review the diff before committing it.

use std::path::{Path, PathBuf};

use ingest::{DecodeLimits, Decoded, Decoder, Event, Format, Provenance, ServiceKeyer};
use serde_json::json;

fn golden_dir() -> PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("tests/golden")
}

fn run(input: &Path, format: Format) -> String {
    let bytes = std::fs::read(input).unwrap();
    let mut decoder = Decoder::new(DecodeLimits::default(), ServiceKeyer::default());
    let name = input.file_name().unwrap().to_string_lossy().into_owned();
    let mut out = String::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if i + 1 == bytes.split(|b| *b == b'\n').count() && line.is_empty() {
            break;
        }
        let n = i as i64 + 1;
        let mut events: Vec<Event> = Vec::new();
        let result = decoder.decode(format, line, &Provenance::file(&name, n), &mut events);
        let rendered = match result {
            Ok(Decoded::Events { .. }) => events
                .iter()
                .map(|e| serde_json::to_string(e).unwrap())
                .collect::<Vec<_>>()
                .join("\n"),
            Ok(Decoded::Ignored { why, .. }) => json!({ "line": n, "ignored": why }).to_string(),
            Err(e) => json!({ "line": n, "dead_letter": e.reason }).to_string(),
        };
        out.push_str(&rendered);
        out.push('\n');
    }
    out
}

fn check(stem: &str, format: Format) {
    let dir = golden_dir();
    let actual = run(&dir.join(format!("{stem}.input.jsonl")), format);
    let expected_path = dir.join(format!("{stem}.expected.jsonl"));
    if std::env::var_os("DRIFTWATCH_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (bless with DRIFTWATCH_BLESS=1)",
            expected_path.display()
        )
    });
    for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
        assert_eq!(a, e, "{stem}: output line {} differs", i + 1);
    }
    assert_eq!(
        actual.lines().count(),
        expected.lines().count(),
        "{stem}: line counts differ"
    );
}

#[test]
fn falco_alerts_decode_to_sensor_alerts() {
    check("falco", Format::Falco);
}

#[test]
fn tetragon_events_decode_by_event_and_hook() {
    check("tetragon", Format::Tetragon);
}

#[test]
fn k8s_audit_exec_and_attach_are_found_by_subresource() {
    check("k8s-audit", Format::K8sAudit);
}

#[test]
fn docker_events_decode_lifecycle_and_exec() {
    check("docker", Format::Docker);
}

#[test]
fn fluent_bit_records_decode_to_log_lines() {
    check("fluent-bit", Format::FluentBit);
}

#[test]
fn native_events_decode_as_documented() {
    check("native", Format::Native);
}

#[test]
fn bad_records_are_dead_lettered_with_their_reason() {
    check("bad", Format::Auto);
}

/// Every golden input, read with format detection instead of its declared format,
/// decodes the same way: detection picks the right decoder for each real format.
#[test]
fn detection_agrees_with_the_declared_format() {
    let dir = golden_dir();
    for (stem, format) in [
        ("falco", Format::Falco),
        ("tetragon", Format::Tetragon),
        ("k8s-audit", Format::K8sAudit),
        ("docker", Format::Docker),
        ("fluent-bit", Format::FluentBit),
        ("native", Format::Native),
    ] {
        let input = dir.join(format!("{stem}.input.jsonl"));
        assert_eq!(run(&input, Format::Auto), run(&input, format), "{stem}");
    }
}

/// The native form is the serde form of `Event`: every decoded event, written as native
/// JSON and read back, is the same event.
#[test]
fn decoded_events_round_trip_through_the_native_form() {
    let dir = golden_dir();
    let mut decoder = Decoder::new(DecodeLimits::default(), ServiceKeyer::default());
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".expected.jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            if value.get("kind").is_none() {
                continue;
            }
            let original: Event = serde_json::from_value(value).unwrap();
            let mut back = Vec::new();
            decoder
                .decode(
                    Format::Native,
                    line.as_bytes(),
                    &original.provenance,
                    &mut back,
                )
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(back, vec![original]);
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} events checked");
}
