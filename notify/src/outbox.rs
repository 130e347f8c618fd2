//! The durable outbox: every notification is appended to a log and the log is synced
//! to disk before delivery is tried (one sync per batch of notifications). A
//! notification leaves the outbox when a receiver took it, or when a receiver refused
//! it for good (it is then also appended to `failed.jsonl` with why). A restart,
//! also after a crash, resumes whatever was appended and not yet taken.
//!
//! Files: `pending.jsonl` (notifications, one per line), `settled.jsonl` (ids of those
//! taken or refused), `failed.jsonl`. Both logs are compacted when the outbox opens and
//! when thousands of ids were settled while something stays pending (a sink that is
//! down), and emptied whenever nothing is pending. `failed.jsonl` keeps one older
//! generation past 16 MiB.
//!
//! Each alert's trigger and resolve are accepted once per sink: the outbox remembers
//! the [`SENT_KEPT`] latest it took (`sent.jsonl`, with what `pending.jsonl` holds) and
//! an entry whose every alert transition it took before is not written again. An alert raised again after a crash (records
//! re-read past the last state file), or handed over again when a restart restores it,
//! is not paged a second time, under any notification id.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::message::Item;

/// Room kept past the limit for driftwatch's alerts about itself.
pub const HEALTH_RESERVE: usize = 64;

/// One notification for one sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Stable across retries and restarts: `webhook-id`, the receivers' idempotency key.
    pub id: String,
    pub sink: String,
    /// Unix nanoseconds when it was made.
    pub created: i64,
    pub items: Vec<Item>,
    /// Entries this one replaces: a sink sends entries that were waiting together
    /// and had never been tried as one (see [`Outbox::merge`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merges: Vec<String>,
}

impl Entry {
    /// Whether it carries only driftwatch's alerts about itself.
    pub fn is_health(&self) -> bool {
        !self.items.is_empty()
            && self
                .items
                .iter()
                .all(|i| i.source == "alert" && i.service == detect::HEALTH_SERVICE)
    }
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
    /// Buffered: see [`Outbox::flush_settled`].
    settled: std::io::BufWriter<File>,
    /// Ids appended to `pending.jsonl` and not settled, with their sink.
    open: HashMap<String, String>,
    /// How many of them each sink has.
    per_sink: HashMap<String, usize>,
    /// Lines in `settled.jsonl` (flushed or not) since it was last emptied.
    settled_lines: usize,
    /// Alert transitions taken, oldest first ([`transition`]).
    sent: HashSet<String>,
    sent_order: std::collections::VecDeque<String>,
    /// Those of them only `pending.jsonl` holds: written to `sent.jsonl` before the
    /// pending log is emptied or compacted.
    unsaved: Vec<String>,
}

impl Logs {
    fn add(&mut self, id: &str, sink: &str) {
        if self.open.insert(id.to_owned(), sink.to_owned()).is_none() {
            *self.per_sink.entry(sink.to_owned()).or_default() += 1;
        }
    }

    /// Remembers a transition; false if it was already taken.
    fn remember(&mut self, key: String) -> bool {
        if !self.sent.insert(key.clone()) {
            return false;
        }
        if self.sent_order.len() == SENT_KEPT
            && let Some(old) = self.sent_order.pop_front()
        {
            self.sent.remove(&old);
        }
        self.sent_order.push_back(key);
        true
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
const SENT: &str = "sent.jsonl";

/// Alert transitions remembered per outbox: a restart re-reads at most a state file's
/// interval of records (a minute by default), in which even an alert storm raises far
/// fewer. About 60 bytes each in memory, twice that on disk at most.
pub const SENT_KEPT: usize = 65_536;

/// What identifies an alert's trigger or resolve for one sink; findings have none (a
/// control may fail, pass and fail again under one id).
pub fn transition(sink: &str, item: &Item) -> Option<String> {
    (item.source == "alert").then(|| {
        let action = if item.resolved { "resolve" } else { "trigger" };
        format!("{sink} {} {action}", item.id)
    })
}

/// Settled ids after which the logs are compacted while something stays pending (and
/// at least twice what is pending, so that compaction stays rare next to appends).
const COMPACT_AFTER: usize = 4096;

/// `failed.jsonl` is moved to `failed.jsonl.1` (replacing it) past this size: a
/// receiver that refuses everything cannot fill the disk.
const FAILED_MAX_BYTES: u64 = 16 << 20;

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
        let sent = sent(dir)?;
        let held = compact(dir)?;
        let outbox = Outbox {
            dir: dir.to_owned(),
            capacity,
            logs: Mutex::new(Logs {
                pending: append(&dir.join(PENDING))?,
                settled: std::io::BufWriter::new(append(&dir.join(SETTLED))?),
                open: HashMap::new(),
                per_sink: HashMap::new(),
                settled_lines: 0,
                sent: HashSet::new(),
                sent_order: std::collections::VecDeque::new(),
                unsaved: Vec::new(),
            }),
            _lock: lock,
        };
        {
            let mut logs = outbox.logs.lock().expect("outbox lock poisoned");
            for e in &held {
                logs.add(&e.id, &e.sink);
            }
            for key in sent {
                logs.remember(key);
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

    /// Whether a sink already took this item's transition (an alert's trigger or
    /// resolve); such an item is not sent again. Findings are never sent before.
    pub fn sent(&self, sink: &str, item: &Item) -> bool {
        transition(sink, item).is_some_and(|key| {
            self.logs
                .lock()
                .expect("outbox lock poisoned")
                .sent
                .contains(&key)
        })
    }

    /// Appends whole lines to the pending log and syncs it. A write that fails part way
    /// is cut back, so that the next entry does not join a broken line.
    fn append_synced(&self, logs: &mut Logs, lines: &[u8]) -> Result<(), OutboxError> {
        let path = self.dir.join(PENDING);
        let before = logs.pending.metadata().map_err(io(&path))?.len();
        let result = logs
            .pending
            .write_all(lines)
            .and_then(|()| logs.pending.sync_data());
        if let Err(e) = result {
            let _ = logs.pending.set_len(before);
            return Err(io(&path)(e));
        }
        Ok(())
    }

    /// The most notifications it holds (its own alerts may use [`HEALTH_RESERVE`] more).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends entries and syncs once. Entries past the limit are refused, except
    /// driftwatch's alerts about itself, which have a reserve of their own: the alert
    /// that says the outbox is full must not be refused for that reason. An entry of
    /// alert transitions all taken before is dropped ([`Outbox::sent`]). Returns the
    /// entries written and the entries refused, each in the order given.
    pub fn put_all(&self, entries: Vec<Entry>) -> Result<(Vec<Entry>, Vec<Entry>), OutboxError> {
        let mut logs = self.logs.lock().expect("outbox lock poisoned");
        let (mut written, mut refused) = (Vec::new(), Vec::new());
        let mut body = Vec::new();
        let mut taken = Vec::new();
        for e in entries {
            let limit = if e.is_health() {
                self.capacity + HEALTH_RESERVE
            } else {
                self.capacity
            };
            let keys: Vec<String> = e
                .items
                .iter()
                .filter_map(|i| transition(&e.sink, i))
                .collect();
            if !keys.is_empty()
                && keys.len() == e.items.len()
                && keys.iter().all(|k| logs.sent.contains(k))
            {
                // Every alert transition in it was taken before: not paged twice.
                continue;
            }
            if logs.open.len() + written.len() >= limit {
                refused.push(e);
                continue;
            }
            taken.extend(keys);
            serde_json::to_writer(&mut body, &e).expect("entries serialize");
            body.push(b'\n');
            written.push(e);
        }
        if !written.is_empty() {
            self.append_synced(&mut logs, &body)?;
            for e in &written {
                logs.add(&e.id, &e.sink);
            }
            for key in taken {
                if logs.remember(key.clone()) {
                    logs.unsaved.push(key);
                }
            }
        }
        Ok((written, refused))
    }

    /// Records that `merged` replaces the entries it names in `merges` (all pending,
    /// none ever tried, so no receiver has seen their ids): it is appended and synced
    /// before it is tried. The outbox holds one entry fewer per entry merged in.
    pub fn merge(&self, merged: &Entry) -> Result<(), OutboxError> {
        let mut logs = self.logs.lock().expect("outbox lock poisoned");
        let mut line = serde_json::to_vec(merged).expect("entries serialize");
        line.push(b'\n');
        self.append_synced(&mut logs, &line)?;
        for id in &merged.merges {
            logs.remove(id);
        }
        logs.add(&merged.id, &merged.sink);
        Ok(())
    }

    pub fn put(&self, e: &Entry) -> Result<(), OutboxError> {
        let (written, _) = self.put_all(vec![e.clone()])?;
        if written.is_empty() {
            return Err(OutboxError::Full(self.pending()));
        }
        Ok(())
    }

    fn settle(&self, e: &Entry) -> Result<(), OutboxError> {
        let mut logs = self.logs.lock().expect("outbox lock poisoned");
        let path = self.dir.join(SETTLED);
        // Neither synced nor written at once: after a crash a settled notification may
        // be sent again, with the same id, which receivers deduplicate.
        writeln!(logs.settled, "{}", e.id).map_err(io(&path))?;
        logs.settled_lines += 1;
        logs.remove(&e.id);
        if !logs.open.is_empty() && logs.settled_lines >= COMPACT_AFTER.max(2 * logs.open.len()) {
            // A sink that stays down keeps something pending, so the logs never empty
            // by themselves: they are rewritten with what is held.
            return self.compact(&mut logs);
        }
        if logs.open.is_empty() {
            // Nothing pending: both logs start over.
            self.save_sent(&mut logs)?;
            logs.pending
                .set_len(0)
                .map_err(io(&self.dir.join(PENDING)))?;
            let settled = &mut logs.settled;
            settled
                .flush()
                .and_then(|()| settled.get_ref().set_len(0))
                .map_err(io(&path))?;
            logs.settled_lines = 0;
        }
        Ok(())
    }

    /// Rewrites the pending log with what is held (atomically, synced) and empties the
    /// settled log.
    fn compact(&self, logs: &mut Logs) -> Result<(), OutboxError> {
        self.save_sent(logs)?;
        let settled_path = self.dir.join(SETTLED);
        logs.settled.flush().map_err(io(&settled_path))?;
        compact(&self.dir)?;
        logs.pending = append(&self.dir.join(PENDING))?;
        logs.settled_lines = 0;
        Ok(())
    }

    /// Appends the transitions only the pending log holds to `sent.jsonl`, synced,
    /// before the pending log loses them.
    fn save_sent(&self, logs: &mut Logs) -> Result<(), OutboxError> {
        if logs.unsaved.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(SENT);
        let mut body = logs.unsaved.join("\n");
        body.push('\n');
        let mut file = append(&path)?;
        file.write_all(body.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(io(&path))?;
        logs.unsaved.clear();
        Ok(())
    }

    /// Writes out the ids settled since the last flush. Sinks call it when they have
    /// nothing more to send, so that a busy sink writes them in batches.
    pub fn flush_settled(&self) -> Result<(), OutboxError> {
        let mut logs = self.logs.lock().expect("outbox lock poisoned");
        logs.settled.flush().map_err(io(&self.dir.join(SETTLED)))
    }

    /// A receiver took the entry.
    pub fn done(&self, e: &Entry) -> Result<(), OutboxError> {
        self.settle(e)
    }

    /// A receiver refused the entry for good: it goes to `failed.jsonl` with why.
    pub fn fail(&self, e: &Entry, why: &str) -> Result<(), OutboxError> {
        let path = self.dir.join(FAILED);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > FAILED_MAX_BYTES) {
            std::fs::rename(&path, self.dir.join(format!("{FAILED}.1"))).map_err(io(&path))?;
        }
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

/// Compacts the logs: the pending log becomes what is held (written aside, synced and
/// renamed over it), the settled log empty. Returns what is held, oldest first.
fn compact(dir: &Path) -> Result<Vec<Entry>, OutboxError> {
    let held = held(dir)?;
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
    Ok(held)
}

/// The alert transitions taken, oldest first: `sent.jsonl`, then those of every entry
/// `pending.jsonl` still has (settled or not). `sent.jsonl` is rewritten with the
/// latest [`SENT_KEPT`] when it holds twice as many.
fn sent(dir: &Path) -> Result<Vec<String>, OutboxError> {
    let path = dir.join(SENT);
    let mut keys = lines(&path)?;
    if keys.len() > 2 * SENT_KEPT {
        keys.drain(..keys.len() - SENT_KEPT);
        let tmp = dir.join("sent.jsonl.tmp");
        let mut body = keys.join("\n");
        body.push('\n');
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(body.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        };
        write().map_err(io(&path))?;
    }
    for line in lines(&dir.join(PENDING))? {
        if let Ok(e) = serde_json::from_str::<Entry>(&line) {
            keys.extend(e.items.iter().filter_map(|i| transition(&e.sink, i)));
        }
    }
    Ok(keys)
}

/// What the logs hold pending, in the order it was queued: appended, neither settled
/// nor replaced by a merged entry, each id once. A merged entry takes the place of the
/// first entry it replaces.
fn held(dir: &Path) -> Result<Vec<Entry>, OutboxError> {
    let settled: HashSet<String> = lines(&dir.join(SETTLED))?.into_iter().collect();
    let entries: Vec<Entry> = lines(&dir.join(PENDING))?
        .iter()
        .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
        .collect();
    let replaced: HashSet<&str> = entries
        .iter()
        .flat_map(|e| e.merges.iter().map(String::as_str))
        .collect();
    // Queue positions: an entry's line, or its first part's position.
    let mut place: HashMap<&str, usize> = HashMap::new();
    for (line, e) in entries.iter().enumerate() {
        let first = e
            .merges
            .iter()
            .filter_map(|m| place.get(m.as_str()).copied())
            .min()
            .unwrap_or(line);
        place.entry(e.id.as_str()).or_insert(first.min(line));
    }
    let mut seen = HashSet::new();
    let mut held: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            !settled.contains(&e.id)
                && !replaced.contains(e.id.as_str())
                && seen.insert(e.id.as_str())
        })
        .collect();
    held.sort_by_key(|e| place[e.id.as_str()]);
    Ok(held.into_iter().cloned().collect())
}

/// The ids an outbox folder holds pending (for tools and tests; the outbox need not be
/// open).
pub fn pending_ids(dir: &Path) -> Vec<String> {
    held(dir)
        .unwrap_or_default()
        .into_iter()
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
            merges: Vec::new(),
        }
    }

    fn alert_entry(id: &str, alert: &str, resolved: bool) -> Entry {
        let item = Item {
            source: "alert".into(),
            id: alert.into(),
            dedup_key: "k".into(),
            service: "shop/api".into(),
            kind: "process".into(),
            severity: detect::Severity::High,
            summary: String::new(),
            details: String::new(),
            time: "2026-03-02T10:00:00Z".into(),
            resolved,
            references: Vec::new(),
            mitre: None,
        };
        Entry {
            items: vec![item],
            ..entry(id, 0)
        }
    }

    /// An alert handed over again (after a crash, under another notification id) is
    /// not written again, whether the first is still pending, was settled, or went
    /// out before the logs were emptied and the outbox reopened; its resolve is new.
    #[test]
    fn an_alert_transition_is_taken_once_per_sink_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(dir.path(), 100).unwrap();
        let first = alert_entry("n1", "a1", false);
        assert_eq!(outbox.put_all(vec![first.clone()]).unwrap().0.len(), 1);
        // Pending: a second hand-over under another id is dropped.
        let again = alert_entry("n2", "a1", false);
        assert_eq!(
            outbox.put_all(vec![again.clone()]).unwrap(),
            (vec![], vec![])
        );
        assert!(outbox.sent("hook", &again.items[0]));
        // Another sink has not taken it.
        assert!(!outbox.sent("chat", &again.items[0]));
        // Settled, and the logs emptied (nothing pending): still known.
        outbox.done(&first).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(PENDING)).unwrap().len(),
            0
        );
        assert_eq!(outbox.put_all(vec![again.clone()]).unwrap().0.len(), 0);
        drop(outbox);
        // Reopened: known from sent.jsonl.
        let (outbox, held) = Outbox::open(dir.path(), 100).unwrap();
        assert!(held.is_empty());
        assert_eq!(outbox.put_all(vec![again]).unwrap().0.len(), 0);
        // Written and not settled when the process died: known from pending.jsonl.
        let resolve = alert_entry("n3", "a1", true);
        assert_eq!(outbox.put_all(vec![resolve]).unwrap().0.len(), 1);
        drop(outbox);
        let (outbox, held) = Outbox::open(dir.path(), 100).unwrap();
        assert_eq!(held.len(), 1);
        let resolve_again = alert_entry("n4", "a1", true);
        assert_eq!(outbox.put_all(vec![resolve_again]).unwrap().0.len(), 0);
        // Findings carry no transition: each is written.
        let mut finding = alert_entry("f1", "c1", false);
        finding.items[0].source = "finding".into();
        assert_eq!(outbox.put_all(vec![finding.clone()]).unwrap().0.len(), 1);
        finding.id = "f2".into();
        assert_eq!(outbox.put_all(vec![finding]).unwrap().0.len(), 1);
    }

    /// One sink down for good, another delivering: the logs stay bounded while running,
    /// and what the dead sink holds survives.
    #[test]
    fn a_dead_sink_does_not_grow_the_logs_without_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(dir.path(), 100_000).unwrap();
        let mut dead = entry("dead-1", 0);
        dead.sink = "dead".into();
        outbox.put(&dead).unwrap();
        for i in 0..20_000 {
            let e = entry(&format!("live-{i}"), i);
            outbox.put(&e).unwrap();
            outbox.done(&e).unwrap();
        }
        outbox.flush_settled().unwrap();
        let size = |f: &str| std::fs::metadata(dir.path().join(f)).unwrap().len();
        // Each log holds at most a compaction's worth of lines (about 100 bytes each).
        assert!(size(PENDING) < 1_000_000, "{}", size(PENDING));
        assert!(size(SETTLED) < 200_000, "{}", size(SETTLED));
        drop(outbox);
        let (_, held) = Outbox::open(dir.path(), 100_000).unwrap();
        assert_eq!(
            held.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["dead-1"]
        );
    }

    #[test]
    fn a_merged_entry_replaces_its_parts_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(dir.path(), 10).unwrap();
        outbox
            .put_all(vec![entry("a", 1), entry("b", 2), entry("c", 3)])
            .unwrap();
        let ab = Entry {
            merges: vec!["a".into(), "b".into()],
            ..entry("ab", 1)
        };
        outbox.merge(&ab).unwrap();
        assert_eq!(outbox.pending(), 2);
        assert_eq!(outbox.pending_for("hook"), 2);
        // In queue order: the merged entry where its first part was.
        assert_eq!(pending_ids(dir.path()), ["ab", "c"]);
        drop(outbox);
        let (outbox, held) = Outbox::open(dir.path(), 10).unwrap();
        let ids: Vec<&str> = held.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["ab", "c"]);
        assert_eq!(held[0].merges, ["a", "b"]);
        // A merge of a merge: both levels stay replaced.
        outbox
            .merge(&Entry {
                merges: vec!["ab".into(), "c".into()],
                ..entry("abc", 1)
            })
            .unwrap();
        drop(outbox);
        assert_eq!(pending_ids(dir.path()), ["abc"]);
        let (outbox, held) = Outbox::open(dir.path(), 10).unwrap();
        outbox.done(&held[0]).unwrap();
        drop(outbox);
        assert!(pending_ids(dir.path()).is_empty());
    }

    #[test]
    fn entries_survive_reopening_until_settled_and_the_outbox_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, held) = Outbox::open(dir.path(), 3).unwrap();
        assert!(held.is_empty());
        outbox.put(&entry("a", 1)).unwrap();
        let (written, refused) = outbox
            .put_all(vec![entry("b", 2), entry("c/../x", 3)])
            .unwrap();
        assert_eq!((written.len(), refused.len()), (2, 0));
        let (written, refused) = outbox.put_all(vec![entry("e", 5)]).unwrap();
        assert_eq!((written.len(), refused[0].id.as_str()), (0, "e"));
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
        // Settled ids are buffered until a flush.
        outbox.flush_settled().unwrap();
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
    fn driftwatchs_own_alerts_have_room_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(dir.path(), 1).unwrap();
        let own = |id: &str, service: &str| Entry {
            items: vec![Item {
                source: "alert".into(),
                id: id.into(),
                dedup_key: id.into(),
                service: service.into(),
                kind: "delivery".into(),
                severity: detect::Severity::Critical,
                summary: String::new(),
                details: String::new(),
                time: String::new(),
                resolved: false,
                references: vec![],
                mitre: None,
            }],
            ..entry(id, 1)
        };
        let (written, refused) = outbox
            .put_all(vec![
                entry("a", 1),
                own("b", "shop/api"),
                own("full", detect::HEALTH_SERVICE),
            ])
            .unwrap();
        let ids = |v: &[Entry]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&written), ["a", "full"]);
        assert_eq!(ids(&refused), ["b"]);
        // The reserve is bounded too.
        let many: Vec<Entry> = (0..HEALTH_RESERVE + 5)
            .map(|i| own(&format!("h{i}"), detect::HEALTH_SERVICE))
            .collect();
        let (written, refused) = outbox.put_all(many).unwrap();
        assert_eq!((written.len(), refused.len()), (HEALTH_RESERVE - 1, 6));
        assert_eq!(outbox.pending(), 1 + HEALTH_RESERVE);
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
