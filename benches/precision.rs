//! Precision of drift detection on a churning workload: the simulated shop (six
//! services, in the sensors' own formats) runs a day after its hour of learning, with
//! temp files of several runtimes, object-storage and CDN addresses rotating within the
//! providers' ranges, a cleanup job every ten minutes, pods rescheduled and images rolled
//! out, and the six attacks injected every three hours. For each seed it prints:
//!
//! - **recall**: attacks alerted above low on their own service within three minutes of
//!   event time;
//! - **noise**: alerts above low that no attack explains, per service-hour of monitoring;
//! - **precision**: of the alerts above low, the share an attack explains;
//! - the low alerts (baselines still growing) and info alerts (image grace periods) the
//!   day raised, which page nobody.
//!
//! `cargo bench --bench precision` (`-- --hours H --seeds N --rate R` to change it).

use std::time::Instant;

use detect::{Alert, AlertKind, Severity};
use ingest::Nanos;
use simulator::{ATTACKS, DetectionRun};

const HOUR: i64 = 3600 * 1_000_000_000;

fn run(seed: u64, hours: i64, rate: u64) -> (DetectionRun, f64) {
    let start = Nanos(1_772_445_600_000_000_000);
    let began = Instant::now();
    let run = simulator::detect(
        seed,
        start,
        Nanos(start.0 + (hours + 1) * HOUR),
        rate,
        Nanos(start.0 + 2 * HOUR),
    );
    (run, began.elapsed().as_secs_f64())
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let hours = arg("--hours", 24) as i64;
    let seeds = arg("--seeds", 3);
    let rate = arg("--rate", 200);
    println!(
        "precision benchmark: the simulated shop with churn, {hours} h after 1 h of learning, {} attacks every 3 h, {rate} records/s at 60x",
        ATTACKS.len()
    );
    println!(
        "{:>6} {:>9} {:>8} {:>8} {:>22} {:>10} {:>6} {:>6} {:>8}",
        "seed",
        "records",
        "recall",
        "noise",
        "per service-hour",
        "precision",
        "low",
        "info",
        "seconds"
    );
    let (mut caught_all, mut attacks_all, mut noise_all, mut above_all) = (0, 0, 0, 0);
    for seed in 1..=seeds {
        let (o, seconds) = run(seed * 7919, hours, rate);
        let explained = |a: &Alert| o.injected.iter().find(|i| i.explains(&a.service, a.time));
        let above: Vec<&Alert> = o
            .alerts
            .iter()
            .filter(|a| a.severity > Severity::Low)
            .collect();
        let noise: Vec<&&Alert> = above.iter().filter(|a| explained(a).is_none()).collect();
        let caught = o
            .injected
            .iter()
            .filter(|i| {
                above
                    .iter()
                    .any(|a| explained(a).is_some_and(|hit| hit == *i))
            })
            .count();
        let low = o
            .alerts
            .iter()
            .filter(|a| a.severity == Severity::Low)
            .count();
        let info = o
            .alerts
            .iter()
            .filter(|a| a.severity == Severity::Info)
            .count();
        let service_hours = o.detector.services().count() as f64 * hours as f64;
        let precision = if above.is_empty() {
            1.0
        } else {
            (above.len() - noise.len()) as f64 / above.len() as f64
        };
        println!(
            "{:>6} {:>9} {:>4}/{:<3} {:>8} {:>22.3} {:>10.3} {:>6} {:>6} {:>8.1}",
            seed * 7919,
            o.records,
            caught,
            o.injected.len(),
            noise.len(),
            noise.len() as f64 / service_hours,
            precision,
            low,
            info,
            seconds
        );
        let lows: Vec<&Alert> = o
            .alerts
            .iter()
            .filter(|a| a.severity == Severity::Low)
            .collect();
        let (mut growth, mut kin, mut rate) = (0, 0, 0);
        let mut other: Vec<String> = Vec::new();
        for a in &lows {
            if a.explanation.starts_with("Baseline still growing") {
                growth += 1;
            } else if a.explanation.contains(", but of the ") {
                kin += 1;
            } else if a.kind == AlertKind::Rate {
                rate += 1;
            } else {
                other.push(format!("{:?} {}", a.kind, a.subject));
            }
        }
        println!(
            "       low: {growth} baseline still growing, {kin} kin to what was learned, {rate} rate, {} other",
            other.len()
        );
        other.sort();
        other.dedup();
        for o in other.iter().take(3) {
            println!("       other low: {o}");
        }
        for a in noise.iter().take(5) {
            println!("       noise: {:?} {} {}", a.severity, a.service, a.subject);
        }
        caught_all += caught;
        attacks_all += o.injected.len();
        noise_all += noise.len();
        above_all += above.len();
    }
    println!(
        "all seeds: recall {caught_all}/{attacks_all} = {:.3}, precision {:.3}, {} alerts above low that no attack explains",
        caught_all as f64 / attacks_all.max(1) as f64,
        if above_all == 0 {
            1.0
        } else {
            (above_all - noise_all) as f64 / above_all as f64
        },
        noise_all
    );
}
