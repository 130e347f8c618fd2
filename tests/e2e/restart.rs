//! `driftwatch run` with a data directory, killed with SIGKILL and started again: the
//! learned baseline and the raised alerts come back, and an alert is never raised twice.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::common::{Killed, cluster, driftwatch, eventually, produce};

fn exec(minute: u32, exe: &str) -> String {
    json!({
        "time": format!("2026-03-02T10:{minute:02}:00Z"), "service": "shop/api", "kind": "process_exec",
        "process": { "exe": exe, "parent_exe": "/usr/local/bin/gunicorn" },
    })
    .to_string()
}

/// Starts `run`, collecting its (JSON) log lines; the daemon dies with the handle, so a
/// failing test leaves none behind.
fn start(config: &Path) -> (Killed, Arc<Mutex<Vec<String>>>) {
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
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
    (Killed(child), lines)
}

fn alerts_about(lines: &Mutex<Vec<String>>, subject: &str) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("Drift alert.") && l.contains(subject))
        .count()
}

/// A daemon's config: one `native` topic of group `group`, a ten-minute learning
/// period, and with `state` a data directory and snapshot interval.
fn write_config(dir: &Path, brokers: &str, group: &str, state: Option<(&Path, &str)>) -> PathBuf {
    let mut text = format!(
        "[log]\nformat = \"json\"\n[kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"{group}\"\n\
         [[kafka.topics]]\nname = \"native\"\nformat = \"native\"\n\
         [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[postgres]\nlisten = \"127.0.0.1:0\"\n\
         [detect]\nlearning-period = \"10m\"\nmin-learning-events = 3\n"
    );
    if let Some((data, interval)) = state {
        text.push_str(&format!(
            "[state]\ndata-dir = \"{}\"\nsnapshot-interval = \"{interval}\"\n",
            data.display()
        ));
    }
    let path = dir.join("driftwatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Eleven minutes of the API's one program (offsets 0 to 10), then a shell at 10:13
/// (offset 11), which is an alert once learning has ended.
fn learning_then_a_shell() -> Vec<String> {
    let mut records: Vec<String> = (0..=10)
        .map(|m| exec(m, "/usr/local/bin/python3.12"))
        .collect();
    records.push(exec(13, "/bin/sh"));
    records
}

/// Stops the daemon with SIGTERM; it must drain and exit cleanly.
fn terminate(daemon: &mut Killed) {
    Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    assert!(daemon.0.wait().unwrap().success());
}

fn state(dir: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(dir.join("state.json")).ok()?).ok()
}

/// The shell alert in a state file's detector.
fn shell_alert(state: &serde_json::Value) -> &serde_json::Value {
    state["detector"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["subject"].as_str().unwrap().starts_with("/bin/sh"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_restores_its_baselines_and_never_raises_an_alert_twice() {
    let (_cluster, brokers) = cluster("native", 1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &brokers, "restart", Some((&data, "200ms")));

    produce(&brokers, "native", learning_then_a_shell());
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
    daemon.0.kill().unwrap(); // SIGKILL: no drain, no final state file
    daemon.0.wait().unwrap();
    let first_run = logs.lock().unwrap().join("\n");

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
    terminate(&mut daemon);
    assert_eq!(
        alerts_about(&logs, "/bin/sh"),
        0,
        "the restored shell alert was raised again"
    );

    let s = state(&data).unwrap();
    let shell = shell_alert(&s);
    assert_eq!(
        shell["count"],
        2,
        "the repeat counted into the restored alert: {shell}; logs:\n{first_run}\n{}",
        logs.lock().unwrap().join("\n")
    );
    assert_eq!(s["detector"]["alerts"].as_array().unwrap().len(), 2);
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

/// A member that joins the group makes the daemon's partition go through a rebalance
/// and come straight back to it, with nothing committed since (the state file is
/// hours away). The records re-read from the last commit are already in the daemon's
/// state: counted again, every repeat doubles and an alert's count is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_a_rebalance_hands_straight_back_is_not_counted_twice() {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let (cluster, brokers) = cluster("native", 1);
    cluster.create_topic("other", 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &brokers, "handback", Some((&data, "1h")));
    produce(&brokers, "native", learning_then_a_shell());
    let (mut daemon, logs) = start(&config);
    eventually(Duration::from_secs(60), "the shell alert", || {
        alerts_about(&logs, "/bin/sh") == 1
    })
    .await;
    let assigned = |logs: &Mutex<Vec<String>>| {
        logs.lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("Partitions assigned."))
            .count()
    };
    assert_eq!(assigned(&logs), 1);

    // A second member of the group, reading another topic: the group rebalances, and
    // the daemon gets its one partition back.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let member = {
        let (brokers, stop) = (brokers.clone(), stop.clone());
        std::thread::spawn(move || {
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", "handback")
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500")
                .create()
                .unwrap();
            consumer.subscribe(&["other"]).unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        })
    };
    eventually(
        Duration::from_secs(60),
        "the daemon's partition back",
        || assigned(&logs) >= 2,
    )
    .await;
    // One record after the re-read: its alert says the re-read is over.
    produce(&brokers, "native", [exec(15, "/usr/bin/wget")]);
    let waited = std::time::Instant::now();
    while alerts_about(&logs, "/usr/bin/wget") == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "no wget alert; logs:\n{}",
            logs.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(&mut daemon);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    member.join().unwrap();

    assert_eq!(
        alerts_about(&logs, "/bin/sh"),
        1,
        "the shell alert raised again"
    );
    let s = state(&data).unwrap();
    let shell = shell_alert(&s);
    assert_eq!(
        shell["count"], 1,
        "the re-read shell counted again: {shell}"
    );
    assert_eq!(s["offsets"]["native"]["0"], 13);
}

/// The broker goes away while the daemon is idle and comes back. librdkafka reports the
/// lost connection to the consumer as an error, with no record to hand over; the
/// daemon must go on consuming once the broker is back, not wait on a flush that never
/// comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_goes_away_and_comes_back_does_not_blind_the_daemon() {
    let (cluster, brokers) = cluster("native", 1);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &brokers, "outage", None);
    produce(&brokers, "native", learning_then_a_shell());
    let (mut daemon, logs) = start(&config);
    eventually(Duration::from_secs(60), "the shell alert", || {
        alerts_about(&logs, "/bin/sh") == 1
    })
    .await;

    cluster.broker_down(1).unwrap();
    let reported = |logs: &Mutex<Vec<String>>| {
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("Kafka consumer reported an error."))
    };
    eventually(Duration::from_secs(60), "the outage reported", || {
        reported(&logs)
    })
    .await;
    // Past the flush interval, with nothing pending.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker_up(1).unwrap();

    produce(&brokers, "native", [exec(15, "/usr/bin/wget")]);
    let waited = std::time::Instant::now();
    while alerts_about(&logs, "/usr/bin/wget") == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "nothing consumed after the broker came back; logs:\n{}",
            logs.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(&mut daemon);
}

/// The daemon dies after writing a state file and before committing its offsets (as
/// `kill -9` can land between the two): the group's commit lags the file, here all
/// the way back to the start. The restart restores the state file and must not count
/// the records it already holds a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_lagged_the_state_file_counts_nothing_twice() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

    let (_cluster, brokers) = cluster("native", 1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &brokers, "lagged", Some((&data, "200ms")));
    produce(&brokers, "native", learning_then_a_shell());
    let (mut daemon, _logs) = start(&config);
    eventually(
        Duration::from_secs(60),
        "every record in a state file",
        || state(&data).is_some_and(|s| s["offsets"]["native"]["0"] == 12),
    )
    .await;
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();

    // The commit that follows the file never happened: the group is back at 0. A
    // member of the group sets it so, once the killed member's session has ended.
    let rewind: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "lagged")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    rewind.subscribe(&["native"]).unwrap();
    let mut at_start = TopicPartitionList::new();
    at_start
        .add_partition_offset("native", 0, Offset::Offset(0))
        .unwrap();
    let (waited, mut last) = (std::time::Instant::now(), None);
    loop {
        let _ = rewind.poll(Duration::from_millis(100));
        if rewind.assignment().unwrap().count() == 1 {
            match rewind.commit(&at_start, CommitMode::Sync) {
                Ok(()) => break,
                Err(e) => last = Some(e),
            }
        }
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "no rewind: {last:?}"
        );
    }
    rewind.unsubscribe();
    drop(rewind);

    produce(&brokers, "native", [exec(15, "/usr/bin/wget")]);
    let (mut daemon, logs) = start(&config);
    eventually(Duration::from_secs(60), "the wget alert", || {
        alerts_about(&logs, "/usr/bin/wget") == 1
    })
    .await;
    terminate(&mut daemon);
    assert_eq!(
        alerts_about(&logs, "/bin/sh"),
        0,
        "the shell alert raised again"
    );
    let s = state(&data).unwrap();
    let shell = shell_alert(&s);
    assert_eq!(shell["count"], 1, "the shell record counted again: {shell}");
    assert_eq!(s["offsets"]["native"]["0"], 13);
}
