//! End-to-end tests: the real binary, a real Kafka-protocol broker (librdkafka's mock
//! cluster) and real outside clients (`kcat`).

mod alertmanager;
mod api;
mod attacks;
mod common;
mod crash_restarts;
mod demo;
mod demo_kcat;
mod detection;
mod handover;
mod kafka_ingest;
mod logs_cli;
// The NAB scorer the `nab` bench uses, with its tests.
#[allow(dead_code)]
#[path = "../../benches/support/nab_score.rs"]
mod nab_score;
mod notify_crash;
mod outbox_full;
mod partitions;
mod repartition;
mod replay_cli;
mod reports;
mod restart;
mod run_cli;
mod scale_out;
mod surfaces;
