//! The reports folder: each report as JSON, CSV and HTML, and the folder's index
//! (`index.json`, `index.html`, newest first). Every file is written through a
//! temporary file and renamed, so a reader never sees half of one.

use std::path::{Path, PathBuf};

use ingest::Nanos;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::ReportError;
use crate::report::{self, Report};
use crate::schedule::ReportFormat;

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
    formats: &[ReportFormat],
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(ReportError::io("create the reports folder", dir))?;
    let stem = stem(r, at);
    let mut written = Vec::new();
    for f in formats {
        let path = dir.join(format!("{stem}.{}", f.extension()));
        // Through a temporary file, so that a reader never sees half a report.
        let tmp = path.with_extension(format!("{}.tmp", f.extension()));
        std::fs::write(&tmp, f.render(r)).map_err(ReportError::io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(ReportError::io("write", &path))?;
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
                    .map_err(ReportError::io("move aside", &index_path))?;
                rebuild_index(dir)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(ReportError::io("read", &index_path)(e)),
    };
    index.retain(|e| {
        e.files
            .values()
            .all(|f| !f.starts_with(&format!("{stem}.")))
    });
    index.push(entry(r, &stem, formats.iter().map(|f| f.extension())));
    index.sort_by(|a, b| (&b.generated_at, &a.name).cmp(&(&a.generated_at, &b.name)));
    let json = serde_json::to_string_pretty(&index).map_err(|source| ReportError::Serialize {
        what: "the reports index",
        source,
    })? + "\n";
    for (name, body) in [("index.json", json), ("index.html", index_html(&index))] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, body).map_err(ReportError::io("write", &tmp))?;
        let path = dir.join(name);
        std::fs::rename(&tmp, &path).map_err(ReportError::io("write", &path))?;
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
    use crate::report::escape;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let formats = [ReportFormat::Json, ReportFormat::Csv];
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
