//! Notify: delivery of alerts and failing findings to paging and chat (PagerDuty
//! Events v2, Alertmanager v2, Slack, generic webhooks signed per Standard Webhooks)
//! through a durable outbox, with retries, rate limits and grouping of bursts.
//!
//! It uses `detect` and `compliance` for their types only and never reaches into the
//! pipeline: items are handed over through a bounded queue (the submitter waits when it
//! is full, and no item is dropped), and a dead receiver stalls only its own sink.

pub mod config;
pub mod deliver;
pub mod error;
pub mod message;
pub mod outbox;
pub mod redact;
pub mod report_hook;
pub mod sign;

pub use config::{NotifyConfig, RouteConfig, SinkConfig, SinkKind};
pub use deliver::{DeliveryStatus, Notifier, NotifyMetrics, OutboxHealth};
pub use error::NotifyError;
pub use message::Item;
