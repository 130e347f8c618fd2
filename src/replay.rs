//! `driftwatch replay`: the pipeline over JSON-lines files, driven by event time.
//! Alerts and findings are written as JSON lines; a summary of counts goes to stderr.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use detect::Detector;
use indicatif::{ProgressBar, ProgressStyle};
use ingest::{DeadLetterSink, Format, IngestStats, Nanos, ReplaySource};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::decoder;
use crate::telemetry;

pub struct Args {
    pub files: Vec<PathBuf>,
    pub format: Format,
    pub output: PathBuf,
    pub dead_letter: PathBuf,
    pub config: Option<PathBuf>,
    pub no_progress: bool,
    /// A compliance report over the whole replay, in the format its extension names.
    pub report: Option<PathBuf>,
}

/// Batches between the reader and the pipeline: enough to overlap decoding and appending.
const CHANNEL_BATCHES: usize = 4;

pub async fn replay(args: Args) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => {
            let mut c = Config::parse("")?;
            // A replay's output is its summary; routine logs would only clutter it.
            c.log.level = "warn".to_owned();
            c
        }
    };
    telemetry::init_logging(&config.log);

    // Alerts and findings go here as JSON lines, one object per line.
    let mut output: Box<dyn Write + Send> = if args.output.as_os_str() == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&args.output)
                .with_context(|| format!("cannot create {}", args.output.display()))?,
        ))
    };

    let mut registry = telemetry::registry();
    // The workers (compliance, log indexer) run under a supervisor, as in the daemon: a
    // worker that panics fails the replay rather than leaving its part silently out.
    let mut sup = crate::supervisor::Supervisor::new();
    // Delivery only when the configuration names sinks (a backfill that should page).
    let (stages, owner) = crate::wiring::build(
        &config,
        Detector::new(config.detect.clone()),
        &mut registry,
        crate::wiring::Mode {
            print: false,
            wall_clock: false,
        },
        None,
        &mut sup,
    )?;
    let source = ReplaySource::new(args.files.clone(), args.format);
    let progress = progress_bar(&args);
    let read = source.progress.clone();
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let cancel = CancellationToken::new();
    let dead_letters = DeadLetterSink::file(&args.dead_letter);
    let decoder = decoder(&config);
    let reader = tokio::spawn({
        let cancel = cancel.clone();
        async move { source.run(decoder, dead_letters, tx, cancel).await }
    });
    let totals = pipeline::Totals::default();
    let ticker = progress.clone().map(|bar| {
        tokio::spawn(async move {
            loop {
                bar.set_position(read.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    // A full outbox raises an alert about driftwatch itself, as in the daemon.
    let watching = CancellationToken::new();
    let watcher = tokio::spawn({
        let (stages, watching) = (stages.clone(), watching.clone());
        async move { stages.watch_outbox(watching).await }
    });
    let applying = std::time::Instant::now();
    let applied = stages.apply_all(owner, rx, &totals, None).await;
    let applied_in = applying.elapsed();
    let read_result = reader.await.context("the replay reader panicked")?;
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    read_result?;
    applied?;
    if let Some(indexer) = &stages.log_index {
        indexer.flush().await;
    }
    // Alerts as JSON lines, oldest first, in their final state (repeats counted in).
    let alert_count = {
        let view = stages.views.load();
        for alert in view.alerts() {
            let mut line =
                serde_json::to_value(alert.as_ref()).context("cannot serialize an alert")?;
            line.as_object_mut()
                .expect("alerts are objects")
                .insert("type".into(), "alert".into());
            serde_json::to_writer(&mut output, &line).context("cannot write the output")?;
            output.write_all(b"\n").context("cannot write the output")?;
        }
        view.alert_count()
    };
    // Findings after them, in the order the controls ran.
    let mut findings = 0;
    if let Some(c) = &stages.compliance {
        c.flush().await;
        let view = c.view();
        for f in &view.findings {
            let mut line =
                serde_json::to_value(f.as_ref()).context("cannot serialize a finding")?;
            line.as_object_mut()
                .expect("findings are objects")
                .insert("type".into(), "finding".into());
            serde_json::to_writer(&mut output, &line).context("cannot write the output")?;
            output.write_all(b"\n").context("cannot write the output")?;
        }
        findings = view.findings.len();
        let (reused, evaluated) = view.control_runs;
        eprintln!("  control runs: {evaluated} evaluated, {reused} reused");
    }
    let mut reports = Vec::new();
    if let (Some(r), Some(c)) = (&stages.reports, &stages.compliance) {
        r.tick(c).await;
        r.finish().await;
        reports = r.written();
    }
    if let Some(path) = &args.report {
        let c = stages
            .compliance
            .as_ref()
            .context("--report needs compliance checks ([compliance] enabled = true)")?;
        let format = path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(compliance::ReportFormat::parse)
            .context("--report: name a .json, .csv or .html file")?;
        // The period the replay's checks cover.
        let (start, end) = {
            let view = c.view();
            let times = view
                .findings
                .iter()
                .map(|f| f.time)
                .chain(view.posture().flat_map(|p| [p.since, p.last_checked]));
            times.fold(None, |acc: Option<(Nanos, Nanos)>, t| {
                Some(acc.map_or((t, t), |(a, b)| (a.min(t), b.max(t))))
            })
        }
        .unwrap_or((Nanos::now(), Nanos::now()));
        let request = compliance::report::Request {
            name: "replay",
            frameworks: &[],
            services: &[],
            start,
            end,
            generated_at: end,
            link_base: None,
        };
        let r = c.report(&request, None).await;
        std::fs::write(path, format.render(&r))
            .with_context(|| format!("cannot write {}", path.display()))?;
        reports.push(path.clone());
    }
    output.flush().context("cannot write the output")?;

    let totals = totals.load();
    eprint!("{}", summary(&totals, stages.events.rows(), &args));
    eprintln!(
        "  pipeline: {:.3} s, {:.0} events/s",
        applied_in.as_secs_f64(),
        totals.events() as f64 / applied_in.as_secs_f64().max(1e-9)
    );
    eprintln!("  alerts: {alert_count}");
    eprintln!("  findings: {findings}");
    for p in reports {
        eprintln!("  report: {}", p.display());
    }
    if let Some(n) = &stages.notifier {
        let drained = n.drain(Duration::from_secs(60)).await;
        let statuses = n.statuses();
        let count = |state: &str| statuses.iter().filter(|s| s.state == state).count();
        eprintln!(
            "  notifications: {} delivered, {} failed, {} pending{}",
            count("delivered"),
            count("failed"),
            count("pending"),
            if drained { "" } else { " (left in the outbox)" }
        );
    }
    watching.cancel();
    watcher.await.context("the outbox watcher panicked")?;
    // Everything is read and written: the workers' end is expected now, and one that
    // failed before it fails the replay.
    sup.cancel.cancel();
    sup.wait().await.context("a replay worker failed")
}

fn progress_bar(args: &Args) -> Option<ProgressBar> {
    if args.no_progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let total: u64 = args
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})")
            .expect("valid template"),
    );
    Some(bar)
}

/// The summary printed on stderr after a replay.
fn summary(totals: &IngestStats, rows: usize, args: &Args) -> String {
    let mut s = format!(
        "replayed {} records from {} file(s): {} events, {} ignored, {} dead-lettered\n",
        totals.records(),
        args.files.len(),
        totals.events(),
        totals.ignored_records(),
        totals.dead_letters()
    );
    for (source, n) in &totals.decoded {
        s += &format!("  events from {source}: {n}\n");
    }
    for ((source, why), n) in &totals.ignored {
        s += &format!("  ignored {source} records ({why}): {n}\n");
    }
    for ((format, reason), n) in &totals.dead_lettered {
        s += &format!("  dead-lettered {format} records ({reason}): {n}\n");
    }
    if totals.dead_letters() > 0 {
        s += &format!("  dead letters written to {}\n", args.dead_letter.display());
    }
    s += &format!("  events table: {rows} rows\n");
    s
}
