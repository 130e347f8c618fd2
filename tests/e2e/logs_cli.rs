//! The log commands as a user runs them: `replay` indexes log lines and raises a log
//! drift alert, `search` finds lines in the index it wrote, `templates` and
//! `anomaly-scores` speak their documented formats.

use crate::common::{driftwatch, replay, run_with_input};

/// A Fluent Bit record of `service` (namespace/deployment) at `secs`.
fn record(secs: f64, namespace: &str, app: &str, stream: &str, line: &str) -> String {
    serde_json::json!({
        "@timestamp": secs,
        "log": line,
        "stream": stream,
        "kubernetes": {
            "namespace_name": namespace,
            "pod_name": format!("{app}-7c9d8f6b4d-k2m9z"),
            "container_name": app,
            "labels": { "app": app, "pod-template-hash": "7c9d8f6b4d" }
        }
    })
    .to_string()
}

/// Two hours of logs ending now: the API learns its request lines for the first hour,
/// then starts failing to reach the database.
fn logs() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = now - 7200.0;
    let mut lines = Vec::new();
    for i in 0..1200 {
        let t = start + i as f64 * 6.0;
        lines.push(record(
            t,
            "shop",
            "api",
            "stdout",
            &format!("GET /api/cart/{i} status=200 duration_ms={}", i % 40),
        ));
        if i % 10 == 0 {
            lines.push(record(
                t + 1.0,
                "shop",
                "db",
                "stdout",
                &format!("checkpoint complete: wrote {} buffers", i % 97),
            ));
        }
        if i >= 1100 && i % 5 == 0 {
            lines.push(record(
                t + 2.0,
                "shop",
                "api",
                "stderr",
                &format!(
                    "upstream connect error: connection refused to 10.0.3.{}:5432",
                    i % 9
                ),
            ));
        }
        if i % 300 == 7 {
            // Old news: the same words on another service, long ago.
            lines.push(record(
                t + 3.0,
                "shop",
                "db",
                "stderr",
                "replica connection refused by primary",
            ));
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn replay_indexes_log_lines_that_search_finds_and_raises_a_template_alert() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index");
    let config = dir.path().join("driftwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nlevel = \"warn\"\n[search]\nindex-dir = {:?}\n[detect]\nlearning-period = \"1h\"\n",
            index.display().to_string()
        ),
    )
    .unwrap();
    let dead = dir.path().join("dead.jsonl");
    let alerts = replay(
        [
            std::ffi::OsStr::new("--config"),
            config.as_os_str(),
            std::ffi::OsStr::new("--dead-letter"),
            dead.as_os_str(),
            std::ffi::OsStr::new("-"),
        ],
        Some(&logs()),
    )
    .lines;
    let template: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| a["kind"] == "log_template" && a["service"] == "shop/api")
        .collect();
    assert_eq!(template.len(), 1, "{alerts:#?}");
    let alert = template[0];
    assert_eq!(
        alert["subject"]
            .as_str()
            .unwrap()
            .split_once(' ')
            .unwrap()
            .1,
        "upstream connect error: connection refused to <*>"
    );
    assert_eq!(
        alert["severity"], "medium",
        "`refused` weighs a template up"
    );
    let explanation = alert["explanation"].as_str().unwrap();
    for part in [
        "New log template `upstream connect error: connection refused to <*>` for shop/api",
        "Example: `upstream connect error: connection refused to 10.0.3.",
        "`GET <*> status=<*> duration_ms=<*>` 100.0%",
    ] {
        assert!(explanation.contains(part), "{part:?} not in {explanation}");
    }
    assert_eq!(
        alert["count"], 20,
        "every later line counts into the one alert"
    );

    let search = |args: &[&str]| {
        let out = driftwatch()
            .arg("search")
            .args(args)
            .arg("--index")
            .arg(&index)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let recent_api = search(&[
        "\"connection refused\"",
        "--service",
        "shop/api",
        "--since",
        "1h",
    ]);
    let hits: Vec<&str> = recent_api.lines().collect();
    assert_eq!(hits.len(), 20, "{recent_api}");
    assert!(
        hits.iter().all(|h| h.contains(" shop/api stderr #")
            && h.contains("upstream connect error: connection refused to 10.0.3.")),
        "{recent_api}"
    );
    // Newest first.
    let times: Vec<&str> = hits.iter().map(|h| h.split(' ').next().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted);
    // The phrase on every service and at any time also finds the database's lines.
    let everywhere = search(&["\"connection refused\"", "--json"]);
    let services: std::collections::BTreeMap<String, usize> = everywhere
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["service"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .fold(Default::default(), |mut m, s| {
            *m.entry(s).or_default() += 1;
            m
        });
    assert_eq!(
        services,
        [("shop/api".to_owned(), 20), ("shop/db".to_owned(), 4)].into()
    );
    // Words that are not there find nothing.
    assert_eq!(search(&["segfault"]), "");
}

#[test]
fn search_says_clearly_when_there_is_no_index() {
    let dir = tempfile::tempdir().unwrap();
    let out = driftwatch()
        .args(["search", "x", "--index"])
        .arg(dir.path().join("nothing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no log index in"), "{stderr}");
}

#[test]
fn templates_writes_one_line_per_input_line() {
    let input = "PacketResponder 1 for block blk_1 terminating\n\
                 Received block blk_2 of size 67108864 from /10.0.0.1\n\
                 PacketResponder 2 for block blk_3 terminating\n";
    let out = run_with_input(driftwatch().args(["templates", "-"]), input);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "0\tPacketResponder <*> for block <*> terminating\n\
         1\tReceived block <*> of size <*> from <*>\n\
         0\tPacketResponder <*> for block <*> terminating\n"
    );
}

#[test]
fn anomaly_scores_adds_a_score_in_0_1_to_every_row() {
    let mut csv = String::from("timestamp,value\n");
    for i in 0..600 {
        let value = if i == 500 {
            900.0
        } else {
            100.0 + (i % 7) as f64
        };
        csv += &format!(
            "2015-01-{:02} {:02}:{:02}:00,{value}\n",
            1 + i / 288,
            (i / 12) % 24,
            (i % 12) * 5
        );
    }
    let out = run_with_input(driftwatch().args(["anomaly-scores", "-"]), &csv);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "timestamp,value,anomaly_score");
    assert_eq!(rows.len(), 601);
    let scores: Vec<f64> = rows[1..]
        .iter()
        .map(|r| r.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    let top = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap();
    assert_eq!(top.0, 500, "the spike scores highest");
    assert!(*top.1 > 0.9, "{}", top.1);
    // A malformed row is an error naming the line.
    let out = run_with_input(
        driftwatch().args(["anomaly-scores", "-"]),
        "timestamp,value\n2015-01-01 00:00:00,1\nnonsense\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3"));
}
