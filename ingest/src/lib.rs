//! Ingest: everything between a raw record and a normalized [`Event`].
//!
//! It owns the event model, one decoder per input format (Falco, Tetragon, Kubernetes
//! audit, Docker events, Fluent Bit container logs, and driftwatch's native JSON), the
//! Kafka source (rdkafka), the file/stdin replay source and the dead-letter sinks.
//!
//! It depends on no other driftwatch crate: every later stage speaks in its types, so it
//! must stay at the bottom of the graph. rdkafka lives here and nowhere else.

pub mod dead_letter;
pub mod decode;
mod error;
pub mod event;
pub mod metrics;
pub mod service;
pub mod source;
pub mod stats;
pub mod time;

pub use dead_letter::{DeadLetter, DeadLetterSink, Reason};
pub use decode::{DecodeLimits, Decoded, Decoder, Format, Repairs, truncate_line};
pub use error::{DecodeError, SourceError, chain};
pub use event::{Event, EventKind, Provenance, SensorReport, Source};
pub use metrics::IngestMetrics;
pub use service::{ServiceKeyConfig, ServiceKeyer};
pub use source::Batch;
pub use source::kafka::{KafkaConfig, KafkaSource, TopicConfig};
pub use source::repartition::Repartitioner;
pub use source::replay::ReplaySource;
pub use stats::IngestStats;
pub use time::Nanos;
