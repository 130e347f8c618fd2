//! Errors of the compliance crate: the control catalog's, and the reports'.

use std::path::{Path, PathBuf};

pub use crate::catalog::CatalogError;

/// Why report schedules could not start, or one report could not be written. A failed
/// report is logged and the next one is tried at its own time; nothing is retried here.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A `[reports]` setting is invalid; the message names it.
    #[error("{0}")]
    Config(String),
    #[error("report schedules need compliance checks ([compliance] enabled = true)")]
    NoCompliance,
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialize {what}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("a report task panicked")]
    Panicked(#[source] tokio::task::JoinError),
}

impl ReportError {
    /// Maps an I/O error on `path` while doing `what`.
    pub(crate) fn io(
        what: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> ReportError {
        let path = path.to_owned();
        move |source| ReportError::Io { what, path, source }
    }

    /// Whether trying again later may succeed: a full disk or a folder made writable
    /// may; a wrong setting will not.
    pub fn retryable(&self) -> bool {
        matches!(self, ReportError::Io { .. } | ReportError::Panicked(_))
    }
}
