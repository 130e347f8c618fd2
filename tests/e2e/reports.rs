//! Compliance reports as users get them: scheduled by cron on event time during a
//! replay (with the trend, the index, an empty report and webhook delivery to a loopback
//! receiver that fails once), validated against the documented JSON schema, and the
//! HTML page opened in headless Chromium.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use serde_json::Value;

use crate::common::{driftwatch, fixtures, require_program, serve};

fn schema() -> PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("compliance/schema/report.schema.json")
}

/// Validates report files against the schema with Python's `jsonschema`.
fn validate(files: &[PathBuf]) {
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
for path in sys.argv[2:]:
    errors = sorted(validator.iter_errors(json.load(open(path))), key=str)
    for e in errors:
        print(f"{path}: {list(e.path)}: {e.message}")
    if errors:
        sys.exit(1)
"#;
    let out = Command::new(require_program("python3"))
        .arg("-c")
        .arg(script)
        .arg(schema())
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three hours of one service's processes at one every two seconds, and ten seconds
/// more (schedules follow the robust clock, which trails the newest event by three
/// events); attacks (a package manager, a shell) start at 11:30.
fn write_events(path: &Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let start = chrono::DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z").unwrap();
    for i in 0..=5405i64 {
        let t = start + chrono::Duration::seconds(2 * i);
        let exe = match i {
            i if i >= 2700 && i % 300 == 0 => "/usr/bin/apt-get",
            i if i >= 2700 && i % 300 == 150 => "/bin/sh",
            _ => "/usr/local/bin/python3.12",
        };
        writeln!(
            f,
            r#"{{"time":"{}","service":"shop/api","kind":"process_exec","workload":{{"namespace":"shop","pod":"api-1","container_id":"0b8e4f1d2c3a"}},"process":{{"exe":"{exe}","parent_exe":"/usr/local/bin/gunicorn","args":["job"]}}}}"#,
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
        .unwrap();
    }
}

/// A webhook receiver on loopback that answers 500 to its first request and 200 after.
async fn receiver() -> (String, Arc<Mutex<Vec<(u16, Value)>>>) {
    let seen: Arc<Mutex<Vec<(u16, Value)>>> = Arc::default();
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let mut seen = state.lock().unwrap();
                let status = if seen.is_empty() { 500 } else { 200 };
                seen.push((status, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let addr = serve(app).await;
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_reports_fire_on_event_time_with_trend_index_and_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    write_events(&events);
    let (hook, seen) = receiver().await;
    let reports = dir.path().join("reports");
    let config = dir.path().join("driftwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[detect]
learning-period = "10m"
min-learning-events = 3
[search]
enabled = false
[reports]
dir = "{}"
link-base = "http://127.0.0.1:8484"
[[reports.schedule]]
name = "hourly-pci"
cron = "0 * * * *"
frameworks = ["pci-dss"]
period = "1h"
webhook = "{hook}"
[[reports.schedule]]
name = "nobody"
cron = "0 12 * * *"
services = ["staging/*"]
period = "1h"
formats = ["json", "html"]
"#,
            reports.display()
        ),
    )
    .unwrap();
    let replay = {
        let (config, events, out) = (config.clone(), events.clone(), dir.path().join("out.jsonl"));
        tokio::task::spawn_blocking(move || {
            driftwatch()
                .args(["replay", "--no-progress", "-c"])
                .arg(&config)
                .arg("-o")
                .arg(&out)
                .arg(&events)
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let stderr = String::from_utf8_lossy(&replay.stderr);
    assert!(replay.status.success(), "{stderr}");

    // The hourly schedule fired at 11:00, 12:00 and 13:00 of event time, each over the
    // hour before; the daily one at 12:00.
    let index: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(reports.join("index.json")).unwrap())
            .unwrap();
    let mut hourly: Vec<&Value> = index.iter().filter(|e| e["name"] == "hourly-pci").collect();
    hourly.sort_by_key(|e| e["generated_at"].as_str().unwrap().to_owned());
    let times: Vec<&str> = hourly
        .iter()
        .map(|e| e["generated_at"].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            "2026-03-02T11:00:00.000000000Z",
            "2026-03-02T12:00:00.000000000Z",
            "2026-03-02T13:00:00.000000000Z"
        ],
        "{index:#?}\n{stderr}"
    );
    let load = |entry: &Value, format: &str| -> PathBuf {
        let path = reports.join(entry["files"][format].as_str().unwrap());
        assert!(path.exists(), "{}", path.display());
        path
    };
    let json_files: Vec<PathBuf> = index.iter().map(|e| load(e, "json")).collect();
    validate(&json_files);
    for e in &hourly {
        load(e, "csv");
        load(e, "html");
    }
    let report = |e: &Value| -> Value {
        serde_json::from_str(&std::fs::read_to_string(load(e, "json")).unwrap()).unwrap()
    };
    let first = report(hourly[0]);
    assert_eq!(first["period"]["start"], "2026-03-02T10:00:00.000000000Z");
    assert_eq!(first["period"]["end"], "2026-03-02T11:00:00.000000000Z");
    assert_eq!(first["frameworks"], serde_json::json!(["pci-dss"]));
    assert!(
        first["trend"].is_null(),
        "the first report has nothing to compare with"
    );
    assert_eq!(first["summary"]["fail"], 0, "no attack before 11:30");
    // The attacks at 11:30 and after fail controls; the next report says what changed.
    let second = report(hourly[1]);
    assert!(
        second["summary"]["fail"].as_u64().unwrap() >= 1,
        "{second:#}"
    );
    let trend = &second["trend"];
    assert_eq!(
        trend["previous_generated_at"],
        "2026-03-02T11:00:00.000000000Z"
    );
    assert!(trend["fail_change"].as_i64().unwrap() >= 1);
    let newly: Vec<&str> = trend["newly_failing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(newly.contains(&"DW-RT-001@shop/api"), "{newly:?}");
    // A failing control names when it began failing, its evidence and the drift alert.
    let failing = second["controls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "DW-RT-001")
        .unwrap();
    let row = &failing["services"][0];
    assert_eq!(row["status"], "fail");
    assert!(row["first_failed"].as_str().unwrap() >= "2026-03-02T11:30:00");
    let evidence = &row["evidence"][0];
    assert!(
        evidence["records"][0]
            .as_str()
            .unwrap()
            .contains("events.jsonl")
    );
    assert!(
        evidence["link"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:8484/api/v1/findings?control=DW-RT-001")
    );
    // CSV: a header and a row per control and service.
    let csv = std::fs::read_to_string(load(hourly[1], "csv")).unwrap();
    assert!(csv.starts_with("control,title,severity,references,service,status,"));
    assert!(
        csv.lines()
            .any(|l| l.starts_with("DW-RT-001,") && l.contains(",fail,"))
    );

    // A period with nothing for its services still makes a report, which says so.
    let nobody = index.iter().find(|e| e["name"] == "nobody").unwrap();
    assert_eq!(nobody["generated_at"], "2026-03-02T12:00:00.000000000Z");
    assert_eq!(report(nobody)["empty"], true);
    let html = std::fs::read_to_string(load(nobody, "html")).unwrap();
    assert!(html.contains("there is nothing to report"));
    assert!(nobody["files"].get("csv").is_none());

    // Every hourly report reached the webhook; the first attempt got a 500 and was
    // retried, and nothing was delivered twice.
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, 500);
    let delivered: Vec<&str> = seen
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body["generated_at"].as_str().unwrap())
        .collect();
    let mut sorted = delivered.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, times, "{seen:?}");
    assert!(
        seen.iter()
            .all(|(_, b)| b["schema"] == "driftwatch/compliance-report/v1")
    );
}

/// Decodes an 8-bit RGB or RGBA PNG (no interlacing), as Chromium writes screenshots,
/// and counts the pixels of each of `colors`.
fn count_colors(png: &Path, colors: &[[u8; 3]]) -> Vec<usize> {
    let script = r#"
import sys, zlib, struct
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n"
pos, idat, width = 8, b"", 0
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
        bpp = 3 if ctype == 2 else 4
    elif kind == b"IDAT":
        idat += body
    pos += 12 + length
raw = zlib.decompress(idat)
stride = width * bpp
prev = bytearray(stride)
wanted = [bytes.fromhex(c) for c in sys.argv[2:]]
counts = [0] * len(wanted)
for y in range(height):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(width):
        px = bytes(line[x * bpp:x * bpp + 3])
        for k, w in enumerate(wanted):
            if px == w:
                counts[k] += 1
    prev = line
print(" ".join(map(str, counts)))
"#;
    let out = Command::new(require_program("python3"))
        .arg("-c")
        .arg(script)
        .arg(png)
        .args(
            colors
                .iter()
                .map(|c| format!("{:02x}{:02x}{:02x}", c[0], c[1], c[2])),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn the_html_report_opens_in_headless_chromium_with_its_charts_and_no_console_error() {
    let chromium = require_program("chromium");
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let json = dir.path().join("report.json");
    for report in [&html, &json] {
        let out = driftwatch()
            .args(["replay", "--no-progress", "-o"])
            .arg(dir.path().join("out.jsonl"))
            .arg("--dead-letter")
            .arg(dir.path().join("dead.jsonl"))
            .arg("--report")
            .arg(report)
            .arg(fixtures().join("drift.jsonl"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    validate(std::slice::from_ref(&json));
    let page = std::fs::read_to_string(&html).unwrap();
    for external in ["src=\"http", "href=\"http", "<script", "@import", "url("] {
        assert!(!page.contains(external), "the page refers to {external}");
    }
    let chrome = |extra: &[&str]| {
        let profile = dir.path().join("profile");
        Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1280,1400",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(format!("file://{}", html.display()))
            .output()
            .unwrap()
    };
    let shot = dir.path().join("report.png");
    let out = chrome(&[&format!("--screenshot={}", shot.display())]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    // The page's console: errors, refused loads (its policy allows nothing external).
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    // The charts are in the rendered page: the fixture's shell fails a control, other
    // controls pass, so the framework chart draws both colours.
    let dom = chrome(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("id=\"framework-chart\""), "{dom}");
    assert!(dom.matches("class=\"bar\"").count() >= 5);
    let [pass, fail] = count_colors(&shot, &[[0x2e, 0x85, 0x40], [0xc0, 0x39, 0x2b]])[..] else {
        panic!("two counts");
    };
    assert!(pass > 2000, "green (pass) pixels in the screenshot: {pass}");
    assert!(fail > 200, "red (fail) pixels in the screenshot: {fail}");
}

/// One record dated two days ahead must not fire two days of scheduled reports: the
/// schedules follow the detector's robust clock, not the newest time anyone claims.
#[test]
fn a_future_dated_record_fires_no_scheduled_report() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let line = |t: &str, exe: &str| {
        format!(
            r#"{{"time":"{t}","service":"shop/api","kind":"process_exec","workload":{{"namespace":"shop","pod":"api-1"}},"process":{{"exe":"{exe}"}}}}"#
        )
    };
    let mut text = String::new();
    for m in 0..40 {
        text += &line(&format!("2026-03-02T10:{m:02}:00Z"), "/app/server");
        text.push('\n');
        if m == 20 {
            text += &line("2026-03-04T10:00:00Z", "/app/server");
            text.push('\n');
        }
    }
    std::fs::write(&events, text).unwrap();
    let reports = dir.path().join("reports");
    let config = dir.path().join("driftwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[search]\nenabled = false\n[reports]\ndir = {reports:?}\n\
             [[reports.schedule]]\nname = \"hourly\"\ncron = \"0 * * * *\"\nformats = [\"json\"]\n"
        ),
    )
    .unwrap();
    let out = driftwatch()
        .args(["replay", "--no-progress", "-c"])
        .arg(&config)
        .arg("-o")
        .arg(dir.path().join("out.jsonl"))
        .arg(&events)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index = compliance::folder::read_index(&reports);
    assert!(index.is_empty(), "{} reports: {index:?}", index.len());
}
