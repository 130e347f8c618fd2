//! Compliance: the control catalog (CIS Docker and Kubernetes benchmarks, NIST SP
//! 800-190 and 800-53, PCI DSS 4.0) as data with checks in CEL, targeted checks fired by
//! drift alerts and container events, the findings they produce, and the posture per
//! service and control.
//!
//! It depends on `ingest`, `store` and `detect` (for the alerts that trigger checks) and
//! never on the query engine or delivery code: what happens to findings beyond the
//! worker's own view is the caller's (see [`worker::OnFindings`]).

pub mod catalog;
pub mod engine;
pub mod error;
pub mod folder;
mod memo;
pub mod report;
pub mod schedule;
pub mod tables;
pub mod worker;

pub use catalog::{Catalog, CatalogError, Control, Framework, Reference};
pub use engine::{Engine, Facts, Finding, PostureEntry, Status, Subject, evaluate};
pub use error::ReportError;
pub use schedule::{PostReport, ReportFormat, Reports, ReportsConfig, ReportsMode, ScheduleConfig};
