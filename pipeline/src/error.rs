//! Errors of the pipeline crate: the stage's and the state file's.

use std::path::PathBuf;

/// Why the pipeline stage stopped. Everything else it meets (a state file that could
/// not be written, a commit that failed, a dead worker) is logged and retried or
/// reported, and the stage goes on.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Storing an applied batch's offsets failed: the consumer is gone.
    #[error("storing the offsets of an applied batch failed")]
    Commit(#[source] ingest::SourceError),
    #[error("the state file could not be written")]
    State(#[source] StateError),
    #[error("the {0} task panicked")]
    Panicked(&'static str, #[source] tokio::task::JoinError),
}

impl PipelineError {
    /// Whether trying again later may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            PipelineError::Commit(_) | PipelineError::Panicked(..) => false,
            PipelineError::State(e) => e.retryable(),
        }
    }
}

/// Why the state file or the data directory could not be read, written or held.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is in use by another driftwatch (pid {pid}): stop it first, or change a running daemon's \
         baselines through its API (POST /api/v1/baselines/…)",
        dir.display()
    )]
    InUse { dir: PathBuf, pid: String },
    #[error("{} is not a driftwatch state file", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} has state version {found}, this driftwatch reads {reads}", path.display())]
    Version {
        path: PathBuf,
        found: u32,
        reads: u32,
    },
    #[error("cannot serialize the state")]
    Serialize(#[source] serde_json::Error),
}

impl StateError {
    /// Maps an I/O error on `path` while doing `what`.
    pub(crate) fn io(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> StateError {
        let path = path.to_owned();
        move |source| StateError::Io { what, path, source }
    }

    /// Whether trying again may succeed: a full disk may clear, another daemon may
    /// stop; a corrupt or newer state file stays so.
    pub fn retryable(&self) -> bool {
        matches!(self, StateError::Io { .. } | StateError::InUse { .. })
    }
}
