//! The detector's state as the store's `alerts`, `baselines` and `log_templates`
//! tables.

use arrow::record_batch::RecordBatch;
use store::{AlertRow, BaselineRow, LogTemplateRow};

use crate::alert::Alert;
use crate::detector::Detector;
use crate::view::DetectorView;

fn label<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Detector {
    /// Every alert as a record batch of the `alerts` table, oldest first.
    pub fn alerts_table(&self) -> RecordBatch {
        self.view_now().alerts_table()
    }

    /// Every service's live log templates as a record batch of `log_templates`.
    pub fn log_templates_table(&self) -> RecordBatch {
        self.view_now().log_templates_table()
    }

    /// Every service as a record batch of the `services` table.
    pub fn services_table(&self) -> RecordBatch {
        self.view_now().services_table()
    }

    /// Every baseline entry as a record batch of the `baselines` table.
    pub fn baselines_table(&self) -> RecordBatch {
        self.view_now().baselines_table()
    }
}

impl DetectorView {
    /// Every alert as a record batch of the `alerts` table, oldest first.
    pub fn alerts_table(&self) -> RecordBatch {
        alerts_batch(self.alerts().map(|a| (&**a, None)))
    }

    /// Every service's live log templates as a record batch of `log_templates`, by
    /// service and id.
    pub fn log_templates_table(&self) -> RecordBatch {
        let rows = self.services.iter().flat_map(|(service, view)| {
            view.templates.iter().map(move |t| LogTemplateRow {
                service,
                template_id: i64::from(t.id),
                template: t.text.clone(),
                first_seen: t.first_seen.0,
                count: t.count as i64,
                example: t.example.as_str(),
                learned: t.learned,
            })
        });
        store::log_templates_batch(rows)
    }

    /// Every service as a record batch of the `services` table, by name.
    pub fn services_table(&self) -> RecordBatch {
        let open = self.open_alerts();
        let phases: Vec<String> = self
            .services
            .values()
            .map(|s| label(&s.snapshot.phase))
            .collect();
        let growing: Vec<String> = self
            .services
            .values()
            .map(|s| s.growing.iter().map(label).collect::<Vec<_>>().join(","))
            .collect();
        let rows = self.services.iter().zip(phases.iter().zip(&growing));
        store::services_batch(rows.map(|((name, s), (phase, growing))| {
            let snap = &s.snapshot;
            store::ServiceRow {
                service: name,
                phase,
                learning_since: snap.learning_since.0,
                learned_at: snap.learned_at.map(|(t, _)| t.0),
                events: snap.events as i64,
                baseline_entries: snap.baseline.len() as i64,
                log_templates: s.templates.len() as i64,
                image_digest: snap.image_digest.as_deref(),
                open_alerts: open.get(name.as_str()).copied().unwrap_or(0),
                growing,
            }
        }))
    }

    /// Every baseline entry as a record batch of the `baselines` table, by service,
    /// dimension label and key.
    pub fn baselines_table(&self) -> RecordBatch {
        type Row<'a> = (&'a String, String, &'a String, String, i64, i64, i64, bool);
        let mut rows: Vec<Row<'_>> = self
            .services
            .iter()
            .flat_map(|(service, view)| {
                view.snapshot.baseline.iter().map(move |e| {
                    (
                        service,
                        label(&e.dimension),
                        &e.key,
                        label(&e.origin),
                        e.first_seen.0,
                        e.count as i64,
                        i64::from(e.learned_from),
                        view.is_growing(e.dimension),
                    )
                })
            })
            .collect();
        rows.sort();
        store::baselines_batch(rows.iter().map(
            |(service, dimension, key, origin, first_seen, count, learned_from, growing)| {
                BaselineRow {
                    service,
                    dimension,
                    key,
                    origin,
                    first_seen: *first_seen,
                    count: *count,
                    learned_from: *learned_from,
                    growing: *growing,
                }
            },
        ))
    }
}

/// Alerts as a record batch of the `alerts` table, in the order given, each with the
/// cluster member that holds it (if there is a cluster).
pub fn alerts_batch<'a>(
    alerts: impl IntoIterator<Item = (&'a Alert, Option<&'a str>)>,
) -> RecordBatch {
    let alerts: Vec<(&Alert, Option<&str>)> = alerts.into_iter().collect();
    let labels: Vec<(String, String)> = alerts
        .iter()
        .map(|(a, _)| (label(&a.severity), label(&a.status)))
        .collect();
    store::alerts_batch(
        alerts
            .iter()
            .zip(&labels)
            .map(|((a, member), (severity, status))| AlertRow {
                id: &a.id,
                time: a.time.0,
                last_seen: a.last_seen.0,
                service: &a.service,
                kind: a.kind.as_str(),
                severity,
                subject: &a.subject,
                explanation: &a.explanation,
                mitre: a.mitre.as_ref().map(|t| format!("{} {}", t.id, t.name)),
                count: a.count as i64,
                status,
                dedup_key: &a.dedup_key,
                sensor_rules: (!a.sensor_rules.is_empty()).then(|| a.sensor_rules.join(",")),
                evidence: a
                    .evidence
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                member: *member,
            }),
    )
}
