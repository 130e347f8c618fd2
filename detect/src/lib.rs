//! Detect: per-service behavioural baselines, the detectors that compare new events
//! with them, and the `Alert` they raise.
//!
//! A baseline is an allow-list per service along five dimensions (processes with their
//! parent and argument patterns, file changes by path pattern, sensitive reads, network
//! destinations, exec-ins). A service learns for a while, then monitors; what it does
//! outside its baseline is drift, explained against what it was seen doing.
//!
//! It depends on `ingest` (the event model) and never on Kafka, the query engine or
//! delivery code: detection builds and tests in seconds and runs on the per-event path
//! with hash lookups only.

mod alert;
pub mod anomaly;
pub mod baseline;
mod clock;
mod command;
mod config;
mod detector;
pub mod error;
pub mod generalise;
pub mod logs;
mod observe;
pub mod pattern;
pub mod rates;
mod snapshot;
mod tables;
pub mod templates;
mod view;

pub use alert::{Alert, AlertKind, AlertStatus, Severity, Technique, dedup_key, stable_hash};
pub use command::{Command, Outcome};
pub use config::DetectConfig;
pub use detector::{
    Capacity, Detector, Entry, EntryKey, HEALTH_SERVICE, LEARNED_DIMENSIONS, Novelty, Origin,
    PendingSensor, Phase, ServiceState,
};
pub use error::DetectError;
pub use observe::{Dimension, is_sensitive};
pub use snapshot::{
    BaselineEntry, DetectorSnapshot, DimensionNovelty, SNAPSHOT_VERSION, ServiceSnapshot,
};
pub use tables::alerts_batch;
pub use view::{DetectorView, ServiceView, TemplateView, Tracked, Views};
