//! driftwatch: a container runtime-security daemon. It consumes sensor events and
//! container logs from Kafka, keeps them in columnar in-memory tables, learns how each
//! service behaves and explains drift.
//!
//! This crate owns config loading, wiring of the stages, the supervisor and shutdown,
//! `replay` and the `demo`; `main.rs` is only the command line. The work itself lives in
//! the workspace crates (`ingest`, `store`, …), which never depend on this one.

pub mod api;
pub mod baseline;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod http;
pub mod replay;
pub mod reports;
pub mod supervisor;
pub mod surfaces;
pub mod telemetry;
pub mod wiring;
