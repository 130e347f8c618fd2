//! The pipeline: the stage that owns the detector and applies decoded batches to the
//! store and to detection, its command queue, the views it publishes, its metrics, and
//! the state file that carries its state and the Kafka offsets across restarts.
//!
//! It sits on top of the library crates (ingest, store, detect, compliance, notify, the
//! log indexer of queries) and below the binary, which only wires it: the binary builds
//! [`Stages`] from its configuration and runs [`Stages::apply_all`] under its
//! supervisor.

pub mod changelog;
pub mod cluster;
pub mod command;
pub mod error;
pub mod journal;
pub mod metrics;
pub mod stage;
pub mod state;
pub mod watermark;

pub use command::{Commands, Owner, Stopped};
pub use error::{PipelineError, StateError};
pub use journal::Journal;
pub use metrics::PipelineMetrics;
pub use stage::{Persistence, Stages, Totals};
pub use state::{DirLock, Offsets, StateConfig, StateFile};
