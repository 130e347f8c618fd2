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
    /// The triggering records, as the API shows them (absent from older members).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provenance: Vec<ingest::Provenance>,
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
            provenance: f.evidence.to_vec(),
        }
    }

    /// The finding as the API shows this daemon's own ([`Finding`]'s JSON).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "time": ingest::Nanos(self.time),
            "service": self.service,
            "container": self.container,
            "control": self.control,
            "title": self.title,
            "status": self.status,
            "severity": self.severity,
            "references": self.references,
            "evidence": self.provenance,
            "facts": serde_json::from_str::<serde_json::Value>(&self.facts)
                .unwrap_or(serde_json::Value::Null),
        });
        if let Some(o) = v.as_object_mut() {
            if let Some(a) = &self.alert_id {
                o.insert("alert".into(), a.as_str().into());
            }
            if let Some(n) = &self.note {
                o.insert("note".into(), n.as_str().into());
            }
        }
        v
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::{Facts, Status};

    fn finding(alert: Option<&str>, note: Option<&str>) -> Finding {
        Finding {
            id: "f1".into(),
            time: ingest::Nanos(1_772_446_501_000_000_000),
            service: "shop/api".into(),
            container: "0b8e4f1d2c3a".into(),
            control: "DW-RT-015".into(),
            title: "No shell spawned by an application".into(),
            status: Status::Fail,
            severity: detect::Severity::High,
            references: vec!["pci-dss:11.5".to_owned()].into(),
            alert: alert.map(Into::into),
            evidence: vec![
                ingest::Provenance::kafka("tetragon", 3, 41),
                ingest::Provenance {
                    origin: "events.jsonl".into(),
                    partition: None,
                    offset: 7,
                },
            ]
            .into(),
            facts: Arc::new(Facts {
                known: true,
                user: "root".into(),
                ..Facts::default()
            }),
            note: note.map(Into::into),
            clears_failure: false,
        }
    }

    #[test]
    fn another_members_finding_shows_as_this_daemons_own() {
        for f in [finding(None, None), finding(Some("a1"), Some("why"))] {
            let sent: FindingRecord =
                serde_json::from_str(&serde_json::to_string(&FindingRecord::of(&f)).unwrap())
                    .unwrap();
            assert_eq!(sent.to_json(), serde_json::to_value(&f).unwrap());
        }
    }
}
