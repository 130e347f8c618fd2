//! `driftwatch run` with a data directory, killed with SIGKILL and started again: the
//! learned baseline and the raised alerts come back, and an alert is never raised twice.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::common::{cluster, driftwatch, eventually, produce};

fn exec(minute: u32, exe: &str) -> String {
    json!({
        "time": format!("2026-03-02T10:{minute:02}:00Z"), "service": "shop/api", "kind": "process_exec",
        "process": { "exe": exe, "parent_exe": "/usr/local/bin/gunicorn" },
    })
    .to_string()
}

/// Starts `run`, collecting its (JSON) log lines.
fn start(config: &Path) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut child = driftwatch()
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (child, lines)
}

fn alerts_about(lines: &Mutex<Vec<String>>, subject: &str) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("Drift alert.") && l.contains(subject))
        .count()
}

fn state(dir: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(dir.join("state.json")).ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_restores_its_baselines_and_never_raises_an_alert_twice() {
    let (_cluster, brokers) = cluster("native", 1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("driftwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nformat = \"json\"\n[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"restart\"\n\
             [[kafka.topics]]\nname = \"native\"\nformat = \"native\"\n\
             [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n[http]\nlisten = \"127.0.0.1:0\"\n[postgres]\nlisten = \"127.0.0.1:0\"\n\
             [detect]\nlearning-period = \"10m\"\nmin-learning-events = 3\n\
             [state]\ndata-dir = \"{}\"\nsnapshot-interval = \"200ms\"\n",
            data.display()
        ),
    )
    .unwrap();

    let mut first: Vec<String> = (0..=10)
        .map(|m| exec(m, "/usr/local/bin/python3.12"))
        .collect();
    first.push(exec(13, "/bin/sh"));
    produce(&brokers, "native", &first);
    let (mut daemon, logs) = start(&config);
    eventually(
        Duration::from_secs(60),
        "the shell alert in a state file",
        || {
            state(&data).is_some_and(|s| {
                s["detector"]["alerts"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            }) && state(&data).is_some_and(|s| s["offsets"]["native"]["0"] == 12)
        },
    )
    .await;
    assert_eq!(alerts_about(&logs, "/bin/sh"), 1);
    daemon.kill().unwrap(); // SIGKILL: no drain, no final state file
    daemon.wait().unwrap();

    produce(
        &brokers,
        "native",
        [exec(14, "/bin/sh"), exec(15, "/usr/bin/wget")],
    );
    let (mut daemon, logs) = start(&config);
    // The killed member never left the group: the broker waits out its session first.
    let waited = std::time::Instant::now();
    while alerts_about(&logs, "/usr/bin/wget") == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "no wget alert; logs:\n{}",
            logs.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("State restored."))
    );
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(daemon.wait().unwrap().success());
    assert_eq!(
        alerts_about(&logs, "/bin/sh"),
        0,
        "the restored shell alert was raised again"
    );

    let s = state(&data).unwrap();
    let alerts = s["detector"]["alerts"].as_array().unwrap();
    let shell = alerts
        .iter()
        .find(|a| a["subject"].as_str().unwrap().starts_with("/bin/sh"))
        .unwrap();
    assert_eq!(
        shell["count"], 2,
        "the repeat counted into the restored alert"
    );
    assert_eq!(alerts.len(), 2);
    let api = &s["detector"]["services"][0];
    assert_eq!(api["phase"], "monitoring", "the baseline survived the kill");
    assert_eq!(s["offsets"]["native"]["0"], 14);

    // The learned baseline as a file, reviewable and comparable.
    let export = |extra: &[&str]| {
        let out = driftwatch()
            .args(["baseline", "export", "--data-dir"])
            .arg(&data)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let before = dir.path().join("before.json");
    std::fs::write(&before, export(&[])).unwrap();
    let text = std::fs::read_to_string(&before).unwrap();
    assert!(
        text.contains("/usr/local/bin/python3.12 (parent /usr/local/bin/gunicorn)"),
        "{text}"
    );
    let alert_id = shell["id"].as_str().unwrap().to_owned();
    let accepted = driftwatch()
        .args(["baseline", "accept", &alert_id, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let after = dir.path().join("after.json");
    std::fs::write(&after, export(&["--service", "shop/api"])).unwrap();
    let diff = driftwatch()
        .args(["baseline", "diff"])
        .arg(&before)
        .arg(&after)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&diff.stdout),
        "+ shop/api process /bin/sh (parent /usr/local/bin/gunicorn)\n"
    );
}
