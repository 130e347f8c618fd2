//! Detect: per-service behavioural baselines, the detectors that compare new events
//! with them, and the `Alert` they raise.
//!
//! It reads events (`ingest`) and the store's tables (`store`) and must never depend on
//! the query engine, Kafka or any delivery code: detection has to build and test in
//! seconds and run on the per-event hot path with hash lookups only.
//!
//! Nothing is implemented here yet; the pipeline currently ends at the store.
