//! Detection throughput, side by side in one run over the same records:
//!
//! - **decode only**: native records decoded into events;
//! - **decode + detect**: the same, each event through the detector (baselines,
//!   lifecycle, alerts);
//!
//! then the detector's memory per 1,000 services (resident set growth while it built
//! its state) and the time to snapshot and restore that state through JSON, as the
//! state file does.
//!
//! `cargo bench -p detect --bench detect` (`-- --events N --services M` to change sizes).

use std::time::{Duration, Instant};

use detect::{DetectConfig, Detector};
use ingest::{DecodeLimits, Decoder, Format, Provenance, ServiceKeyer};

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Native records for `services` services over two hours of event time: the first hour
/// is learning, the second monitoring, with rare drift mixed in.
fn records(n: usize, services: usize) -> Vec<String> {
    let mut rng = Rng(42);
    let start: i64 = 1_772_445_600_000_000_000;
    let span: i64 = 2 * 3600 * 1_000_000_000;
    (0..n)
        .map(|i| {
            let time = start + (i as i64) * (span / n as i64);
            let s = rng.next() as usize % services;
            let r = rng.next();
            let service = format!("ns{}/svc{s}", s % 20);
            let kind = match r % 10 {
                0..=3 => {
                    let exe = ["/usr/local/bin/python3.12", "/app/server", "/usr/bin/convert", "/bin/busybox"][(r >> 8) as usize % 4];
                    let exe = if r % 50_000 == 7 { "/bin/sh" } else { exe };
                    format!(r#""kind":"process_exec","process":{{"exe":"{exe}","args":["--job","{}","/tmp/in-{:08x}.png"],"parent_exe":"/app/server","pid":{},"uid":1000}}"#, r % 10_000, r >> 20, r % 30_000)
                }
                4..=6 => format!(r#""kind":"file_access","op":"write","path":"/tmp/upload-{:08x}","process":{{"exe":"/app/server"}}"#, r >> 16),
                7 | 8 => {
                    let port = [5432, 6379, 8080][(r >> 8) as usize % 3];
                    format!(r#""kind":"network","direction":"connect","address":"10.96.{}.{}","port":{port},"protocol":"tcp","process":{{"exe":"/app/server"}}"#, s % 200, (r >> 12) % 4)
                }
                _ => format!(r#""kind":"file_access","op":"read","path":"/etc/app/config-{}.yaml","process":{{"exe":"/app/server"}}"#, r % 3),
            };
            format!(r#"{{"time":{time},"service":"{service}","workload":{{"namespace":"ns{}","pod":"svc{s}-6d9f7c8b5-x2x7q"}},{kind}}}"#, s % 20)
        })
        .collect()
}

fn decoder() -> Decoder {
    let limits = DecodeLimits {
        max_future_skew: Duration::from_secs(u32::MAX as u64),
        ..DecodeLimits::default()
    };
    Decoder::new(limits, ServiceKeyer::default())
}

fn run(records: &[String], detector: Option<&mut Detector>) -> (Duration, usize) {
    let mut decoder = decoder();
    let provenance = Provenance::kafka("bench", 0, 0);
    let mut events = Vec::with_capacity(1_000);
    let mut raised = Vec::new();
    let mut detector = detector;
    let start = Instant::now();
    for chunk in records.chunks(1_000) {
        for r in chunk {
            decoder
                .decode(Format::Native, r.as_bytes(), &provenance, &mut events)
                .unwrap();
        }
        if let Some(d) = detector.as_deref_mut() {
            for e in &events {
                d.observe(e, &mut raised);
            }
        }
        std::hint::black_box(&events);
        events.clear();
    }
    (start.elapsed(), raised.len())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().unwrap())
    };
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let (n, services) = (arg("--events", 1_000_000), arg("--services", 1_000));
    println!(
        "detection benchmark: {n} native events, {services} services, 2 h of event time (1 h learning)"
    );
    let records = records(n, services);
    let bytes: usize = records.iter().map(String::len).sum();

    let decode = (0..3).map(|_| run(&records, None).0).min().unwrap();
    let mut best = None;
    let mut memory = 0;
    let mut alerts = 0;
    let mut kept = None;
    for _ in 0..3 {
        let before = rss_kib();
        let mut detector = Detector::new(DetectConfig::default());
        let (d, raised) = run(&records, Some(&mut detector));
        memory = rss_kib().saturating_sub(before).max(memory);
        alerts = raised;
        best = Some(best.map_or(d, |b: Duration| b.min(d)));
        kept = Some(detector);
    }
    let detect = best.unwrap();
    let detector = kept.unwrap();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "{:<24} {:>12} {:>10} {:>8}",
        "stage", "events/s", "MiB/s", "ratio"
    );
    let mib = |d: Duration| bytes as f64 / d.as_secs_f64() / (1024.0 * 1024.0);
    println!(
        "{:<24} {:>12.0} {:>10.1} {:>8.2}",
        "decode only",
        rate(decode),
        mib(decode),
        1.0
    );
    println!(
        "{:<24} {:>12.0} {:>10.1} {:>8.2}",
        "decode + detect",
        rate(detect),
        mib(detect),
        decode.as_secs_f64() / detect.as_secs_f64()
    );
    let entries: usize = detector.services().map(|(_, s)| s.baseline.len()).sum();
    println!("alerts raised: {alerts}; baseline entries: {entries}");
    println!(
        "detector memory: {:.1} MiB resident growth, {:.1} MiB per 1,000 services",
        memory as f64 / 1024.0,
        memory as f64 / 1024.0 / (services as f64 / 1000.0)
    );

    let start = Instant::now();
    let text = serde_json::to_vec(&detector.snapshot()).unwrap();
    let snapshot = start.elapsed();
    let start = Instant::now();
    let restored = Detector::restore(
        DetectConfig::default(),
        serde_json::from_slice(&text).unwrap(),
    )
    .unwrap();
    let restore = start.elapsed();
    assert_eq!(restored.services().count(), detector.services().count());
    println!(
        "state: {:.1} MiB of JSON; snapshot {:.0} ms, restore {:.0} ms",
        text.len() as f64 / (1024.0 * 1024.0),
        snapshot.as_secs_f64() * 1e3,
        restore.as_secs_f64() * 1e3
    );
}
