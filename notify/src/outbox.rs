//! The durable outbox: every notification is appended to a log and the log is synced
//! to disk before delivery is tried (one sync per batch of notifications). A
//! notification leaves the outbox when a receiver took it, or when a receiver refused
//! it for good (it is then also appended to `failed.jsonl` with why). A restart,
//! also after a crash, resumes whatever was appended and not yet taken.
//!
//! Files: `pending.jsonl` (notifications, one per line), `settled.jsonl` (ids of those
//! taken or refused), `failed.jsonl`. Both logs are compacted when the outbox opens,
//! and emptied whenever nothing is pending.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::message::Item;

/// One notification for one sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Stable across retries and restarts: `webhook-id`, the receivers' idempotency key.
    pub id: String,
    pub sink: String,
    /// Unix nanoseconds when it was made.
    pub created: i64,
    pub items: Vec<Item>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the outbox holds {0} notifications, its limit")]
    Full(usize),
    #[error("outbox {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_owned(),
        source,
    }
}

struct Logs {
    pending: File,
    settled: File,
    /// Ids appended to `pending.jsonl` and not settled, with their sink.
    open: HashMap<String, String>,
    /// How many of them each sink has.
    per_sink: HashMap<String, usize>,
}

impl Logs {
    fn add(&mut self, id: &str, sink: &str) {
        if self.open.insert(id.to_owned(), sink.to_owned()).is_none() {
            *self.per_sink.entry(sink.to_owned()).or_default() += 1;
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(sink) = self.open.remove(id)
            && let Some(n) = self.per_sink.get_mut(&sink)
        {
            *n = n.saturating_sub(1);
        }
    }
}

pub struct Outbox {
    dir: PathBuf,
    capacity: usize,
    logs: Mutex<Logs>,
    /// Held for the outbox's life: one process per outbox folder.
    _lock: File,
}

const PENDING: &str = "pending.jsonl";
const SETTLED: &str = "settled.jsonl";
const FAILED: &str = "failed.jsonl";

fn append(path: &Path) -> Result<File, OutboxError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))
}

/// Lines of a log; a last line cut short by a crash is skipped.
fn lines(path: &Path) -> Result<Vec<String>, OutboxError> {
    match File::open(path) {
        Ok(f) => Ok(BufReader::new(f).lines().map_while(Result::ok).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(path)(e)),
    }
}

impl Outbox {
    /// Opens (or creates) an outbox; returns what it still holds, oldest first.
    pub fn open(dir: &Path, capacity: usize) -> Result<(Outbox, Vec<Entry>), OutboxError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        // A previous owner in this process may still be shutting down: wait a little.
        let mut tries = 0;
        while lock.try_lock().is_err() {
            tries += 1;
            if tries == 40 {
                return Err(OutboxError::Io {
                    path: lock_path,
                    source: std::io::Error::other(
                        "another driftwatch process uses this outbox (give each its own outbox-dir)",
                    ),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let settled: HashSet<String> = lines(&dir.join(SETTLED))?.into_iter().collect();
        let mut seen = HashSet::new();
        let held: Vec<Entry> = lines(&dir.join(PENDING))?
            .iter()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
            .filter(|e| !settled.contains(&e.id) && seen.insert(e.id.clone()))
            .collect();
        // Compact: the pending log becomes what is held, the settled log empty.
        let tmp = dir.join("pending.jsonl.tmp");
        let mut body = Vec::new();
        for e in &held {
            serde_json::to_writer(&mut body, e).expect("entries serialize");
            body.push(b'\n');
        }
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(PENDING))?;
            File::create(dir.join(SETTLED))?.sync_all()?;
            File::open(dir)?.sync_all()
        };
        write().map_err(io(dir))?;
        let outbox = Outbox {
            dir: dir.to_owned(),
            capacity,
            logs: Mutex::new(Logs {
                pending: append(&dir.join(PENDING))?,
                settled: append(&dir.join(SETTLED))?,
                open: HashMap::new(),
                per_sink: HashMap::new(),
            }),
            _lock: lock,
        };
        {
            let mut logs = outbox.logs.lock().expect("outbox lock poisoned");
            for e in &held {
                logs.add(&e.id, &e.sink);
            }
        }
        Ok((outbox, held))
    }

    pub fn pending(&self) -> usize {
        self.logs.lock().expect("outbox lock poisoned").open.len()
    }

    /// Pending notifications of one sink.
    pub fn pending_for(&self, sink: &str) -> usize {
        let logs = self.logs.lock().expect("outbox lock poisoned");
        logs.per_sink.get(sink).copied().unwrap_or(0)
    }

    /// Appends entries and syncs once; the ones past the limit are refused. Returns
    /// how many were written (the first ones; fewer than given when the outbox is full).
    pub fn put_all(&self, entries: &[Entry]) -> Result<usize, OutboxError> {
        let mut logs = self.logs.lock().expect("outbox lock poisoned");
        let room = self.capacity.saturating_sub(logs.open.len());
        let take = entries.len().min(room);
        let mut body = Vec::new();
        for e in &entries[..take] {
            serde_json::to_writer(&mut body, e).expect("entries serialize");
            body.push(b'\n');
        }
        let path = self.dir.join(PENDING);
        if take > 0 {
            // A write that fails part way is cut back, so that the next entry does not
            // join a broken line.
            let before = logs.pending.metadata().map_err(io(&path))?.len();
            let written = logs
                .pending
                .write_all(&body)
                .and_then(|()| logs.pending.sync_data());
            if let Err(e) = written {
                let _ = logs.pending.set_len(before);
                return Err(io(&path)(e));
            }
            for e in &entries[..take] {
                logs.add(&e.id, &e.sink);
            }
        }
        Ok(take)
    }

    pub fn put(&self, e: &Entry) -> Result<(), OutboxError> {
        match self.put_all(std::slice::from_ref(e))? {
            0 => Err(OutboxError::Full(self.pending())),
            _ => Ok(()),
        }
    }

    fn settle(&self, e: &Entry) -> Result<(), OutboxError> {
        let mut logs = self.logs.lock().expect("outbox lock poisoned");
        let path = self.dir.join(SETTLED);
        // Not synced: after a crash a settled notification may be sent again, with the
        // same id, which receivers deduplicate.
        writeln!(logs.settled, "{}", e.id).map_err(io(&path))?;
        logs.remove(&e.id);
        if logs.open.is_empty() {
            // Nothing pending: both logs start over.
            logs.pending
                .set_len(0)
                .map_err(io(&self.dir.join(PENDING)))?;
            logs.settled.set_len(0).map_err(io(&path))?;
        }
        Ok(())
    }

    /// A receiver took the entry.
    pub fn done(&self, e: &Entry) -> Result<(), OutboxError> {
        self.settle(e)
    }

    /// A receiver refused the entry for good: it goes to `failed.jsonl` with why.
    pub fn fail(&self, e: &Entry, why: &str) -> Result<(), OutboxError> {
        let path = self.dir.join(FAILED);
        let mut line = serde_json::to_vec(&serde_json::json!({ "entry": e, "error": why }))
            .expect("entries serialize");
        line.push(b'\n');
        append(&path)?.write_all(&line).map_err(io(&path))?;
        self.settle(e)
    }

    /// The entries a receiver refused for good, with why.
    pub fn failed(&self) -> Vec<(Entry, String)> {
        lines(&self.dir.join(FAILED))
            .unwrap_or_default()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| {
                Some((
                    serde_json::from_value(v["entry"].clone()).ok()?,
                    v["error"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }
}

/// The ids an outbox folder holds pending (for tools and tests; the outbox need not be
/// open).
pub fn pending_ids(dir: &Path) -> Vec<String> {
    let settled: HashSet<String> = lines(&dir.join(SETTLED))
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut seen = HashSet::new();
    lines(&dir.join(PENDING))
        .unwrap_or_default()
        .iter()
        .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
        .filter(|e| !settled.contains(&e.id) && seen.insert(e.id.clone()))
        .map(|e| e.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, created: i64) -> Entry {
        Entry {
            id: id.into(),
            sink: "hook".into(),
            created,
            items: Vec::new(),
        }
    }

    #[test]
    fn entries_survive_reopening_until_settled_and_the_outbox_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, held) = Outbox::open(dir.path(), 3).unwrap();
        assert!(held.is_empty());
        outbox.put(&entry("a", 1)).unwrap();
        assert_eq!(
            outbox
                .put_all(&[entry("b", 2), entry("c/../x", 3)])
                .unwrap(),
            2
        );
        assert_eq!(outbox.put_all(&[entry("e", 5)]).unwrap(), 0);
        assert!(matches!(
            outbox.put(&entry("d", 4)),
            Err(OutboxError::Full(3))
        ));
        drop(outbox);
        let (outbox, held) = Outbox::open(dir.path(), 3).unwrap();
        let ids: Vec<&str> = held.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c/../x"], "in order, ids kept as they were");
        outbox.done(&held[0]).unwrap();
        outbox.fail(&held[1], "400 Bad Request").unwrap();
        assert_eq!(outbox.pending(), 1);
        assert_eq!(pending_ids(dir.path()), ["c/../x"]);
        drop(outbox);
        let (outbox, held) = Outbox::open(dir.path(), 3).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(outbox.failed()[0].1, "400 Bad Request");
        // Settling the last one empties the logs.
        outbox.done(&held[0]).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(PENDING)).unwrap().len(),
            0
        );
        drop(outbox);
        let (_, held) = Outbox::open(dir.path(), 3).unwrap();
        assert!(held.is_empty());
    }

    #[test]
    fn one_outbox_has_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = Outbox::open(dir.path(), 10).unwrap();
        let err = Outbox::open(dir.path(), 10).err().unwrap().to_string();
        assert!(err.contains("another driftwatch process"), "{err}");
        drop(first);
        assert!(Outbox::open(dir.path(), 10).is_ok());
    }

    #[test]
    fn a_line_cut_short_by_a_crash_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(dir.path(), 10).unwrap();
        outbox.put(&entry("a", 1)).unwrap();
        drop(outbox);
        let mut f = append(&dir.path().join(PENDING)).unwrap();
        f.write_all(br#"{"id":"b","sink":"ho"#).unwrap();
        let (_, held) = Outbox::open(dir.path(), 10).unwrap();
        assert_eq!(held.len(), 1);
    }
}
