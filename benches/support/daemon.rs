//! What the benches that run `driftwatch` as a process of its own share: producing
//! their workload, a free port, the daemon's metrics, and what `/proc` says of its CPU
//! and memory.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};

/// Starts `driftwatch run` on a config file, its output discarded. With
/// `DRIFTWATCH_BENCH_WRAP` set (a command and its arguments, split on spaces, such as
/// `heaptrack -o /tmp/dw`), the daemon runs under it; the figures measured of the
/// process are then the wrapper's, and the bench's kill at the end reaches only the
/// wrapper: stop the daemon under it by hand (`pkill -9 -f 'driftwatch run'`).
pub fn spawn_run(config: &Path) -> Child {
    let wrap = std::env::var("DRIFTWATCH_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(env!("CARGO_BIN_EXE_driftwatch"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_driftwatch")),
    };
    command
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("driftwatch")
}

/// Sends one record, waiting while the producer's queue is full; any other error fails
/// the bench.
pub fn send_waiting<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, K, P>,
) {
    while let Err((e, back)) = producer.send(record) {
        assert!(
            matches!(
                e,
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull
                )
            ),
            "produce failed: {e}"
        );
        record = back;
        producer.poll(Duration::from_millis(5));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `/metrics` of a daemon listening on `http`; empty while it does not answer.
pub fn metrics(http: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(http) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// A counter's value summed over its series whose line contains `label`.
pub fn total(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// User + system CPU seconds a process has used.
pub fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, in parentheses).
    let rest = stat.rsplit(") ").next().unwrap_or_default();
    let fields: Vec<&str> = rest.split(' ').collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    (field(11) + field(12)) / ticks
}

pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// A memory figure of `/proc/<pid>/status` (`VmRSS`, `VmHWM`: the peak), in MiB.
pub fn memory_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}
