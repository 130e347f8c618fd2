//! The detector's state as a plain, serializable value: what a restart restores, and
//! the source of baseline files (security as code).

use ingest::Nanos;
use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::detector::{
    Detector, Entry, EntryKey, LEARNED_DIMENSIONS, Novelty, Origin, PendingSensor, Phase,
    RecentWrites, ServiceState,
};
use crate::generalise::Samples;
use crate::logs::{LogSnapshot, LogState};
use crate::observe::Dimension;

/// Bumped when the layout changes incompatibly; a snapshot of another version is refused.
pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorSnapshot {
    pub version: u32,
    pub services: Vec<ServiceSnapshot>,
    pub alerts: Vec<Alert>,
    /// Sensor alerts waiting to be correlated.
    #[serde(default)]
    pub pending_sensor: Vec<PendingSensor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSnapshot {
    pub service: String,
    pub phase: Phase,
    pub learning_since: Nanos,
    pub events: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_at: Option<(Nanos, u64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen_digests: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until: Option<Nanos>,
    #[serde(default)]
    pub cap_alerted: bool,
    pub baseline: Vec<BaselineEntry>,
    /// Recently written paths as state files before hashes kept them; read, never
    /// written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<String>,
    /// Recently written paths, oldest first, as their stable hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written_hashes: Vec<u64>,
    /// The log templates (their ids stay stable across restarts) and learned mix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogSnapshot>,
    /// How often learning still found new entries, per dimension learned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub novelty: Vec<DimensionNovelty>,
    /// Until when dimensions still growing keep learning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth_until: Option<Nanos>,
    /// The time of its latest event (for the service retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event: Option<Nanos>,
    /// What its generalisations sample: names while learning, kin once monitoring.
    #[serde(default, skip_serializing_if = "Samples::is_empty")]
    pub samples: Samples,
}

/// One dimension's [`Novelty`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DimensionNovelty {
    pub dimension: Dimension,
    #[serde(flatten)]
    pub novelty: Novelty,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One allowed behaviour of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineEntry {
    pub dimension: Dimension,
    pub key: String,
    pub origin: Origin,
    pub first_seen: Nanos,
    pub count: u64,
    /// For a learned generalisation, how many entries it was learned from.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub learned_from: u32,
}

pub(crate) fn entries(state: &ServiceState) -> Vec<BaselineEntry> {
    let mut entries: Vec<BaselineEntry> = state
        .baseline
        .iter()
        .map(|(k, e)| BaselineEntry {
            dimension: k.dimension,
            key: k.key.clone(),
            origin: e.origin,
            first_seen: e.first_seen,
            count: e.count,
            learned_from: e.learned_from,
        })
        .collect();
    entries.sort_by(|a, b| (a.dimension, &a.key).cmp(&(b.dimension, &b.key)));
    entries
}

/// One service's snapshot.
pub(crate) fn service_snapshot(name: &str, s: &ServiceState) -> ServiceSnapshot {
    ServiceSnapshot {
        service: name.to_owned(),
        phase: s.phase,
        learning_since: s.learning_since,
        last_event: Some(s.last_event),
        events: s.events,
        learned_at: s.learned_at,
        image_digest: s.image_digest.clone(),
        seen_digests: s.seen_digests.clone(),
        grace_until: s.grace_until,
        cap_alerted: s.cap_alerted,
        baseline: entries(s),
        written: Vec::new(),
        written_hashes: s.written.hashes().collect(),
        logs: s.logs.snapshot(),
        novelty: LEARNED_DIMENSIONS
            .iter()
            .zip(&s.novelty)
            .filter(|(_, n)| n.seen > 0)
            .map(|(d, n)| DimensionNovelty {
                dimension: *d,
                novelty: *n,
            })
            .collect(),
        growth_until: s.growth_until,
        samples: s.general.samples(),
    }
}

impl Detector {
    /// The whole state, services sorted by name, entries by dimension and key.
    pub fn snapshot(&self) -> DetectorSnapshot {
        let mut services: Vec<ServiceSnapshot> = self
            .services()
            .map(|(name, s)| service_snapshot(name, s))
            .collect();
        services.sort_by(|a, b| a.service.cmp(&b.service));
        DetectorSnapshot {
            version: SNAPSHOT_VERSION,
            services,
            alerts: self.alerts().into_iter().cloned().collect(),
            pending_sensor: self.pending_sensor_alerts(),
        }
    }

    /// Takes in services, and their alerts, that another daemon held (their partition
    /// moved here). A service this detector lacks, or holds with fewer events (an
    /// older copy: it held the partition before), becomes the one given; an alert it
    /// lacks, or holds with a smaller count, too. Returns how many services changed.
    pub fn adopt(&mut self, services: Vec<ServiceSnapshot>, alerts: Vec<Alert>) -> usize {
        let mut adopted = 0;
        for s in services {
            if self
                .services
                .get(&s.service)
                .is_some_and(|held| held.events >= s.events)
            {
                continue;
            }
            let (name, state) = service_state(self.config(), s);
            self.insert_service(name, state);
            adopted += 1;
        }
        for alert in alerts {
            match self.alerts.get_mut(&alert.id) {
                Some(held) if held.count < alert.count => *held = alert,
                Some(_) => {}
                None => self.insert_alert(alert),
            }
        }
        adopted
    }

    /// A detector in the state a snapshot describes.
    pub fn restore(
        config: crate::DetectConfig,
        snapshot: DetectorSnapshot,
    ) -> Result<Detector, crate::error::DetectError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(crate::error::DetectError::SnapshotVersion {
                found: snapshot.version,
                reads: SNAPSHOT_VERSION,
            });
        }
        let mut d = Detector::new(config);
        for s in snapshot.services {
            let (name, state) = service_state(d.config(), s);
            d.insert_service(name, state);
        }
        for alert in snapshot.alerts {
            d.insert_alert(alert);
        }
        for pending in snapshot.pending_sensor {
            d.insert_pending_sensor(pending);
        }
        Ok(d)
    }
}

/// A service's state as its snapshot describes it.
fn service_state(config: &crate::DetectConfig, s: ServiceSnapshot) -> (String, ServiceState) {
    let logs_config = &config.logs;
    let top_templates = config.rate.top_templates;
    let logs = s
        .logs
        .map(|l| LogState::restore(logs_config, l))
        .unwrap_or_else(|| LogState::new(logs_config));
    let mut rates = crate::rates::RateState::default();
    rates.templates = logs.top_templates(top_templates);
    let state = ServiceState {
        phase: s.phase,
        // State files from before the retention, and imported baselines: the
        // retention counts from now, so nothing is forgotten on upgrade.
        last_event: s.last_event.unwrap_or_else(Nanos::now),
        learning_since: s.learning_since,
        events: s.events,
        learned_at: s.learned_at,
        image_digest: s.image_digest,
        seen_digests: s.seen_digests,
        grace_until: s.grace_until,
        baseline: s
            .baseline
            .into_iter()
            .map(|e| {
                (
                    EntryKey {
                        dimension: e.dimension,
                        key: e.key,
                    },
                    Entry {
                        first_seen: e.first_seen,
                        count: e.count,
                        origin: e.origin,
                        learned_from: e.learned_from,
                    },
                )
            })
            .collect(),
        cap_alerted: s.cap_alerted,
        written: {
            let mut w = RecentWrites::default();
            for path in &s.written {
                w.remember(path);
            }
            for &hash in &s.written_hashes {
                w.remember_hash(hash);
            }
            w
        },
        logs,
        rates,
        general: Default::default(),
        novelty: {
            let mut novelty = [Novelty::default(); LEARNED_DIMENSIONS.len()];
            for n in &s.novelty {
                if let Some(i) = LEARNED_DIMENSIONS.iter().position(|d| *d == n.dimension) {
                    novelty[i] = n.novelty;
                }
            }
            novelty
        },
        growth_until: s.growth_until,
        progress: crate::clock::OwnProgress::default(),
    };
    let mut state = state;
    state.reindex();
    state.general.restore(s.samples);
    (s.service, state)
}
