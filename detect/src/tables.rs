//! The detector's state as the store's `alerts`, `baselines` and `log_templates`
//! tables.

use arrow::record_batch::RecordBatch;
use store::{AlertRow, BaselineRow, LogTemplateRow};

use crate::detector::Detector;

fn label<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Detector {
    /// Every alert as a record batch of the `alerts` table, oldest first.
    pub fn alerts_table(&self) -> RecordBatch {
        let alerts = self.alerts();
        let labels: Vec<(String, String)> = alerts
            .iter()
            .map(|a| (label(&a.severity), label(&a.status)))
            .collect();
        store::alerts_batch(alerts.iter().zip(&labels).map(|(a, (severity, status))| {
            AlertRow {
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
            }
        }))
    }

    /// Every service's live log templates as a record batch of `log_templates`, by
    /// service and id.
    pub fn log_templates_table(&self) -> RecordBatch {
        let mut services: Vec<_> = self.services().collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        let rows = services.into_iter().flat_map(|(service, state)| {
            state.logs.miner().templates().map(move |t| {
                let info = state.logs.info(t.id);
                LogTemplateRow {
                    service,
                    template_id: i64::from(t.id),
                    template: t.text(),
                    first_seen: info.map_or(0, |i| i.first_seen.0),
                    count: t.count as i64,
                    example: info.map_or("", |i| i.example.as_str()),
                    learned: state.baseline.contains_key(&crate::EntryKey {
                        dimension: crate::Dimension::LogTemplate,
                        key: format!("#{}", t.id),
                    }),
                }
            })
        });
        store::log_templates_batch(rows)
    }

    /// Every service as a record batch of the `services` table, by name.
    pub fn services_table(&self) -> RecordBatch {
        let mut open: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        for a in self.alerts() {
            if a.status != crate::AlertStatus::Resolved {
                *open.entry(a.service.as_str()).or_default() += 1;
            }
        }
        let mut services: Vec<(&String, &crate::ServiceState)> = self.services().collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        let phases: Vec<String> = services.iter().map(|(_, s)| label(&s.phase)).collect();
        let growing: Vec<String> = services
            .iter()
            .map(|(_, s)| s.growing().iter().map(label).collect::<Vec<_>>().join(","))
            .collect();
        let rows = services.iter().zip(phases.iter().zip(&growing));
        store::services_batch(rows.map(|((name, s), (phase, growing))| store::ServiceRow {
            service: name,
            phase,
            learning_since: s.learning_since.0,
            learned_at: s.learned_at.map(|(t, _)| t.0),
            events: s.events as i64,
            baseline_entries: s.baseline.len() as i64,
            log_templates: s.logs.template_count() as i64,
            image_digest: s.image_digest.as_deref(),
            open_alerts: open.get(name.as_str()).copied().unwrap_or(0),
            growing,
        }))
    }

    /// Every baseline entry as a record batch of the `baselines` table.
    pub fn baselines_table(&self) -> RecordBatch {
        type Row<'a> = (&'a String, String, &'a String, String, i64, i64, i64, bool);
        let mut rows: Vec<Row<'_>> = self
            .services()
            .flat_map(|(service, state)| {
                state.baseline.iter().map(move |(k, e)| {
                    (
                        service,
                        label(&k.dimension),
                        &k.key,
                        label(&e.origin),
                        e.first_seen.0,
                        e.count as i64,
                        i64::from(e.learned_from),
                        state.is_growing(k.dimension),
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
