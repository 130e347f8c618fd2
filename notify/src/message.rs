//! What is delivered: alerts and failing findings as items, and how each sink writes
//! them (PagerDuty Events v2, Alertmanager v2, Slack, the generic webhook envelope).

use detect::{Alert, AlertKind, AlertStatus, Severity};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One alert or failing finding, as notifications carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// `alert` or `finding`.
    pub source: String,
    pub id: String,
    /// Stable for the same problem: the alert's dedup key, or control and service.
    pub dedup_key: String,
    pub service: String,
    /// The alert kind (`process`, `file`, …) or `compliance`.
    pub kind: String,
    pub severity: Severity,
    /// One line: what happened where.
    pub summary: String,
    pub details: String,
    /// RFC 3339, when it first happened.
    pub time: String,
    pub resolved: bool,
    /// Framework references (findings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mitre: Option<String>,
}

impl Item {
    pub fn from_alert(a: &Alert) -> Item {
        Item {
            source: "alert".into(),
            id: a.id.clone(),
            dedup_key: a.dedup_key.clone(),
            service: a.service.clone(),
            kind: a.kind.as_str().to_owned(),
            severity: a.severity,
            summary: match a.kind {
                AlertKind::Delivery
                | AlertKind::Capacity
                | AlertKind::Ingestion
                | AlertKind::SensorHealth => {
                    format!("{}: {}", a.service, a.subject)
                }
                _ => format!("{} drift in {}: {}", a.kind.as_str(), a.service, a.subject),
            },
            details: a.explanation.clone(),
            time: a.time.to_rfc3339(),
            resolved: a.status == AlertStatus::Resolved,
            references: Vec::new(),
            mitre: a.mitre.as_ref().map(|m| format!("{} {}", m.id, m.name)),
        }
    }

    pub fn from_finding(f: &compliance::Finding) -> Item {
        Item {
            source: "finding".into(),
            id: f.id.clone(),
            dedup_key: format!("{}@{}", f.control, f.service),
            service: f.service.to_string(),
            kind: "compliance".into(),
            severity: f.severity,
            summary: format!("{} fails in {}: {}", f.control, f.service, f.title),
            details: match &f.alert {
                Some(a) => format!(
                    "Control {} ({}) failed; fired by drift alert {a}.",
                    f.control,
                    f.references.join(", ")
                ),
                None => format!(
                    "Control {} ({}) failed.",
                    f.control,
                    f.references.join(", ")
                ),
            },
            time: f.time.to_rfc3339(),
            // A finding that ends a failure resolves the failure's notification.
            resolved: f.status != compliance::Status::Fail,
            references: f.references.to_vec(),
            mitre: None,
        }
    }

    /// The frameworks a finding refers to.
    pub fn frameworks(&self) -> impl Iterator<Item = &str> {
        self.references
            .iter()
            .filter_map(|r| r.split_once(':').map(|(f, _)| f))
    }
}

fn pagerduty_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "info",
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A PagerDuty Events v2 event: `trigger`, or `resolve` with the same dedup key.
pub fn pagerduty(item: &Item, routing_key: &str, link_base: Option<&str>) -> Value {
    let dedup_key = truncate(&format!("driftwatch-{}", item.dedup_key), 255);
    if item.resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        });
    }
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": truncate(&item.summary, 1024),
            "source": item.service,
            "severity": pagerduty_severity(item.severity),
            "timestamp": item.time,
            "component": item.service,
            "group": item.kind,
            "class": item.source,
            "custom_details": {
                "details": item.details,
                "driftwatch_id": item.id,
                "severity": item.severity.as_str(),
                "mitre": item.mitre,
                "references": item.references,
            },
        },
        "client": "driftwatch",
    });
    if let Some(base) = link_base {
        let path = match item.source.as_str() {
            "alert" => format!("/api/v1/alerts/{}", item.id),
            _ => format!("/api/v1/findings?service={}", item.service),
        };
        let href = format!("{}{path}", base.trim_end_matches('/'));
        event["client_url"] = json!(href);
        event["links"] = json!([{ "href": href, "text": "Open in driftwatch" }]);
    }
    event
}

/// Alertmanager v2 alerts (`POST /api/v2/alerts` takes an array). Resolved items carry
/// an `endsAt` in the past; firing ones none, and are sent again while they last.
pub fn alertmanager(items: &[Item], now: &str, link_base: Option<&str>) -> Value {
    Value::Array(
        items
            .iter()
            .map(|item| {
                let mut a = json!({
                    "labels": {
                        "alertname": alertname(item),
                        "service": item.service,
                        "kind": item.kind,
                        "severity": item.severity.as_str(),
                        "dedup_key": item.dedup_key,
                        "source": "driftwatch",
                    },
                    "annotations": {
                        "summary": item.summary,
                        "description": item.details,
                    },
                    "startsAt": item.time,
                });
                if item.resolved {
                    a["endsAt"] = json!(now);
                }
                if let Some(base) = link_base {
                    a["generatorURL"] = json!(format!(
                        "{}/api/v1/alerts/{}",
                        base.trim_end_matches('/'),
                        item.id
                    ));
                }
                a
            })
            .collect(),
    )
}

/// A Slack incoming-webhook message: readable text, one paragraph per item.
pub fn slack(items: &[Item]) -> Value {
    let head = match items {
        [one] => format!(
            "{} *{}* {}",
            if one.resolved {
                "Resolved:"
            } else {
                "driftwatch:"
            },
            one.severity.as_str(),
            one.summary
        ),
        many => {
            let mut services: Vec<&str> = many.iter().map(|i| i.service.as_str()).collect();
            services.sort_unstable();
            services.dedup();
            let about = match services.len() {
                1..=3 => services.join(", "),
                n => format!("{} and {} more services", services[..3].join(", "), n - 3),
            };
            format!("driftwatch: {} alerts about {about}", many.len())
        }
    };
    let body: Vec<String> = items
        .iter()
        .map(|i| {
            let mut line = format!("• *{}* {}\n{}", i.severity.as_str(), i.summary, i.details);
            if let Some(m) = &i.mitre {
                line += &format!("\nMITRE ATT&CK: {m}");
            }
            if !i.references.is_empty() {
                line += &format!("\nReferences: {}", i.references.join(", "));
            }
            line
        })
        .collect();
    json!({ "text": format!("{head}\n{}", body.join("\n")) })
}

/// Alertmanager's `alertname`: drift, a failing control, or driftwatch about itself.
fn alertname(item: &Item) -> &'static str {
    match (item.source.as_str(), item.service.as_str()) {
        ("alert", detect::HEALTH_SERVICE) => "DriftwatchDeliveryFailing",
        ("alert", _) => "DriftwatchDrift",
        _ => "DriftwatchComplianceFailure",
    }
}

/// The generic webhook's envelope (documented in the README).
pub fn envelope(id: &str, items: &[Item], now: &str) -> Value {
    json!({
        "type": if items.iter().all(|i| i.resolved) { "driftwatch.resolved" } else { "driftwatch.notification" },
        "id": id,
        "timestamp": now,
        "data": { "items": items },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        serde_json::from_value(json!({
            "id": "1d73a3fec81cda70", "time": "2026-03-02T10:13:00Z", "last_seen": "2026-03-02T10:13:00Z",
            "service": "shop/api", "kind": "process", "severity": "critical",
            "subject": "/bin/sh (parent /usr/local/bin/python3.12)", "dimension": "process",
            "explanation": "/bin/sh was never started by /usr/local/bin/python3.12 in shop/api during learning.",
            "evidence": [], "dedup_key": "9f1c2b7a5e3d4c21", "count": 1, "status": "open",
            "mitre": {"id": "T1059.004", "name": "Unix Shell"}
        }))
        .unwrap()
    }

    #[test]
    fn driftwatchs_alert_about_itself_reads_as_such() {
        let mut a = alert();
        a.service = detect::HEALTH_SERVICE.into();
        a.kind = AlertKind::Delivery;
        a.subject = "notification outbox full".into();
        let item = Item::from_alert(&a);
        assert_eq!(item.summary, "driftwatch: notification outbox full");
        let am = alertmanager(std::slice::from_ref(&item), "2026-03-02T10:14:00Z", None);
        assert_eq!(am[0]["labels"]["alertname"], "DriftwatchDeliveryFailing");
        assert_eq!(am[0]["labels"]["kind"], "delivery");
        let drift = alertmanager(&[Item::from_alert(&alert())], "2026-03-02T10:14:00Z", None);
        assert_eq!(drift[0]["labels"]["alertname"], "DriftwatchDrift");
    }

    fn golden(name: &str, got: &Value) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var_os("DRIFTWATCH_BLESS").is_some() {
            std::fs::write(&path, serde_json::to_string_pretty(got).unwrap() + "\n").unwrap();
        }
        let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(got, &want, "{name}");
    }

    #[test]
    fn payloads_match_their_golden_json() {
        let item = Item::from_alert(&alert());
        golden(
            "pagerduty-trigger.json",
            &pagerduty(&item, "R0UT1NGKEY", Some("http://127.0.0.1:8484")),
        );
        let resolved = Item {
            resolved: true,
            ..item.clone()
        };
        golden(
            "pagerduty-resolve.json",
            &pagerduty(&resolved, "R0UT1NGKEY", None),
        );
        golden("slack.json", &slack(std::slice::from_ref(&item)));
        golden(
            "alertmanager.json",
            &alertmanager(&[item.clone(), resolved], "2026-03-02T11:00:00Z", None),
        );
    }

    #[test]
    fn pagerduty_limits_are_kept() {
        let mut item = Item::from_alert(&alert());
        item.summary = "é".repeat(2000);
        item.dedup_key = "k".repeat(400);
        let e = pagerduty(&item, "R", None);
        assert!(e["payload"]["summary"].as_str().unwrap().len() <= 1024);
        assert!(e["dedup_key"].as_str().unwrap().len() <= 255);
    }
}
