//! The audit log of the API's mutating calls and of refused ones, kept in memory for
//! the `audit` table and, with a data directory, in `audit.jsonl` there.
//!
//! Locking: one mutex guards the entries kept, taken by an API call that records and by
//! a scan of the table, each for a copy of rows; the pipeline never takes it. The file
//! has a mutex of its own, taken after the entries' and only to append one line.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, StringBuilder, TimestampNanosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::StoreError;

/// One audited call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub time: DateTime<Utc>,
    pub actor: String,
    /// The caller's role; `none` for a caller without a valid token.
    pub role: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
}

/// Audit entries kept in memory for the `audit` table and the API.
pub const AUDIT_KEPT: usize = 100_000;

/// The audit log of mutating calls and of refused ones (401, 403); also written to the
/// daemon's log, and, with a data directory, to `audit.jsonl` there, so that it survives
/// a restart. The file is appended to per entry and rewritten with the entries kept
/// when it has grown to twice their number.
#[derive(Debug, Default)]
pub struct AuditLog {
    entries: Mutex<VecDeque<AuditEntry>>,
    file: Option<Mutex<AuditFile>>,
}

#[derive(Debug)]
struct AuditFile {
    path: std::path::PathBuf,
    lines: usize,
}

impl AuditLog {
    /// The audit log, restored from `dir/audit.jsonl` when a directory is given.
    pub fn open(dir: Option<&std::path::Path>) -> Result<Self, StoreError> {
        let Some(dir) = dir else {
            return Ok(AuditLog::default());
        };
        std::fs::create_dir_all(dir).map_err(StoreError::io("create", dir))?;
        let path = dir.join("audit.jsonl");
        let mut entries = VecDeque::new();
        let mut lines = 0;
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if !text.is_empty() && !text.ends_with('\n') {
                    // A torn last line is ended, so that the next entry starts a line.
                    use std::io::Write;
                    std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .and_then(|mut f| f.write_all(b"\n"))
                        .map_err(StoreError::io("repair", &path))?;
                }
                for line in text.lines() {
                    lines += 1;
                    // A line cut by a crash is skipped; the rest is kept.
                    if let Ok(e) = serde_json::from_str::<AuditEntry>(line) {
                        if entries.len() == AUDIT_KEPT {
                            entries.pop_front();
                        }
                        entries.push_back(e);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("read", &path)(e)),
        }
        Ok(AuditLog {
            entries: Mutex::new(entries),
            file: Some(Mutex::new(AuditFile { path, lines })),
        })
    }

    /// Records a call by `actor` in `role` (`none` for a caller without a valid token).
    pub fn record_as(&self, actor: &str, role: &str, action: &str, target: &str, outcome: &str) {
        info!(actor, role, action, target, outcome, "Audit.");
        let entry = AuditEntry {
            time: Utc::now(),
            actor: actor.to_owned(),
            role: role.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: outcome.to_owned(),
        };
        let mut entries = self.entries.lock().expect("audit lock poisoned");
        if entries.len() == AUDIT_KEPT {
            entries.pop_front();
        }
        entries.push_back(entry.clone());
        if let Some(file) = &self.file {
            let mut file = file.lock().expect("audit lock poisoned");
            if let Err(e) = file.append(&entry, &entries) {
                warn!(path = %file.path.display(), error = %e, "The audit file could not be written; the entry is in the log.");
            }
        }
    }

    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries
            .lock()
            .expect("audit lock poisoned")
            .iter()
            .cloned()
            .collect()
    }

    pub fn schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        Arc::new(Schema::new(vec![
            Field::new("time", ts, false),
            Field::new("actor", DataType::Utf8, false),
            Field::new("role", DataType::Utf8, false),
            Field::new("action", DataType::Utf8, false),
            Field::new("target", DataType::Utf8, false),
            Field::new("outcome", DataType::Utf8, false),
        ]))
    }

    /// The `audit` table.
    pub fn table(&self) -> RecordBatch {
        let entries = self.entries.lock().expect("audit lock poisoned");
        let mut time = TimestampNanosecondBuilder::new().with_timezone("UTC");
        let mut cols: Vec<StringBuilder> = (0..5).map(|_| StringBuilder::new()).collect();
        for e in entries.iter() {
            time.append_value(e.time.timestamp_nanos_opt().unwrap_or(i64::MAX));
            cols[0].append_value(&e.actor);
            cols[1].append_value(&e.role);
            cols[2].append_value(&e.action);
            cols[3].append_value(&e.target);
            cols[4].append_value(&e.outcome);
        }
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(time.finish())];
        arrays.extend(cols.iter_mut().map(|c| Arc::new(c.finish()) as ArrayRef));
        RecordBatch::try_new(Self::schema(), arrays).expect("audit columns match the schema")
    }
}

impl AuditFile {
    fn append(&mut self, entry: &AuditEntry, kept: &VecDeque<AuditEntry>) -> std::io::Result<()> {
        use std::io::Write;
        if self.lines >= 2 * AUDIT_KEPT {
            // Rewritten with what is kept, atomically.
            let tmp = self.path.with_extension("jsonl.tmp");
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            for e in kept {
                serde_json::to_writer(&mut out, e)?;
                out.write_all(b"\n")?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            self.lines = kept.len();
            return Ok(());
        }
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(&line)?;
        self.lines += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_log_survives_a_restart_and_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(Some(dir.path())).unwrap();
        log.record_as("ops", "admin", "baseline.lock", "shop/api", "ok");
        log.record_as(
            "unauthenticated",
            "none",
            "GET /api/v1/config",
            "",
            "unauthorized",
        );
        drop(log);
        // A crash in the middle of an append.
        let path = dir.path().join("audit.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"time\":\"2026-");
        std::fs::write(&path, text).unwrap();
        let log = AuditLog::open(Some(dir.path())).unwrap();
        let entries = log.entries();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].outcome, "unauthorized");
        log.record_as("ops", "admin", "baseline.relearn", "shop/api", "ok");
        assert_eq!(AuditLog::open(Some(dir.path())).unwrap().entries().len(), 3);
    }
}
