//! The whole daemon, measured end to end against a bare consumer, side by side in one
//! run. A mixed workload (Tetragon, Falco, Kubernetes audit, Docker and Fluent Bit
//! records of 200 copies of the simulated shop, so 1,000 services, logs included, with
//! attacks injected) goes into a 64-partition Kafka-protocol mock cluster. Then:
//!
//! 1. **Throughput.** The same records are drained by (a) a bare rdkafka consumer that
//!    only parses each record's JSON, (b) `driftwatch run` with everything on (search,
//!    compliance, the PostgreSQL wire server, a state directory, webhook delivery to a
//!    receiver on loopback), also as a cluster member (repartition topic, state
//!    changelog, cluster topic), and (c) the daemon with search, compliance, delivery and
//!    the wire server turned off in turn. Each is a process of its own; printed: records
//!    per second (from the first record read to the last), the ratio to (a), CPU-seconds
//!    per 100,000 records (user + system, from `/proc`), peak RSS, and RSS once drained.
//! 2. **Latency.** A daemon with everything on reads the records, then probes (a new
//!    program in a learned service, in the native format) are produced among the
//!    workload at 10,000 and 50,000 records/s and at full speed; the time from each
//!    probe's produce to its alert reaching the webhook receiver gives p50, p99 and max.
//! 3. **Soak.** The same daemon at a fixed rate for `--soak` seconds (600 by default;
//!    0 skips it): its RSS, read rate and alerts raised (at low and above) every 30 s,
//!    and the RSS slope over the second half. Every
//!    daemon's events table is capped at [`STORE_BYTES`], which the soak reaches in its
//!    first minutes: from then on, RSS that still grows is growth nothing bounds.
//!
//! `cargo bench --bench e2e` (`-- --records N --soak SECONDS --soak-rate R
//! --latency-only --kafka LINE`). The producer, the mock brokers and the daemon share
//! this machine's cores. `-- --dump FILE` writes the preload's records to FILE as JSON
//! lines instead, and measures nothing: `driftwatch replay FILE` then runs the same
//! workload through the same pipeline with no broker and no producer beside it, which
//! is steadier for comparing two builds, and for a profiler.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingest::Nanos;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use simulator::{Simulator, TOPICS};

#[path = "support/daemon.rs"]
mod daemon;
use daemon::{
    clock_ticks, cpu_seconds, free_port, memory_mib, metrics, send_waiting, spawn_run, total,
};

/// Partitions of every topic, as in the measured deployment. The mock broker keeps at
/// most 5 MiB of batches per partition and drops older ones silently; the bench checks
/// that it dropped nothing ([`check_held`]).
const PARTITIONS: i32 = 64;
/// Copies of the simulated shop (five services each), each in a namespace of its own.
const SHOPS: usize = 200;
/// Probes per latency phase.
const PROBES: usize = 40;

/// The events table's cap (`[store] max-bytes`): above what the throughput runs hold,
/// low enough that the soak reaches it within minutes, so that the soak shows whether
/// anything grows beyond the bounds the configuration sets.
const STORE_BYTES: &str = "256MiB";

/// librdkafka's mock broker answers a fetch with one batch per partition, and holds a
/// fetch that finds nothing new for the consumer's `fetch.wait.max.ms` (500 ms by
/// default) where a real broker answers once data arrives. Against it, the default
/// caps a consumer at a few thousand records a second when records trickle in (the
/// live phases) and adds up to half a second of latency; every consumer here, bare or
/// daemon, waits at most this long instead.
const FETCH_WAIT_MS: &str = "10";

/// `--kafka` lines, for every daemon's `[kafka]` section.
static KAFKA_EXTRA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

struct Args {
    records: u64,
    soak: u64,
    soak_rate: u64,
    /// Only the latency and the soak (`--latency-only`).
    latency_only: bool,
    /// Lines added to the daemons' `[kafka]` section (`--kafka 'flush-interval = "50ms"'`).
    kafka: Vec<String>,
    /// Set in the child process that is the bare consumer: brokers, records, group.
    bare: Option<(String, u64, String)>,
    /// Write the preload's records here and stop (`--dump FILE`).
    dump: Option<PathBuf>,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let mut a = Args {
        records: 300_000,
        soak: 600,
        soak_rate: 10_000,
        latency_only: false,
        kafka: Vec::new(),
        bare: None,
        dump: None,
    };
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1);
        let number = next.and_then(|v| v.parse::<u64>().ok());
        match (argv[i].as_str(), number) {
            ("--records", Some(v)) => a.records = v,
            ("--soak", Some(v)) => a.soak = v,
            ("--soak-rate", Some(v)) => a.soak_rate = v,
            ("--kafka", _) if next.is_some() => {
                a.kafka.extend(next.cloned());
                i += 2;
                continue;
            }
            ("--dump", _) if next.is_some() => {
                a.dump = next.map(PathBuf::from);
                i += 2;
                continue;
            }
            ("--latency-only", _) => {
                a.latency_only = true;
                i += 1;
                continue;
            }
            ("--bare-consumer", _) => {
                a.bare = Some((
                    argv[i + 1].clone(),
                    argv[i + 2].parse().expect("records"),
                    argv[i + 3].clone(),
                ));
                i += 4;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// 200 shops interleaved, each renamed into a namespace of its own.
struct Workload {
    shops: Vec<(Simulator, String)>,
    next: usize,
    probes: usize,
    /// Records are stamped with the wall clock (the live phases), not at a fixed pace.
    live: bool,
}

impl Workload {
    /// `records` records cover event time from two hours back to ten minutes back, so
    /// that the services have learned (one hour of event time) before the live phases,
    /// whose records carry the wall clock.
    fn new(records: u64) -> Self {
        let start = Nanos(Nanos::now().0 - 2 * 3600 * 1_000_000_000);
        let per_shop = (records / SHOPS as u64).max(1);
        // Milliseconds of event time per record of one shop (`Simulator::new` steps
        // `speed / rate` seconds).
        let step_ms = (110 * 60 * 1000 / per_shop).max(1);
        let shops = (0..SHOPS)
            .map(|i| {
                let mut sim = Simulator::new(0xe2e0 + i as u64, start, 1000, step_ms, 2);
                if i % 20 == 0 {
                    sim.schedule_attacks(
                        Nanos(start.0 + 90 * 60 * 1_000_000_000),
                        Duration::from_secs(120),
                    );
                }
                (sim, format!("s{i:03}"))
            })
            .collect();
        Workload {
            shops,
            next: 0,
            probes: 0,
            live: false,
        }
    }

    fn next(&mut self) -> (&'static str, String, String) {
        let (sim, ns) = &mut self.shops[self.next];
        self.next = (self.next + 1) % SHOPS;
        if self.live {
            sim.set_now(Nanos::now());
        }
        let r = sim.next_record();
        let payload = String::from_utf8_lossy(&r.payload).replace("shop", ns);
        // The simulator keys by workload name; each shop's keys are its own, as each
        // pod's or node's would be, so the records spread over the partitions.
        (r.topic, format!("{ns}/{}", r.key), payload)
    }

    /// A new program in a learned service, in the native format: its id, its record.
    fn probe(&mut self) -> (usize, String) {
        let id = self.probes;
        self.probes += 1;
        let (_, ns) = &self.shops[(id * 7) % SHOPS];
        let record = serde_json::json!({
            "time": Nanos::now().0,
            "kind": "process_exec",
            "service": format!("{ns}/api"),
            "process": { "exe": format!("/usr/bin/dw-probe-{id}"), "parent_exe": "/bin/sh" },
        });
        (id, record.to_string())
    }
}

/// How long the producer gathers records into a batch: 5 ms for the preload; 50 ms in
/// the live phases and the soak, whose records trickle into 320 partitions. The mock
/// broker finds a fetch's offset by walking a partition's batches one by one, so a
/// thousand one-record batches a partition soon cost it more CPU than the daemon uses
/// (`perf` on the bench: 57% in `rd_kafka_mock_msgset_find` at 10,000 records/s with
/// 5 ms); fewer, larger batches keep it out of the way ([`LIVE_PARTITIONS`] too). The linger is part of the
/// latency measured, as a sensor's exporter's batching is part of a real one.
const LINGER_PRELOAD: &str = "5";
const LINGER_LIVE: &str = "50";

/// The live phases' records go to this many partitions of each topic (by key), so that
/// each partition's batches are a few dozen records rather than one or two, for the
/// same reason.
const LIVE_PARTITIONS: u64 = 8;

fn producer(brokers: &str, linger_ms: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", "lz4")
        .set("linger.ms", linger_ms)
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

/// Sends one record; `live` records go to the first [`LIVE_PARTITIONS`] partitions of
/// their topic, by key.
fn send(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &str,
    payload: &str,
    live: bool,
) {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    if live {
        let partition = detect::stable_hash(&[key]) % LIVE_PARTITIONS;
        record = record.partition(i32::try_from(partition).unwrap_or(0));
    }
    send_waiting(p, record);
}

/// The child process that is the bare consumer: reads `records` records, parses each
/// as JSON, and prints its figures.
fn bare_consumer(brokers: &str, records: u64, group: &str) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .create()
        .expect("consumer");
    let topics: Vec<&str> = TOPICS.iter().map(|(t, _)| *t).collect();
    consumer.subscribe(&topics).expect("subscribe");
    let (mut read, mut parsed, mut first) = (0u64, 0u64, None);
    while read < records {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.expect("message");
        first.get_or_insert_with(Instant::now);
        read += 1;
        if let Some(p) = m.payload()
            && serde_json::from_slice::<serde_json::Value>(p).is_ok()
        {
            parsed += 1;
        }
    }
    let seconds = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let me = std::process::id();
    println!(
        "bare seconds={seconds} cpu={} peak={} rss={} parsed={parsed}",
        cpu_seconds(me, clock_ticks()),
        memory_mib(me, "VmHWM"),
        memory_mib(me, "VmRSS"),
    );
}

/// What one run measured.
struct Measured {
    name: String,
    seconds: f64,
    cpu: f64,
    peak: f64,
    steady: f64,
}

/// A webhook receiver on loopback: notes when each probe's alert first arrives.
struct Receiver {
    url: String,
    arrived: Arc<Mutex<HashMap<usize, Instant>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let arrived: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
        let seen = arrived.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || serve(stream, &seen));
            }
        });
        Receiver { url, arrived }
    }
}

/// Answers every request on one connection with 204, noting the probes it names.
fn serve(mut stream: std::net::TcpStream, seen: &Mutex<HashMap<usize, Instant>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        // One request: headers, then Content-Length bytes of body.
        let request_end = loop {
            if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..h]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= h + 4 + length {
                    break h + 4 + length;
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let now = Instant::now();
        let body = String::from_utf8_lossy(&buf[..request_end]).into_owned();
        buf.drain(..request_end);
        {
            let mut seen = seen.lock().expect("lock");
            for part in body.split("dw-probe-").skip(1) {
                let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(id) = digits.parse() {
                    seen.entry(id).or_insert(now);
                }
            }
        }
        if stream
            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// Which parts of the daemon run.
#[derive(Clone, Copy)]
struct Parts {
    search: bool,
    compliance: bool,
    delivery: bool,
    postgres: bool,
    /// As a member of a cluster: through the repartition topic, with the state
    /// changelog and the cluster topic.
    cluster: bool,
}

const ALL: Parts = Parts {
    search: true,
    compliance: true,
    delivery: true,
    postgres: true,
    cluster: false,
};

fn config(dir: &Path, brokers: &str, group: &str, http: &str, parts: Parts, hook: &str) -> PathBuf {
    let cluster = if parts.cluster {
        format!("repartition-topic = \"{group}-events\"\ncluster-topic = \"{group}-cluster\"\n")
    } else {
        String::new()
    };
    let changelog = if parts.cluster {
        format!("changelog-topic = \"{group}-state\"\n")
    } else {
        String::new()
    };
    let topics: String = TOPICS
        .iter()
        .map(|(t, f)| format!("[[kafka.topics]]\nname = \"{t}\"\nformat = \"{f}\"\n"))
        .collect();
    let mut c = format!(
        "[log]\nlevel = \"warn\"\n\
         [kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"{group}\"\n\
         properties = {{ \"fetch.wait.max.ms\" = \"{FETCH_WAIT_MS}\" }}\n{extra}{cluster}{topics}\
         [http]\nlisten = \"{http}\"\n\
         [postgres]\nenabled = {postgres}\nlisten = \"127.0.0.1:0\"\n\
         [search]\nenabled = {search}\nindex-dir = {index:?}\n\
         [compliance]\nenabled = {compliance}\n\
         [reports]\ndir = {reports:?}\n\
         [store]\nmax-bytes = \"{STORE_BYTES}\"\n\
         [state]\ndata-dir = {data:?}\n{changelog}\
         [notify]\noutbox-dir = {outbox:?}\n",
        extra = KAFKA_EXTRA.get().map_or("", String::as_str),
        postgres = parts.postgres,
        search = parts.search,
        compliance = parts.compliance,
        index = dir.join("index").display().to_string(),
        reports = dir.join("reports").display().to_string(),
        data = dir.join("data").display().to_string(),
        outbox = dir.join("outbox").display().to_string(),
    );
    if parts.delivery {
        c.push_str(&format!(
            "[[notify.sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{hook}\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nrate = 1000.0\n\
             [[notify.route]]\nname = \"all\"\nsink = \"hook\"\n"
        ));
    }
    let path = dir.join("driftwatch.toml");
    std::fs::write(&path, c).expect("config");
    path
}

struct Daemon {
    child: Child,
    http: String,
    group: String,
    cluster: bool,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(brokers: &str, group: &str, parts: Parts, hook: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let http = format!("127.0.0.1:{}", free_port());
        let conf = config(dir.path(), brokers, group, &http, parts, hook);
        let child = spawn_run(&conf);
        Daemon {
            child,
            http,
            group: group.to_owned(),
            cluster: parts.cluster,
            _dir: dir,
        }
    }

    /// Raw records read, and whether every event repartitioned so far was judged too.
    fn consumed(&self) -> (f64, bool) {
        let m = metrics(&self.http);
        let all = total(&m, "driftwatch_records_consumed_total", "format=");
        if !self.cluster {
            return (all, true);
        }
        let internal = format!("topic=\"{}-events\"", self.group);
        let judged = total(&m, "driftwatch_records_consumed_total", &internal);
        let produced = total(&m, "driftwatch_events_repartitioned_total", "");
        (all - judged, judged >= produced && produced > 0.0)
    }

    /// Waits until `records` were read; the seconds from the first read to then.
    fn drain(&self, records: u64) -> f64 {
        let started = Instant::now();
        let mut first = None;
        loop {
            let (n, judged) = self.consumed();
            if n > 0.0 {
                first.get_or_insert_with(Instant::now);
            }
            if n as u64 >= records && judged {
                return first.map_or(0.0, |f| f.elapsed().as_secs_f64());
            }
            assert!(
                started.elapsed() < Duration::from_secs(900),
                "the daemon read {n} of {records} records"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_daemon(
    cluster: &MockCluster<'_, DefaultProducerContext>,
    name: &str,
    brokers: &str,
    records: u64,
    parts: Parts,
    hook: &str,
    ticks: f64,
) -> Measured {
    let group = format!("e2e-{name}");
    if parts.cluster {
        for (topic, partitions) in [
            ("events", PARTITIONS),
            ("state", PARTITIONS),
            ("cluster", 1),
        ] {
            cluster
                .create_topic(&format!("{group}-{topic}"), partitions, 1)
                .expect("topic");
        }
    }
    let d = Daemon::start(brokers, &group, parts, hook);
    let seconds = d.drain(records);
    let cpu = cpu_seconds(d.pid(), ticks);
    // Once drained: what it keeps.
    std::thread::sleep(Duration::from_secs(3));
    Measured {
        name: name.to_owned(),
        seconds,
        cpu,
        peak: memory_mib(d.pid(), "VmHWM"),
        steady: memory_mib(d.pid(), "VmRSS"),
    }
}

fn run_bare(brokers: &str, records: u64) -> Measured {
    let out = Command::new(std::env::current_exe().expect("this bench"))
        .args(["--bare-consumer", brokers, &records.to_string(), "e2e-bare"])
        .output()
        .expect("bare consumer");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| -> f64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("the bare consumer said {text:?}"))
    };
    Measured {
        name: "(a) bare consumer, JSON parse".to_owned(),
        seconds: field("seconds"),
        cpu: field("cpu"),
        peak: field("peak"),
        steady: field("rss"),
    }
}

/// Produces at `rate` records/s (0: as fast as the producer takes them) for `records`
/// records, with [`PROBES`] probes spread among them; returns each probe's produce time.
fn produce_live(
    p: &ThreadedProducer<DefaultProducerContext>,
    w: &mut Workload,
    records: u64,
    rate: u64,
) -> HashMap<usize, Instant> {
    let every = (records / PROBES as u64).max(1);
    let mut sent = HashMap::new();
    let started = Instant::now();
    for i in 0..records {
        if rate > 0 {
            // Paced in steps of a millisecond's worth of records.
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if i % every == every / 2 && sent.len() < PROBES {
            let (id, record) = w.probe();
            sent.insert(id, Instant::now());
            send(p, "native", &id.to_string(), &record, true);
        }
        let (topic, key, payload) = w.next();
        send(p, topic, &key, &payload, true);
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    sent
}

/// Fails unless the topics hold every record produced, from offset 0: the mock broker
/// drops a partition's oldest batches past 5 MiB without a word.
fn check_held(brokers: &str, records: u64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    let mut held = 0;
    for (topic, _) in TOPICS {
        for partition in 0..PARTITIONS {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .expect("watermarks");
            assert_eq!(
                low, 0,
                "the mock broker dropped the oldest records of {topic}/{partition}: use more partitions or fewer records"
            );
            held += high;
        }
    }
    assert_eq!(
        u64::try_from(held).unwrap_or(0),
        records,
        "the topics hold {held} of the {records} records produced"
    );
}

/// The daemon's `driftwatch_notification_latency_seconds`: sum and count.
fn notify_latency(http: &str) -> (f64, f64) {
    let m = metrics(http);
    (
        total(&m, "driftwatch_notification_latency_seconds_sum", ""),
        total(&m, "driftwatch_notification_latency_seconds_count", ""),
    )
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Records/s, CPU and memory of the bare consumer and the daemon's variants.
fn throughput(
    cluster: &MockCluster<'_, DefaultProducerContext>,
    brokers: &str,
    args: &Args,
    receiver: &Receiver,
    ticks: f64,
) {
    let mut runs = vec![run_bare(brokers, args.records)];
    let variants = [
        ("(b) daemon, everything on", ALL),
        (
            "(b) as a cluster member",
            Parts {
                cluster: true,
                ..ALL
            },
        ),
        (
            "(c) without search",
            Parts {
                search: false,
                ..ALL
            },
        ),
        (
            "(c) without compliance",
            Parts {
                compliance: false,
                ..ALL
            },
        ),
        (
            "(c) without delivery",
            Parts {
                delivery: false,
                ..ALL
            },
        ),
        (
            "(c) without the SQL server",
            Parts {
                postgres: false,
                ..ALL
            },
        ),
    ];
    for (i, (name, parts)) in variants.iter().enumerate() {
        let mut m = run_daemon(
            cluster,
            &format!("run{i}"),
            brokers,
            args.records,
            *parts,
            &receiver.url,
            ticks,
        );
        m.name = (*name).to_owned();
        runs.push(m);
    }
    println!(
        "\n{:<32} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "throughput", "records/s", "vs (a)", "CPU-s/100k", "peak MiB", "drained MiB"
    );
    let bare = args.records as f64 / runs[0].seconds;
    for m in &runs {
        let rate = args.records as f64 / m.seconds;
        println!(
            "{:<32} {:>10.0} {:>7.2}x {:>10.2} {:>10.0} {:>10.0}",
            m.name,
            rate,
            rate / bare,
            m.cpu / args.records as f64 * 100_000.0,
            m.peak,
            m.steady
        );
    }
}

/// Writes the preload's records, one JSON record a line, in the order they are produced.
fn dump(path: &Path, records: u64) {
    let file = std::fs::File::create(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let mut out = std::io::BufWriter::new(file);
    let mut w = Workload::new(records);
    for _ in 0..records {
        let (_, _, payload) = w.next();
        // A record is one line: the simulator's broken records are cut JSON, never
        // multi-line, but a newline inside one would make two.
        writeln!(out, "{}", payload.replace('\n', " ")).expect("write");
    }
    out.flush().expect("write");
    println!("wrote {records} records to {}", path.display());
}

fn main() {
    let args = args();
    if let Some((brokers, records, group)) = &args.bare {
        bare_consumer(brokers, *records, group);
        return;
    }
    if let Some(path) = &args.dump {
        dump(path, args.records);
        return;
    }
    let extra: String = args.kafka.iter().map(|l| format!("{l}\n")).collect();
    if !extra.is_empty() {
        println!("every daemon's [kafka] section adds:\n{extra}");
    }
    KAFKA_EXTRA.set(extra).expect("set once");
    let ticks = clock_ticks();
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (topic, _) in TOPICS {
        cluster.create_topic(topic, PARTITIONS, 1).expect("topic");
    }
    cluster
        .create_topic("driftwatch-dead-letter", 1, 1)
        .expect("topic");
    let brokers = cluster.bootstrap_servers();
    let receiver = Receiver::start();
    println!(
        "producing {} records of {SHOPS} shops ({} services, every format, logs included, attacks injected) to {PARTITIONS} partitions per topic...",
        args.records,
        SHOPS * 5
    );
    let p = producer(&brokers, LINGER_PRELOAD);
    let mut w = Workload::new(args.records);
    for _ in 0..args.records {
        let (topic, key, payload) = w.next();
        send(&p, topic, &key, &payload, false);
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    check_held(&brokers, args.records);

    // 1. Throughput, side by side.
    if !args.latency_only {
        throughput(&cluster, &brokers, &args, &receiver, ticks);
    }

    // 2. Latency from produce to the alert at the webhook receiver.
    let d = Daemon::start(&brokers, "e2e-live", ALL, &receiver.url);
    d.drain(args.records);
    w.live = true;
    let p = producer(&brokers, LINGER_LIVE);
    println!(
        "\n{:<32} {:>8} {:>8} {:>8} {:>8} {:>14}",
        "produce -> alert at the webhook", "alerts", "p50 ms", "p99 ms", "max ms", "notify mean ms"
    );
    for (name, rate, records) in [
        ("10,000 records/s", 10_000, 100_000),
        ("50,000 records/s", 50_000, 250_000),
        ("full speed", 0, 250_000),
    ] {
        let before = notify_latency(&d.http);
        let sent = produce_live(&p, &mut w, records, rate);
        // Every probe's alert, or 30 s.
        let waited = Instant::now();
        while waited.elapsed() < Duration::from_secs(30)
            && sent
                .keys()
                .any(|id| !receiver.arrived.lock().expect("lock").contains_key(id))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let arrived = receiver.arrived.lock().expect("lock").clone();
        let mut missing: Vec<usize> = sent
            .keys()
            .filter(|id| !arrived.contains_key(id))
            .copied()
            .collect();
        missing.sort_unstable();
        let mut ms: Vec<f64> = sent
            .iter()
            .filter_map(|(id, at)| Some(arrived.get(id)?.duration_since(*at).as_secs_f64() * 1e3))
            .collect();
        ms.sort_by(f64::total_cmp);
        // Of which: from the notification's making to the receiver's answer.
        let after = notify_latency(&d.http);
        let notify_ms = (after.0 - before.0) / (after.1 - before.1).max(1.0) * 1e3;
        if ms.is_empty() {
            println!("{name:<32} {:>8} (no probe alerted within 30 s)", 0);
        } else {
            println!(
                "{name:<32} {:>5}/{:<2} {:>8.0} {:>8.0} {:>8.0} {:>14.0}",
                ms.len(),
                sent.len(),
                percentile(&ms, 0.5),
                percentile(&ms, 0.99),
                ms[ms.len() - 1],
                notify_ms
            );
        }
        if !missing.is_empty() {
            println!("  no alert within 30 s for probes {missing:?}");
        }
    }

    // 3. Soak: RSS at a fixed rate.
    if args.soak > 0 {
        println!(
            "\nsoak: {} records/s for {} s; every 30 s:",
            args.soak_rate, args.soak
        );
        // Anonymous memory is the daemon's own; file-backed pages are the log index's
        // and the state's mapped files, which the kernel can drop under pressure.
        println!(
            "  {:>8} {:>8} {:>8} {:>8} {:>16} {:>14} {:>14}",
            "time", "RSS MiB", "anon", "file", "read records/s", "alerts/s low", "above low"
        );
        let mut samples = Vec::new();
        let started = Instant::now();
        let (mut read, mut at) = (d.consumed().0, Instant::now());
        // Alerts raised, at low and above: what an alert storm would keep in memory.
        let raised = || {
            let m = metrics(&d.http);
            let all = total(&m, "driftwatch_alerts_raised_total", "");
            let low = total(&m, "driftwatch_alerts_raised_total", "severity=\"low\"");
            let info = total(&m, "driftwatch_alerts_raised_total", "severity=\"info\"");
            (low, all - low - info)
        };
        let mut alerts = raised();
        while started.elapsed() < Duration::from_secs(args.soak) {
            produce_live(&p, &mut w, args.soak_rate * 30, args.soak_rate);
            let rss = memory_mib(d.pid(), "VmRSS");
            let anon = memory_mib(d.pid(), "RssAnon");
            let file = memory_mib(d.pid(), "RssFile") + memory_mib(d.pid(), "RssShmem");
            let t = started.elapsed().as_secs_f64();
            // A daemon that falls behind holds less than one that keeps up: say which.
            let now_read = d.consumed().0;
            let secs = at.elapsed().as_secs_f64();
            let rate = (now_read - read) / secs;
            let now_alerts = raised();
            let (low, above) = (
                (now_alerts.0 - alerts.0) / secs,
                (now_alerts.1 - alerts.1) / secs,
            );
            (read, at, alerts) = (now_read, Instant::now(), now_alerts);
            println!(
                "  {t:>6.0} s {rss:>8.0} {anon:>8.0} {file:>8.0} {rate:>16.0} {low:>14.1} {above:>14.1}"
            );
            samples.push((t, rss, anon));
        }
        let half = &samples[samples.len() / 2..];
        let rss: Vec<(f64, f64)> = half.iter().map(|s| (s.0, s.1)).collect();
        let anon: Vec<(f64, f64)> = half.iter().map(|s| (s.0, s.2)).collect();
        println!(
            "RSS slope over the second half: {:+.1} MiB/min (from {:.0} to {:.0} MiB); anonymous {:+.1} MiB/min \
             (from {:.0} to {:.0} MiB); peak {:.0} MiB",
            slope(&rss),
            rss.first().map_or(0.0, |s| s.1),
            rss.last().map_or(0.0, |s| s.1),
            slope(&anon),
            anon.first().map_or(0.0, |s| s.1),
            anon.last().map_or(0.0, |s| s.1),
            memory_mib(d.pid(), "VmHWM")
        );
    }
    println!(
        "\n({} cores shared by the producer, the mock broker and the process measured)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

/// Least-squares slope of `(seconds, MiB)` samples, in MiB a minute.
fn slope(samples: &[(f64, f64)]) -> f64 {
    let n = samples.len() as f64;
    let (mt, mr) = (
        samples.iter().map(|s| s.0).sum::<f64>() / n,
        samples.iter().map(|s| s.1).sum::<f64>() / n,
    );
    let cov: f64 = samples.iter().map(|(t, r)| (t - mt) * (r - mr)).sum();
    let var: f64 = samples.iter().map(|(t, _)| (t - mt) * (t - mt)).sum();
    if var > 0.0 { cov / var * 60.0 } else { 0.0 }
}
