//! Errors of the queries crate: the SQL engine's, the log index's and the PostgreSQL
//! wire server's. Each says whether trying again may succeed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tantivy::TantivyError;

/// Why a query did not run.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("{0}")]
    ReadOnly(String),
    #[error("{0}")]
    Invalid(String),
    #[error("query exceeded the {0:?} time limit")]
    Timeout(Duration),
    /// A value, a batch or the result passed its size limit.
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Failed(String),
}

impl SqlError {
    /// The outcome label of the SQL metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            SqlError::ReadOnly(_) => "rejected",
            SqlError::Invalid(_) => "invalid",
            SqlError::Timeout(_) => "timeout",
            SqlError::TooLarge(_) => "too_large",
            SqlError::Failed(_) => "error",
        }
    }

    /// Whether the same query may succeed later: one that ran out of time or memory
    /// while others ran, or failed inside the engine; never a refused or invalid one.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            SqlError::Timeout(_) | SqlError::TooLarge(_) | SqlError::Failed(_)
        )
    }
}

/// Errors of the log index.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The index directory could not be created.
    #[error("cannot create log index directory {path:?}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The index in a directory could not be opened or created (not a directory, schema
    /// of another version, writer lock held by another process, ...).
    #[error("cannot open log index in {path:?}")]
    Open {
        path: PathBuf,
        #[source]
        source: TantivyError,
    },
    /// The query text does not parse; `message` is the parser's explanation.
    #[error("invalid search query {text:?}: {message}")]
    Query { text: String, message: String },
    /// An index operation failed.
    #[error("log index {operation} failed")]
    Index {
        operation: &'static str,
        #[source]
        source: TantivyError,
    },
    /// There is no index directory to search.
    #[error("no log index in {path:?} (is [search] enabled, and the path the daemon's?)")]
    NoIndex { path: PathBuf },
    /// The index was opened for searching only (another process writes it).
    #[error("the log index was opened read-only: it cannot {operation}")]
    ReadOnly { operation: &'static str },
    /// A stored document lacks a field or holds a value out of range.
    #[error("stored log line has no valid `{field}`")]
    Corrupt { field: &'static str },
}

impl SearchError {
    /// Whether trying again may succeed: an index being written (a lock, a full disk)
    /// may come free; a bad query or a missing index stays so.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            SearchError::CreateDir { .. } | SearchError::Open { .. } | SearchError::Index { .. }
        )
    }
}

/// Why the PostgreSQL wire server could not start.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A `[postgres]` setting is refused; the message names it.
    #[error("{0}")]
    Config(String),
    #[error("cannot use the TLS certificate and key: {0}")]
    Tls(String),
    #[error("cannot set up pg_catalog: {0}")]
    Catalog(String),
    #[error("cannot listen on {addr} for PostgreSQL clients")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl PgError {
    /// Whether trying again may succeed: a port that is taken may come free.
    pub fn retryable(&self) -> bool {
        matches!(self, PgError::Listen { .. })
    }
}
