//! `Alert`: what driftwatch says when a service drifts, with evidence and a stable
//! dedup key.

use ingest::{Nanos, Provenance};
use serde::{Deserialize, Serialize};

/// The dimension an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Process,
    File,
    SensitiveRead,
    Network,
    Exec,
    /// A service's baseline reached its entry cap.
    BaselineCap,
    /// A log template never seen while learning, a shift of the template mix, or the
    /// template cap reached.
    LogTemplate,
    /// A spike or drop of an event rate.
    Rate,
    /// driftwatch's own alert delivery is failing: its outbox is full and
    /// notifications are being lost.
    Delivery,
    /// driftwatch reached one of its state caps (services, findings): what is beyond
    /// it is not judged.
    Capacity,
    /// driftwatch cannot read what a topic holds (a codec or a corrupt batch): those
    /// records are not judged.
    Ingestion,
    /// A sensor says it lost events, or stopped reporting some, on a node: detection
    /// there is partly blind.
    SensorHealth,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Process => "process",
            AlertKind::File => "file",
            AlertKind::SensitiveRead => "sensitive_read",
            AlertKind::Network => "network",
            AlertKind::Exec => "exec",
            AlertKind::BaselineCap => "baseline_cap",
            AlertKind::LogTemplate => "log_template",
            AlertKind::Rate => "rate",
            AlertKind::Delivery => "delivery",
            AlertKind::Capacity => "capacity",
            AlertKind::Ingestion => "ingestion",
            AlertKind::SensorHealth => "sensor_health",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A MITRE ATT&CK technique.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Technique {
    pub id: String,
    pub name: String,
}

impl Technique {
    pub fn new(id: &str, name: &str) -> Self {
        Technique {
            id: id.to_owned(),
            name: name.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Open,
    Acknowledged,
    Resolved,
}

/// How many records an alert cites; its `count` says how many there were in all.
pub const MAX_EVIDENCE: usize = 10;

/// A drift alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    /// Event time of the first occurrence.
    pub time: Nanos,
    pub last_seen: Nanos,
    pub service: String,
    pub kind: AlertKind,
    pub severity: Severity,
    /// What drifted, e.g. `/usr/bin/curl (parent /bin/sh)`.
    pub subject: String,
    /// The baseline dimension the subject belongs to (where accepting it puts it).
    pub dimension: crate::observe::Dimension,
    pub explanation: String,
    /// Records behind the alert (the first ones).
    pub evidence: Vec<Provenance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mitre: Option<Technique>,
    /// Stable across restarts: the same service, kind and subject give the same key.
    pub dedup_key: String,
    pub count: u64,
    pub status: AlertStatus,
    /// Sensor alerts (Falco rules) about the same act, correlated into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensor_rules: Vec<String>,
}

/// FNV-1a, 64-bit: a stable hash (unlike `std`'s randomly seeded one), so dedup keys
/// and ids survive restarts.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.as_bytes().iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

pub fn dedup_key(service: &str, kind: AlertKind, subject: &str) -> String {
    format!("{:016x}", stable_hash(&[service, kind.as_str(), subject]))
}

pub fn alert_id(dedup_key: &str, first: Nanos) -> String {
    format!("{:016x}", stable_hash(&[dedup_key, &first.0.to_string()]))
}
