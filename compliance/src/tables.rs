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
    let records: Vec<FindingRecord> = findings.into_iter().map(FindingRecord::of).collect();
    finding_records_table(&records, catalog)
}

/// A finding as another daemon of the cluster sends it: the `findings` row, owned.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FindingRecord {
    pub id: String,
    /// Event time of the trigger, in nanoseconds.
    pub time: i64,
    pub service: String,
    pub container: String,
    pub control: String,
    pub title: String,
    pub status: String,
    pub severity: String,
    pub references: Vec<String>,
    pub alert_id: Option<String>,
    /// Provenance of the triggering records, comma-separated.
    pub evidence: String,
    /// The container facts the check read, as JSON.
    pub facts: String,
    pub note: Option<String>,
}

impl FindingRecord {
    pub fn of(f: &Finding) -> Self {
        FindingRecord {
            id: f.id.clone(),
            time: f.time.0,
            service: f.service.to_string(),
            container: f.container.to_string(),
            control: f.control.to_string(),
            title: f.title.to_string(),
            status: f.status.as_str().to_owned(),
            severity: f.severity.as_str().to_owned(),
            references: f.references.to_vec(),
            alert_id: f.alert.as_deref().map(str::to_owned),
            evidence: f
                .evidence
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            facts: serde_json::to_string(&*f.facts).unwrap_or_default(),
            note: f.note.clone(),
        }
    }
}

/// Findings as rows (this daemon's, or other daemons' as sent) as a record batch of the
/// `findings` table; the frameworks come from this daemon's catalog.
pub fn finding_records_table<'a>(
    records: impl IntoIterator<Item = &'a FindingRecord>,
    catalog: &Catalog,
) -> RecordBatch {
    store::findings_batch(records.into_iter().map(|f| FindingRow {
        id: &f.id,
        time: f.time,
        service: &f.service,
        container: &f.container,
        control: &f.control,
        title: &f.title,
        status: &f.status,
        severity: &f.severity,
        frameworks: frameworks(catalog, &f.control),
        references: &f.references,
        alert_id: f.alert_id.as_deref(),
        evidence: f.evidence.clone(),
        facts: f.facts.clone(),
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
