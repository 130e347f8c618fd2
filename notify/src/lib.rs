//! Notify: delivery of alerts and findings to paging and chat (PagerDuty, Alertmanager,
//! Slack, signed generic webhooks) through a durable outbox with retries.
//!
//! It uses `detect` and `compliance` for their types only and must never reach into the
//! pipeline: a dead receiver may slow its own sink, never ingestion.
//!
//! Nothing is implemented here yet.
