//! Baselines as code on the data directory: `driftwatch baseline export|import|diff`.
//!
//! The file format, and merging and comparing files, are `detect::baseline`'s. Import
//! and export here work on the state file in the data directory, so the daemon must be
//! stopped for them (the data directory's lock says so); a running daemon takes
//! imports through its API instead.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use ingest::Nanos;

pub use detect::baseline::{BaselineFile, diff, from_services, from_snapshot, import_into};

use pipeline::state::{self, StateFile};

fn load_state(data_dir: &Path) -> anyhow::Result<StateFile> {
    state::load(data_dir)?.with_context(|| {
        format!(
            "no state file in {}: has the daemon run with this data-dir?",
            data_dir.display()
        )
    })
}

/// The state file with the alerts journaled since it, for a change written back: the
/// saved file reflects the journal, so its alerts are not applied over the change at
/// the next start. Only under the data directory's lock.
fn recover_state(data_dir: &Path) -> anyhow::Result<Option<StateFile>> {
    Ok(state::recover(data_dir)?.state)
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

pub fn read(path: &Path) -> anyhow::Result<BaselineFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    detect::baseline::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
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
    let mut state = match recover_state(data_dir)? {
        Some(s) => s,
        None => StateFile {
            written_at: Nanos::now(),
            offsets: Default::default(),
            detector: detect::Detector::new(detect::DetectConfig::default()).snapshot(),
            journal_seq: 0,
        },
    };
    let now = Nanos::now();
    let added = import_into(&mut state.detector, file, now);
    state.written_at = now;
    state::save(data_dir, &state)?;
    Ok(added)
}

/// A manual control on the state file (stop the daemon first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaselineChange {
    /// Forget a service's baseline; it learns again from its next event.
    Relearn(String),
    /// Stop all learning for a service, image grace periods included.
    Lock(String),
    /// Allow an alert's subject in its service's baseline and resolve the alert.
    Accept(String),
}

/// Applies a manual control to the state file and says what it did.
pub fn control(data_dir: &Path, control: &BaselineChange) -> anyhow::Result<String> {
    let _lock = state::lock(data_dir)?;
    let mut state = recover_state(data_dir)?.with_context(|| {
        format!(
            "no state file in {}: has the daemon run with this data-dir?",
            data_dir.display()
        )
    })?;
    let mut detector =
        detect::Detector::restore(detect::DetectConfig::default(), state.detector.clone())
            .map_err(anyhow::Error::msg)?;
    let said = match control {
        BaselineChange::Relearn(service) if detector.relearn(service) => {
            format!("{service} will learn again from its next event")
        }
        BaselineChange::Lock(service) if detector.lock(service) => {
            format!("{service} is locked: it learns nothing more")
        }
        BaselineChange::Relearn(service) | BaselineChange::Lock(service) => {
            bail!("the state file has no service {service:?}")
        }
        BaselineChange::Accept(id) => match detector.accept(id) {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use detect::baseline::{AllowedBehaviour, BASELINE_FILE_VERSION, ServiceBaseline};
    use detect::{Dimension, Origin, Phase};

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
        control(dir.path(), &BaselineChange::Lock("shop/api".into())).unwrap();
        let s = state::load(dir.path()).unwrap().unwrap();
        assert_eq!(s.detector.services[0].phase, Phase::Locked);
        control(dir.path(), &BaselineChange::Relearn("shop/api".into())).unwrap();
        assert!(
            state::load(dir.path())
                .unwrap()
                .unwrap()
                .detector
                .services
                .is_empty()
        );
        let err = control(dir.path(), &BaselineChange::Lock("shop/none".into())).unwrap_err();
        assert!(err.to_string().contains("shop/none"));
        assert!(control(dir.path(), &BaselineChange::Accept("0123".into())).is_err());
    }
}
