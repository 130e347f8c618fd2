//! Compliance reports: the posture per framework, control and service over a period,
//! with the failing controls' evidence and the drift alerts behind them, and the trend
//! against the previous report. Written as JSON (schema
//! `compliance/schema/report.schema.json`), CSV, and a self-contained HTML page (inline
//! CSS and SVG, no script, no external asset).
//!
//! Reports fire on cron schedules ([`crate::schedule::Scheduler`]) driven by whatever clock the caller
//! passes: event time in replays and tests, event time or the wall clock in the daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use ingest::Nanos;
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, Framework};
use crate::engine::{Finding, PostureEntry, Status};

/// The `schema` field of every report.
pub const SCHEMA: &str = "driftwatch/compliance-report/v1";

/// Failing findings kept as evidence per control and service (the newest).
const EVIDENCE_KEPT: usize = 10;

/// A report, as written to JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    /// The schedule's name (or `on-demand`).
    pub name: String,
    pub generated_at: String,
    pub period: Period,
    /// Frameworks covered (every framework when the request named none).
    pub frameworks: Vec<String>,
    /// Service patterns the report is limited to (`*` wildcards); empty: every service.
    pub services: Vec<String>,
    /// True when nothing was checked in the period for the frameworks and services.
    pub empty: bool,
    pub summary: Summary,
    pub by_framework: Vec<FrameworkSummary>,
    /// Controls of the frameworks, failing ones first.
    pub controls: Vec<ControlReport>,
    /// Against the previous report of the same name, when there is one.
    pub trend: Option<Trend>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub start: String,
    pub end: String,
}

/// Counts of control × service pairs by their status at the end of the period, and of
/// the findings made during it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub pass: u64,
    pub fail: u64,
    pub not_applicable: u64,
    pub failing_controls: u64,
    pub services: u64,
    pub findings: u64,
    pub failing_findings: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameworkSummary {
    pub framework: String,
    pub controls: u64,
    pub pass: u64,
    pub fail: u64,
    pub not_applicable: u64,
    pub failing_controls: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlReport {
    pub id: String,
    pub title: String,
    pub severity: String,
    pub references: Vec<String>,
    pub services: Vec<ServiceReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub service: String,
    /// `fail`, `pass` or `not_applicable` at the end of the period.
    pub status: String,
    /// Since when that status holds.
    pub since: String,
    pub last_checked: String,
    /// Findings in the period by status.
    pub pass: u64,
    pub fail: u64,
    pub not_applicable: u64,
    /// The first and last failing finding in the period.
    pub first_failed: Option<String>,
    pub last_failed: Option<String>,
    /// The newest failing findings, with their evidence chain.
    pub evidence: Vec<Evidence>,
    /// The drift alerts behind the failing findings.
    pub alerts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub finding: String,
    pub time: String,
    pub alert: Option<String>,
    /// The records that triggered the check (`origin/partition@offset`).
    pub records: Vec<String>,
    /// Where the finding can be looked at (the API), when a base address is configured.
    pub link: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trend {
    pub previous_generated_at: String,
    pub previous_fail: u64,
    pub previous_pass: u64,
    /// `fail` now minus `fail` then.
    pub fail_change: i64,
    pub pass_change: i64,
    /// `control@service` pairs failing now and not then, and the reverse.
    pub newly_failing: Vec<String>,
    pub no_longer_failing: Vec<String>,
}

/// What a report covers.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub name: &'a str,
    /// Empty: every framework.
    pub frameworks: &'a [Framework],
    /// Service patterns; empty: every service.
    pub services: &'a [String],
    pub start: Nanos,
    pub end: Nanos,
    pub generated_at: Nanos,
    /// The API's base address, for evidence links (`http://host:8484`).
    pub link_base: Option<&'a str>,
}

/// Whether a service matches a pattern where `*` stands for any run of characters.
pub fn service_matches(pattern: &str, service: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), service.as_bytes())
}

#[derive(Default)]
struct Pair {
    status: Option<(Status, Nanos, Nanos)>,
    pass: u64,
    fail: u64,
    not_applicable: u64,
    first_failed: Option<Nanos>,
    last_failed: Option<Nanos>,
    evidence: Vec<Evidence>,
    alerts: BTreeSet<String>,
}

/// Builds a report from the findings and posture known now.
pub fn build<'f>(
    request: &Request<'_>,
    catalog: &Catalog,
    findings: impl IntoIterator<Item = &'f Finding>,
    posture: impl IntoIterator<Item = &'f PostureEntry>,
    previous: Option<&Report>,
) -> Report {
    let frameworks: Vec<Framework> = if request.frameworks.is_empty() {
        Framework::ALL.to_vec()
    } else {
        request.frameworks.to_vec()
    };
    let wanted_service = |s: &str| {
        request.services.is_empty() || request.services.iter().any(|p| service_matches(p, s))
    };
    // Controls of the frameworks, in catalog order.
    let controls: Vec<&crate::Control> = catalog
        .controls()
        .iter()
        .filter(|c| {
            c.references
                .iter()
                .any(|r| frameworks.contains(&r.framework))
        })
        .collect();
    let in_report = |control: &str| controls.iter().any(|c| c.id == control);
    let mut pairs: BTreeMap<(String, String), Pair> = BTreeMap::new();
    for p in posture {
        if in_report(&p.control) && wanted_service(&p.service) && p.since < request.end {
            pairs
                .entry((p.control.to_string(), p.service.clone()))
                .or_default()
                .status = Some((p.status, p.since, p.last_checked));
        }
    }
    let mut summary = Summary::default();
    for f in findings {
        // The period is [start, end): consecutive reports do not share a finding.
        if f.time < request.start
            || f.time >= request.end
            || !in_report(&f.control)
            || !wanted_service(&f.service)
        {
            continue;
        }
        summary.findings += 1;
        let pair = pairs
            .entry((f.control.to_string(), f.service.to_string()))
            .or_default();
        match f.status {
            Status::Pass => pair.pass += 1,
            Status::NotApplicable => pair.not_applicable += 1,
            Status::Fail => {
                summary.failing_findings += 1;
                pair.fail += 1;
                pair.first_failed = Some(pair.first_failed.map_or(f.time, |t| t.min(f.time)));
                pair.last_failed = Some(pair.last_failed.map_or(f.time, |t| t.max(f.time)));
                if let Some(a) = &f.alert {
                    pair.alerts.insert(a.to_string());
                }
                pair.evidence.push(Evidence {
                    finding: f.id.clone(),
                    time: f.time.to_rfc3339(),
                    alert: f.alert.as_deref().map(str::to_owned),
                    records: f.evidence.iter().map(ToString::to_string).collect(),
                    link: request.link_base.map(|base| {
                        format!(
                            "{}/api/v1/findings?control={}&service={}",
                            base.trim_end_matches('/'),
                            url_component(&f.control),
                            url_component(&f.service)
                        )
                    }),
                });
            }
        }
    }
    let mut reports: Vec<ControlReport> = Vec::new();
    let mut services = BTreeSet::new();
    let mut failing_pairs = BTreeSet::new();
    for c in &controls {
        let mut rows = Vec::new();
        for ((control, service), pair) in pairs.range((c.id.clone(), String::new())..) {
            if *control != c.id {
                break;
            }
            // The status at the end of the period: the posture, or the last finding.
            let (status, since, last) = match pair.status {
                Some(s) => s,
                None if pair.fail > 0 => (
                    Status::Fail,
                    pair.first_failed.unwrap_or(request.start),
                    pair.last_failed.unwrap_or(request.end),
                ),
                None if pair.pass > 0 => (Status::Pass, request.start, request.end),
                None => (Status::NotApplicable, request.start, request.end),
            };
            match status {
                Status::Pass => summary.pass += 1,
                Status::Fail => {
                    summary.fail += 1;
                    failing_pairs.insert(format!("{}@{service}", c.id));
                }
                Status::NotApplicable => summary.not_applicable += 1,
            }
            services.insert(service.clone());
            let mut evidence = pair.evidence.clone();
            evidence.sort_by(|a, b| b.time.cmp(&a.time));
            evidence.truncate(EVIDENCE_KEPT);
            rows.push(ServiceReport {
                service: service.clone(),
                status: status.as_str().to_owned(),
                since: since.to_rfc3339(),
                last_checked: last.to_rfc3339(),
                pass: pair.pass,
                fail: pair.fail,
                not_applicable: pair.not_applicable,
                first_failed: pair.first_failed.map(Nanos::to_rfc3339),
                last_failed: pair.last_failed.map(Nanos::to_rfc3339),
                evidence,
                alerts: pair.alerts.iter().cloned().collect(),
            });
        }
        rows.sort_by(|a, b| {
            (a.status != "fail", &a.service).cmp(&(b.status != "fail", &b.service))
        });
        reports.push(ControlReport {
            id: c.id.clone(),
            title: c.title.clone(),
            severity: c.severity.as_str().to_owned(),
            references: c.references.iter().map(ToString::to_string).collect(),
            services: rows,
        });
    }
    let failing = |c: &ControlReport| c.services.iter().any(|s| s.status == "fail");
    summary.failing_controls = reports.iter().filter(|c| failing(c)).count() as u64;
    summary.services = services.len() as u64;
    let by_framework = frameworks
        .iter()
        .map(|fw| {
            let of: Vec<&ControlReport> = reports
                .iter()
                .filter(|c| {
                    c.references
                        .iter()
                        .any(|r| r.starts_with(&format!("{}:", fw.as_str())))
                })
                .collect();
            let count = |status: &str| {
                of.iter()
                    .flat_map(|c| &c.services)
                    .filter(|s| s.status == status)
                    .count() as u64
            };
            FrameworkSummary {
                framework: fw.as_str().to_owned(),
                controls: of.len() as u64,
                pass: count("pass"),
                fail: count("fail"),
                not_applicable: count("not_applicable"),
                failing_controls: of.iter().filter(|c| failing(c)).count() as u64,
            }
        })
        .collect();
    // Failing controls first, by severity, then the rest in catalog order.
    let rank = |s: &str| match s {
        "critical" => 0,
        "high" => 1,
        "medium" => 2,
        "low" => 3,
        _ => 4,
    };
    reports.sort_by_key(|c| (!failing(c), if failing(c) { rank(&c.severity) } else { 0 }));
    let trend = previous.map(|p| {
        let before: BTreeSet<String> = p
            .controls
            .iter()
            .flat_map(|c| {
                c.services
                    .iter()
                    .filter(|s| s.status == "fail")
                    .map(move |s| format!("{}@{}", c.id, s.service))
            })
            .collect();
        Trend {
            previous_generated_at: p.generated_at.clone(),
            previous_fail: p.summary.fail,
            previous_pass: p.summary.pass,
            fail_change: summary.fail as i64 - p.summary.fail as i64,
            pass_change: summary.pass as i64 - p.summary.pass as i64,
            newly_failing: failing_pairs.difference(&before).cloned().collect(),
            no_longer_failing: before.difference(&failing_pairs).cloned().collect(),
        }
    });
    Report {
        schema: SCHEMA.to_owned(),
        name: request.name.to_owned(),
        generated_at: request.generated_at.to_rfc3339(),
        period: Period {
            start: request.start.to_rfc3339(),
            end: request.end.to_rfc3339(),
        },
        frameworks: frameworks.iter().map(|f| f.as_str().to_owned()).collect(),
        services: request.services.to_vec(),
        empty: summary.findings == 0 && services.is_empty(),
        summary,
        by_framework,
        controls: reports,
        trend,
    }
}

fn url_component(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A CSV field a spreadsheet will not run: service names and the rest come from what
/// senders say, and a field starting with `=`, `+`, `-`, `@`, a tab or a carriage return
/// is a formula to Excel and LibreOffice. Such a field is prefixed with `'` (OWASP's
/// advice), which spreadsheets show as text.
fn inert(field: &str) -> std::borrow::Cow<'_, str> {
    match field.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{field}").into(),
        _ => field.into(),
    }
}

/// The report as CSV: one row per control and service.
pub fn to_csv(report: &Report) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = [
        "control",
        "title",
        "severity",
        "references",
        "service",
        "status",
        "since",
        "last_checked",
        "pass",
        "fail",
        "not_applicable",
        "first_failed",
        "last_failed",
        "alerts",
        "evidence",
    ];
    // Writing CSV into memory cannot fail.
    w.write_record(header).expect("in-memory CSV");
    for c in &report.controls {
        for s in &c.services {
            let row = [
                c.id.clone(),
                c.title.clone(),
                c.severity.clone(),
                c.references.join(" "),
                s.service.clone(),
                s.status.clone(),
                s.since.clone(),
                s.last_checked.clone(),
                s.pass.to_string(),
                s.fail.to_string(),
                s.not_applicable.to_string(),
                s.first_failed.clone().unwrap_or_default(),
                s.last_failed.clone().unwrap_or_default(),
                s.alerts.join(" "),
                s.evidence
                    .iter()
                    .map(|e| e.finding.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ];
            w.write_record(row.iter().map(|f| inert(f).into_owned()))
                .expect("in-memory CSV");
        }
    }
    String::from_utf8(w.into_inner().expect("in-memory CSV")).expect("CSV of UTF-8 fields")
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const PASS: &str = "#2e8540";
const FAIL: &str = "#c0392b";
const NA: &str = "#9aa5b1";

/// The page's style and content security policy: nothing may load from elsewhere.
const HEAD: &str = r#"<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1f2933;max-width:72rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d9e2ec;padding-bottom:.3rem}
.meta{color:#52606d;font-size:.9rem}.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{border:1px solid #d9e2ec;border-radius:6px;padding:.6rem 1rem;min-width:8rem}.card b{display:block;font-size:1.4rem}
table{border-collapse:collapse;width:100%;font-size:.85rem;margin-top:.5rem}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#f5f7fa}.fail{color:#c0392b;font-weight:600}.pass{color:#2e8540}.not_applicable{color:#7b8794}
.empty{padding:1rem;background:#f5f7fa;border-radius:6px}code{font-size:.8rem}
</style>"#;

/// The report as a self-contained HTML page.
pub fn to_html(report: &Report) -> String {
    let mut h = String::new();
    let title = format!("driftwatch compliance report: {}", report.name);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<title>{}</title>\n{HEAD}\n</head>\n<body>\n",
        escape(&title)
    );
    let _ = write!(
        h,
        "<h1>{}</h1>\n<p class=\"meta\">Period {} to {} · generated {} · frameworks {} · services {}</p>\n",
        escape(&title),
        escape(&report.period.start),
        escape(&report.period.end),
        escape(&report.generated_at),
        escape(&report.frameworks.join(", ")),
        if report.services.is_empty() {
            "all".to_owned()
        } else {
            escape(&report.services.join(", "))
        }
    );
    let s = &report.summary;
    if report.empty {
        h.push_str("<p class=\"empty\" id=\"empty\">No control was checked in this period for these frameworks and services: there is nothing to report.</p>\n");
    }
    let _ = write!(
        h,
        "<div class=\"cards\"><div class=\"card\"><b class=\"fail\">{}</b>failing control × service</div><div class=\"card\"><b class=\"pass\">{}</b>passing</div><div class=\"card\"><b>{}</b>not applicable</div><div class=\"card\"><b>{}</b>failing controls</div><div class=\"card\"><b>{}</b>services</div><div class=\"card\"><b>{}</b>findings in the period</div></div>\n",
        s.fail, s.pass, s.not_applicable, s.failing_controls, s.services, s.findings
    );
    h.push_str("<h2>Posture by framework</h2>\n");
    h.push_str(&framework_chart(&report.by_framework));
    if let Some(t) = &report.trend {
        h.push_str("<h2>Trend against the previous report</h2>\n");
        h.push_str(&trend_chart(report, t));
        let _ = write!(
            h,
            "<p>Previous report {}: failing {} → {} ({:+}), passing {} → {} ({:+}).</p>\n",
            escape(&t.previous_generated_at),
            t.previous_fail,
            s.fail,
            t.fail_change,
            t.previous_pass,
            s.pass,
            t.pass_change
        );
        for (label, list) in [
            ("Newly failing", &t.newly_failing),
            ("No longer failing", &t.no_longer_failing),
        ] {
            if !list.is_empty() {
                let _ = write!(
                    h,
                    "<p>{label}: {}</p>\n",
                    list.iter()
                        .map(|p| format!("<code>{}</code>", escape(p)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    h.push_str("<h2>Failing controls</h2>\n");
    let failing: Vec<(&ControlReport, &ServiceReport)> = report
        .controls
        .iter()
        .flat_map(|c| c.services.iter().map(move |s| (c, s)))
        .filter(|(_, s)| s.status == "fail")
        .collect();
    if failing.is_empty() {
        h.push_str("<p>No control fails.</p>\n");
    } else {
        h.push_str("<table id=\"failing\"><tr><th>Control</th><th>Severity</th><th>Service</th><th>Failing since</th><th>First / last failure in period</th><th>Drift alerts</th><th>Evidence</th><th>References</th></tr>\n");
        for (c, s) in failing {
            let evidence = s
                .evidence
                .iter()
                .map(|e| {
                    let records = escape(&e.records.join(", "));
                    match &e.link {
                        Some(l) => format!(
                            "<a href=\"{}\"><code>{}</code></a> {records}",
                            escape(l),
                            escape(&e.finding)
                        ),
                        None => format!("<code>{}</code> {records}", escape(&e.finding)),
                    }
                })
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = write!(
                h,
                "<tr><td><b>{}</b> {}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&c.id),
                escape(&c.title),
                escape(&c.severity),
                escape(&s.service),
                escape(&s.since),
                escape(s.first_failed.as_deref().unwrap_or("–")),
                escape(s.last_failed.as_deref().unwrap_or("–")),
                escape(&s.alerts.join(", ")),
                evidence,
                escape(&c.references.join(", "))
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>All controls</h2>\n<table id=\"controls\"><tr><th>Control</th><th>Severity</th><th>References</th><th>Services (status, findings pass/fail/n.a. in period)</th></tr>\n");
    for c in &report.controls {
        let services = if c.services.is_empty() {
            "<span class=\"not_applicable\">not checked</span>".to_owned()
        } else {
            c.services
                .iter()
                .map(|s| {
                    format!(
                        "{} <span class=\"{}\">{}</span> ({}/{}/{})",
                        escape(&s.service),
                        escape(&s.status),
                        escape(&s.status.replace('_', " ")),
                        s.pass,
                        s.fail,
                        s.not_applicable
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = write!(
            h,
            "<tr><td><b>{}</b> {}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&c.id),
            escape(&c.title),
            escape(&c.severity),
            escape(&c.references.join(", ")),
            services
        );
    }
    h.push_str("</table>\n</body>\n</html>\n");
    h
}

/// A horizontal stacked bar per framework: pass, fail, not applicable.
fn framework_chart(frameworks: &[FrameworkSummary]) -> String {
    let (label_w, bar_w, row_h) = (130.0, 520.0, 28.0);
    let height = row_h * frameworks.len() as f64 + 30.0;
    let mut svg = format!(
        "<svg id=\"framework-chart\" role=\"img\" aria-label=\"Posture by framework\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\">\n",
        label_w + bar_w + 160.0,
        label_w + bar_w + 160.0
    );
    for (i, f) in frameworks.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let total = (f.pass + f.fail + f.not_applicable).max(1) as f64;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text>\n",
            y + 15.0,
            escape(&f.framework)
        );
        let mut x = label_w;
        for (n, color, what) in [
            (f.pass, PASS, "pass"),
            (f.fail, FAIL, "fail"),
            (f.not_applicable, NA, "not applicable"),
        ] {
            let w = bar_w * n as f64 / total;
            if n > 0 {
                let _ = write!(
                    svg,
                    "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"20\" fill=\"{color}\"><title>{} {what}</title></rect>\n",
                    n
                );
            }
            x += w;
        }
        if f.pass + f.fail + f.not_applicable == 0 {
            let _ = write!(
                svg,
                "<rect x=\"{label_w}\" y=\"{y}\" width=\"{bar_w}\" height=\"20\" fill=\"none\" stroke=\"{NA}\"/>\n"
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\">{} pass · {} fail · {} n/a</text>\n",
            label_w + bar_w + 8.0,
            y + 15.0,
            f.pass,
            f.fail,
            f.not_applicable
        );
    }
    let legend_y = frameworks.len() as f64 * row_h + 18.0;
    for (i, (color, what)) in [(PASS, "pass"), (FAIL, "fail"), (NA, "not applicable")]
        .iter()
        .enumerate()
    {
        let x = label_w + i as f64 * 120.0;
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{}\" y=\"{legend_y}\" font-size=\"12\">{what}</text>\n",
            legend_y - 10.0,
            x + 16.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Failing and passing pairs, previous report beside this one.
fn trend_chart(report: &Report, t: &Trend) -> String {
    let max = [
        t.previous_fail,
        t.previous_pass,
        report.summary.fail,
        report.summary.pass,
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
    .max(1) as f64;
    let (h, w) = (140.0, 60.0);
    let mut svg = String::from(
        "<svg id=\"trend-chart\" role=\"img\" aria-label=\"Trend against the previous report\" xmlns=\"http://www.w3.org/2000/svg\" width=\"420\" height=\"190\" viewBox=\"0 0 420 190\">\n",
    );
    let bars = [
        (t.previous_fail, FAIL, 0.55, "fail, previous"),
        (report.summary.fail, FAIL, 1.0, "fail, now"),
        (t.previous_pass, PASS, 0.55, "pass, previous"),
        (report.summary.pass, PASS, 1.0, "pass, now"),
    ];
    for (i, (n, color, opacity, what)) in bars.iter().enumerate() {
        let x = 20.0 + i as f64 * (w + 30.0);
        let bh = (h * *n as f64 / max).max(1.0);
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{x}\" y=\"{:.1}\" width=\"{w}\" height=\"{bh:.1}\" fill=\"{color}\" fill-opacity=\"{opacity}\"><title>{n} {what}</title></rect>\n<text x=\"{x}\" y=\"{:.1}\" font-size=\"12\">{n}</text>\n<text x=\"{x}\" y=\"185\" font-size=\"11\">{what}</text>\n",
            h + 20.0 - bh,
            h + 16.0 - bh
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_a_spreadsheet_would_run_are_made_text() {
        for (field, written) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
            ("-2", "'-2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("shop/api", "shop/api"),
            ("", ""),
        ] {
            assert_eq!(inert(field), written);
        }
    }

    #[test]
    fn service_patterns() {
        assert!(service_matches("prod/*", "prod/api"));
        assert!(service_matches("*db*", "prod/postgres-db-0"));
        assert!(!service_matches("prod/*", "staging/api"));
        assert!(service_matches("prod/api", "prod/api"));
    }

    #[test]
    fn html_escapes_and_has_no_external_reference() {
        let report = Report {
            schema: SCHEMA.into(),
            name: "<script>x</script>".into(),
            generated_at: "2026-03-02T06:00:00.000000000Z".into(),
            period: Period {
                start: "a".into(),
                end: "b".into(),
            },
            frameworks: vec!["pci-dss".into()],
            services: vec![],
            empty: true,
            summary: Summary::default(),
            by_framework: vec![],
            controls: vec![],
            trend: None,
        };
        let html = to_html(&report);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("id=\"empty\""));
        for external in ["src=\"http", "href=\"http", "@import", "url("] {
            assert!(!html.contains(external), "{external}");
        }
    }
}
