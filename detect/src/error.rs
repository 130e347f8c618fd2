//! Errors of the detect crate: baseline files and state snapshots it refuses.

/// Why a baseline file or a state snapshot was refused. Nothing is changed by a
/// refusal; trying the same input again gives the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    #[error("not a driftwatch baseline file: {0}")]
    NotBaselineFile(String),
    #[error("baseline file version {found}, this driftwatch reads {reads}")]
    BaselineVersion { found: u32, reads: u32 },
    #[error("snapshot version {found} is not {reads}")]
    SnapshotVersion { found: u32, reads: u32 },
}

impl DetectError {
    /// Whether trying again may succeed: never, the input itself is refused.
    pub fn retryable(&self) -> bool {
        false
    }
}
