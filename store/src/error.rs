//! Errors of the store crate.

use std::path::{Path, PathBuf};

/// Why a file the store keeps (the audit log) could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Maps an I/O error on `path` while doing `what`.
    pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.to_owned();
        move |source| StoreError::Io { what, path, source }
    }

    /// Whether trying again may succeed: a disk that was full, a directory made
    /// writable.
    pub fn retryable(&self) -> bool {
        matches!(self, StoreError::Io { .. })
    }
}
