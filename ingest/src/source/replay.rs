//! The replay source: JSON-lines files (or stdin as `-`), one record per line, read in
//! order and handed to the pipeline in batches, exactly as Kafka records would be.
//! Windows downstream are measured in event time, so a replay behaves as the live run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Ack, Batch, Pending};
use crate::dead_letter::DeadLetterSink;
use crate::decode::{Decoder, Format};
use crate::error::SourceError;
use crate::event::Provenance;

/// Records per batch: the same amortisation as the Kafka source's default.
const BATCH_RECORDS: usize = 1_000;

/// Replays files through the pipeline.
pub struct ReplaySource {
    pub files: Vec<PathBuf>,
    pub format: Format,
    /// Bytes read so far, for a progress bar.
    pub progress: Arc<AtomicU64>,
}

impl ReplaySource {
    pub fn new(files: Vec<PathBuf>, format: Format) -> Self {
        ReplaySource {
            files,
            format,
            progress: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Reads every file to the end (or until cancelled).
    pub async fn run(
        &self,
        decoder: Decoder,
        mut dead_letters: DeadLetterSink,
        tx: mpsc::Sender<Batch>,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        let mut pending = Pending::new(decoder);
        for path in &self.files {
            let name = path.to_string_lossy().into_owned();
            let read_err = |source| SourceError::Read {
                path: path.clone(),
                source,
            };
            let reader: Box<dyn AsyncRead + Unpin + Send> = if name == "-" {
                Box::new(tokio::io::stdin())
            } else {
                Box::new(tokio::fs::File::open(path).await.map_err(read_err)?)
            };
            let mut reader = BufReader::with_capacity(1 << 20, reader);
            let mut line = Vec::new();
            let mut number = 0i64;
            loop {
                line.clear();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .await
                    .map_err(read_err)?;
                if n == 0 {
                    break;
                }
                number += 1;
                self.progress.fetch_add(n as u64, Ordering::Relaxed);
                let record = trim_line(&line);
                if record.is_empty() {
                    continue;
                }
                pending.push(self.format, record, Provenance::file(&name, number));
                if pending.records() >= BATCH_RECORDS
                    && !flush(&mut pending, &mut dead_letters, &tx, &cancel).await?
                {
                    return Ok(());
                }
            }
        }
        flush(&mut pending, &mut dead_letters, &tx, &cancel).await?;
        Ok(())
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    let start = line
        .iter()
        .take(end)
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(end);
    &line[start..end]
}

/// Writes the pending dead letters and hands the pending events over; false when
/// cancelled first.
async fn flush(
    pending: &mut Pending,
    dead_letters: &mut DeadLetterSink,
    tx: &mpsc::Sender<Batch>,
    cancel: &CancellationToken,
) -> Result<bool, SourceError> {
    let (events, partitions, stats) = pending.take(dead_letters).await?;
    if events.is_empty() && stats.is_empty() {
        return Ok(true);
    }
    let batch = Batch {
        events,
        partitions,
        stats,
        ack: Ack::None,
    };
    tokio::select! {
        () = cancel.cancelled() => Ok(false),
        r = tx.send(batch) => r.map(|()| true).map_err(|_| SourceError::PipelineClosed),
    }
}
