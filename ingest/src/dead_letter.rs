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
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{error, warn};

use crate::error::{DecodeError, SourceError};
use crate::event::Provenance;
use crate::metrics::IngestMetrics;
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

/// How much of a record's payload a dead letter keeps: enough to recognise it, without
/// re-creating a size problem in the dead-letter topic. Escaped as JSON (six bytes for a
/// control character) or base64, 64 KiB of payload stays far below librdkafka's
/// default `message.max.bytes` (1,000,000).
const PAYLOAD_KEPT: usize = 64 * 1024;

/// How much of a decoder's error message a letter keeps.
const ERROR_KEPT: usize = 4 * 1024;

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
    /// The head of the record's bytes: as text when they are UTF-8, else base64.
    pub payload: String,
    pub payload_encoding: PayloadEncoding,
    /// Size of the original record; larger than the payload when it was cut.
    pub payload_bytes: usize,
    /// SHA-256 of the whole original record, in hex: finds the record itself, and
    /// tells repeats apart, when the payload was cut.
    #[serde(default)]
    pub payload_sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadEncoding {
    Utf8,
    Base64,
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn head(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl DeadLetter {
    pub fn new(provenance: Provenance, format: &str, error: &DecodeError, payload: &[u8]) -> Self {
        let kept = &payload[..payload.len().min(PAYLOAD_KEPT)];
        let (payload_text, payload_encoding) = match std::str::from_utf8(kept) {
            Ok(s) => (s.to_owned(), PayloadEncoding::Utf8),
            // A cut may end inside a character: the valid head is still text.
            Err(e) if e.error_len().is_none() && kept.len() < payload.len() => (
                String::from_utf8_lossy(&kept[..e.valid_up_to()]).into_owned(),
                PayloadEncoding::Utf8,
            ),
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
            error: head(&error.detail, ERROR_KEPT).to_owned(),
            payload: payload_text,
            payload_encoding,
            payload_bytes: payload.len(),
            payload_sha256: Sha256::digest(payload)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    /// The letter as JSON of at most `max` bytes: its payload is cut further when the
    /// whole would not fit (the error, provenance, size and hash always stay).
    pub fn to_json_within(&self, max: usize) -> Vec<u8> {
        let mut body = serde_json::to_vec(self).expect("dead letters always serialize");
        let mut letter = self.clone();
        while body.len() > max && !letter.payload.is_empty() {
            let keep = letter.payload.len() / 2;
            letter.payload = head(&letter.payload, keep).to_owned();
            body = serde_json::to_vec(&letter).expect("dead letters always serialize");
        }
        body
    }
}

/// Where dead letters go.
pub enum DeadLetterSink {
    /// A Kafka topic (in `run`), with a local spool for when the topic refuses them.
    Kafka(KafkaLetters),
    /// A JSON-lines file (in `replay`), opened on the first letter so a clean replay
    /// leaves no empty file behind.
    File {
        path: PathBuf,
        file: Option<tokio::fs::File>,
    },
    /// Letters are counted but kept nowhere (benchmarks only).
    Discard,
}

/// Attempts at producing a batch's letters before they are spooled: a broker that is
/// briefly away gets two more chances, a missing topic does not hold ingestion up.
const PRODUCE_ATTEMPTS: u32 = 3;

/// The wait before the second attempt; it doubles for each next one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// After the topic refused letters, new letters go straight to the spool for this long
/// before Kafka is tried again: a missing topic costs one batch its retries, not every
/// batch.
const SPOOL_FOR: Duration = Duration::from_secs(60);

/// The most the spool file holds. Nothing empties it but an operator (who replays it
/// into the topic once it is back): 256 MiB is thousands of the largest letters (64 KiB
/// of payload each) and far more of the usual ones, and a small part of a data
/// directory. Past it, letters are counted and logged as lost, as without a spool.
const SPOOL_MAX_BYTES: u64 = 256 << 20;

/// The dead-letter topic's producer, and the spool behind it.
///
/// A letter is never a reason to stop ingesting: a produce that fails is retried with
/// backoff, then the letters are appended to the spool file (when there is a data
/// directory) and counted. Only a spool that cannot be written loses letters, and
/// that is logged with each letter's provenance and hash, and counted.
pub struct KafkaLetters {
    producer: FutureProducer,
    topic: String,
    /// The producer's `message.max.bytes`: no letter is larger.
    max_bytes: usize,
    spool: Option<PathBuf>,
    metrics: IngestMetrics,
    spool_until: Option<tokio::time::Instant>,
}

impl KafkaLetters {
    pub fn new(
        producer: FutureProducer,
        topic: String,
        max_bytes: usize,
        spool: Option<PathBuf>,
        metrics: IngestMetrics,
    ) -> Self {
        KafkaLetters {
            producer,
            topic,
            max_bytes,
            spool,
            metrics,
            spool_until: None,
        }
    }

    async fn write(&mut self, letters: &[DeadLetter]) {
        let now = tokio::time::Instant::now();
        if self.spool_until.is_some_and(|until| now < until) {
            self.spool(letters, "the dead-letter topic refused letters recently")
                .await;
            return;
        }
        // Room for the record's key and headers beside the letter.
        let max = self.max_bytes.saturating_sub(1024).max(1024);
        let bodies: Vec<(String, Vec<u8>)> = letters
            .iter()
            .map(|l| (l.provenance.origin.clone(), l.to_json_within(max)))
            .collect();
        let mut waiting: Vec<usize> = (0..letters.len()).collect();
        let mut backoff = FIRST_BACKOFF;
        let mut last_error = None;
        for attempt in 1..=PRODUCE_ATTEMPTS {
            let sends = waiting.iter().map(|&i| {
                let (key, body) = &bodies[i];
                self.producer.send(
                    FutureRecord::to(&self.topic).key(key).payload(body),
                    Duration::from_secs(5),
                )
            });
            let results = futures::future::join_all(sends).await;
            let mut failed = Vec::new();
            for (&i, result) in waiting.iter().zip(results) {
                if let Err((e, _)) = result {
                    last_error = Some(e);
                    failed.push(i);
                }
            }
            waiting = failed;
            if waiting.is_empty() {
                self.spool_until = None;
                return;
            }
            if attempt < PRODUCE_ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        let error = last_error.map(|e| e.to_string()).unwrap_or_default();
        warn!(topic = %self.topic, %error, letters = waiting.len(),
            "The dead-letter topic refused letters; they are spooled, and the topic is tried again in a minute.");
        self.spool_until = Some(tokio::time::Instant::now() + SPOOL_FOR);
        let refused: Vec<DeadLetter> = waiting.iter().map(|&i| letters[i].clone()).collect();
        self.spool(&refused, &error).await;
    }

    async fn spool(&self, letters: &[DeadLetter], why: &str) {
        let written = match &self.spool {
            Some(path) => append_lines(path, letters, SPOOL_MAX_BYTES)
                .await
                .map_err(|e| e.to_string()),
            None => Err("no data directory to spool them in".to_owned()),
        };
        match written {
            Ok(()) => self.metrics.dead_letters_spooled(letters.len() as u64),
            Err(e) => {
                self.metrics.dead_letters_lost(letters.len() as u64);
                for l in letters {
                    error!(provenance = %l.provenance, reason = %l.reason, bytes = l.payload_bytes,
                        sha256 = %l.payload_sha256, %why, spool_error = %e,
                        "A dead letter was lost: neither the topic nor the spool took it.");
                }
            }
        }
    }
}

/// Appends letters as JSON lines and syncs them, unless the file would pass
/// `max_bytes`.
async fn append_lines(path: &Path, letters: &[DeadLetter], max_bytes: u64) -> std::io::Result<()> {
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    let held = f.metadata().await?.len();
    let adding: u64 = letters
        .iter()
        .map(|l| serde_json::to_vec(l).map_or(0, |v| v.len() as u64 + 1))
        .sum();
    if held.saturating_add(adding) > max_bytes {
        return Err(std::io::Error::other(format!(
            "the spool {} is full ({held} of {max_bytes} bytes)",
            path.display()
        )));
    }
    write_lines(&mut f, letters).await
}

/// Writes letters as JSON lines, and waits until they are on disk.
async fn write_lines(f: &mut tokio::fs::File, letters: &[DeadLetter]) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for letter in letters {
        serde_json::to_writer(&mut buf, letter).expect("dead letters always serialize");
        buf.push(b'\n');
    }
    f.write_all(&buf).await?;
    f.flush().await?;
    f.sync_data().await
}

impl DeadLetterSink {
    pub fn file(path: impl AsRef<Path>) -> Self {
        DeadLetterSink::File {
            path: path.as_ref().to_owned(),
            file: None,
        }
    }

    /// Writes letters and waits until they are durable (acknowledged by Kafka, spooled,
    /// or flushed to the file). Only the file sink of a replay can fail.
    pub async fn write(&mut self, letters: &[DeadLetter]) -> Result<(), SourceError> {
        if letters.is_empty() {
            return Ok(());
        }
        match self {
            DeadLetterSink::Kafka(kafka) => {
                kafka.write(letters).await;
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
                write_lines(f, letters).await.map_err(io)
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
        let payload = vec![b'x'; 3 * PAYLOAD_KEPT];
        let letter = DeadLetter::new(Provenance::file("big.jsonl", 7), "auto", &error, &payload);
        assert_eq!(letter.payload.len(), PAYLOAD_KEPT);
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

    #[tokio::test]
    async fn the_spool_stops_at_its_size_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.jsonl");
        let error = DecodeError::new(Reason::NotJson, "expected value");
        let letter = DeadLetter::new(Provenance::kafka("logs", 0, 9), "auto", &error, b"x");
        let one = serde_json::to_vec(&letter).unwrap().len() as u64 + 1;
        append_lines(&path, &[letter.clone()], 2 * one)
            .await
            .unwrap();
        append_lines(&path, &[letter.clone()], 2 * one)
            .await
            .unwrap();
        let err = append_lines(&path, &[letter], 2 * one).await.unwrap_err();
        assert!(err.to_string().contains("is full"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * one);
    }

    /// Records of a given size whose letters grow the most: control characters (six
    /// bytes each as JSON) and bytes that are not UTF-8 (base64).
    #[test]
    fn a_letter_fits_the_producer_limit_whatever_its_record() {
        let error = DecodeError::new(Reason::NotJson, "x".repeat(100_000));
        let big = 1024 * 1024 - 1;
        for payload in [
            vec![0x01u8; big],
            vec![0xffu8; big],
            "é".repeat(big / 2).into_bytes(),
        ] {
            let letter =
                DeadLetter::new(Provenance::kafka("falco", 0, 1), "auto", &error, &payload);
            let body = letter.to_json_within(1_000_000 - 1024);
            assert!(body.len() <= 1_000_000 - 1024, "{}", body.len());
            let back: DeadLetter = serde_json::from_slice(&body).unwrap();
            assert_eq!(back.payload_bytes, payload.len());
            assert_eq!(back.payload_sha256.len(), 64);
            assert!(back.error.len() <= ERROR_KEPT);
            // A tighter limit cuts the payload further, and keeps the rest.
            let tight = letter.to_json_within(20_000);
            assert!(tight.len() <= 20_000, "{}", tight.len());
            let back: DeadLetter = serde_json::from_slice(&tight).unwrap();
            assert_eq!(back.payload_sha256, letter.payload_sha256);
        }
    }
}
