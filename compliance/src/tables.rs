//! The `findings` and `posture` tables.

use arrow::record_batch::RecordBatch;
use store::{FindingRow, PostureRow};

use crate::catalog::Catalog;
use crate::engine::{Finding, PostureEntry};

fn frameworks(catalog: &Catalog, control: &str) -> Vec<String> {
    let mut f: Vec<String> = catalog
        .get(control)
        .map(|c| {
            c.references
                .iter()
                .map(|r| r.framework.as_str().to_owned())
                .collect()
        })
        .unwrap_or_default();
    f.sort();
    f.dedup();
    f
}

/// Findings as a record batch of the `findings` table.
pub fn findings_table<'a>(
    findings: impl IntoIterator<Item = &'a Finding>,
    catalog: &Catalog,
) -> RecordBatch {
    let rows: Vec<(&Finding, String, String)> = findings
        .into_iter()
        .map(|f| {
            (
                f,
                f.evidence
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                serde_json::to_string(&*f.facts).unwrap_or_default(),
            )
        })
        .collect();
    store::findings_batch(rows.iter().map(|(f, evidence, facts)| FindingRow {
        id: &f.id,
        time: f.time.0,
        service: &f.service,
        container: &f.container,
        control: &f.control,
        title: &f.title,
        status: f.status.as_str(),
        severity: f.severity.as_str(),
        frameworks: frameworks(catalog, &f.control),
        references: &f.references,
        alert_id: f.alert.as_deref(),
        evidence: evidence.clone(),
        facts: facts.clone(),
        note: f.note.as_deref(),
    }))
}

/// A posture (by service, then control) as a record batch of the `posture` table.
pub fn posture_table<'a>(
    posture: impl IntoIterator<Item = &'a PostureEntry>,
    catalog: &Catalog,
) -> RecordBatch {
    store::posture_batch(posture.into_iter().map(|p| {
        let control = catalog.get(&p.control);
        PostureRow {
            service: &p.service,
            control: &p.control,
            title: control.map_or("", |c| c.title.as_str()),
            severity: control.map_or("info", |c| c.severity.as_str()),
            frameworks: frameworks(catalog, &p.control),
            status: p.status.as_str(),
            since: p.since.0,
            last_checked: p.last_checked.0,
            finding_id: &p.finding,
        }
    }))
}
