//! The log index's writer: a worker that owns the [`LogIndex`], adds the lines the
//! pipeline hands it, commits on an interval and applies retention, so that indexing
//! (CPU-heavy, and blocking on commits) never runs on the ingest runtime. Searches go
//! through a [`LogSearcher`] and never wait for it.
//!
//! The pipeline sends whole batches through a bounded channel and waits when the
//! indexer is behind: lines are never dropped to keep up.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ingest::{Event, EventKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::search::{LogIndex, LogIndexConfig, LogLine, LogSearcher, SearchError};

/// How long the idle worker sleeps before looking for lines again: short next to the
/// commit interval (seconds), long enough that an idle daemon does not spin.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// Batches queued for the indexer before the pipeline waits.
const QUEUED_BATCHES: usize = 16;

/// How often retention runs (in wall time): deletes are cheap but each one commits.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// A handle on the running indexer; the worker ends when every handle is gone.
#[derive(Clone)]
pub struct LogIndexer {
    tx: mpsc::Sender<Message>,
    /// The time of lines kept, in seconds, as the worker last set it.
    kept_seconds: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Searches the index from any thread, without waiting for the writer.
    pub searcher: LogSearcher,
}

/// Where the index lives and how it is kept (`[search]` with the store's retention).
#[derive(Debug, Clone)]
pub struct IndexerConfig {
    /// The index directory; `None` keeps the index in memory.
    pub dir: Option<PathBuf>,
    /// Lines become searchable at most this long after they are queued.
    pub commit_interval: Duration,
    /// Lines older than this, behind the newest line indexed, are deleted.
    pub retention: Duration,
    /// The most the index may take (`[search] max-bytes`): past it, the time kept
    /// shrinks by a quarter at each retention run until the index fits again, and
    /// grows back toward `retention` once it takes less than half.
    pub max_bytes: u64,
}

/// The shortest time the byte cap may shrink the kept lines to: a search still finds
/// the last minutes.
const MIN_KEPT: Duration = Duration::from_secs(5 * 60);

/// The indexer's body: run it on a thread of its own. It returns once every
/// [`LogIndexer`] handle is gone, after a last commit.
pub struct IndexerWorker {
    rx: mpsc::Receiver<Message>,
    index: LogIndex,
    config: IndexerConfig,
    kept_seconds: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl IndexerWorker {
    /// Indexes until every handle is gone; blocking.
    pub fn run(self) {
        run(self.rx, self.index, &self.config, &self.kept_seconds);
    }
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
    /// Opens the index and returns a handle on it with the worker that writes it; the
    /// caller runs the worker on a thread it supervises.
    pub fn new(config: IndexerConfig) -> Result<(LogIndexer, IndexerWorker), SearchError> {
        let index = match &config.dir {
            Some(dir) => LogIndex::open(dir, LogIndexConfig::default())?,
            None => LogIndex::in_memory(LogIndexConfig::default())?,
        };
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        let searcher = index.searcher();
        let kept_seconds = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
            config.retention.as_secs(),
        ));
        Ok((
            LogIndexer {
                tx,
                searcher,
                kept_seconds: kept_seconds.clone(),
            },
            IndexerWorker {
                rx,
                index,
                config,
                kept_seconds,
            },
        ))
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

    /// How long lines are kept now: the retention, or less while the index is over
    /// its byte cap.
    pub fn kept(&self) -> Duration {
        Duration::from_secs(self.kept_seconds.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Batches queued and not yet indexed.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// The time to keep next: a quarter less while the index takes more than `max_bytes`
/// (never below [`MIN_KEPT`]), a quarter more (never past `retention`) once it takes
/// less than half of it.
fn kept_for(kept: Duration, retention: Duration, bytes: u64, max_bytes: u64) -> Duration {
    if bytes > max_bytes {
        let shorter = kept.mul_f64(0.75).max(MIN_KEPT.min(retention));
        if shorter < kept {
            warn!(
                bytes,
                max_bytes,
                kept = ?shorter,
                "The log index is over [search] max-bytes: older lines are deleted sooner than the retention."
            );
        }
        shorter
    } else if bytes < max_bytes / 2 {
        kept.mul_f64(1.25).min(retention)
    } else {
        kept
    }
}

fn run(
    mut rx: mpsc::Receiver<Message>,
    mut idx: LogIndex,
    config: &IndexerConfig,
    kept_seconds: &std::sync::atomic::AtomicU64,
) {
    let (interval, retention) = (config.commit_interval, config.retention);
    // The time kept: the retention, or less while the index is over its byte cap.
    let mut kept = retention;
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
            // Idle: the commit below still runs on time.
            None => std::thread::sleep(IDLE_POLL),
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
            kept = kept_for(kept, retention, idx.bytes(), config.max_bytes);
            kept_seconds.store(kept.as_secs(), std::sync::atomic::Ordering::Relaxed);
            let cutoff = chrono::Duration::from_std(kept)
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
    if let Err(e) = idx.commit() {
        report(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_kept_shrinks_over_the_byte_cap_and_grows_back_under_half() {
        let day = Duration::from_secs(86_400);
        let shrunk = kept_for(day, day, 5_000, 4_000);
        assert_eq!(shrunk, day.mul_f64(0.75));
        assert_eq!(
            kept_for(shrunk, day, 3_000, 4_000),
            shrunk,
            "between half and the cap: kept"
        );
        assert_eq!(
            kept_for(shrunk, day, 1_000, 4_000),
            day.min(shrunk.mul_f64(1.25))
        );
        let mut kept = day;
        for _ in 0..100 {
            kept = kept_for(kept, day, 5_000, 4_000);
        }
        assert_eq!(kept, MIN_KEPT, "never below the floor");
        assert_eq!(
            kept_for(day, day, 0, 4_000),
            day,
            "never past the retention"
        );
    }
}
