//! The state file: the detector's state (baselines, lifecycle, open alerts) together with
//! the Kafka offsets it reflects, written atomically to the data directory.
//!
//! With a data directory, Kafka offsets are committed only once a state file holding
//! them has been written, so the committed offsets never run ahead of the last state
//! file: a restart restores the file and resumes from the committed offsets. A crash
//! loses at most the behaviour learned since the last file (re-learned from the
//! re-read records), and alerts already raised come back restored, so their repeats
//! count in instead of raising again. Should the commit after a file fail (or the
//! process die between the two), the restart re-reads records the file already
//! reflects: nothing is skipped, but those records count twice in alert and baseline
//! counts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use detect::DetectorSnapshot;
use ingest::Nanos;
use serde::{Deserialize, Serialize};

use crate::error::StateError;

const STATE_FILE: &str = "state.json";

/// Where and how often state is written (`[state]` in the config file).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StateConfig {
    /// Directory for the state file. Without it nothing survives a restart, and offsets
    /// are committed as soon as their events are applied.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// How often the state file is written (and offsets committed).
    #[serde(default = "default_snapshot_interval", with = "humantime_serde")]
    pub snapshot_interval: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            data_dir: None,
            snapshot_interval: default_snapshot_interval(),
        }
    }
}

/// A minute: what a crash may make the daemon re-read, against the cost of writing
/// every baseline each time.
fn default_snapshot_interval() -> Duration {
    Duration::from_secs(60)
}

/// Offsets by topic and partition: the next record to read.
pub type Offsets = BTreeMap<String, BTreeMap<i32, i64>>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub written_at: Nanos,
    pub offsets: Offsets,
    pub detector: DetectorSnapshot,
}

/// The data directory held by one process: the daemon for its whole run, a `baseline`
/// command while it rewrites the state file. Released when dropped (or when the process
/// dies: the kernel drops the lock with the descriptor).
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

/// Takes the data directory for this process, or says who holds it.
pub fn lock(dir: &Path) -> Result<DirLock, StateError> {
    std::fs::create_dir_all(dir).map_err(StateError::io("create data directory", dir))?;
    let path = dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(StateError::io("open", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(StateError::InUse {
                dir: dir.to_owned(),
                pid: holder.trim().to_owned(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(StateError::io("lock", &path)(e));
        }
    }
    file.set_len(0)
        .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()))
        .map_err(StateError::io("write", &path))?;
    Ok(DirLock { _file: file })
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Reads the state file, if there is one.
pub fn load(dir: &Path) -> Result<Option<StateFile>, StateError> {
    let file = path(dir);
    let text = match std::fs::read(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::io("read", &file)(e)),
    };
    let state: StateFile = serde_json::from_slice(&text).map_err(|source| StateError::Corrupt {
        path: file.clone(),
        source,
    })?;
    if state.detector.version != detect::SNAPSHOT_VERSION {
        return Err(StateError::Version {
            path: file,
            found: state.detector.version,
            reads: detect::SNAPSHOT_VERSION,
        });
    }
    Ok(Some(state))
}

/// Writes the state file atomically: a temporary file, synced, renamed over the old
/// one, and the directory synced, so a crash leaves either the old file or the new one.
pub fn save(dir: &Path, state: &StateFile) -> Result<(), StateError> {
    std::fs::create_dir_all(dir).map_err(StateError::io("create data directory", dir))?;
    let file = path(dir);
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let mut out = std::fs::File::create(&tmp).map_err(StateError::io("create", &tmp))?;
    let mut writer = std::io::BufWriter::new(&mut out);
    serde_json::to_writer(&mut writer, state).map_err(StateError::Serialize)?;
    writer.flush().map_err(StateError::io("write", &tmp))?;
    drop(writer);
    out.sync_all().map_err(StateError::io("sync", &tmp))?;
    std::fs::rename(&tmp, &file).map_err(StateError::io("replace", &file))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StateError::io("sync", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_loads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let detector = detect::Detector::new(detect::DetectConfig::default());
        let mut offsets = Offsets::new();
        offsets.entry("tetragon".into()).or_default().insert(2, 41);
        let state = StateFile {
            written_at: Nanos(1),
            offsets,
            detector: detector.snapshot(),
        };
        save(dir.path(), &state).unwrap();
        save(dir.path(), &state).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(state));
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_state_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "{\"written_at\":").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a driftwatch state file"), "{err}");
    }

    #[test]
    fn one_process_at_a_time_holds_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let err = lock(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("in use by another driftwatch")
                && err.contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(held);
        lock(dir.path()).unwrap();
    }
}
