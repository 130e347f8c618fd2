//! `driftwatch replay` and `check-config` as a user runs them.

use crate::common::{driftwatch, fixtures, replay, run_with_input};

#[test]
fn replay_reads_mixed_files_and_reports_counts_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let out = driftwatch()
        .args(["replay", "--no-progress", "--dead-letter"])
        .arg(&dead)
        .arg(fixtures().join("mixed.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replayed 9 records from 1 file(s): 6 events, 1 ignored, 2 dead-lettered"),
        "{stderr}"
    );
    for line in [
        "events from falco: 1",
        "events from tetragon: 2",
        "events from log: 1",
        "events from k8s_audit: 1",
        "events from docker: 1",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in {stderr}");
    }
    // Plain ingest raises no alert; the only output lines are the findings of the
    // controls its events fired. One fails: the audited `kubectl exec` opens a shell.
    let output = String::from_utf8_lossy(&out.stdout);
    let mut failing = Vec::new();
    for line in output.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["type"], "finding", "{line}");
        if v["status"] == "fail" {
            failing.push(format!(
                "{} {}",
                v["control"].as_str().unwrap(),
                v["service"].as_str().unwrap()
            ));
        }
    }
    assert_eq!(failing, ["DW-EXEC-002 shop/api"]);
    assert!(stderr.contains("alerts: 0"), "{stderr}");

    let letters: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["reason"], "not_json");
    assert_eq!(letters[0]["provenance"]["offset"], 4);
    assert!(
        letters[0]["provenance"]["origin"]
            .as_str()
            .unwrap()
            .ends_with("mixed.jsonl")
    );
    assert_eq!(letters[1]["reason"], "truncated");
    assert_eq!(letters[1]["payload_encoding"], "utf8");
}

#[test]
fn replay_reads_standard_input_with_a_declared_format() {
    let dir = tempfile::tempdir().unwrap();
    let input = concat!(
        r#"{"time":"2026-03-02T10:15:00Z","kind":"log","service":"a/b","message":"hello"}"#,
        "\n",
        r#"{"time":1772446501000000000,"kind":"log","message":"no service"}"#,
        "\n",
    );
    let out = run_with_input(
        driftwatch()
            .current_dir(dir.path())
            .args(["replay", "--format", "native", "-"]),
        input,
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replayed 2 records from 1 file(s): 2 events, 0 ignored, 0 dead-lettered"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("dead-letter.jsonl").exists(),
        "a clean replay leaves no dead-letter file"
    );
}

#[test]
fn a_missing_input_file_is_a_clear_error() {
    let out = driftwatch()
        .args(["replay", "/nonexistent/events.jsonl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reading /nonexistent/events.jsonl failed"),
        "{stderr}"
    );
}

#[test]
fn check_config_accepts_the_example_and_names_the_line_of_a_mistake() {
    let example =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("driftwatch.example.toml");
    let out = driftwatch()
        .arg("check-config")
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("topic tetragon as tetragon"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[kafka]\nbrokers = \"b:9092\"\n[[kafka.topics]]\nname = \"t\"\nformat = \"syslog\"\n",
    )
    .unwrap();
    let out = driftwatch().arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("line 5") && stderr.contains("syslog"),
        "{stderr}"
    );
}

#[test]
fn templates_names_each_line_template_in_its_final_form() {
    let input = "PacketResponder 1 for block blk_38865049064139660 terminating\n\
                 Verification succeeded for blk_1\n\
                 PacketResponder 0 for block blk_-6952295868487656571 terminating\n";
    let out = run_with_input(driftwatch().args(["templates", "-"]), input);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "0\tPacketResponder <*> for block <*> terminating\n1\tVerification succeeded for <*>\n0\tPacketResponder <*> for block <*> terminating\n"
    );
}

#[test]
fn a_replayed_falco_drop_record_raises_the_sensor_health_alert() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("falco.jsonl");
    // Falcosidekick's shape: counters as strings, the rule Falco gives its drop alert.
    std::fs::write(
        &input,
        concat!(
            r#"{"hostname":"node-a","output":"Falco internal: syscall event drop. 1204 system calls dropped in last second.","#,
            r#""output_fields":{"ebpf_enabled":"1","n_drops":"1204","n_evts":"90210"},"priority":"Debug","#,
            r#""rule":"Falco internal: syscall event drop","time":"2026-03-02T10:00:00.000000000Z"}"#,
            "\n"
        ),
    )
    .unwrap();
    let dead = dir.path().join("dead.jsonl");
    let replayed = replay(
        [
            std::ffi::OsStr::new("--format"),
            std::ffi::OsStr::new("falco"),
            std::ffi::OsStr::new("--dead-letter"),
            dead.as_os_str(),
            input.as_os_str(),
        ],
        None,
    );
    let alerts = replayed.of_type("alert");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["kind"], "sensor_health");
    assert_eq!(alerts[0]["severity"], "high");
    assert_eq!(alerts[0]["subject"], "falco on node-a loses events");
    assert!(
        alerts[0]["explanation"]
            .as_str()
            .unwrap()
            .starts_with("node-a's Falco dropped 1,204 syscall events in the last second"),
        "{}",
        alerts[0]["explanation"]
    );
}
