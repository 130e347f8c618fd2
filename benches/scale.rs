//! Scaling out: 1, 2 and 3 `driftwatch run` daemons in one consumer group, with the
//! repartition topic and the state changelog, drain the same records (the simulated
//! shop: every format, logs included) from a three-broker Kafka-protocol mock cluster.
//! Each daemon is the optimized binary in a process of its own. Printed side by side in
//! one run: wall time, records/s, and CPU-seconds per 100,000 records summed over the
//! daemons (user + system, from /proc), with each ratio to one daemon. The daemons
//! share this machine's cores, so CPU per record is what shows what scaling costs:
//! the same work split over more members should cost little more in all.
//!
//! `cargo bench --bench scale` (`-- --records N --max-daemons K`).

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use ingest::Nanos;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use simulator::{Simulator, TOPICS};

#[path = "support/daemon.rs"]
mod daemon;
use daemon::{clock_ticks, cpu_seconds, free_port, metrics, send_waiting, spawn_run, total};

/// Raw topics' partitions: the mock broker keeps at most 5 MiB of batches per
/// partition, so the records are spread (and compressed) well below that.
const RAW_PARTITIONS: i32 = 16;
/// The repartition topic's and the changelog's: four per daemon at three.
const PARTITIONS: i32 = 12;

struct Args {
    records: u64,
    max_daemons: usize,
}

fn args() -> Args {
    let mut a = Args {
        records: 200_000,
        max_daemons: 3,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (argv[i].as_str(), value) {
            ("--records", Some(v)) => a.records = v,
            ("--max-daemons", Some(v)) => a.max_daemons = v as usize,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn produce(brokers: &str, records: u64) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    // Two hours of event time: the services learn, then monitor.
    let start = Nanos(Nanos::now().0 - 2 * 3600 * 1_000_000_000);
    let mut sim = Simulator::new(0x5ca1e, start, 1_000, 24, 2);
    for _ in 0..records {
        let r = sim.next_record();
        send_waiting(
            &producer,
            BaseRecord::to(r.topic).key(&r.key).payload(&r.payload),
        );
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

fn config(dir: &Path, brokers: &str, run: usize, http: &str) -> std::path::PathBuf {
    let topics: String = TOPICS
        .iter()
        .map(|(t, f)| format!("[[kafka.topics]]\nname = \"{t}\"\nformat = \"{f}\"\n"))
        .collect();
    let path = dir.join("driftwatch.toml");
    std::fs::write(
        &path,
        format!(
            "[log]\nlevel = \"warn\"\n\
             [kafka]\nbrokers = \"{brokers}\"\ngroup-id = \"scale-{run}\"\n\
             repartition-topic = \"events-{run}\"\ndead-letter-topic = \"dead-{run}\"\n\
             cluster-topic = \"cluster-{run}\"\n{topics}\
             [http]\nlisten = \"{http}\"\n[postgres]\nlisten = \"127.0.0.1:0\"\n\
             [state]\ndata-dir = {data:?}\nchangelog-topic = \"state-{run}\"\nsnapshot-interval = \"5s\"\n",
            data = dir.join("data").display().to_string(),
        ),
    )
    .expect("config");
    path
}

struct Run {
    daemons: usize,
    seconds: f64,
    cpu: f64,
}

fn run(
    cluster: &MockCluster<'_, DefaultProducerContext>,
    brokers: &str,
    records: u64,
    daemons: usize,
    ticks: f64,
) -> Run {
    for topic in [format!("events-{daemons}"), format!("state-{daemons}")] {
        cluster.create_topic(&topic, PARTITIONS, 1).expect("topic");
    }
    for topic in [format!("dead-{daemons}"), format!("cluster-{daemons}")] {
        cluster.create_topic(&topic, 1, 1).expect("topic");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut children: Vec<(Child, String)> = (0..daemons)
        .map(|i| {
            let member = dir.path().join(format!("member-{i}"));
            std::fs::create_dir_all(&member).expect("dir");
            let http = format!("127.0.0.1:{}", free_port());
            let conf = config(&member, brokers, daemons, &http);
            let child = spawn_run(&conf);
            (child, http)
        })
        .collect();
    let internal = format!("topic=\"events-{daemons}\"");
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let all: Vec<String> = children.iter().map(|(_, h)| metrics(h)).collect();
        let raw: f64 = all
            .iter()
            .map(|m| {
                total(m, "driftwatch_records_consumed_total", "format=")
                    - total(m, "driftwatch_records_consumed_total", &internal)
            })
            .sum();
        let produced: f64 = all
            .iter()
            .map(|m| total(m, "driftwatch_events_repartitioned_total", ""))
            .sum();
        let judged: f64 = all
            .iter()
            .map(|m| total(m, "driftwatch_records_consumed_total", &internal))
            .sum();
        if raw as u64 >= records && judged >= produced && produced > 0.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{daemons} daemons: raw {raw} of {records}, judged {judged} of {produced}"
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = children
        .iter()
        .map(|(c, _)| cpu_seconds(c.id(), ticks))
        .sum();
    for (c, _) in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    Run {
        daemons,
        seconds,
        cpu,
    }
}

fn main() {
    let args = args();
    let ticks = clock_ticks();
    let cluster = MockCluster::new(3).expect("mock cluster");
    for (topic, _) in TOPICS {
        cluster
            .create_topic(topic, RAW_PARTITIONS, 1)
            .expect("topic");
    }
    let brokers = cluster.bootstrap_servers();
    println!(
        "producing {} records of the simulated shop to a 3-broker mock cluster...",
        args.records
    );
    produce(&brokers, args.records);
    let runs: Vec<Run> = (1..=args.max_daemons)
        .map(|k| run(&cluster, &brokers, args.records, k, ticks))
        .collect();
    println!(
        "\n{:>8} {:>10} {:>12} {:>22} {:>18}",
        "daemons", "seconds", "records/s", "CPU-s per 100k records", "CPU vs 1 daemon"
    );
    let one = runs[0].cpu / args.records as f64 * 100_000.0;
    for r in &runs {
        let per = r.cpu / args.records as f64 * 100_000.0;
        println!(
            "{:>8} {:>10.1} {:>12.0} {:>22.2} {:>17.2}x",
            r.daemons,
            r.seconds,
            args.records as f64 / r.seconds,
            per,
            per / one
        );
    }
    println!(
        "\n(each daemon decodes, repartitions, detects, stores, indexes logs, runs compliance and \
         writes its state file and changelog, and reads the other members' alerts and findings from the cluster topic; all share this machine's {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}
