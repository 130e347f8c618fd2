//! Report schedules (`[reports]`): cron schedules fire as the clock passes them; each
//! report is written as JSON, CSV and HTML to the reports folder ([`crate::folder`]),
//! and the JSON goes to the schedule's webhook when it has one.
//!
//! The clock is event time (the newest event the pipeline applied); a daemon also lets
//! the wall clock move it, so that reports come while no events arrive. The webhook is
//! the caller's: this crate never speaks HTTP ([`PostReport`]).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest::Nanos;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::catalog::Framework;
use crate::error::ReportError;
use crate::folder;
use crate::report::{Report, Request};
use crate::worker::Compliance;

/// Returns a configuration error unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(ReportError::Config(format!($($fmt)+)));
        }
    };
}

/// Report settings (`[reports]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReportsConfig {
    /// Where reports and their index are written.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// The API's address as analysts reach it, for evidence links in reports.
    #[serde(default)]
    pub link_base: Option<String>,
    #[serde(default, rename = "schedule")]
    pub schedules: Vec<ScheduleConfig>,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            dir: default_dir(),
            link_base: None,
            schedules: Vec::new(),
        }
    }
}

fn default_dir() -> PathBuf {
    PathBuf::from("reports")
}

/// One schedule (`[[reports.schedule]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScheduleConfig {
    /// Names the report files (letters, digits, `-` and `_`).
    pub name: String,
    /// Five fields (minute hour day-of-month month day-of-week), or six with seconds.
    pub cron: String,
    /// Framework names (`pci-dss`, `cis-docker`, …); empty: every framework.
    #[serde(default)]
    pub frameworks: Vec<String>,
    /// Service patterns with `*` wildcards; empty: every service.
    #[serde(default)]
    pub services: Vec<String>,
    /// How far back from the scheduled time a report looks.
    #[serde(with = "humantime_serde", default = "default_period")]
    pub period: Duration,
    #[serde(default = "all_formats")]
    pub formats: Vec<ReportFormat>,
    /// Where the JSON report is posted (`http://` or `https://`).
    #[serde(default)]
    pub webhook: Option<String>,
}

fn default_period() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn all_formats() -> Vec<ReportFormat> {
    vec![ReportFormat::Json, ReportFormat::Csv, ReportFormat::Html]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    Json,
    Csv,
    Html,
}

impl ReportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ReportFormat::Json => "json",
            ReportFormat::Csv => "csv",
            ReportFormat::Html => "html",
        }
    }

    pub fn parse(s: &str) -> Option<ReportFormat> {
        [ReportFormat::Json, ReportFormat::Csv, ReportFormat::Html]
            .into_iter()
            .find(|f| f.extension() == s)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ReportFormat::Json => "application/json",
            ReportFormat::Csv => "text/csv; charset=utf-8",
            ReportFormat::Html => "text/html; charset=utf-8",
        }
    }

    /// The report in this format.
    pub fn render(self, r: &Report) -> String {
        match self {
            ReportFormat::Json => {
                serde_json::to_string_pretty(r).expect("reports serialize") + "\n"
            }
            ReportFormat::Csv => crate::report::to_csv(r),
            ReportFormat::Html => crate::report::to_html(r),
        }
    }
}

/// Parses framework names, saying which one is unknown.
pub fn parse_frameworks(names: &[String]) -> Result<Vec<Framework>, ReportError> {
    names
        .iter()
        .map(|n| {
            Framework::parse(n).ok_or_else(|| {
                ReportError::Config(format!(
                    "unknown framework {n:?} (known: {})",
                    Framework::ALL.map(Framework::as_str).join(", ")
                ))
            })
        })
        .collect()
}

impl ReportsConfig {
    /// The schedules, checked: names, cron expressions, frameworks, webhooks.
    pub fn schedules(&self) -> Result<Vec<Schedule>, ReportError> {
        let mut names = std::collections::HashSet::new();
        self.schedules
            .iter()
            .map(|s| {
                let name_ok = !s.name.is_empty()
                    && s.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                ensure!(
                    name_ok,
                    "report schedule name {:?}: use letters, digits, '-' and '_'",
                    s.name
                );
                ensure!(
                    names.insert(s.name.clone()),
                    "report schedule {:?} is defined twice",
                    s.name
                );
                ensure!(
                    !s.formats.is_empty(),
                    "report schedule {:?} has no format",
                    s.name
                );
                if let Some(w) = &s.webhook {
                    ensure!(
                        w.starts_with("http://") || w.starts_with("https://"),
                        "report schedule {:?}: webhook {w:?} is not an http(s) URL",
                        s.name
                    );
                }
                Ok(Schedule {
                    name: s.name.clone(),
                    cron: Schedule::parse_cron(&s.cron).map_err(|e| {
                        ReportError::Config(format!("report schedule {:?}: {e}", s.name))
                    })?,
                    frameworks: parse_frameworks(&s.frameworks).map_err(|e| {
                        ReportError::Config(format!("report schedule {:?}: {e}", s.name))
                    })?,
                    services: s.services.clone(),
                    period: s.period,
                })
            })
            .collect()
    }
}

/// A cron schedule of reports.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub cron: croner::Cron,
    pub frameworks: Vec<Framework>,
    pub services: Vec<String>,
    pub period: Duration,
}

impl Schedule {
    /// Parses a cron expression (five fields, or six with seconds first).
    pub fn parse_cron(expression: &str) -> Result<croner::Cron, String> {
        expression
            .parse::<croner::Cron>()
            .map_err(|e| format!("invalid cron expression {expression:?}: {e}"))
    }
}

/// Fires schedules when the clock it is given passes their next time.
pub struct Scheduler {
    schedules: Vec<Schedule>,
    next: Vec<Option<Nanos>>,
}

/// A schedule due: which one, and the time it was due (the end of its period).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub schedule: usize,
    pub at: Nanos,
}

fn to_chrono(t: Nanos) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_nanos(t.0)
}

impl Scheduler {
    pub fn new(schedules: Vec<Schedule>) -> Scheduler {
        let next = vec![None; schedules.len()];
        Scheduler { schedules, next }
    }

    pub fn schedules(&self) -> &[Schedule] {
        &self.schedules
    }

    /// Whether the clock was given once (the first call only learns the time).
    pub fn started(&self) -> bool {
        self.next.iter().any(Option::is_some) || self.schedules.is_empty()
    }

    /// Advances the clock to `now`: the schedules whose time came, once each (a clock
    /// that jumps over several of a schedule's times fires it once, for the latest).
    /// The first call only learns the time: nothing before it is due.
    pub fn due(&mut self, now: Nanos) -> Vec<Due> {
        let mut due = Vec::new();
        for (i, s) in self.schedules.iter().enumerate() {
            let next_after = |t: Nanos| {
                s.cron
                    .find_next_occurrence(&to_chrono(t), false)
                    .ok()
                    .and_then(|d| d.timestamp_nanos_opt())
                    .map(Nanos)
            };
            let Some(mut next) = self.next[i] else {
                self.next[i] = next_after(now);
                continue;
            };
            let mut fired = None;
            while next <= now {
                fired = Some(next);
                match next_after(next) {
                    Some(n) => next = n,
                    None => break,
                }
            }
            self.next[i] = Some(next);
            if let Some(at) = fired {
                due.push(Due { schedule: i, at });
            }
        }
        due
    }
}

/// Where a schedule's report goes when its webhook is set: the schedule's name, the
/// webhook's URL and the report as JSON. The future delivers it (retrying as it sees
/// fit) and never holds up the pipeline: it runs as a task of its own.
pub type PostReport =
    Arc<dyn Fn(String, String, Vec<u8>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Scheduled reports of one daemon or replay.
#[derive(Clone)]
pub struct Reports {
    inner: Arc<Inner>,
}

struct Inner {
    config: ReportsConfig,
    scheduler: tokio::sync::Mutex<Scheduler>,
    /// The newest event time applied.
    clock: AtomicI64,
    /// The oldest event time of the first batch: where the schedules start from.
    first: AtomicI64,
    /// Whether the wall clock moves the schedules too.
    wall_clock: bool,
    /// Print each report written on stdout (the demo does).
    print: bool,
    post: PostReport,
    written: Mutex<Vec<PathBuf>>,
    /// Webhook deliveries under way.
    deliveries: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// How one process runs its report schedules.
#[derive(Clone, Copy, Debug)]
pub struct ReportsMode {
    /// Whether the wall clock moves the schedules too (a daemon), or only event time
    /// (a replay).
    pub wall_clock: bool,
    /// Print each report written on stdout (the demo's view).
    pub print: bool,
}

impl Reports {
    /// `None` when no schedule is configured.
    pub fn start(
        config: &ReportsConfig,
        compliance: Option<&Compliance>,
        mode: ReportsMode,
        post: PostReport,
    ) -> Result<Option<Reports>, ReportError> {
        let schedules = config.schedules()?;
        if schedules.is_empty() {
            return Ok(None);
        }
        if compliance.is_none() {
            return Err(ReportError::NoCompliance);
        }
        Ok(Some(Reports {
            inner: Arc::new(Inner {
                config: config.clone(),
                scheduler: tokio::sync::Mutex::new(Scheduler::new(schedules)),
                clock: AtomicI64::new(i64::MIN),
                first: AtomicI64::new(i64::MIN),
                wall_clock: mode.wall_clock,
                print: mode.print,
                post,
                written: Mutex::new(Vec::new()),
                deliveries: Mutex::new(Vec::new()),
            }),
        }))
    }

    /// Moves the event clock over a batch's events.
    pub fn saw(&self, oldest: Nanos, newest: Nanos) {
        if oldest <= newest {
            let _ = self.inner.first.compare_exchange(
                i64::MIN,
                oldest.0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            self.inner.clock.fetch_max(newest.0, Ordering::Relaxed);
        }
    }

    /// Waits for webhook deliveries under way (each gives up after its last attempt).
    pub async fn finish(&self) {
        let pending: Vec<_> = self
            .inner
            .deliveries
            .lock()
            .expect("reports lock poisoned")
            .drain(..)
            .collect();
        for d in pending {
            let _ = d.await;
        }
    }

    /// Paths written so far.
    pub fn written(&self) -> Vec<PathBuf> {
        self.inner
            .written
            .lock()
            .expect("reports lock poisoned")
            .clone()
    }

    /// Writes the reports whose time came.
    pub async fn tick(&self, compliance: &Compliance) {
        let inner = &self.inner;
        let mut now = Nanos(inner.clock.load(Ordering::Relaxed));
        if inner.wall_clock {
            now = now.max(Nanos::now());
        }
        if now.0 == i64::MIN {
            return;
        }
        let mut scheduler = inner.scheduler.lock().await;
        if !scheduler.started() {
            // Schedules start from the first event seen, or from now.
            let first = Nanos(inner.first.load(Ordering::Relaxed));
            scheduler.due(if first.0 == i64::MIN {
                now
            } else {
                first.min(now)
            });
        }
        for due in scheduler.due(now) {
            let s = &scheduler.schedules()[due.schedule];
            let config = &inner.config.schedules[due.schedule];
            if let Err(e) = self.fire(compliance, s, config, due.at).await {
                warn!(schedule = %s.name, error = %ingest::chain(&e), "A compliance report could not be written.");
            }
        }
    }

    async fn fire(
        &self,
        compliance: &Compliance,
        s: &Schedule,
        config: &ScheduleConfig,
        at: Nanos,
    ) -> Result<(), ReportError> {
        let dir = self.inner.config.dir.clone();
        let start = at.saturating_add(-(s.period.as_nanos().min(i64::MAX as u128) as i64));
        let previous = {
            let (dir, name, before) = (dir.clone(), s.name.clone(), at.to_rfc3339());
            tokio::task::spawn_blocking(move || folder::previous(&dir, &name, &before))
                .await
                .map_err(ReportError::Panicked)?
        };
        let request = Request {
            name: &s.name,
            frameworks: &s.frameworks,
            services: &s.services,
            start,
            end: at,
            generated_at: at,
            link_base: self.inner.config.link_base.as_deref(),
        };
        let r = compliance.report(&request, previous.as_ref()).await;
        let written = {
            let (dir, r, formats) = (dir.clone(), r.clone(), config.formats.clone());
            tokio::task::spawn_blocking(move || folder::write(&dir, &r, at, &formats))
                .await
                .map_err(ReportError::Panicked)??
        };
        info!(schedule = %s.name, files = ?written, failing = r.summary.fail, empty = r.empty, "Compliance report written.");
        if self.inner.print {
            for p in &written {
                println!(
                    "REPORT {} ({} failing control × service)",
                    p.display(),
                    r.summary.fail
                );
            }
        }
        self.inner
            .written
            .lock()
            .expect("reports lock poisoned")
            .extend(written);
        if let Some(url) = &config.webhook {
            let body = serde_json::to_vec(&r).map_err(|source| ReportError::Serialize {
                what: "the report",
                source,
            })?;
            // Delivery never holds up the pipeline.
            let delivery = tokio::spawn((self.inner.post)(s.name.clone(), url.clone(), body));
            let mut deliveries = self.inner.deliveries.lock().expect("reports lock poisoned");
            deliveries.retain(|d| !d.is_finished());
            deliveries.push(delivery);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_checked() {
        let parse = |s: &str| -> Result<Vec<Schedule>, String> {
            let c: ReportsConfig = toml::from_str(s).map_err(|e| e.to_string())?;
            c.schedules().map_err(|e| e.to_string())
        };
        let ok = parse(
            "[[schedule]]\nname = \"weekly-pci\"\ncron = \"0 6 * * MON\"\nframeworks = [\"pci-dss\"]\nperiod = \"7d\"\n",
        )
        .unwrap();
        assert_eq!(ok[0].frameworks, vec![Framework::PciDss]);
        for (bad, says) in [
            ("name = \"a\"\ncron = \"0 6 * *\"", "cron"),
            (
                "name = \"a\"\ncron = \"0 6 * * *\"\nframeworks = [\"sox\"]",
                "unknown framework \"sox\"",
            ),
            ("name = \"a/b\"\ncron = \"0 6 * * *\"", "letters"),
            (
                "name = \"a\"\ncron = \"0 6 * * *\"\nwebhook = \"ftp://x\"",
                "http",
            ),
            (
                "name = \"a\"\ncron = \"0 6 * * *\"\nformats = [\"pdf\"]",
                "pdf",
            ),
        ] {
            let err = parse(&format!("[[schedule]]\n{bad}\n")).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    fn at(s: &str) -> Nanos {
        Nanos(
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap(),
        )
    }

    #[test]
    fn schedules_fire_on_time_as_event_time_passes() {
        let hourly = Schedule {
            name: "hourly".into(),
            cron: Schedule::parse_cron("0 * * * *").unwrap(),
            frameworks: vec![],
            services: vec![],
            period: Duration::from_secs(3600),
        };
        let daily = Schedule {
            name: "daily".into(),
            cron: Schedule::parse_cron("30 6 * * *").unwrap(),
            ..hourly.clone()
        };
        let mut s = Scheduler::new(vec![hourly, daily]);
        assert!(
            s.due(at("2026-03-02T05:10:00Z")).is_empty(),
            "the first tick only learns the time"
        );
        assert!(s.due(at("2026-03-02T05:59:59.999Z")).is_empty());
        assert_eq!(
            s.due(at("2026-03-02T06:00:00Z")),
            vec![Due {
                schedule: 0,
                at: at("2026-03-02T06:00:00Z")
            }]
        );
        assert!(
            s.due(at("2026-03-02T06:00:01Z")).is_empty(),
            "once per time"
        );
        assert_eq!(
            s.due(at("2026-03-02T06:30:00Z")),
            vec![Due {
                schedule: 1,
                at: at("2026-03-02T06:30:00Z")
            }]
        );
        // A jump over three hourly times fires once, for the latest.
        assert_eq!(
            s.due(at("2026-03-02T09:15:00Z")),
            vec![Due {
                schedule: 0,
                at: at("2026-03-02T09:00:00Z")
            }]
        );
        assert_eq!(s.due(at("2026-03-03T06:30:00Z")).len(), 2);
        assert!(Schedule::parse_cron("61 * * * *").is_err());
        assert!(
            Schedule::parse_cron("*/10 * * * * *").is_ok(),
            "seconds may lead"
        );
    }
}
