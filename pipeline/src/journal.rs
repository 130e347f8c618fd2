//! The alert journal (`alerts.jsonl` in the data directory): every alert raised, and
//! every alert a command changed, since the last state file, appended and synced
//! before it is handed to delivery or shown to readers.
//!
//! Each line carries a sequence number; a state file records the last number it
//! reflects, and the journal is emptied once that file is written. A restart restores
//! the state file, then puts back the journal's newer lines ([`Journal::open`]), so a
//! crash loses no alert and no analyst's acknowledgement: records re-read past the
//! state file count into the alerts they raised instead of raising them again, and an
//! alert a receiver already got is still there for its resolve. What a crash still
//! loses is said in [`crate::state`]: learned behaviour (re-learned from the re-read
//! records) and repeat counts since the state file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use detect::Alert;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::StateError;

const JOURNAL_FILE: &str = "alerts.jsonl";

/// The journal stops growing here, with a warning, until the next state file empties
/// it: only a state file that keeps failing lets it grow (an alert is about 1 KiB, so
/// this holds some 60,000 alerts, far more than a snapshot interval raises).
const MAX_BYTES: u64 = 64 << 20;

#[derive(Serialize, Deserialize)]
struct Line {
    seq: u64,
    alert: Alert,
}

pub struct Journal {
    path: PathBuf,
    file: File,
    /// The last sequence number written (0 before any).
    seq: u64,
    bytes: u64,
    /// Whether the size warning was logged since the journal was last emptied.
    warned: bool,
}

impl Journal {
    /// Opens the journal in `dir`; returns it and the alerts journaled after sequence
    /// number `after` (what the state file reflects), oldest first. A last line cut
    /// short by a crash is skipped.
    pub fn open(dir: &Path, after: u64) -> Result<(Journal, Vec<Alert>), StateError> {
        let path = dir.join(JOURNAL_FILE);
        let mut seq = after;
        let mut newer = Vec::new();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StateError::io("read", &path)(e)),
        };
        // Whole lines only: a tail cut short by a crash is dropped, so that the next
        // append starts a line of its own.
        let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for line in text[..whole].split(|b| *b == b'\n') {
            let Ok(line) = serde_json::from_slice::<Line>(line) else {
                continue;
            };
            seq = seq.max(line.seq);
            if line.seq > after {
                newer.push(line.alert);
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(StateError::io("open", &path))?;
        if whole < text.len() {
            file.set_len(whole as u64)
                .map_err(StateError::io("repair", &path))?;
        }
        let bytes = whole as u64;
        Ok((
            Journal {
                path,
                file,
                seq,
                bytes,
                warned: false,
            },
            newer,
        ))
    }

    /// The last sequence number written: what a state file written now reflects.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Appends alerts and syncs once. Past [`MAX_BYTES`] nothing is appended (and a
    /// warning says so) until the next state file.
    pub fn append(&mut self, alerts: &[Alert]) -> Result<(), StateError> {
        if alerts.is_empty() {
            return Ok(());
        }
        if self.bytes >= MAX_BYTES {
            if !self.warned {
                self.warned = true;
                warn!(path = %self.path.display(), "The alert journal is full: state files are failing, and alerts raised until the next one are lost by a crash.");
            }
            return Ok(());
        }
        let mut body = Vec::new();
        let mut seq = self.seq;
        for alert in alerts {
            seq += 1;
            serde_json::to_writer(
                &mut body,
                &Line {
                    seq,
                    alert: alert.clone(),
                },
            )
            .map_err(StateError::Serialize)?;
            body.push(b'\n');
        }
        let written = self
            .file
            .write_all(&body)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cut back, so that the next line does not join a broken one.
            let _ = self.file.set_len(self.bytes);
            return Err(StateError::io("append to", &self.path)(e));
        }
        self.seq = seq;
        self.bytes += body.len() as u64;
        Ok(())
    }

    /// Empties the journal once a state file reflecting [`Journal::seq`] is written.
    /// Sequence numbers go on, so that a crash before this leaves lines the state file
    /// already holds, which the next start skips.
    pub fn clear(&mut self) -> Result<(), StateError> {
        self.file
            .set_len(0)
            .map_err(StateError::io("empty", &self.path))?;
        self.bytes = 0;
        self.warned = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use detect::{AlertKind, AlertStatus};

    fn alert(id: &str, status: AlertStatus) -> Alert {
        serde_json::from_value(serde_json::json!({
            "id": id, "time": "2026-03-02T10:13:00Z", "last_seen": "2026-03-02T10:13:00Z",
            "service": "shop/api", "kind": AlertKind::Process.as_str(), "severity": "critical",
            "subject": "/bin/sh", "dimension": "process", "explanation": "new",
            "evidence": [], "dedup_key": "k", "count": 1, "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn alerts_after_the_state_file_come_back_and_older_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, newer) = Journal::open(dir.path(), 0).unwrap();
        assert!(newer.is_empty());
        j.append(&[alert("a", AlertStatus::Open)]).unwrap();
        let reflected = j.seq();
        j.append(&[
            alert("b", AlertStatus::Open),
            alert("a", AlertStatus::Acknowledged),
        ])
        .unwrap();
        drop(j);
        // The state file holds the first line: the other two come back, in order.
        let (j, newer) = Journal::open(dir.path(), reflected).unwrap();
        let got: Vec<(&str, AlertStatus)> =
            newer.iter().map(|a| (a.id.as_str(), a.status)).collect();
        assert_eq!(
            got,
            [("b", AlertStatus::Open), ("a", AlertStatus::Acknowledged)]
        );
        assert_eq!(j.seq(), 3);
    }

    #[test]
    fn a_cleared_journal_goes_on_numbering_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 0).unwrap();
        j.append(&[alert("a", AlertStatus::Open)]).unwrap();
        j.clear().unwrap();
        j.append(&[alert("b", AlertStatus::Open)]).unwrap();
        assert_eq!(j.seq(), 2);
        drop(j);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap();
        f.write_all(b"{\"seq\":3,\"alert\":{\"id\":").unwrap();
        let (mut j, newer) = Journal::open(dir.path(), 1).unwrap();
        assert_eq!(newer.len(), 1);
        assert_eq!(newer[0].id, "b");
        // The torn tail is gone: the next line stands on its own.
        j.append(&[alert("c", AlertStatus::Open)]).unwrap();
        drop(j);
        let (_, newer) = Journal::open(dir.path(), 1).unwrap();
        let ids: Vec<&str> = newer.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
    }
}
