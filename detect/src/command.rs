//! Commands: the changes an analyst, an administrator or driftwatch's own health
//! watchers ask of the detector. Whoever owns the detector applies them one at a time
//! between batches, so a command never races detection and is answered only once it is
//! applied; readers see its effect in the next published view.

use ingest::Nanos;

use crate::alert::{Alert, AlertKind, AlertStatus, Severity};
use crate::baseline::{BaselineFile, import_into};
use crate::detector::Detector;
use crate::error::DetectError;

/// One change to the detector's state.
#[derive(Debug)]
pub enum Command {
    /// An analyst acknowledged or resolved an alert.
    SetStatus { id: String, status: AlertStatus },
    /// An analyst accepted an alert's subject into its service's baseline.
    Accept { id: String },
    /// Forget a service's baseline; it learns again from its next event.
    Relearn { service: String },
    /// Stop a service's learning; it monitors from now on.
    Lock { service: String },
    /// Merge a baseline file's entries into the services it names.
    Import { file: Box<BaselineFile>, at: Nanos },
    /// Raise (or count a repeat into) an alert about driftwatch itself.
    RaiseHealth {
        time: Nanos,
        kind: AlertKind,
        severity: Severity,
        subject: String,
        explanation: String,
    },
    /// Resolve the open alert about one of driftwatch's own conditions.
    ResolveHealth { kind: AlertKind, subject: String },
}

/// What applying a command gave.
#[derive(Debug)]
pub enum Outcome {
    /// The alert as it now stands, or none with that id (or none that could be
    /// accepted or resolved).
    Alert(Option<Alert>),
    /// A health alert, and whether it is new (a repeat only counts into the open one).
    Raised { alert: Alert, new: bool },
    /// Whether the service existed.
    Service(bool),
    /// Baseline entries an import added, or why it was refused.
    Imported(Result<usize, DetectError>),
}

impl Detector {
    /// Applies one command. The caller publishes a view afterwards if readers are to see it.
    pub fn apply(&mut self, command: Command) -> Outcome {
        match command {
            Command::SetStatus { id, status } => {
                Outcome::Alert(self.set_status(&id, status).cloned())
            }
            Command::Accept { id } => Outcome::Alert(self.accept(&id).cloned()),
            Command::Relearn { service } => Outcome::Service(self.relearn(&service)),
            Command::Lock { service } => Outcome::Service(self.lock(&service)),
            Command::Import { file, at } => Outcome::Imported(self.import(&file, at)),
            Command::RaiseHealth {
                time,
                kind,
                severity,
                subject,
                explanation,
            } => {
                let (alert, new) = self.raise_health(time, kind, severity, &subject, explanation);
                Outcome::Raised { alert, new }
            }
            Command::ResolveHealth { kind, subject } => {
                Outcome::Alert(self.resolve_health(kind, &subject))
            }
        }
    }

    /// Merges a baseline file into this detector: the services it names gain its
    /// entries (as imported, dated `at`) and are created if they are new. On a refusal
    /// nothing changes.
    pub fn import(&mut self, file: &BaselineFile, at: Nanos) -> Result<usize, DetectError> {
        let mut snapshot = self.snapshot();
        let added = import_into(&mut snapshot, file, at);
        let restored = Detector::restore(self.config().clone(), snapshot)?;
        // The restored detector marks every service and alert changed and starts from
        // an empty view, so its first publish rebuilds it whole; versions go on.
        let version = self.published().version;
        *self = restored;
        self.continue_versions(version);
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DetectConfig;

    fn health(subject: &str) -> Command {
        Command::RaiseHealth {
            time: Nanos(1),
            kind: AlertKind::Delivery,
            severity: Severity::Critical,
            subject: subject.to_owned(),
            explanation: "outbox full".to_owned(),
        }
    }

    #[test]
    fn a_command_shows_in_the_view_published_after_it_and_not_before() {
        let mut d = Detector::new(DetectConfig::default());
        let before = d.publish();
        let Outcome::Raised { alert, new } = d.apply(health("outbox")) else {
            panic!("raise answers with the alert");
        };
        assert!(new);
        assert!(before.alert(&alert.id).is_none());
        let after = d.publish();
        assert_eq!(after.alert(&alert.id).map(|a| a.count), Some(1));
    }

    #[test]
    fn a_repeated_health_condition_counts_into_the_open_alert_until_resolved() {
        let mut d = Detector::new(DetectConfig::default());
        let Outcome::Raised { alert: first, .. } = d.apply(health("outbox")) else {
            panic!()
        };
        let Outcome::Raised { alert, new } = d.apply(health("outbox")) else {
            panic!()
        };
        assert!(!new);
        assert_eq!((alert.id.as_str(), alert.count), (first.id.as_str(), 2));
        let resolved = d.apply(Command::ResolveHealth {
            kind: AlertKind::Delivery,
            subject: "outbox".to_owned(),
        });
        assert!(matches!(resolved, Outcome::Alert(Some(a)) if a.status == AlertStatus::Resolved));
        let Outcome::Raised { new, .. } = d.apply(health("outbox")) else {
            panic!()
        };
        assert!(new, "a resolved condition that returns is a new alert");
    }

    #[test]
    fn commands_on_unknown_targets_say_so() {
        let mut d = Detector::new(DetectConfig::default());
        assert!(matches!(
            d.apply(Command::Relearn {
                service: "nope".into()
            }),
            Outcome::Service(false)
        ));
        assert!(matches!(
            d.apply(Command::Accept { id: "nope".into() }),
            Outcome::Alert(None)
        ));
    }
}
