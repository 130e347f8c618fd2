//! Scheduled compliance reports (`[reports]`): cron schedules fire as the clock passes
//! them; each report is written as JSON, CSV and HTML to the reports folder, the
//! folder's index (`index.json`, `index.html`) is rewritten, and the JSON is posted to
//! the schedule's webhook when it has one.
//!
//! The clock is event time (the newest event the pipeline applied); the daemon also
//! lets the wall clock move it, so that reports come while no events arrive.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use compliance::Framework;
use compliance::report::{self, Report, Request, Schedule, Scheduler};
use ingest::Nanos;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use compliance::worker::Compliance;

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
    pub formats: Vec<Format>,
    /// Where the JSON report is posted (`http://` or `https://`).
    #[serde(default)]
    pub webhook: Option<String>,
}

fn default_period() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn all_formats() -> Vec<Format> {
    vec![Format::Json, Format::Csv, Format::Html]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Csv,
    Html,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Html => "html",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        [Format::Json, Format::Csv, Format::Html]
            .into_iter()
            .find(|f| f.extension() == s)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
        }
    }

    /// The report in this format.
    pub fn render(self, r: &Report) -> String {
        match self {
            Format::Json => serde_json::to_string_pretty(r).expect("reports serialize") + "\n",
            Format::Csv => report::to_csv(r),
            Format::Html => report::to_html(r),
        }
    }
}

/// Parses framework names, saying which one is unknown.
pub fn parse_frameworks(names: &[String]) -> anyhow::Result<Vec<Framework>> {
    names
        .iter()
        .map(|n| {
            Framework::parse(n).with_context(|| {
                format!(
                    "unknown framework {n:?} (known: {})",
                    Framework::ALL.map(Framework::as_str).join(", ")
                )
            })
        })
        .collect()
}

impl ReportsConfig {
    /// The schedules, checked: names, cron expressions, frameworks, webhooks.
    pub fn schedules(&self) -> anyhow::Result<Vec<Schedule>> {
        let mut names = std::collections::HashSet::new();
        self.schedules
            .iter()
            .map(|s| {
                let name_ok = !s.name.is_empty()
                    && s.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                anyhow::ensure!(
                    name_ok,
                    "report schedule name {:?}: use letters, digits, '-' and '_'",
                    s.name
                );
                anyhow::ensure!(
                    names.insert(s.name.clone()),
                    "report schedule {:?} is defined twice",
                    s.name
                );
                anyhow::ensure!(
                    !s.formats.is_empty(),
                    "report schedule {:?} has no format",
                    s.name
                );
                if let Some(w) = &s.webhook {
                    anyhow::ensure!(
                        w.starts_with("http://") || w.starts_with("https://"),
                        "report schedule {:?}: webhook {w:?} is not an http(s) URL",
                        s.name
                    );
                }
                Ok(Schedule {
                    name: s.name.clone(),
                    cron: Schedule::parse_cron(&s.cron)
                        .map_err(|e| anyhow::anyhow!("report schedule {:?}: {e}", s.name))?,
                    frameworks: parse_frameworks(&s.frameworks)
                        .with_context(|| format!("report schedule {:?}", s.name))?,
                    services: s.services.clone(),
                    period: s.period,
                })
            })
            .collect()
    }
}

/// One line of the reports index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub name: String,
    pub generated_at: String,
    pub period: report::Period,
    pub frameworks: Vec<String>,
    pub empty: bool,
    pub fail: u64,
    pub pass: u64,
    pub failing_controls: u64,
    /// File names in the reports folder, by format.
    pub files: std::collections::BTreeMap<String, String>,
}

/// The file stem of a report: its name and time (`weekly-pci-20260302T060000Z`).
fn stem(r: &Report, at: Nanos) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(at.0);
    format!("{}-{}", r.name, t.format("%Y%m%dT%H%M%SZ"))
}

/// Writes a report in the given formats and rewrites the folder's index; returns the
/// paths written.
pub fn write(
    dir: &Path,
    r: &Report,
    at: Nanos,
    formats: &[Format],
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the reports folder {}", dir.display()))?;
    let stem = stem(r, at);
    let mut written = Vec::new();
    for f in formats {
        let path = dir.join(format!("{stem}.{}", f.extension()));
        // Through a temporary file, so that a reader never sees half a report.
        let tmp = path.with_extension(format!("{}.tmp", f.extension()));
        std::fs::write(&tmp, f.render(r))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    let index_path = dir.join("index.json");
    let mut index = match std::fs::read_to_string(&index_path) {
        Ok(s) => match serde_json::from_str::<Vec<IndexEntry>>(&s) {
            Ok(index) => index,
            // Empty or torn (a full disk, a crash before the rename existed): set aside,
            // and the index is made again from the reports in the folder.
            Err(e) => {
                let aside = dir.join(format!(
                    "index.json.unreadable-{}",
                    chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
                ));
                warn!(index = %index_path.display(), aside = %aside.display(), error = %e,
                    "The reports index is unreadable; it is set aside and made again from the reports.");
                std::fs::rename(&index_path, &aside)
                    .with_context(|| format!("cannot move {} aside", index_path.display()))?;
                rebuild_index(dir)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", index_path.display())),
    };
    index.retain(|e| {
        e.files
            .values()
            .all(|f| !f.starts_with(&format!("{stem}.")))
    });
    index.push(entry(r, &stem, formats.iter().map(|f| f.extension())));
    index.sort_by(|a, b| (&b.generated_at, &a.name).cmp(&(&a.generated_at, &b.name)));
    let json = serde_json::to_string_pretty(&index).context("cannot serialize the index")? + "\n";
    for (name, body) in [("index.json", json), ("index.html", index_html(&index))] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, body).context("cannot write the reports index")?;
        std::fs::rename(&tmp, dir.join(name)).context("cannot write the reports index")?;
    }
    Ok(written)
}

/// The index entry of one report written under `stem` in these formats.
fn entry<'a>(r: &Report, stem: &str, extensions: impl Iterator<Item = &'a str>) -> IndexEntry {
    IndexEntry {
        name: r.name.clone(),
        generated_at: r.generated_at.clone(),
        period: r.period.clone(),
        frameworks: r.frameworks.clone(),
        empty: r.empty,
        fail: r.summary.fail,
        pass: r.summary.pass,
        failing_controls: r.summary.failing_controls,
        files: extensions
            .map(|ext| (ext.to_owned(), format!("{stem}.{ext}")))
            .collect(),
    }
}

/// The index made again from the JSON reports in the folder (and the other formats
/// written beside them).
fn rebuild_index(dir: &Path) -> Vec<IndexEntry> {
    let Ok(files) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut index = Vec::new();
    for path in files.filter_map(|f| Some(f.ok()?.path())) {
        let (Some(stem), Some("json")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if stem == "index" {
            continue;
        }
        let Some(r) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| serde_json::from_str::<Report>(&s).ok())
        else {
            continue;
        };
        let extensions = ["json", "csv", "html"]
            .into_iter()
            .filter(|ext| dir.join(format!("{stem}.{ext}")).exists());
        index.push(entry(&r, stem, extensions));
    }
    index
}

/// The reports index, newest first (empty when there is none yet).
pub fn read_index(dir: &Path) -> Vec<IndexEntry> {
    std::fs::read_to_string(dir.join("index.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// The newest report of a name before `before`, from its JSON file.
pub fn previous(dir: &Path, name: &str, before: &str) -> Option<Report> {
    read_index(dir)
        .into_iter()
        .filter(|e| e.name == name && e.generated_at.as_str() < before)
        .max_by(|a, b| a.generated_at.cmp(&b.generated_at))
        .and_then(|e| e.files.get("json").cloned())
        .and_then(|f| std::fs::read_to_string(dir.join(f)).ok())
        .and_then(|s| serde_json::from_str(&s).ok())
}

fn index_html(index: &[IndexEntry]) -> String {
    use compliance::report::escape;
    let mut rows = String::new();
    for e in index {
        let files = e
            .files
            .iter()
            .map(|(format, file)| format!("<a href=\"{}\">{format}</a>", escape(file)))
            .collect::<Vec<_>>()
            .join(" ");
        rows += &format!(
            "<tr><td>{}</td><td>{}</td><td>{} to {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&e.name),
            escape(&e.generated_at),
            escape(&e.period.start),
            escape(&e.period.end),
            escape(&e.frameworks.join(", ")),
            if e.empty {
                "empty".to_owned()
            } else {
                format!("{} failing, {} passing", e.fail, e.pass)
            },
            e.failing_controls,
            files
        );
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n<title>driftwatch compliance reports</title>\n<style>body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse}}td,th{{padding:.3rem .6rem;border-bottom:1px solid #e4e7eb;text-align:left}}</style>\n</head>\n<body>\n<h1>driftwatch compliance reports</h1>\n<table>\n<tr><th>Name</th><th>Generated</th><th>Period</th><th>Frameworks</th><th>Control × service</th><th>Failing controls</th><th>Files</th></tr>\n{rows}</table>\n</body>\n</html>\n"
    )
}

/// `driftwatch report`: asks a running daemon's API for a report made now.
pub async fn fetch(
    url: &str,
    token: Option<&str>,
    frameworks: Option<&str>,
    services: Option<&str>,
    since: &str,
    format: Format,
) -> anyhow::Result<String> {
    let endpoint = format!("{}/api/v1/report", url.trim_end_matches('/'));
    let mut query = vec![("since", since), ("format", format.extension())];
    query.extend(frameworks.map(|f| ("framework", f)));
    query.extend(services.map(|s| ("service", s)));
    let mut request = reqwest::Client::new().get(&endpoint).query(&query);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach driftwatch at {endpoint}"))?;
    let status = response.status();
    let body = response.text().await.context("cannot read the report")?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(body);
        anyhow::bail!("{endpoint} answered {status}: {message}");
    }
    Ok(body)
}

/// Builds a report from what the compliance worker knows now (after it caught up).
pub async fn build(
    compliance: &Compliance,
    request: &Request<'_>,
    previous: Option<&Report>,
) -> Report {
    compliance.flush().await;
    let view = compliance.view();
    report::build(
        request,
        &compliance.catalog,
        view.findings.iter().map(AsRef::as_ref),
        view.posture(),
        previous,
    )
}

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
    http: reqwest::Client,
    written: Mutex<Vec<PathBuf>>,
    /// Webhook deliveries under way.
    deliveries: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Attempts at posting a report to its webhook.
const WEBHOOK_ATTEMPTS: u32 = 5;

impl Reports {
    /// `None` when no schedule is configured.
    pub fn start(
        config: &ReportsConfig,
        compliance: Option<&Compliance>,
        wall_clock: bool,
        print: bool,
    ) -> anyhow::Result<Option<Reports>> {
        let schedules = config.schedules()?;
        if schedules.is_empty() {
            return Ok(None);
        }
        anyhow::ensure!(
            compliance.is_some(),
            "report schedules need compliance checks ([compliance] enabled = true)"
        );
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the webhook client")?;
        Ok(Some(Reports {
            inner: Arc::new(Inner {
                config: config.clone(),
                scheduler: tokio::sync::Mutex::new(Scheduler::new(schedules)),
                clock: AtomicI64::new(i64::MIN),
                first: AtomicI64::new(i64::MIN),
                wall_clock,
                print,
                http,
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
                warn!(schedule = %s.name, error = format!("{e:#}"), "A compliance report could not be written.");
            }
        }
    }

    async fn fire(
        &self,
        compliance: &Compliance,
        s: &Schedule,
        config: &ScheduleConfig,
        at: Nanos,
    ) -> anyhow::Result<()> {
        let dir = self.inner.config.dir.clone();
        let start = at.saturating_add(-(s.period.as_nanos().min(i64::MAX as u128) as i64));
        let previous = {
            let (dir, name, before) = (dir.clone(), s.name.clone(), at.to_rfc3339());
            tokio::task::spawn_blocking(move || previous(&dir, &name, &before))
                .await
                .context("reading the previous report panicked")?
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
        let r = build(compliance, &request, previous.as_ref()).await;
        let written = {
            let (dir, r, formats) = (dir.clone(), r.clone(), config.formats.clone());
            tokio::task::spawn_blocking(move || write(&dir, &r, at, &formats))
                .await
                .context("writing the report panicked")??
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
            let (http, url, name) = (self.inner.http.clone(), url.clone(), s.name.clone());
            let body = serde_json::to_vec(&r).context("cannot serialize the report")?;
            // Delivery never holds up the pipeline.
            let delivery = tokio::spawn(async move { deliver(&http, &url, &name, body).await });
            let mut deliveries = self.inner.deliveries.lock().expect("reports lock poisoned");
            deliveries.retain(|d| !d.is_finished());
            deliveries.push(delivery);
        }
        Ok(())
    }
}

/// Posts a report, retrying failures with backoff; a 4xx other than 408 and 429 is final.
async fn deliver(http: &reqwest::Client, url: &str, name: &str, body: Vec<u8>) {
    // The URL may hold a credential: logs name the endpoint only.
    let endpoint = notify::redact::url(url);
    let endpoint = endpoint.as_str();
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        let sent = http
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                info!(
                    schedule = name,
                    url = endpoint,
                    attempt,
                    "Compliance report delivered."
                );
                return;
            }
            Ok(r) if r.status().is_client_error() && ![408, 429].contains(&r.status().as_u16()) => {
                warn!(
                    schedule = name,
                    url = endpoint,
                    status = r.status().as_u16(),
                    "The report webhook refused the report; not retrying."
                );
                return;
            }
            Ok(r) => {
                warn!(
                    schedule = name,
                    url = endpoint,
                    attempt,
                    status = r.status().as_u16(),
                    "The report webhook failed."
                )
            }
            Err(e) => {
                warn!(schedule = name, url = endpoint, attempt, error = %notify::redact::request_error(e), "The report webhook failed.")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
    warn!(
        schedule = name,
        url = endpoint,
        "Giving up on delivering the report to its webhook."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_checked() {
        let parse = |s: &str| -> anyhow::Result<Vec<Schedule>> {
            let c: ReportsConfig = toml::from_str(s)?;
            c.schedules()
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
            let err = format!(
                "{:#}",
                parse(&format!("[[schedule]]\n{bad}\n")).unwrap_err()
            );
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    fn report(name: &str, at: &str) -> Report {
        serde_json::from_value(serde_json::json!({
            "schema": "driftwatch-compliance-report/1", "name": name, "generated_at": at,
            "period": {"start": at, "end": at}, "frameworks": [], "services": [], "empty": true,
            "summary": {"pass": 0, "fail": 0, "not_applicable": 0, "failing_controls": 0,
                        "services": 0, "findings": 0, "failing_findings": 0},
            "by_framework": [], "controls": [], "trend": null
        }))
        .unwrap()
    }

    #[test]
    fn an_empty_or_torn_index_is_set_aside_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let at = |s: &str| {
            Nanos(
                chrono::DateTime::parse_from_rfc3339(s)
                    .unwrap()
                    .timestamp_nanos_opt()
                    .unwrap(),
            )
        };
        let formats = [Format::Json, Format::Csv];
        write(
            dir.path(),
            &report("daily", "2026-03-02T06:00:00Z"),
            at("2026-03-02T06:00:00Z"),
            &formats,
        )
        .unwrap();
        for broken in ["", "[{\"name\": \"daily\", \"gener"] {
            std::fs::write(dir.path().join("index.json"), broken).unwrap();
            write(
                dir.path(),
                &report("daily", "2026-03-03T06:00:00Z"),
                at("2026-03-03T06:00:00Z"),
                &formats,
            )
            .unwrap();
            let index = read_index(dir.path());
            assert_eq!(index.len(), 2, "{index:?}");
            assert_eq!(index[0].generated_at, "2026-03-03T06:00:00Z");
            assert_eq!(index[1].files.len(), 2, "{index:?}");
        }
    }
}
