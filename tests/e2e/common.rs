//! Helpers shared by the end-to-end tests.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The binary under test: the one cargo built for the tests, or the one
/// `DRIFTWATCH_BIN` names (a release build, to run the attacks against what ships).
pub fn binary() -> std::ffi::OsString {
    std::env::var_os("DRIFTWATCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_driftwatch").into())
}

/// The binary, run in a temporary working directory: whatever it writes by default
/// (a replay's `dead-letter.jsonl`, the demo's reports folder) never lands in the
/// checkout.
pub fn driftwatch() -> Command {
    static WORKDIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = WORKDIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"));
    let mut command = Command::new(binary());
    command.current_dir(dir.path());
    command
}

pub fn fixtures() -> PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("tests/fixtures")
}

/// The path of an outside program the test needs. The test command installs them; a
/// missing one is a failure, never a skip.
pub fn require_program(name: &str) -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} is not installed; run the test suite through .ci/run, which installs it"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Polls `check` until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP/1.1 GET on loopback, returning the body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// A plain HTTP/1.1 POST of a JSON body on loopback, returning the body.
pub fn http_post_json(addr: &str, path: &str, body: &serde_json::Value) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// The value of one sample in Prometheus text exposition, if present.
pub fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// Runs a command with `input` on its standard input and collects its output.
pub fn run_with_input(command: &mut Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mock Kafka cluster (a real Kafka-protocol broker on loopback) holding `topic` with
/// `partitions` partitions, and the dead-letter topic; with its bootstrap servers.
pub fn cluster(
    topic: &str,
    partitions: i32,
) -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic(topic, partitions, 1).unwrap();
    cluster
        .create_topic("driftwatch-dead-letter", 1, 1)
        .unwrap();
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

/// Publishes `records` to `topic` and waits until the broker has them all.
/// A native `process_exec` record of service `shop/svc-{service}` at 10:`minute`:`second`
/// on 2026-03-02, run by `/app/bin/entrypoint`: the cluster and partition tests' unit.
pub fn exec_record(service: u32, minute: u32, second: u32, exe: &str) -> String {
    serde_json::json!({
        "time": format!("2026-03-02T10:{minute:02}:{second:02}Z"),
        "service": format!("shop/svc-{service}"),
        "kind": "process_exec",
        "process": { "exe": exe, "parent_exe": "/app/bin/entrypoint" },
    })
    .to_string()
}

pub fn produce(brokers: &str, topic: &str, records: impl IntoIterator<Item = impl AsRef<str>>) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for r in records {
        producer
            .send(BaseRecord::<(), _>::to(topic).payload(r.as_ref()))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Serves `app` on a loopback port for the rest of the test; returns its address.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// (webhook-id, alert id, resolved) of every alert a webhook receiver took.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, bool)>>>;

/// A webhook receiver at `/hook` that answers 503 while `up` is false and otherwise
/// takes every notification, noting each alert it carries; returns its address.
pub async fn alert_receiver(
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (String, Received) {
    let received = Received::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (up, sink) = (up.clone(), sink.clone());
            async move {
                if !up.load(std::sync::atomic::Ordering::SeqCst) {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let mut got = sink.lock().unwrap();
                for item in v["data"]["items"].as_array().unwrap() {
                    if item["source"] == "alert" {
                        got.push((
                            id.clone(),
                            item["id"].as_str().unwrap().to_owned(),
                            item["resolved"].as_bool().unwrap(),
                        ));
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    (serve(app).await.to_string(), received)
}

/// A child process killed (not stopped gracefully) when the test lets go of it.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a finished `driftwatch replay` printed: its JSON lines (alerts and findings, on
/// standard output unless `-o` sent them elsewhere) and its summary on stderr.
pub struct Replayed {
    pub lines: Vec<serde_json::Value>,
    pub stderr: String,
}

impl Replayed {
    /// The output lines of one `type` (`alert`, `finding`).
    pub fn of_type(&self, kind: &str) -> Vec<&serde_json::Value> {
        self.lines.iter().filter(|l| l["type"] == kind).collect()
    }
}

/// Runs `driftwatch replay --no-progress ARGS…` to its end, with `input` on standard
/// input when given, and checks that it succeeded.
pub fn replay<I, S>(args: I, input: Option<&str>) -> Replayed
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = driftwatch();
    command.args(["replay", "--no-progress"]).args(args);
    let out = match input {
        Some(bytes) => run_with_input(&mut command, bytes),
        None => command.output().unwrap(),
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "replay failed: {stderr}");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    Replayed { lines, stderr }
}
