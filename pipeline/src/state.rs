//! The state file: the detector's state (baselines, lifecycle, open alerts) together with
//! the Kafka offsets it reflects, written atomically to the data directory.
//!
//! With a data directory, Kafka offsets are committed only once a state file holding
//! them has been written, so the committed offsets never run ahead of the last state
//! file: a restart restores the file and resumes from the committed offsets. A crash
//! loses at most the behaviour learned since the last file (re-learned from the
//! re-read records) and the repeat counts since it; alerts raised or changed since it
//! come back from the alert journal ([`crate::journal`]), so their repeats count in
//! instead of raising again. Should the commit after a file fail (or the
//! process die between the two), the restart fetches records the file already
//! reflects; the Kafka source skips those below the file's offsets
//! (`ingest::KafkaSource::already_read`), so they count once. Without a changelog
//! only: with one, the group's commits decide where each partition resumes.

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
    /// A compacted topic with each service's state, written with every state file,
    /// so that a partition moving to another daemon takes its baselines along
    /// ([`crate::changelog`]). Needs `[kafka] repartition-topic` and `data-dir`.
    #[serde(default)]
    pub changelog_topic: Option<String>,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            data_dir: None,
            snapshot_interval: default_snapshot_interval(),
            changelog_topic: None,
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
    /// The last line of the alert journal this file reflects ([`crate::journal`]).
    #[serde(default)]
    pub journal_seq: u64,
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

/// What a start finds in the data directory: the state file with the alerts journaled
/// since it folded in, the journal to go on appending to, and those alerts (delivery
/// is handed them again; it drops what it already took).
pub struct Recovered {
    /// `None` when there is neither a state file nor a journaled alert.
    pub state: Option<StateFile>,
    pub journal: crate::journal::Journal,
    pub journaled: Vec<detect::Alert>,
}

/// Reads the state file and the alert journal ([`crate::journal`]): the journal's
/// alerts newer than the file replace the file's copies (or join them), and the
/// returned state reflects the whole journal. Without a state file, journaled alerts
/// come back in an otherwise empty state.
pub fn recover(dir: &Path) -> Result<Recovered, StateError> {
    let mut state = load(dir)?;
    let after = state.as_ref().map_or(0, |s| s.journal_seq);
    let (journal, journaled) = crate::journal::Journal::open(dir, after)?;
    if !journaled.is_empty() {
        let s = state.get_or_insert_with(|| StateFile {
            written_at: Nanos::now(),
            offsets: Offsets::new(),
            detector: detect::Detector::new(detect::DetectConfig::default()).snapshot(),
            journal_seq: 0,
        });
        let mut at: std::collections::HashMap<String, usize> = s
            .detector
            .alerts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        for alert in &journaled {
            match at.get(&alert.id) {
                Some(&i) => s.detector.alerts[i] = alert.clone(),
                None => {
                    at.insert(alert.id.clone(), s.detector.alerts.len());
                    s.detector.alerts.push(alert.clone());
                }
            }
        }
    }
    if let Some(s) = &mut state {
        s.journal_seq = journal.seq();
    }
    Ok(Recovered {
        state,
        journal,
        journaled,
    })
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
            journal_seq: 7,
        };
        save(dir.path(), &state).unwrap();
        save(dir.path(), &state).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(state));
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    /// A crash after alerts were journaled and before the next state file: they come
    /// back with the state file, the newest copy of each, and a state file written
    /// then reflects them, so the next start does not apply them again.
    #[test]
    fn alerts_journaled_after_the_state_file_are_recovered_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let alert = |id: &str, status: &str| -> detect::Alert {
            serde_json::from_value(serde_json::json!({
                "id": id, "time": "2026-03-02T10:13:00Z", "last_seen": "2026-03-02T10:13:00Z",
                "service": "shop/api", "kind": "process", "severity": "critical",
                "subject": id, "dimension": "process", "explanation": "new",
                "evidence": [], "dedup_key": id, "count": 1, "status": status,
            }))
            .unwrap()
        };
        // Only the journal: the alerts come back in an empty state.
        let mut r = recover(dir.path()).unwrap();
        assert!(r.state.is_none());
        r.journal.append(&[alert("a", "open")]).unwrap();
        drop(r);
        let r = recover(dir.path()).unwrap();
        let mut state = r.state.unwrap();
        assert_eq!(state.detector.alerts.len(), 1);
        assert_eq!(state.journal_seq, 1);
        // A state file holding "a", then "a" acknowledged and "b" raised.
        save(dir.path(), &state).unwrap();
        let mut journal = r.journal;
        journal.clear().unwrap();
        journal
            .append(&[alert("a", "acknowledged"), alert("b", "open")])
            .unwrap();
        drop(journal);
        let r = recover(dir.path()).unwrap();
        assert_eq!(r.journaled.len(), 2);
        state = r.state.unwrap();
        let got: Vec<(&str, detect::AlertStatus)> = state
            .detector
            .alerts
            .iter()
            .map(|a| (a.id.as_str(), a.status))
            .collect();
        assert_eq!(
            got,
            [
                ("a", detect::AlertStatus::Acknowledged),
                ("b", detect::AlertStatus::Open)
            ]
        );
        assert_eq!(state.journal_seq, 3);
        // Written without the journal emptied (a crash between the two): nothing is
        // applied twice.
        save(dir.path(), &state).unwrap();
        drop(r.journal);
        let r = recover(dir.path()).unwrap();
        assert!(r.journaled.is_empty());
        assert_eq!(r.state.unwrap().detector.alerts.len(), 2);
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
