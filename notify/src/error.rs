//! Errors of the notify crate: why delivery could not start. Once started, delivery
//! never fails as a whole: each notification's failures are retried, recorded in its
//! status and counted, and the outbox keeps it until a receiver takes it.

pub use crate::outbox::OutboxError;

/// Why the notifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A `[notify]` setting is invalid; the message names it.
    #[error("{0}")]
    Config(String),
    #[error("the outbox cannot be opened")]
    Outbox(#[from] OutboxError),
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
    #[error("cannot start the delivery thread")]
    Thread(#[source] std::io::Error),
}

impl NotifyError {
    /// Whether trying again may succeed: an outbox on a disk that was full, or a
    /// thread the system could not give; a wrong setting stays wrong.
    pub fn retryable(&self) -> bool {
        matches!(self, NotifyError::Outbox(_) | NotifyError::Thread(_))
    }
}
