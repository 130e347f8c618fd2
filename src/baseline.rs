//! Baselines as code: `driftwatch baseline export|import|diff`.
//!
//! A baseline file lists, per service, the behaviours it is allowed (dimension and key)
//! and where each came from. Counts and times are left out so that exporting twice
//! gives the same file and a review in git shows only real changes. Import and export
//! work on the state file in the data directory, so the daemon must be stopped for an
//! import (a running daemon rewrites the file from its own state).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use detect::{BaselineEntry, DetectorSnapshot, Dimension, Origin, Phase, ServiceSnapshot};
use ingest::Nanos;
use serde::{Deserialize, Serialize};

use crate::state::{self, StateFile};

pub const BASELINE_FILE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineFile {
    pub version: u32,
    pub services: Vec<ServiceBaseline>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceBaseline {
    pub service: String,
    pub entries: Vec<AllowedBehaviour>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedBehaviour {
    pub dimension: Dimension,
    pub key: String,
    #[serde(default = "imported")]
    pub origin: Origin,
}

fn imported() -> Origin {
    Origin::Imported
}

fn load_state(data_dir: &Path) -> anyhow::Result<StateFile> {
    state::load(data_dir)?.with_context(|| {
        format!(
            "no state file in {}: has the daemon run with this data-dir?",
            data_dir.display()
        )
    })
}

/// The baselines of the state file, optionally of one service.
pub fn export(data_dir: &Path, service: Option<&str>) -> anyhow::Result<BaselineFile> {
    let state = load_state(data_dir)?;
    let file = from_snapshot(&state.detector, service);
    if let Some(name) = service
        && file.services.is_empty()
    {
        bail!("the state file has no service {name:?}");
    }
    Ok(file)
}

/// The baselines of a detector snapshot, optionally of one service.
pub fn from_snapshot(snapshot: &DetectorSnapshot, service: Option<&str>) -> BaselineFile {
    let services: Vec<ServiceBaseline> = snapshot
        .services
        .iter()
        .filter(|s| service.is_none_or(|name| s.service == name))
        .map(|s| ServiceBaseline {
            service: s.service.clone(),
            entries: s
                .baseline
                .iter()
                .map(|e| AllowedBehaviour {
                    dimension: e.dimension,
                    key: e.key.clone(),
                    origin: e.origin,
                })
                .collect(),
        })
        .collect();
    BaselineFile {
        version: BASELINE_FILE_VERSION,
        services,
    }
}

pub fn read(path: &Path) -> anyhow::Result<BaselineFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: BaselineFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a driftwatch baseline file", path.display()))?;
    if file.version != BASELINE_FILE_VERSION {
        bail!(
            "{} is baseline file version {}, this driftwatch reads {BASELINE_FILE_VERSION}",
            path.display(),
            file.version
        );
    }
    Ok(file)
}

pub fn write(file: &BaselineFile, out: &mut dyn Write) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, file).context("cannot write the baseline")?;
    out.write_all(b"\n").context("cannot write the baseline")?;
    Ok(())
}

/// Merges a baseline file into the state file: every entry it lists becomes allowed and
/// is marked `imported`; a service the state does not know starts out monitoring.
/// Returns how many entries were new.
pub fn import(data_dir: &Path, file: &BaselineFile) -> anyhow::Result<usize> {
    let _lock = state::lock(data_dir)?;
    let mut state = match state::load(data_dir)? {
        Some(s) => s,
        None => StateFile {
            written_at: Nanos::now(),
            offsets: Default::default(),
            detector: detect::Detector::new(detect::DetectConfig::default()).snapshot(),
        },
    };
    let now = Nanos::now();
    let added = import_into(&mut state.detector, file, now);
    state.written_at = now;
    state::save(data_dir, &state)?;
    Ok(added)
}

/// Merges a baseline file into a detector snapshot (see [`import`]); returns how many
/// entries were new.
pub fn import_into(snapshot: &mut DetectorSnapshot, file: &BaselineFile, now: Nanos) -> usize {
    let mut added = 0;
    for incoming in &file.services {
        let index = match snapshot
            .services
            .iter()
            .position(|s| s.service == incoming.service)
        {
            Some(i) => i,
            None => {
                snapshot.services.push(ServiceSnapshot {
                    service: incoming.service.clone(),
                    phase: Phase::Monitoring,
                    // Learning "ended" at the epoch: every real event is judged
                    // against the imported entries, none is learned silently.
                    learning_since: Nanos(0),
                    // The retention counts from the import.
                    last_event: None,
                    events: 0,
                    learned_at: Some((Nanos(0), 0)),
                    image_digest: None,
                    seen_digests: Vec::new(),
                    grace_until: None,
                    cap_alerted: false,
                    baseline: Vec::new(),
                    written: Vec::new(),
                    logs: None,
                    novelty: Vec::new(),
                    growth_until: None,
                });
                snapshot.services.len() - 1
            }
        };
        let service = &mut snapshot.services[index];
        for e in &incoming.entries {
            // Template ids name templates of this service's own miner: an id it never
            // made would allow whatever template gets that number later.
            if e.dimension == Dimension::LogTemplate {
                let known = e
                    .key
                    .strip_prefix('#')
                    .and_then(|id| id.parse::<usize>().ok())
                    .zip(service.logs.as_ref())
                    .is_some_and(|(id, logs)| id < logs.templates.templates.len());
                if !known {
                    continue;
                }
            }
            if service
                .baseline
                .iter()
                .any(|b| b.dimension == e.dimension && b.key == e.key)
            {
                continue;
            }
            service.baseline.push(BaselineEntry {
                dimension: e.dimension,
                key: e.key.clone(),
                origin: Origin::Imported,
                first_seen: now,
                count: 0,
                learned_from: 0,
            });
            added += 1;
        }
        service
            .baseline
            .sort_by(|a, b| (a.dimension, &a.key).cmp(&(b.dimension, &b.key)));
    }
    snapshot.services.sort_by(|a, b| a.service.cmp(&b.service));
    added
}

/// A manual control on the state file (stop the daemon first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Forget a service's baseline; it learns again from its next event.
    Relearn(String),
    /// Stop all learning for a service, image grace periods included.
    Lock(String),
    /// Allow an alert's subject in its service's baseline and resolve the alert.
    Accept(String),
}

/// Applies a manual control to the state file and says what it did.
pub fn control(data_dir: &Path, control: &Control) -> anyhow::Result<String> {
    let _lock = state::lock(data_dir)?;
    let mut state = load_state(data_dir)?;
    let mut detector =
        detect::Detector::restore(detect::DetectConfig::default(), state.detector.clone())
            .map_err(anyhow::Error::msg)?;
    let said = match control {
        Control::Relearn(service) if detector.relearn(service) => {
            format!("{service} will learn again from its next event")
        }
        Control::Lock(service) if detector.lock(service) => {
            format!("{service} is locked: it learns nothing more")
        }
        Control::Relearn(service) | Control::Lock(service) => {
            bail!("the state file has no service {service:?}")
        }
        Control::Accept(id) => match detector.accept(id) {
            Some(alert) => format!(
                "accepted {} into the baseline of {}; alert {id} resolved",
                alert.subject, alert.service
            ),
            None => bail!("no alert {id:?} that can be accepted (baseline-cap alerts cannot)"),
        },
    };
    state.detector = detector.snapshot();
    state.written_at = Nanos::now();
    state::save(data_dir, &state)?;
    Ok(said)
}

/// Lines `+ service dimension key` for what `new` allows and `old` does not, `-` for the
/// reverse; sorted, origins ignored.
pub fn diff(old: &BaselineFile, new: &BaselineFile) -> Vec<String> {
    let set = |f: &BaselineFile| -> BTreeSet<(String, Dimension, String)> {
        f.services
            .iter()
            .flat_map(|s| {
                s.entries
                    .iter()
                    .map(move |e| (s.service.clone(), e.dimension, e.key.clone()))
            })
            .collect()
    };
    let (a, b) = (set(old), set(new));
    let mut lines: BTreeMap<(String, Dimension, String), char> = BTreeMap::new();
    for k in a.difference(&b) {
        lines.insert(k.clone(), '-');
    }
    for k in b.difference(&a) {
        lines.insert(k.clone(), '+');
    }
    lines
        .into_iter()
        .map(|((service, dimension, key), sign)| {
            format!(
                "{sign} {service} {} {key}",
                serde_json::to_value(dimension)
                    .expect("dimensions serialize")
                    .as_str()
                    .unwrap_or("?")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &[(&str, Dimension, &str)]) -> BaselineFile {
        let mut services: BTreeMap<&str, Vec<AllowedBehaviour>> = BTreeMap::new();
        for (s, d, k) in entries {
            services.entry(s).or_default().push(AllowedBehaviour {
                dimension: *d,
                key: (*k).into(),
                origin: Origin::Learned,
            });
        }
        BaselineFile {
            version: BASELINE_FILE_VERSION,
            services: services
                .into_iter()
                .map(|(s, entries)| ServiceBaseline {
                    service: s.into(),
                    entries,
                })
                .collect(),
        }
    }

    #[test]
    fn diff_lists_added_and_removed_behaviour() {
        let old = file(&[
            ("shop/api", Dimension::Process, "/a (parent /b)"),
            ("shop/api", Dimension::Network, "connect tcp 10.0.0.1:5432"),
        ]);
        let new = file(&[
            ("shop/api", Dimension::Process, "/a (parent /b)"),
            ("shop/api", Dimension::Process, "/usr/bin/curl (parent /a)"),
        ]);
        assert_eq!(
            diff(&old, &new),
            vec![
                "+ shop/api process /usr/bin/curl (parent /a)",
                "- shop/api network connect tcp 10.0.0.1:5432"
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn export_then_import_round_trips_and_marks_entries_imported() {
        let dir = tempfile::tempdir().unwrap();
        let incoming = file(&[
            ("shop/api", Dimension::Process, "/a (parent /b)"),
            ("shop/db", Dimension::File, "write /data/<n>"),
        ]);
        assert_eq!(import(dir.path(), &incoming).unwrap(), 2);
        assert_eq!(
            import(dir.path(), &incoming).unwrap(),
            0,
            "importing twice adds nothing"
        );
        let exported = export(dir.path(), None).unwrap();
        assert!(diff(&incoming, &exported).is_empty());
        assert!(
            exported
                .services
                .iter()
                .flat_map(|s| &s.entries)
                .all(|e| e.origin == Origin::Imported)
        );
        let restored = detect::Detector::restore(
            detect::DetectConfig::default(),
            state::load(dir.path()).unwrap().unwrap().detector,
        )
        .unwrap();
        assert_eq!(
            restored.service("shop/db").unwrap().phase,
            Phase::Monitoring
        );
        assert!(export(dir.path(), Some("shop/none")).is_err());
    }

    #[test]
    fn controls_change_the_state_file_and_name_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        import(
            dir.path(),
            &file(&[("shop/api", Dimension::Process, "/a (parent /b)")]),
        )
        .unwrap();
        control(dir.path(), &Control::Lock("shop/api".into())).unwrap();
        let s = state::load(dir.path()).unwrap().unwrap();
        assert_eq!(s.detector.services[0].phase, Phase::Locked);
        control(dir.path(), &Control::Relearn("shop/api".into())).unwrap();
        assert!(
            state::load(dir.path())
                .unwrap()
                .unwrap()
                .detector
                .services
                .is_empty()
        );
        let err = control(dir.path(), &Control::Lock("shop/none".into())).unwrap_err();
        assert!(err.to_string().contains("shop/none"));
        assert!(control(dir.path(), &Control::Accept("0123".into())).is_err());
    }
}
