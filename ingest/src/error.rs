//! Errors of the ingest crate.

use std::path::PathBuf;

use thiserror::Error;

use crate::dead_letter::Reason;

/// Why one record could not become events. Never stops the pipeline: the record is
/// counted and dead-lettered, and processing goes on.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{reason}: {detail}")]
pub struct DecodeError {
    pub reason: Reason,
    pub detail: String,
}

impl DecodeError {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        DecodeError {
            reason,
            detail: detail.into(),
        }
    }

    pub(crate) fn from_json(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let reason = match e.classify() {
            Category::Eof => Reason::Truncated,
            Category::Syntax | Category::Io => Reason::NotJson,
            // serde reports out-of-range numbers ("invalid value: integer `70000`,
            // expected u16") as data errors; they are absurd values, not a wrong shape.
            Category::Data if e.to_string().starts_with("invalid value") => Reason::AbsurdValue,
            Category::Data => Reason::WrongShape,
        };
        DecodeError {
            reason,
            detail: e.to_string(),
        }
    }
}

/// Errors of the Kafka source, the replay source and the dead-letter sinks.
#[derive(Debug, Error)]
pub enum SourceError {
    #[error("Kafka client for {what} could not be created")]
    CreateClient {
        what: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("subscribing to topics {topics:?} failed")]
    Subscribe {
        topics: Vec<String>,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("receiving from Kafka failed")]
    Receive(#[source] rdkafka::error::KafkaError),
    #[error("storing offset {offset} for {topic}/{partition} failed")]
    StoreOffset {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("committing offsets failed")]
    Commit(#[source] rdkafka::error::KafkaError),
    #[error("writing dead letter to topic {topic} failed")]
    DeadLetterKafka {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("writing dead letter to {path} failed")]
    DeadLetterFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path} failed")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the pipeline stopped receiving batches")]
    PipelineClosed,
    #[error("topic {topic} is configured with unknown format {format:?}")]
    UnknownFormat { topic: String, format: String },
}

/// An error with its sources, as one line (`a: b: c`), for logs: thiserror's `Display`
/// says only the outermost.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}
