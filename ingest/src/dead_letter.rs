//! Dead letters: records that could not become events, kept with the error and their
//! provenance so nothing is lost and an operator can see why.
//!
//! In `run` they go to a Kafka topic; in `replay` to a JSON-lines file. Either way the
//! letter is written *before* the offsets of its batch are stored, so a crash replays
//! it rather than losing it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::error::{DecodeError, SourceError};
use crate::event::Provenance;
use crate::time::Nanos;

/// Why a record was dead-lettered. Also the `reason` label of
/// `driftwatch_records_dead_lettered_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not JSON at all.
    NotJson,
    /// JSON that ends early.
    Truncated,
    /// JSON, but not any known format, or a known format with fields of the wrong type.
    WrongShape,
    /// Larger than the configured record cap.
    Oversized,
    /// Well-formed, but a value no real event has (time far outside the bounds, an empty
    /// executable path, a number out of range).
    AbsurdValue,
    /// The content matches none of the formats driftwatch decodes.
    UnknownFormat,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::NotJson,
        Reason::Truncated,
        Reason::WrongShape,
        Reason::Oversized,
        Reason::AbsurdValue,
        Reason::UnknownFormat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotJson => "not_json",
            Reason::Truncated => "truncated",
            Reason::WrongShape => "wrong_shape",
            Reason::Oversized => "oversized",
            Reason::AbsurdValue => "absurd_value",
            Reason::UnknownFormat => "unknown_format",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much of an oversized record's payload a dead letter keeps: enough to recognise
/// it, without re-creating the size problem in the dead-letter topic.
const OVERSIZED_PAYLOAD_KEPT: usize = 64 * 1024;

/// One record that could not be decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When driftwatch gave up on it (wall clock).
    pub dead_lettered_at: Nanos,
    pub provenance: Provenance,
    /// The format the record was read as (`auto` when detection was asked for).
    pub format: String,
    pub reason: Reason,
    pub error: String,
    /// The record's bytes: as text when they are UTF-8, else base64.
    pub payload: String,
    pub payload_encoding: PayloadEncoding,
    /// Size of the original record; larger than the payload when it was cut.
    pub payload_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadEncoding {
    Utf8,
    Base64,
}

impl DeadLetter {
    pub fn new(provenance: Provenance, format: &str, error: &DecodeError, payload: &[u8]) -> Self {
        let kept = if error.reason == Reason::Oversized {
            &payload[..payload.len().min(OVERSIZED_PAYLOAD_KEPT)]
        } else {
            payload
        };
        let (payload_text, payload_encoding) = match std::str::from_utf8(kept) {
            Ok(s) => (s.to_owned(), PayloadEncoding::Utf8),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(kept),
                PayloadEncoding::Base64,
            ),
        };
        DeadLetter {
            dead_lettered_at: Nanos::now(),
            provenance,
            format: format.to_owned(),
            reason: error.reason,
            error: error.detail.clone(),
            payload: payload_text,
            payload_encoding,
            payload_bytes: payload.len(),
        }
    }
}

/// Where dead letters go.
pub enum DeadLetterSink {
    /// A Kafka topic (in `run`). The key is the origin topic, so letters from one input
    /// stay together.
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
    /// A JSON-lines file (in `replay`), opened on the first letter so a clean replay
    /// leaves no empty file behind.
    File {
        path: PathBuf,
        file: Option<tokio::fs::File>,
    },
    /// Letters are counted but kept nowhere (benchmarks only).
    Discard,
}

impl DeadLetterSink {
    pub fn file(path: impl AsRef<Path>) -> Self {
        DeadLetterSink::File {
            path: path.as_ref().to_owned(),
            file: None,
        }
    }

    /// Writes letters and waits until they are durable (acknowledged by Kafka, or
    /// flushed to the file).
    pub async fn write(&mut self, letters: &[DeadLetter]) -> Result<(), SourceError> {
        if letters.is_empty() {
            return Ok(());
        }
        match self {
            DeadLetterSink::Kafka { producer, topic } => {
                let sends = letters.iter().map(|letter| {
                    let body = serde_json::to_vec(letter).expect("dead letters always serialize");
                    let key = letter.provenance.origin.clone();
                    let producer = producer.clone();
                    let topic = topic.clone();
                    async move {
                        producer
                            .send(
                                FutureRecord::to(&topic).key(&key).payload(&body),
                                Duration::from_secs(30),
                            )
                            .await
                            .map(|_| ())
                            .map_err(|(source, _)| SourceError::DeadLetterKafka { topic, source })
                    }
                });
                futures::future::try_join_all(sends).await?;
                Ok(())
            }
            DeadLetterSink::File { path, file } => {
                let io = |source| SourceError::DeadLetterFile {
                    path: path.clone(),
                    source,
                };
                if file.is_none() {
                    let f = tokio::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&*path)
                        .await
                        .map_err(io)?;
                    *file = Some(f);
                }
                let f = file.as_mut().expect("opened above");
                let mut buf = Vec::new();
                for letter in letters {
                    serde_json::to_writer(&mut buf, letter).expect("dead letters always serialize");
                    buf.push(b'\n');
                }
                f.write_all(&buf).await.map_err(io)?;
                f.flush().await.map_err(io)?;
                f.sync_data().await.map_err(io)?;
                Ok(())
            }
            DeadLetterSink::Discard => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_payloads_are_kept_as_base64() {
        let error = DecodeError::new(Reason::NotJson, "expected value");
        let letter = DeadLetter::new(
            Provenance::kafka("falco", 2, 41),
            "falco",
            &error,
            b"\x00\xff\xfe",
        );
        assert_eq!(letter.payload_encoding, PayloadEncoding::Base64);
        assert_eq!(letter.payload, "AP/+");
        assert_eq!(letter.provenance.to_string(), "falco/2@41");
    }

    #[test]
    fn oversized_payloads_keep_their_head_and_say_how_big_they_were() {
        let error = DecodeError::new(Reason::Oversized, "too big");
        let payload = vec![b'x'; 3 * OVERSIZED_PAYLOAD_KEPT];
        let letter = DeadLetter::new(Provenance::file("big.jsonl", 7), "auto", &error, &payload);
        assert_eq!(letter.payload.len(), OVERSIZED_PAYLOAD_KEPT);
        assert_eq!(letter.payload_bytes, payload.len());
    }

    #[tokio::test]
    async fn the_file_sink_appends_one_json_line_per_letter_and_creates_nothing_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        let mut sink = DeadLetterSink::file(&path);
        sink.write(&[]).await.unwrap();
        assert!(!path.exists());
        let error = DecodeError::new(Reason::Truncated, "EOF while parsing");
        let letter = DeadLetter::new(Provenance::file("in.jsonl", 3), "auto", &error, b"{\"a\":");
        sink.write(&[letter.clone(), letter.clone()]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let back: Vec<DeadLetter> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, vec![letter.clone(), letter]);
    }
}
