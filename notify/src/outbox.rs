//! The durable outbox: every notification is a file before delivery is tried, and is
//! removed only once a receiver took it (or moved to `failed/` when a receiver refused
//! it for good). A restart resumes whatever is still there.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::message::Item;

/// One notification for one sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Stable across retries and restarts: `webhook-id`, the receivers' idempotency key.
    pub id: String,
    pub sink: String,
    /// Unix nanoseconds when it was made; orders the outbox.
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

pub struct Outbox {
    dir: PathBuf,
    capacity: usize,
    pending: AtomicUsize,
}

impl Outbox {
    /// Opens (or creates) an outbox; returns what it still holds, oldest first.
    pub fn open(dir: &Path, capacity: usize) -> Result<(Outbox, Vec<Entry>), OutboxError> {
        std::fs::create_dir_all(dir.join("failed")).map_err(io(dir))?;
        let mut entries = Vec::new();
        for file in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = file.map_err(io(dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                match std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
                {
                    Some(e) => entries.push(e),
                    // A file cut short by a crash while it was written: the rename never
                    // happened, so it is a temporary; anything else unreadable is kept.
                    None => {
                        tracing::warn!(file = %path.display(), "Unreadable outbox entry left in place.")
                    }
                }
            }
        }
        entries.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        let outbox = Outbox {
            dir: dir.to_owned(),
            capacity,
            pending: AtomicUsize::new(entries.len()),
        };
        Ok((outbox, entries))
    }

    fn path(&self, e: &Entry) -> PathBuf {
        let id: String =
            e.id.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
        self.dir.join(format!("{:020}-{id}.json", e.created.max(0)))
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Writes an entry durably (temporary file, fsync, rename, fsync of the folder).
    pub fn put(&self, e: &Entry) -> Result<(), OutboxError> {
        let n = self.pending.fetch_add(1, Ordering::Relaxed);
        if n >= self.capacity {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(OutboxError::Full(n));
        }
        let path = self.path(e);
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(e).expect("entries serialize"))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|err| {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            io(&path)(err)
        })
    }

    /// Removes a delivered entry.
    pub fn done(&self, e: &Entry) -> Result<(), OutboxError> {
        let path = self.path(e);
        std::fs::remove_file(&path).map_err(io(&path))?;
        self.pending.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// Moves an entry a receiver refused for good to `failed/`, with why.
    pub fn fail(&self, e: &Entry, why: &str) -> Result<(), OutboxError> {
        let path = self.path(e);
        let target = self
            .dir
            .join("failed")
            .join(path.file_name().expect("entries have file names"));
        std::fs::rename(&path, &target).map_err(io(&path))?;
        let _ = std::fs::write(target.with_extension("error"), why);
        self.pending.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }
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
    fn entries_survive_reopening_until_done_and_the_outbox_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, held) = Outbox::open(dir.path(), 3).unwrap();
        assert!(held.is_empty());
        outbox.put(&entry("b", 2)).unwrap();
        outbox.put(&entry("a", 1)).unwrap();
        outbox.put(&entry("c/../x", 3)).unwrap();
        assert!(matches!(
            outbox.put(&entry("d", 4)),
            Err(OutboxError::Full(3))
        ));
        drop(outbox);
        let (outbox, held) = Outbox::open(dir.path(), 3).unwrap();
        let ids: Vec<&str> = held.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            ["a", "b", "c/../x"],
            "oldest first, ids kept as they were"
        );
        outbox.done(&held[0]).unwrap();
        outbox.fail(&held[1], "400 Bad Request").unwrap();
        assert_eq!(outbox.pending(), 1);
        let (_, held) = Outbox::open(dir.path(), 3).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join("failed"))
                .unwrap()
                .count(),
            2
        );
    }
}
