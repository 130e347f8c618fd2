//! Store: driftwatch's columnar in-memory tables (Arrow).
//!
//! It owns the table schemas, appends with retention, and consistent snapshots that
//! readers (SQL, reports) take without blocking ingest. It depends only on `ingest` (for
//! the event model) and never on detection, compliance or the query engine: those read
//! its snapshots, it does not know they exist.

pub mod audit;
mod config;
pub mod error;
mod events;
pub mod metrics;
mod schema;
pub mod tables;

pub use audit::AuditLog;
pub use config::{ByteSize, StoreConfig};
pub use error::StoreError;
pub use events::{AppendOutcome, EventTable, EventsSnapshot};
pub use metrics::StoreMetrics;
pub use schema::events_schema;
pub use tables::{
    AlertRow, BaselineRow, FindingRow, LogTemplateRow, NotificationRow, PostureRow, ServiceRow,
    alerts_batch, alerts_schema, baselines_batch, baselines_schema, findings_batch,
    findings_schema, log_templates_batch, log_templates_schema, notifications_batch,
    notifications_schema, posture_batch, posture_schema, services_batch, services_schema,
};
