//! SQL latency over a large events table while ingest keeps appending: the two queries
//! a SOC dashboard runs most (events per service in 5-minute buckets over the last
//! hour, and the top 20 processes), through the same engine the API and the
//! PostgreSQL wire server use.
//!
//! `cargo bench --bench sql` (10,000,000 events); `-- --events N` for another size.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ingest::event::{EventKind, Process, Provenance, Source, Workload};
use ingest::{Event, Nanos};
use queries::sql::{Reader, SqlEngine, SqlLimits};
use store::{ByteSize, EventTable, StoreConfig};

const SERVICES: usize = 200;
const EXES: [&str; 12] = [
    "/usr/local/bin/python3.12",
    "/usr/local/bin/gunicorn",
    "/usr/bin/node",
    "/usr/sbin/nginx",
    "/bin/sh",
    "/usr/bin/curl",
    "/usr/lib/postgresql/16/bin/postgres",
    "/usr/bin/java",
    "/usr/local/bin/envoy",
    "/usr/bin/bash",
    "/usr/bin/find",
    "/usr/bin/tar",
];

/// Event `i` of a stream that spans `span` up to `end`: process starts, file writes
/// and log lines spread over the services.
fn event(i: u64, end: Nanos, span: Duration, total: u64) -> Event {
    let step = span.as_nanos() as i64 / total.max(1) as i64;
    let time = Nanos(end.0 - span.as_nanos() as i64 + step * i as i64);
    let service = format!("team{}/svc{}", i % 20, i as usize % SERVICES);
    // A dozen common executables, and a thousand rarer ones (team tools).
    let exe = if i.is_multiple_of(3) {
        format!("/opt/team{}/bin/tool-{}", i % 20, i % 50)
    } else {
        EXES[(i.wrapping_mul(2_654_435_761) % EXES.len() as u64) as usize].to_owned()
    };
    let process = Process {
        exe,
        args: vec!["-c".into(), format!("job-{}", i % 97)],
        parent_exe: Some("/usr/bin/containerd-shim".into()),
        pid: Some((i % 32768) as u32),
        uid: Some(1000),
        user: None,
        cwd: None,
    };
    let kind = match i % 4 {
        0 | 1 => EventKind::ProcessExec { process },
        2 => EventKind::FileAccess {
            op: ingest::event::FileOp::Write,
            path: format!("/var/lib/app/cache/{}", i % 1000),
            process: Some(process),
        },
        _ => EventKind::Log {
            stream: Some("stdout".into()),
            message: format!("GET /api/items/{} 200 {}ms", i % 5000, i % 300),
            template_id: Some((i % 40) as u32),
        },
    };
    Event {
        time,
        source: Source::Native,
        provenance: Provenance::default(),
        workload: Workload {
            namespace: Some(format!("team{}", i % 20)),
            pod: Some(format!("svc{}-7d9f-{}", i as usize % SERVICES, i % 3)),
            ..Workload::default()
        },
        service,
        kind,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let total: u64 = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .map_or(10_000_000, |n| n.parse().expect("--events takes a number"));
    let span = Duration::from_secs(2 * 3600);
    let end = Nanos::now();
    let table = Arc::new(EventTable::new(StoreConfig {
        retention: Duration::from_secs(7 * 24 * 3600),
        max_bytes: ByteSize(64 << 30),
        ..StoreConfig::default()
    }));
    let load = Instant::now();
    const BATCH: u64 = 10_000;
    let mut batch = Vec::with_capacity(BATCH as usize);
    for i in 0..total {
        batch.push(event(i, end, span, total));
        if batch.len() as u64 == BATCH {
            table.append(&batch);
            batch.clear();
        }
    }
    table.append(&batch);
    println!(
        "sql benchmark: {} events over 2 h of event time, {} services; loaded in {:.1} s, {:.0} MiB of Arrow",
        table.rows(),
        SERVICES,
        load.elapsed().as_secs_f64(),
        table.bytes() as f64 / (1 << 20) as f64
    );

    let events = table.clone();
    let engine = SqlEngine::new(
        vec![(
            "events",
            store::events_schema(),
            Arc::new(move || events.snapshot().batches) as Reader,
        )],
        SqlLimits::default(),
    )
    .expect("engine");

    // Ingest goes on meanwhile: 20,000 events a second, in batches of 1,000, newer than
    // everything loaded.
    let stop = Arc::new(AtomicBool::new(false));
    let ingested = Arc::new(AtomicU64::new(0));
    let writer = {
        let (table, stop, ingested) = (table.clone(), stop.clone(), ingested.clone());
        std::thread::spawn(move || {
            let mut i = total;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Event> = (0..1000)
                    .map(|k| {
                        let mut e = event(i + k, end, span, total);
                        e.time = Nanos::now();
                        e
                    })
                    .collect();
                table.append(&batch);
                i += 1000;
                ingested.fetch_add(1000, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let hour_ago =
        chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(end.0 - 3600 * 1_000_000_000)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let now = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(end.0 + 3600 * 1_000_000_000)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let queries = [
        (
            "events per service, 5-minute buckets, last hour",
            format!(
                "SELECT floor(extract(epoch from time)/300)*300 AS \"time\", service AS metric, count(*) AS events \
                 FROM events WHERE time BETWEEN '{hour_ago}' AND '{now}' GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        ),
        (
            "top 20 processes",
            "SELECT exe, count(*) AS starts FROM events WHERE kind = 'process_exec' \
             GROUP BY exe ORDER BY starts DESC LIMIT 20"
                .to_owned(),
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>14} {:>7}",
        "query", "best ms", "median ms", "worst ms", "rows scanned/s", "rows"
    );
    for (name, sql) in &queries {
        let mut times = Vec::new();
        let mut rows = 0;
        // One warm-up, then seven measured runs.
        for run in 0..8 {
            let scanned = table.rows();
            let out = rt.block_on(engine.query(sql)).expect("query runs");
            if run > 0 {
                times.push((out.elapsed, scanned));
            }
            rows = out.rows();
        }
        times.sort();
        let (best, median, worst) = (
            times[0].0,
            times[times.len() / 2].0,
            times[times.len() - 1].0,
        );
        let rate = times[times.len() / 2].1 as f64 / median.as_secs_f64();
        println!(
            "{:<48} {:>9.1} {:>9.1} {:>9.1} {:>14.0} {:>7}",
            name,
            best.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3,
            rate,
            rows
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    println!(
        "ingest meanwhile: {} events appended in {:.1} s ({:.0} events/s)",
        ingested.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        ingested.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
    );
}
