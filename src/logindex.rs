//! The log index's writer: a dedicated thread that owns the tantivy writer, adds the
//! lines the pipeline hands it, commits on an interval and applies retention, so that
//! indexing (CPU-heavy, and blocking on commits) never runs on the ingest runtime.
//!
//! The pipeline sends whole batches through a bounded channel and waits when the
//! indexer is behind: lines are never dropped to keep up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use ingest::{Event, EventKind};
use queries::search::{LogIndex, LogIndexConfig, LogLine, SearchError};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::config::Config;

/// Batches queued for the indexer before the pipeline waits.
const QUEUED_BATCHES: usize = 16;

/// How often retention runs (in wall time): deletes are cheap but each one commits.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// A handle on the running indexer; the thread ends when every handle is gone.
#[derive(Clone)]
pub struct LogIndexer {
    tx: mpsc::Sender<Message>,
    /// The index, for searches in this process.
    pub index: Arc<Mutex<LogIndex>>,
}

enum Message {
    Lines(Vec<LogLine>),
    /// Commit now, then say so.
    Flush(oneshot::Sender<()>),
}

/// The search line of a log event, if it is one.
pub fn log_line(event: &Event) -> Option<LogLine> {
    let EventKind::Log {
        stream,
        message,
        template_id,
    } = &event.kind
    else {
        return None;
    };
    let w = &event.workload;
    Some(LogLine {
        service: event.service.clone(),
        container: w
            .container_name
            .clone()
            .or_else(|| w.container_id.clone())
            .or_else(|| w.pod.clone())
            .unwrap_or_default(),
        stream: stream.clone().unwrap_or_default(),
        template_id: template_id.unwrap_or(u32::MAX),
        time: DateTime::<Utc>::from_timestamp_nanos(event.time.0),
        line: message.clone(),
    })
}

impl LogIndexer {
    /// Opens the index the config names and starts the indexer; `None` when search is
    /// disabled.
    pub fn start(config: &Config) -> anyhow::Result<Option<LogIndexer>> {
        if !config.search.enabled {
            return Ok(None);
        }
        let index = match config.index_dir() {
            Some(dir) => LogIndex::open(&dir, LogIndexConfig::default())
                .with_context(|| format!("cannot open the log index in {}", dir.display()))?,
            None => LogIndex::in_memory(LogIndexConfig::default())
                .context("cannot create the log index")?,
        };
        let index = Arc::new(Mutex::new(index));
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        let retention = config.store.retention;
        let interval = config.search.commit_interval;
        let worker = index.clone();
        std::thread::Builder::new()
            .name("log-indexer".into())
            .spawn(move || run(rx, &worker, interval, retention))
            .context("cannot start the log indexer thread")?;
        Ok(Some(LogIndexer { tx, index }))
    }

    /// Queues lines for indexing; waits while the indexer is behind.
    pub async fn send(&self, lines: Vec<LogLine>) {
        if lines.is_empty() {
            return;
        }
        if self.tx.send(Message::Lines(lines)).await.is_err() {
            warn!("The log indexer has stopped; lines are not indexed.");
        }
    }

    /// Commits every line queued so far; returns once they are searchable.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_err() || wait.await.is_err() {
            warn!("The log indexer has stopped; the last lines may not be searchable.");
        }
    }
}

fn run(
    mut rx: mpsc::Receiver<Message>,
    index: &Mutex<LogIndex>,
    interval: Duration,
    retention: Duration,
) {
    let mut last_commit = Instant::now();
    let mut last_retention = Instant::now();
    let mut newest: Option<DateTime<Utc>> = None;
    let mut pending = 0usize;
    let report = |e: SearchError| warn!(error = %e, "Log indexing failed.");
    loop {
        let message = match rx.try_recv() {
            Ok(m) => Some(m),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        let mut idx = index.lock().expect("log index lock poisoned");
        match message {
            Some(Message::Flush(done)) => {
                if let Err(e) = idx.commit() {
                    report(e);
                }
                pending = 0;
                last_commit = Instant::now();
                let _ = done.send(());
                continue;
            }
            Some(Message::Lines(lines)) => {
                for line in &lines {
                    newest = newest.max(Some(line.time));
                    if let Err(e) = idx.add(line) {
                        report(e);
                    }
                }
                pending += lines.len();
            }
            None => {
                drop(idx);
                std::thread::sleep(Duration::from_millis(20));
                idx = index.lock().expect("log index lock poisoned");
            }
        }
        if pending > 0 && last_commit.elapsed() >= interval {
            match idx.commit() {
                Ok(()) => debug!(lines = pending, "Log index committed."),
                Err(e) => report(e),
            }
            pending = 0;
            last_commit = Instant::now();
        }
        if let Some(newest) = newest
            && last_retention.elapsed() >= RETENTION_EVERY
        {
            let cutoff = chrono::Duration::from_std(retention)
                .ok()
                .and_then(|r| newest.checked_sub_signed(r));
            if let Some(cutoff) = cutoff
                && let Err(e) = idx.delete_before(cutoff)
            {
                report(e);
            }
            pending = 0;
            last_retention = Instant::now();
        }
    }
    let mut idx = index.lock().expect("log index lock poisoned");
    if let Err(e) = idx.commit() {
        report(e);
    }
}
