//! The `driftwatch` command line. Everything it runs lives in the library beside it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use driftwatch::config::{self, Config};
use driftwatch::{daemon, demo, replay, supervisor, telemetry};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "driftwatch",
    version,
    about = "Learns how container services behave and explains drift."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon against real Kafka brokers.
    Run {
        /// The configuration file (see driftwatch.example.toml).
        #[arg(long, short)]
        config: PathBuf,
        /// The stages to run: with `[kafka] repartition-topic`, `decode` (raw topics to
        /// events keyed by service) and `detect` (the rest) can run apart.
        #[arg(long, value_enum, default_value = "all")]
        role: daemon::Role,
    },
    /// Run the pipeline over JSON-lines files, driven by event time.
    Replay {
        /// Input files; `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The records' format, or `auto` to detect each record's format.
        #[arg(long, short, default_value = "auto")]
        format: ingest::Format,
        /// Where alerts and findings go as JSON lines; `-` is standard output.
        #[arg(long, short, default_value = "-")]
        output: PathBuf,
        /// Where undecodable records go, as JSON lines with their error.
        #[arg(long, default_value = "dead-letter.jsonl")]
        dead_letter: PathBuf,
        /// A configuration file for the ingest, service-key and store settings.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Never draw a progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Also write a compliance report over the replay: `.json`, `.csv` or `.html`.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Start an embedded Kafka-protocol broker, a simulated shop and the daemon.
    Demo {
        /// Stop after this long (`30s`, `5m`); without it, run until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Records the simulator publishes per second.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        /// Seconds of event time per wall-clock second.
        #[arg(long, default_value_t = 60)]
        speed: u64,
        /// Broken records per thousand, to show dead-lettering.
        #[arg(long, default_value_t = 2)]
        bad_per_thousand: u64,
        /// Where the HTTP API and `/metrics` listen.
        #[arg(long, default_value_t = config::default_http_listen())]
        http: std::net::SocketAddr,
        /// Where the PostgreSQL wire server listens.
        #[arg(long, default_value_t = queries::pg::PgConfig::default().listen)]
        postgres: std::net::SocketAddr,
        /// How often progress is printed.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        report_every: Duration,
        /// Where compliance reports are written (HTML, JSON, CSV and an index).
        #[arg(long, default_value = "driftwatch-demo-reports")]
        reports: PathBuf,
        /// Also deliver alerts and failing findings to this URL (a JSON webhook, e.g.
        /// http://127.0.0.1:9000/hook); its outbox lives in the reports folder.
        #[arg(long)]
        webhook: Option<String>,
    },
    /// A compliance report made now by a running daemon (through its HTTP API).
    Report {
        /// Frameworks, comma-separated (pci-dss, cis-docker, cis-kubernetes, nist-800-190,
        /// nist-800-53); every framework when absent.
        #[arg(long)]
        framework: Option<String>,
        /// Service patterns, comma-separated, with `*` wildcards.
        #[arg(long)]
        service: Option<String>,
        /// The period: a duration back from now (`7d`, `24h`) or an RFC 3339 start.
        #[arg(long, default_value = "7d")]
        since: String,
        /// `html`, `json` or `csv`.
        #[arg(long, default_value = "html")]
        format: String,
        /// Where the report goes; standard output when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The daemon's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8484")]
        url: String,
        /// A bearer token with the viewer role or above.
        #[arg(long, env = "DRIFTWATCH_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Check a configuration file and print what it configures.
    CheckConfig { file: PathBuf },
    /// Mine log templates: one line in, `<template id>\t<template text>` out, per line.
    Templates {
        /// Raw messages, one per line; `-` reads standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Read `timestamp,value` CSV (with header) and write `timestamp,value,anomaly_score`
    /// per row, through the rate detector with its default configuration.
    AnomalyScores {
        /// The CSV file; `-` reads standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Search log lines in the log index, newest first.
    Search {
        /// Words to find (all of them); quote a phrase: '"connection refused"'.
        query: String,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Only lines from this long ago (`1h`, `30m`) or this time (RFC 3339) on.
        #[arg(long)]
        since: Option<String>,
        /// Only lines before this long ago or this time.
        #[arg(long)]
        until: Option<String>,
        /// Only lines of this log template.
        #[arg(long)]
        template: Option<u32>,
        /// At most this many lines.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The index directory (by default the one the config names).
        #[arg(long)]
        index: Option<PathBuf>,
        /// The daemon's configuration file, to find its index.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Baselines as code: export, import and compare baseline files.
    Baseline {
        #[command(subcommand)]
        action: BaselineAction,
    },
}

#[derive(Subcommand)]
enum BaselineAction {
    /// Write the baselines in the data directory's state file as a baseline file.
    Export {
        /// The daemon's `[state] data-dir`.
        #[arg(long)]
        data_dir: PathBuf,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Where to write; `-` is standard output.
        #[arg(long, short, default_value = "-")]
        output: PathBuf,
    },
    /// Add a baseline file's entries to the state file (stop the daemon first).
    Import {
        file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Show what a newer baseline file allows that an older one does not, and back.
    Diff { old: PathBuf, new: PathBuf },
    /// Forget a service's baseline so it learns again (stop the daemon first).
    Relearn {
        #[arg(long)]
        service: String,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Stop all learning for a service (stop the daemon first).
    Lock {
        #[arg(long)]
        service: String,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Accept an alert's subject into its service's baseline (stop the daemon first).
    Accept {
        /// The alert's id.
        alert: String,
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, role } => run(config, role).await,
        Command::Replay {
            files,
            format,
            output,
            dead_letter,
            config,
            no_progress,
            report,
        } => {
            replay::replay(replay::Args {
                files,
                format,
                output,
                dead_letter,
                config,
                no_progress,
                report,
            })
            .await
        }
        Command::Report {
            framework,
            service,
            since,
            format,
            output,
            url,
            token,
        } => {
            let Some(format) = compliance::ReportFormat::parse(&format) else {
                eprintln!("error: --format takes html, json or csv, not {format:?}");
                return ExitCode::from(2);
            };
            let fetched = driftwatch::reports::fetch(
                &url,
                token.as_deref(),
                framework.as_deref(),
                service.as_deref(),
                &since,
                format,
            )
            .await;
            fetched.and_then(|body| match &output {
                Some(path) => std::fs::write(path, body)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display())),
                None => {
                    print!("{body}");
                    Ok(())
                }
            })
        }
        Command::Demo {
            duration,
            rate,
            speed,
            bad_per_thousand,
            http,
            postgres,
            report_every,
            reports,
            webhook,
        } => {
            demo::demo(demo::Args {
                duration,
                rate,
                speed,
                bad_per_thousand,
                http,
                postgres,
                report_every,
                reports,
                webhook,
            })
            .await
        }
        Command::CheckConfig { file } => check_config(file),
        Command::Baseline { action } => baseline(action),
        Command::Templates { file } => templates(file),
        Command::AnomalyScores { file } => anomaly_scores(file),
        Command::Search {
            query,
            service,
            since,
            until,
            template,
            limit,
            index,
            config,
            json,
        } => (|| {
            search(
                queries::search::SearchQuery {
                    text: query,
                    service,
                    since: since.as_deref().map(when).transpose()?,
                    until: until.as_deref().map(when).transpose()?,
                    template_id: template,
                    limit,
                },
                index,
                config,
                json,
            )
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("driftwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: PathBuf, role: daemon::Role) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    telemetry::init_logging(&config.log);
    let kafka = config.kafka.clone().ok_or_else(|| {
        anyhow::anyhow!("{} has no [kafka] section; `run` needs one", path.display())
    })?;
    let mut sup = supervisor::Supervisor::new();
    sup.cancel_on_signals();
    // Only the data directory's lock is kept for the whole run.
    if role == daemon::Role::Decode {
        if let Err(e) = daemon::start_decode(&config, kafka, &mut sup).await {
            sup.cancel.cancel();
            let _ = sup.wait().await;
            return Err(e);
        }
        return sup.wait().await;
    }
    let _lock = match daemon::start(&config, kafka, &mut sup, false, role).await {
        Ok(mut d) => d.data_dir_lock.take(),
        Err(e) => {
            sup.cancel.cancel();
            let _ = sup.wait().await;
            return Err(e);
        }
    };
    sup.wait().await
}

fn baseline(action: BaselineAction) -> anyhow::Result<()> {
    use driftwatch::baseline;
    match action {
        BaselineAction::Export {
            data_dir,
            service,
            output,
        } => {
            let file = baseline::export(&data_dir, service.as_deref())?;
            if output.as_os_str() == "-" {
                baseline::write(&file, &mut std::io::stdout().lock())
            } else {
                let mut out = std::fs::File::create(&output)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", output.display()))?;
                baseline::write(&file, &mut out)
            }
        }
        BaselineAction::Import { file, data_dir } => {
            let added = baseline::import(&data_dir, &baseline::read(&file)?)?;
            println!(
                "imported {added} new baseline entries from {}",
                file.display()
            );
            Ok(())
        }
        BaselineAction::Relearn { service, data_dir } => {
            println!(
                "{}",
                baseline::control(&data_dir, &baseline::BaselineChange::Relearn(service))?
            );
            Ok(())
        }
        BaselineAction::Lock { service, data_dir } => {
            println!(
                "{}",
                baseline::control(&data_dir, &baseline::BaselineChange::Lock(service))?
            );
            Ok(())
        }
        BaselineAction::Accept { alert, data_dir } => {
            println!(
                "{}",
                baseline::control(&data_dir, &baseline::BaselineChange::Accept(alert))?
            );
            Ok(())
        }
        BaselineAction::Diff { old, new } => {
            let lines = baseline::diff(&baseline::read(&old)?, &baseline::read(&new)?);
            if lines.is_empty() {
                println!("no differences");
            }
            for line in lines {
                println!("{line}");
            }
            Ok(())
        }
    }
}

/// Every line through one miner with the default configuration; the output names each
/// line's template in its final form (templates generalise as lines arrive).
fn templates(path: PathBuf) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let input = input(&path)?;
    let mut miner = detect::templates::Miner::default();
    let mut ids = Vec::new();
    for line in input.split(b'\n') {
        let line = line.map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let line = String::from_utf8_lossy(&line);
        let line = ingest::truncate_line(
            line.trim_end_matches('\r'),
            ingest::decode::DEFAULT_MAX_LOG_LINE_BYTES,
        );
        ids.push(miner.add(&line).id);
    }
    let texts: Vec<String> = miner.all_templates().iter().map(|t| t.text()).collect();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for id in ids {
        let id = miner.resolve(id);
        writeln!(out, "{id}\t{}", texts[id as usize])?;
    }
    out.flush()?;
    Ok(())
}

fn input(path: &PathBuf) -> anyhow::Result<Box<dyn std::io::BufRead>> {
    Ok(if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(
            |e| anyhow::anyhow!("cannot read {}: {e}", path.display()),
        )?))
    })
}

/// NAB's layout in and out: the header, then `timestamp,value` rows; each row gets the
/// score the rate detector gives it as it streams by.
fn anomaly_scores(path: PathBuf) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let mut detector = detect::anomaly::RateDetector::default();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut lines = input(&path)?.lines().enumerate();
    match lines.next() {
        Some((_, header)) => {
            let header = header?;
            let header = header.trim_end_matches('\r');
            if !header.starts_with("timestamp") {
                anyhow::bail!(
                    "{}: the first line must be the header `timestamp,value`, not {header:?}",
                    path.display()
                );
            }
            writeln!(out, "{header},anomaly_score")?;
        }
        None => anyhow::bail!("{}: empty input", path.display()),
    }
    for (n, line) in lines {
        let line = line?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (t, v) = detect::anomaly::parse_nab_row(line).ok_or_else(|| {
            anyhow::anyhow!(
                "{} line {}: expected `YYYY-MM-DD HH:MM:SS,value`, found {line:?}",
                path.display(),
                n + 1
            )
        })?;
        let score = detector.update(t, v);
        writeln!(out, "{line},{score}")?;
    }
    out.flush()?;
    Ok(())
}

/// `1h` (that long ago) or an RFC 3339 time.
fn when(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(chrono::Utc::now() - chrono::Duration::from_std(d)?);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| anyhow::anyhow!("{text:?} is neither a duration (`1h`) nor an RFC 3339 time"))
}

fn search(
    query: queries::search::SearchQuery,
    index: Option<PathBuf>,
    config: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = match (index, config) {
        (Some(dir), _) => dir,
        (None, Some(path)) => Config::load(&path)?.index_dir().ok_or_else(|| {
            anyhow::anyhow!(
                "{} has no [state] data-dir nor [search] index-dir: its index lives in memory",
                path.display()
            )
        })?,
        (None, None) => anyhow::bail!("say where the index is: --index DIR or --config FILE"),
    };
    let index = queries::search::LogIndex::open_read_only(&dir)?;
    let hits = index.search(&query)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for h in &hits {
        let time = h.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        if json {
            let line = serde_json::json!({
                "time": time,
                "service": h.service,
                "container": h.container,
                "stream": h.stream,
                "template_id": h.template_id,
                "line": h.line,
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{time} {} {} #{} {}",
                h.service, h.stream, h.template_id, h.line
            )?;
        }
    }
    out.flush()?;
    if hits.is_empty() {
        eprintln!("no matching lines");
    }
    Ok(())
}

fn check_config(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let schedules = config.reports.schedules()?;
    config.notify.validate().map_err(anyhow::Error::msg)?;
    println!("{}: OK", path.display());
    match &config.kafka {
        Some(k) => {
            println!(
                "  kafka: {} (group {}), dead letters to {}",
                k.brokers, k.group_id, k.dead_letter_topic
            );
            for t in &k.topics {
                println!("    topic {} as {}", t.name, t.format);
            }
        }
        None => println!("  kafka: not configured (replay only)"),
    }
    println!(
        "  store: retention {}, at most {} bytes, partitions of {}",
        humantime::format_duration(config.store.retention),
        config.store.max_bytes.0,
        humantime::format_duration(config.store.partition)
    );
    println!("  http: {}", config.http.listen);
    for s in &schedules {
        println!(
            "  report {}: cron {:?}, period {}, into {}",
            s.name,
            s.cron.pattern.to_string(),
            humantime::format_duration(s.period),
            config.reports.dir.display()
        );
    }
    Ok(())
}
