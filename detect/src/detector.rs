//! The detector: per-service baselines and lifecycle, drift alerts with dedup, and
//! correlation of sensor (Falco) alerts into the drift alerts about the same act.
//!
//! Everything on the per-event path is a hash lookup; scans happen only when an alert is
//! raised (to write its explanation).

use std::collections::{HashMap, HashSet, VecDeque};

use ingest::event::{EventKind, FileOp};
use ingest::{Event, Nanos, Provenance};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::alert::{
    Alert, AlertKind, AlertStatus, MAX_EVIDENCE, Severity, alert_id, dedup_key, stable_hash,
};
use crate::anomaly::Direction;
use crate::config::DetectConfig;
use crate::generalise::Generalisations;
use crate::logs::{LogState, weigh};
use crate::observe::{Dimension, Observation, observe};
use crate::rates::{RateFinding, RateState};
use crate::view::{DetectorView, Tracked};

mod lifecycle;
mod signals;
mod words;

use words::{absorbed_by_growth, explain, growing_text, kin_text, matches_act, subject_is_act};

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Everything seen is learned; nothing alerts (but sensitive reads).
    Learning,
    /// Drift alerts.
    Monitoring,
    /// Monitoring, and nothing is ever learned again (not even in an image grace).
    Locked,
}

/// How an entry came into a baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Learned,
    /// Learned during the grace period after a new image.
    Grace,
    /// An analyst accepted an alert's subject.
    Accepted,
    /// Imported from a baseline file.
    Imported,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryKey {
    pub dimension: Dimension,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub first_seen: Nanos,
    pub count: u64,
    pub origin: Origin,
    /// For a learned generalisation (a name shape, a network), how many distinct
    /// entries it was learned from; 0 for an entry that is just itself.
    pub learned_from: u32,
}

/// The dimensions a service learns, in [`Novelty`] order.
pub const LEARNED_DIMENSIONS: [Dimension; 6] = [
    Dimension::Process,
    Dimension::Args,
    Dimension::File,
    Dimension::Network,
    Dimension::Exec,
    Dimension::LogTemplate,
];

/// The weight of the newest observation in a dimension's novelty rate: it follows about
/// the last 32 observations, enough to tell a settled dimension from one still finding
/// something new every few events.
const NOVELTY_WEIGHT: f64 = 1.0 / 32.0;

/// A dimension whose novelty rate is at least this (one observation in ten new) when
/// learning ends is still growing…
const GROWING_RATE: f64 = 0.1;

/// …provided it learned at least this many entries: a dimension of two or three entries
/// has not churned, it is small.
const GROWING_MIN_NEW: u64 = 8;

/// How often learning still finds new entries in one dimension of a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Novelty {
    /// Observations while learning (and while growing).
    pub seen: u64,
    /// Of those, how many were new entries.
    pub new: u64,
    /// The share of recent observations that were new (an exponentially weighted mean).
    pub rate: f64,
    /// New entries learned after the learning period because the dimension was growing.
    #[serde(default)]
    pub grown: u64,
    /// Still growing when learning ended, and not settled since: new entries are
    /// learned and reported at low while the growth period lasts.
    #[serde(default)]
    pub growing: bool,
}

impl Novelty {
    fn observe(&mut self, new: bool) {
        self.seen += 1;
        self.new += u64::from(new);
        let weight = (1.0 / self.seen as f64).max(NOVELTY_WEIGHT);
        self.rate += weight * (f64::from(u8::from(new)) - self.rate);
    }

    /// Whether the dimension still finds new entries often enough not to be known yet.
    pub fn still_growing(&self) -> bool {
        self.new >= GROWING_MIN_NEW && self.rate >= GROWING_RATE
    }
}

fn novelty_index(dimension: Dimension) -> Option<usize> {
    LEARNED_DIMENSIONS.iter().position(|d| *d == dimension)
}

/// How many image digests a service remembers: far more than run side by side.
const DIGESTS_KEPT: usize = 32;

/// How many recently written paths a service remembers, to recognise a binary written
/// then executed.
const WRITTEN_PATHS_KEPT: usize = 1024;

/// The paths a service wrote most recently, oldest forgotten first; a hash lookup per
/// exec tells a binary the service dropped itself.
///
/// Paths are kept as their 64-bit [`stable_hash`], not their text: 16 bytes a path
/// (the ring and the set) instead of two copies of a path of often 40 to 100 bytes,
/// about 24 KiB a service when full. A collision can only make an exec look like a
/// dropped binary (an alert more, never one fewer), and at 1,024 paths its chance is
/// about 1024 / 2^64 per exec.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecentWrites {
    order: VecDeque<u64>,
    set: HashSet<u64>,
}

impl RecentWrites {
    pub(crate) fn remember(&mut self, path: &str) {
        self.remember_hash(stable_hash(&[path]));
    }

    pub(crate) fn remember_hash(&mut self, hash: u64) {
        if !self.set.insert(hash) {
            return;
        }
        if self.order.len() == WRITTEN_PATHS_KEPT
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(hash);
    }

    pub(crate) fn contains(&self, path: &str) -> bool {
        self.set.contains(&stable_hash(&[path]))
    }

    /// The hashes, oldest first.
    pub(crate) fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.order.iter().copied()
    }
}

/// One service's state.
#[derive(Debug, Clone)]
pub struct ServiceState {
    pub phase: Phase,
    pub learning_since: Nanos,
    /// The time of its latest event.
    pub last_event: Nanos,
    pub events: u64,
    /// Event time and event count when learning ended.
    pub learned_at: Option<(Nanos, u64)>,
    pub image_digest: Option<String>,
    /// Image digests this service has run (the latest `DIGESTS_KEPT`).
    pub seen_digests: Vec<String>,
    pub grace_until: Option<Nanos>,
    pub baseline: HashMap<EntryKey, Entry>,
    pub cap_alerted: bool,
    pub(crate) written: RecentWrites,
    pub logs: LogState,
    pub rates: RateState,
    /// Name shapes and networks learned from the baseline's own entries.
    pub(crate) general: Generalisations,
    /// Per dimension (in [`LEARNED_DIMENSIONS`] order), how often learning still finds
    /// something new.
    pub novelty: [Novelty; LEARNED_DIMENSIONS.len()],
    /// Until when dimensions still growing at the end of learning keep learning.
    pub growth_until: Option<Nanos>,
    /// Its own records' progress per input partition, for lateness (not persisted).
    pub(crate) progress: crate::clock::OwnProgress,
}

impl ServiceState {
    pub(crate) fn new(now: Nanos, config: &DetectConfig) -> Self {
        ServiceState {
            phase: Phase::Learning,
            learning_since: now,
            last_event: now,
            events: 0,
            learned_at: None,
            image_digest: None,
            seen_digests: Vec::new(),
            grace_until: None,
            baseline: HashMap::new(),
            cap_alerted: false,
            written: RecentWrites::default(),
            logs: LogState::new(&config.logs),
            rates: RateState::default(),
            general: Generalisations::default(),
            novelty: [Novelty::default(); LEARNED_DIMENSIONS.len()],
            growth_until: None,
            progress: crate::clock::OwnProgress::default(),
        }
    }

    /// The novelty of one dimension (none for dimensions never learned).
    pub fn novelty(&self, dimension: Dimension) -> Option<&Novelty> {
        novelty_index(dimension).map(|i| &self.novelty[i])
    }

    /// Whether a dimension is still growing: while learning, whether it still finds
    /// new entries often; after, whether it did when learning ended and has not
    /// settled since (within the growth period).
    pub fn is_growing(&self, dimension: Dimension) -> bool {
        self.novelty(dimension).is_some_and(|n| {
            if self.phase == Phase::Learning {
                n.still_growing()
            } else {
                n.growing
            }
        })
    }

    /// The dimensions still growing, in [`LEARNED_DIMENSIONS`] order.
    pub fn growing(&self) -> Vec<Dimension> {
        LEARNED_DIMENSIONS
            .iter()
            .copied()
            .filter(|d| self.is_growing(*d))
            .collect()
    }

    /// Rebuilds the generalisation index from the baseline's keys.
    pub(crate) fn reindex(&mut self) {
        self.general =
            Generalisations::rebuild(self.baseline.keys().map(|k| (k.dimension, k.key.as_str())));
    }

    /// Counts an observation into the entry with its key, if there is one (and into the
    /// dimension's novelty as known, when `tracked`).
    fn count_known(&mut self, key: &EntryKey, tracked: Option<usize>) -> bool {
        let Some(entry) = self.baseline.get_mut(key) else {
            return false;
        };
        entry.count += 1;
        if let Some(i) = tracked {
            self.novelty[i].observe(false);
        }
        true
    }

    /// Inserts a learned entry, or counts into the one with its key.
    fn learn(&mut self, key: EntryKey, entry: Entry) {
        self.general.index(key.dimension, &key.key);
        match self.baseline.get_mut(&key) {
            Some(e) => {
                e.count += entry.count;
                e.learned_from = e.learned_from.saturating_add(entry.learned_from);
                e.first_seen = e.first_seen.min(entry.first_seen);
            }
            None => {
                self.baseline.insert(key, entry);
            }
        }
    }

    /// Learns what a new entry teaches about its dimension's generalisations, and folds
    /// the entries a newly learned one covers into it.
    fn generalise(&mut self, key: &EntryKey, raw_path: Option<&str>, learning: bool) {
        let merges = match (key.dimension, raw_path) {
            (Dimension::File, Some(raw)) => self.general.learn_path(&key.key, raw, learning),
            (Dimension::Network, _) => self.general.learn_network(&key.key).into_iter().collect(),
            _ => return,
        };
        for m in merges {
            let mut merged = Entry {
                first_seen: Nanos(i64::MAX),
                count: 0,
                origin: Origin::Learned,
                learned_from: 0,
            };
            for from in &m.from {
                let old = EntryKey {
                    dimension: key.dimension,
                    key: from.clone(),
                };
                // Accepted and imported entries stay as the analyst put them.
                if let Some(e) = self.baseline.get(&old)
                    && matches!(e.origin, Origin::Learned | Origin::Grace)
                    && let Some(e) = self.baseline.remove(&old)
                {
                    merged.count += e.count;
                    merged.learned_from = merged.learned_from.saturating_add(e.learned_from.max(1));
                    merged.first_seen = merged.first_seen.min(e.first_seen);
                }
            }
            if merged.learned_from == 0 {
                continue;
            }
            info!(pattern = %m.into, from = merged.learned_from, "Learned a generalisation.");
            self.learn(
                EntryKey {
                    dimension: key.dimension,
                    key: m.into,
                },
                merged,
            );
        }
    }
}

/// A sensor alert waiting for the drift alert about the same act.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingSensor {
    pub service: String,
    pub time: Nanos,
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The connection's remote end (`address:port`), for network alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    pub provenance: Provenance,
}

/// The detector over every service.
pub struct Detector {
    config: DetectConfig,
    pub(crate) services: Tracked<ServiceState>,
    /// Every alert, by id.
    pub(crate) alerts: Tracked<Alert>,
    /// The latest alert id for each dedup key.
    latest: HashMap<String, String>,
    /// Ids of each service's alerts, for correlation.
    by_service: HashMap<String, Vec<String>>,
    pending_sensor: HashMap<String, Vec<PendingSensor>>,
    /// The rate bucket every series has been closed up to.
    rate_clock: i64,
    /// Event time, robust to a few future-dated records.
    clock: crate::clock::Clock,
    /// Each input partition's own event time, for lateness.
    progress: crate::clock::Progress,
    /// What the state caps turned away or forgot.
    capacity: Capacity,
    /// Whether `pending_sensor` changed since the last publish.
    pub(crate) pending_changed: bool,
    /// The last view published: the base of the next.
    pub(crate) published: std::sync::Arc<DetectorView>,
}

/// What the state caps did, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Events of services beyond `max-services`, not judged.
    pub events_refused: u64,
    /// Services forgotten after `service-retention` without an event.
    pub services_evicted: u64,
    /// Alerts dropped from memory past `max-alerts`.
    pub alerts_evicted: u64,
}

/// How far past the end of learning a record's own partition may have moved while the
/// record, dated before that end, is still learned. Partitions are read in any
/// interleaving, so a partition behind the others delivers learning material late;
/// but within one partition records come in the order they were written, and one
/// dated this far behind its own stream is judged as monitoring: a sender cannot
/// backdate behaviour into a finished baseline. Five minutes covers a sensor's
/// batching and clock jitter.
const LATE_LEARNING: i64 = 5 * 60 * 1_000_000_000;

/// How far past the end of learning the detector's clock (every partition) may have
/// moved while a record dated before that end, from a partition that lags the others,
/// is still learned. An hour (the default learning period) covers a consumer group
/// catching up on a backlog partition by partition; it bounds what a sender writing to
/// a partition no sensor writes to can backdate.
const LATE_PARTITION: i64 = 60 * 60 * 1_000_000_000;

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Detector {
    pub fn new(config: DetectConfig) -> Self {
        Detector {
            config,
            services: Tracked::default(),
            alerts: Tracked::default(),
            latest: HashMap::new(),
            by_service: HashMap::new(),
            pending_sensor: HashMap::new(),
            rate_clock: i64::MIN,
            clock: crate::clock::Clock::default(),
            progress: crate::clock::Progress::default(),
            capacity: Capacity::default(),
            pending_changed: false,
            published: std::sync::Arc::default(),
        }
    }

    /// Event time as the detector's robust clock has it (see `clock.rs`); `None` before
    /// any event. Whatever else is driven by event time (scheduled reports) follows it.
    pub fn clock(&self) -> Option<Nanos> {
        match self.clock.now() {
            i64::MIN => None,
            t => Some(Nanos(t)),
        }
    }

    /// What the state caps turned away or forgot, since start.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    pub fn config(&self) -> &DetectConfig {
        &self.config
    }

    pub fn service(&self, name: &str) -> Option<&ServiceState> {
        self.services.get(name)
    }

    pub fn services(&self) -> impl Iterator<Item = (&String, &ServiceState)> {
        self.services.iter()
    }

    /// One alert by id.
    pub fn alert(&self, id: &str) -> Option<&Alert> {
        self.alerts.get(id)
    }

    /// Sets an alert's status (an analyst acknowledged or resolved it). A resolved
    /// alert that drifts again opens again, as it always does.
    pub fn set_status(&mut self, id: &str, status: AlertStatus) -> Option<&Alert> {
        let alert = self.alerts.get_mut(id)?;
        alert.status = status;
        Some(alert)
    }

    /// Raises an alert about driftwatch itself (service `driftwatch`), or counts a
    /// repeat into the open one about the same condition (until it is resolved).
    /// Returns the alert and whether it is new.
    pub fn raise_health(
        &mut self,
        time: Nanos,
        kind: AlertKind,
        severity: Severity,
        subject: &str,
        explanation: String,
    ) -> (Alert, bool) {
        // A condition that lasts is one alert, however long: no dedup window.
        let key = dedup_key(HEALTH_SERVICE, kind, subject);
        if let Some(open) = self
            .latest
            .get(&key)
            .and_then(|id| self.alerts.get_mut(id))
            .filter(|a| a.status != AlertStatus::Resolved)
        {
            open.count += 1;
            open.last_seen = open.last_seen.max(time);
            open.explanation = explanation;
            return (open.clone(), false);
        }
        let obs = Observation {
            dimension: Dimension::Health,
            key: subject.to_owned(),
            severity,
            mitre: None,
            exe: None,
        };
        let alert = self.new_alert(HEALTH_SERVICE, time, Vec::new(), kind, &obs, explanation);
        let mut raised = Vec::new();
        self.record(alert, &mut raised);
        (raised.remove(0), true)
    }

    /// Resolves the open alert about one of driftwatch's own conditions, if there is
    /// one; returns it.
    pub fn resolve_health(&mut self, kind: AlertKind, subject: &str) -> Option<Alert> {
        let key = dedup_key(HEALTH_SERVICE, kind, subject);
        let open = self
            .latest
            .get(&key)
            .and_then(|id| self.alerts.get_mut(id))?;
        if open.status == AlertStatus::Resolved {
            return None;
        }
        open.status = AlertStatus::Resolved;
        Some(open.clone())
    }

    /// Every alert, oldest first.
    pub fn alerts(&self) -> Vec<&Alert> {
        let mut all: Vec<&Alert> = self.alerts.values().collect();
        all.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        all
    }

    /// Feeds one event; newly raised alerts are appended to `raised`. For a log line,
    /// returns the id of the template it belongs to.
    pub fn observe(&mut self, event: &Event, raised: &mut Vec<Alert>) -> Option<u32> {
        // A sensor's report on itself is no service's behaviour: nothing is learned.
        if let EventKind::SensorHealth { .. } = &event.kind {
            self.sensor_health(event, raised);
            return None;
        }
        // Two rate buckets of slack: events of one batch arrive a little out of order.
        let slack = nanos(self.config.rate.bucket).saturating_mul(2);
        let credible = self.clock.note(event.time.0, slack);
        if credible {
            self.progress.advance(&event.provenance, event.time.0);
        }
        let clock_now = self.clock.now();
        let config = &self.config;
        // Look up first: the service key is cloned only for a service seen the first time.
        if !self.services.contains_key(&event.service) {
            if self.services.len() >= config.max_services {
                self.refuse(event, raised);
                return None;
            }
            self.services
                .insert(event.service.clone(), ServiceState::new(event.time, config));
        }
        let state = self
            .services
            .get_mut(&event.service)
            .expect("inserted above");
        state.events += 1;
        state.last_event = state.last_event.max(event.time);
        if credible {
            state.progress.advance(&event.provenance, event.time.0);
        }
        // Learning spans a period of event time from the service's earliest record,
        // whichever partition delivers it first; a record over an hour (the bound for
        // late learning) behind the service's latest does not move it, so one
        // backdated record cannot end a new service's learning at once.
        if state.phase == Phase::Learning
            && state.last_event.0.saturating_sub(event.time.0) < LATE_PARTITION
        {
            state.learning_since = state.learning_since.min(event.time);
        }
        let learning_end = state
            .learning_since
            .saturating_add(nanos(config.learning_period));
        if state.phase == Phase::Learning
            && event.time >= learning_end
            && state.events >= config.min_learning_events
        {
            // It ends at the period's end, not at the first record read past it (which
            // depends on how partitions interleave), unless it waited for events.
            let at = if state.events > config.min_learning_events {
                learning_end
            } else {
                event.time
            };
            state.phase = Phase::Monitoring;
            state.learned_at = Some((at, state.events));
            state.growth_until = Some(at.saturating_add(nanos(config.growth_period)));
            for n in &mut state.novelty {
                n.growing = n.still_growing();
            }
            state.general.keep_kin();
            if !state.novelty.iter().any(|n| n.growing) {
                // Nothing left to generalise from: the samples go now, not in a day.
                state.general.stop_sampling();
            }
            state.logs.freeze_mix();
            state.rates.templates = state.logs.top_templates(config.rate.top_templates);
            info!(service = %event.service, entries = state.baseline.len(), growing = ?state.growing(), "Learning ended; monitoring.");
        }
        if state.growth_until.is_some_and(|g| event.time > g) {
            // Growth is over: what is new from here on is drift, and the samples that
            // generalisations were learned from are no longer needed.
            state.growth_until = None;
            state.general.keep_kin();
            state.general.stop_sampling();
            for n in &mut state.novelty {
                n.growing = false;
            }
        }
        if let Some(digest) = &event.workload.image.digest
            && state.image_digest.as_ref() != Some(digest)
        {
            // Only an image never seen opens a grace period: during a rollout old and
            // new pods alternate, and flapping back must not keep learning open.
            let new_image = !state.seen_digests.contains(digest);
            if new_image {
                if state.seen_digests.len() == DIGESTS_KEPT {
                    state.seen_digests.remove(0);
                }
                state.seen_digests.push(digest.clone());
            }
            if new_image && state.image_digest.is_some() && state.phase == Phase::Monitoring {
                state.grace_until = Some(event.time.saturating_add(nanos(config.image_grace)));
                info!(service = %event.service, %digest, "New image; learning during the grace period.");
            }
            state.image_digest = Some(digest.clone());
        }
        if let EventKind::FileAccess {
            op: FileOp::Write | FileOp::Create | FileOp::Chmod,
            path,
            ..
        } = &event.kind
        {
            state.written.remember(path);
        }
        if let EventKind::SensorAlert {
            rule,
            process,
            file,
            remote,
            ..
        } = &event.kind
        {
            let pending = PendingSensor {
                service: event.service.clone(),
                time: event.time,
                rule: rule.clone(),
                exe: process.as_ref().map(|p| p.exe.clone()),
                file: file.clone(),
                remote: remote.clone(),
                provenance: event.provenance.clone(),
            };
            self.correlate(&event.service, pending);
            if credible {
                self.count_rate(event, None, raised);
            }
            return None;
        }

        let mut template = None;
        let observations = if let EventKind::Log { message, .. } = &event.kind {
            let added = state.logs.add(message, event.time, config.logs.mix_window);
            let id = state.logs.miner.resolve(added.id);
            template = Some(id);
            // Only a template the baseline lacks can alert, so only its text is built
            // and weighed; a known line costs a lookup.
            let probe = EntryKey {
                dimension: Dimension::LogTemplate,
                key: format!("#{id}"),
            };
            let severity = if state.baseline.contains_key(&probe) {
                Severity::Low
            } else {
                let text = state.logs.miner.template(id).map(|t| t.text());
                weigh(text.as_deref().unwrap_or_default()).0
            };
            let monitoring = state.phase != Phase::Learning;
            let shift = if monitoring {
                state.logs.measure_mix(&config.logs)
            } else {
                None
            };
            if added.overflowed {
                self.log_cap_alert(event, raised);
            }
            if let Some(shift) = shift
                && shift.divergence >= self.config.logs.mix_threshold
            {
                self.mix_alert(event, &shift, raised);
            }
            vec![Observation {
                dimension: Dimension::LogTemplate,
                key: probe.key,
                severity,
                mitre: None,
                exe: None,
            }]
        } else {
            let written = &state.written;
            observe(event, config, |exe| written.contains(exe))
        };
        if credible {
            self.count_rate(event, template, raised);
        }
        let config = &self.config;
        let max_entries = config.max_baseline_entries;
        let growth_max = config.growth_max_entries;
        let raw_path = match &event.kind {
            EventKind::FileAccess { path, .. } => Some(path.as_str()),
            _ => None,
        };
        let mut new_process = false;
        for mut obs in observations {
            let state = self
                .services
                .get_mut(&event.service)
                .expect("inserted above");
            let in_grace = state.grace_until.is_some_and(|g| event.time <= g)
                && state.phase == Phase::Monitoring;
            // Windows are event time: a record that arrives late (its partition lagging
            // the others) but happened before learning ended is still learning
            // material, unless it is late in its own partition's stream.
            let learning = state.phase == Phase::Learning
                || (state.phase == Phase::Monitoring
                    && state.learned_at.is_some_and(|(at, _)| {
                        let own = state
                            .progress
                            .newest(&event.provenance)
                            .or_else(|| self.progress.newest(&event.provenance))
                            .unwrap_or(clock_now);
                        event.time < at
                            && own < at.0.saturating_add(LATE_LEARNING)
                            && clock_now < at.0.saturating_add(LATE_PARTITION)
                    }));
            let growth_open = !learning
                && state.phase == Phase::Monitoring
                && state.growth_until.is_some_and(|g| event.time <= g);
            // Learning watches every dimension's novelty; afterwards only the growing
            // ones, until they settle (drift in a settled dimension is not growth).
            let tracked = novelty_index(obs.dimension)
                .filter(|i| learning || (growth_open && state.novelty[*i].growing));
            // The common case, known behaviour, borrows the key instead of copying it.
            let probe = EntryKey {
                dimension: obs.dimension,
                key: std::mem::take(&mut obs.key),
            };
            if state.count_known(&probe, tracked) {
                continue;
            }
            obs.key = probe.key;
            // A learned name shape or network may cover what the exact key misses.
            if let Some(general) = state.general.cover(obs.dimension, &obs.key, raw_path) {
                let probe = EntryKey {
                    dimension: obs.dimension,
                    key: general,
                };
                if state.count_known(&probe, tracked) {
                    continue;
                }
                obs.key = probe.key;
            }
            if let Some(i) = tracked {
                state.novelty[i].observe(true);
            }
            if !learning && let Some(i) = tracked {
                let n = &mut state.novelty[i];
                if !n.still_growing() {
                    n.growing = false;
                    info!(service = %event.service, dimension = ?obs.dimension, "Baseline settled.");
                }
            }
            let key = EntryKey {
                dimension: obs.dimension,
                key: obs.key.clone(),
            };
            // A dimension still growing after learning keeps learning, within bounds,
            // and says so at low instead of paging; what is critical, or high outside
            // the network, pages all the same.
            let growing = growth_open
                && state.phase != Phase::Locked
                && absorbed_by_growth(&obs)
                && tracked.is_some_and(|i| {
                    state.novelty[i].growing && state.novelty[i].grown < growth_max
                });
            let learn = match (learning, obs.dimension) {
                // Sensitive reads are never learned silently.
                (_, Dimension::SensitiveRead) => None,
                (true, _) => Some(Origin::Learned),
                (false, _) if in_grace => Some(Origin::Grace),
                (false, _) if growing => Some(Origin::Learned),
                _ => None,
            };
            if let Some(origin) = learn {
                if state.baseline.len() >= max_entries {
                    if !state.cap_alerted {
                        state.cap_alerted = true;
                        let cap = Observation {
                            dimension: obs.dimension,
                            key: format!("{max_entries} baseline entries"),
                            severity: Severity::Medium,
                            mitre: None,
                            exe: None,
                        };
                        let explanation = format!(
                            "{} reached its cap of {} baseline entries; behaviour new from here on is not learned \
                             and raises drift once the service monitors.",
                            event.service, max_entries
                        );
                        self.raise(event, AlertKind::BaselineCap, &cap, explanation, raised);
                    }
                    continue;
                }
                state.learn(
                    key.clone(),
                    Entry {
                        first_seen: event.time,
                        count: 1,
                        origin,
                        learned_from: 0,
                    },
                );
                state.generalise(&key, raw_path, learning);
                let grew = growing && origin == Origin::Learned;
                if grew && let Some(i) = tracked {
                    state.novelty[i].grown += 1;
                }
                let quiet = obs.dimension == Dimension::Args && new_process;
                new_process |= obs.dimension == Dimension::Process;
                if origin == Origin::Grace && !quiet {
                    let explanation = format!(
                        "`{}` is new for {} and was learned during the grace period after image {} appeared.",
                        obs.key,
                        event.service,
                        state.image_digest.as_deref().unwrap_or("?")
                    );
                    let info = Observation {
                        severity: Severity::Info,
                        ..obs
                    };
                    self.raise(
                        event,
                        info.dimension.alert_kind(),
                        &info,
                        explanation,
                        raised,
                    );
                } else if grew && !quiet {
                    let explanation = growing_text(&event.service, state, &obs, growth_max);
                    let low = Observation {
                        severity: Severity::Low,
                        ..obs
                    };
                    self.raise(event, low.dimension.alert_kind(), &low, explanation, raised);
                }
                continue;
            }
            if learning && obs.dimension != Dimension::SensitiveRead {
                continue;
            }
            // A new executable already alerts; its argument pattern adds nothing. The
            // pattern is kept, so that repeats count into the process alert and an
            // accepted executable does not alert again for the arguments it ran with.
            if obs.dimension == Dimension::Args && new_process {
                let state = self
                    .services
                    .get_mut(&event.service)
                    .expect("inserted above");
                if state.phase != Phase::Locked && state.baseline.len() < max_entries {
                    state.learn(
                        key,
                        Entry {
                            first_seen: event.time,
                            count: 1,
                            origin: Origin::Learned,
                            learned_from: 0,
                        },
                    );
                }
                continue;
            }
            new_process |= obs.dimension == Dimension::Process;
            let kind = obs.dimension.alert_kind();
            // Kin is judged before repeats count: a name that folds into the key of an
            // open alert still counts toward its shape.
            if self.kin(event, &obs, raw_path, raised) {
                continue;
            }
            if self.count_repeat(event, kind, &obs) {
                continue;
            }
            let state = self.services.get(&event.service).expect("inserted above");
            let explanation = explain(&event.service, state, &obs);
            self.raise(event, kind, &obs, explanation, raised);
        }
        template
    }
}

/// The service name of alerts driftwatch raises about itself.
pub const HEALTH_SERVICE: &str = "driftwatch";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ingest::event::{EventKind, Process, Source, Workload};

    use super::*;

    const MIN: i64 = 60 * 1_000_000_000;
    const T0: i64 = 1_772_445_600 * 1_000_000_000;

    fn config() -> DetectConfig {
        DetectConfig {
            learning_period: Duration::from_secs(600),
            min_learning_events: 3,
            max_baseline_entries: 4,
            ..DetectConfig::default()
        }
    }

    fn exec(minute: i64, exe: &str) -> Event {
        Event {
            time: Nanos(T0 + minute * MIN),
            source: Source::Native,
            provenance: Provenance::file("t", minute),
            workload: Workload::default(),
            service: "shop/api".into(),
            kind: EventKind::ProcessExec {
                process: Process {
                    exe: exe.into(),
                    parent_exe: Some("/app/server".into()),
                    ..Process::default()
                },
            },
        }
    }

    fn learned(d: &mut Detector) {
        let mut raised = Vec::new();
        for m in 0..=10 {
            d.observe(&exec(m, "/app/server"), &mut raised);
        }
        assert!(raised.is_empty(), "nothing alerts while learning");
        assert_eq!(d.service("shop/api").unwrap().phase, Phase::Monitoring);
    }

    fn write(second: i64, path: &str) -> Event {
        Event {
            time: Nanos(T0 + second * 1_000_000_000),
            source: Source::Native,
            provenance: Provenance::file("t", second),
            workload: Workload::default(),
            service: "shop/api".into(),
            kind: EventKind::FileAccess {
                op: FileOp::Write,
                path: path.into(),
                process: None,
            },
        }
    }

    #[test]
    fn a_binary_written_to_a_learned_temp_shape_and_run_is_still_critical() {
        let mut d = Detector::new(DetectConfig {
            learning_period: Duration::from_secs(600),
            min_learning_events: 3,
            ..DetectConfig::default()
        });
        let mut raised = Vec::new();
        let names = [
            "tmpk2m9zqab",
            "tmpbqymhbpj",
            "tmp_x9a2bcd",
            "tmpq0w8e7rt",
            "tmpzz3kd_1p",
            "tmpv8n2m4xc",
        ];
        d.observe(&exec(0, "/app/server"), &mut raised);
        for (i, name) in names.iter().cycle().take(60).enumerate() {
            d.observe(&write(i as i64 * 10, &format!("/tmp/{name}")), &mut raised);
        }
        assert!(raised.is_empty(), "{raised:#?}");
        // A later name of the learned shape is known…
        d.observe(&write(700, "/tmp/tmpwq4ee7jk"), &mut raised);
        assert!(raised.is_empty(), "{raised:#?}");
        // …and running it is a dropped binary all the same.
        d.observe(&exec(12, "/tmp/tmpwq4ee7jk"), &mut raised);
        assert_eq!(raised.len(), 1, "{raised:#?}");
        assert_eq!(raised[0].severity, Severity::Critical);
        assert_eq!(
            raised[0].mitre.as_ref().map(|t| t.id.as_str()),
            Some("T1105")
        );
    }

    /// A binary written before a restart and run after it is still a dropped binary,
    /// whether the state keeps written paths as hashes or, as older state files do, as
    /// text.
    #[test]
    fn a_binary_written_before_a_restart_and_run_after_it_is_critical() {
        let mut d = Detector::new(config());
        learned(&mut d);
        let mut raised = Vec::new();
        d.observe(&write(11 * 60, "/var/tmp/.x/dropper"), &mut raised);
        let snapshot = d.snapshot();
        let api = |s: &crate::snapshot::DetectorSnapshot| {
            s.services
                .iter()
                .position(|s| s.service == "shop/api")
                .unwrap()
        };
        let i = api(&snapshot);
        assert!(snapshot.services[i].written.is_empty());
        assert_eq!(snapshot.services[i].written_hashes.len(), 1);
        let mut old = snapshot.clone();
        old.services[i].written_hashes.clear();
        old.services[i].written = vec!["/var/tmp/.x/dropper".into()];
        for state in [snapshot, old] {
            let mut d = Detector::restore(d.config().clone(), state).expect("restores");
            let mut raised = Vec::new();
            d.observe(&exec(12, "/var/tmp/.x/dropper"), &mut raised);
            assert!(
                raised.iter().any(|a| a.severity == Severity::Critical
                    && a.mitre.as_ref().is_some_and(|t| t.id == "T1105")),
                "{raised:#?}"
            );
        }
    }

    fn connect(second: i64, address: &str, port: u16) -> Event {
        Event {
            kind: EventKind::Network {
                direction: ingest::event::Direction::Connect,
                address: address.into(),
                port,
                protocol: "tcp".into(),
                dns_name: None,
                process: None,
            },
            ..write(second, "/unused")
        }
    }

    /// A service that learned from few events: an exec, and one connection and one
    /// file write of its own among them, then `extra` events while it learns.
    fn learned_sparsely(extra: impl IntoIterator<Item = Event>) -> Detector {
        let mut d = Detector::new(DetectConfig {
            learning_period: Duration::from_secs(600),
            min_learning_events: 3,
            ..DetectConfig::default()
        });
        let mut raised = Vec::new();
        d.observe(&exec(0, "/app/server"), &mut raised);
        d.observe(&write(5, "/app/data/orders.json"), &mut raised);
        d.observe(&connect(6, "10.96.20.15", 5432), &mut raised);
        for e in extra {
            d.observe(&e, &mut raised);
        }
        d.observe(&exec(11, "/app/server"), &mut raised);
        assert!(raised.is_empty(), "{raised:#?}");
        assert_eq!(d.service("shop/api").unwrap().phase, Phase::Monitoring);
        d
    }

    fn above_low(raised: &[Alert]) -> Vec<(&str, Severity)> {
        raised
            .iter()
            .filter(|a| a.severity > Severity::Low)
            .map(|a| (a.subject.as_str(), a.severity))
            .collect()
    }

    #[test]
    fn later_temp_names_of_the_shape_of_two_learned_ones_are_low_then_learned() {
        let mut d = learned_sparsely([
            write(100, "/tmp/tmpbqymhbpj"),
            write(200, "/tmp/tmpkzmwzqxa"),
        ]);
        let mut raised = Vec::new();
        d.observe(&write(700, "/tmp/tmpqgwhexrt"), &mut raised);
        d.observe(&write(710, "/tmp/tmpvknzmyxc"), &mut raised);
        assert_eq!(above_low(&raised), vec![], "{raised:#?}");
        assert_eq!(raised.len(), 2, "{raised:#?}");
        assert!(
            raised[0].explanation.contains("/tmp/tmp<[")
                && raised[0]
                    .explanation
                    .contains("`/tmp/tmpbqymhbpj`, `/tmp/tmpkzmwzqxa`"),
            "{}",
            raised[0].explanation
        );
        assert!(
            raised[1].explanation.contains("is learned"),
            "{}",
            raised[1].explanation
        );
        // Four names share the shape: it is learned, and the next is known.
        raised.clear();
        d.observe(&write(720, "/tmp/tmpwqsejjkb"), &mut raised);
        assert!(raised.is_empty(), "{raised:#?}");
        // Another shape in the same directory, and a directory never generalised, are
        // drift at their own severity.
        d.observe(&write(730, "/tmp/backdoor.sh"), &mut raised);
        d.observe(&write(740, "/etc/tmpz8x7c6v5"), &mut raised);
        assert_eq!(above_low(&raised).len(), 2, "{raised:#?}");
        // Running a kin name it wrote is a dropped binary all the same.
        raised.clear();
        d.observe(&exec(13, "/tmp/tmpvknzmyxc"), &mut raised);
        assert_eq!(above_low(&raised).len(), 1, "{raised:#?}");
        assert_eq!(raised[0].severity, Severity::Critical);
    }

    #[test]
    fn one_learned_name_makes_the_first_later_name_drift_and_the_second_kin() {
        let mut d = learned_sparsely([write(100, "/tmp/tmpbqymhbpj")]);
        let mut raised = Vec::new();
        d.observe(&write(700, "/tmp/tmpkzmwzqxa"), &mut raised);
        assert_eq!(above_low(&raised).len(), 1, "{raised:#?}");
        raised.clear();
        d.observe(&write(710, "/tmp/tmpqgwhexrt"), &mut raised);
        assert_eq!(above_low(&raised), vec![], "{raised:#?}");
        assert_eq!(raised.len(), 1, "{raised:#?}");
    }

    #[test]
    fn later_addresses_beside_two_learned_ones_are_low_then_their_network_is_learned() {
        let mut d = learned_sparsely([
            connect(100, "151.101.3.195", 443),
            connect(200, "151.101.67.195", 443),
        ]);
        let mut raised = Vec::new();
        d.observe(&connect(700, "151.101.131.195", 443), &mut raised);
        d.observe(&connect(710, "151.101.195.195", 443), &mut raised);
        assert_eq!(above_low(&raised), vec![], "{raised:#?}");
        assert_eq!(raised.len(), 2, "{raised:#?}");
        assert!(
            raised[1].explanation.contains("151.101.0.0/16:443"),
            "{}",
            raised[1].explanation
        );
        raised.clear();
        d.observe(&connect(720, "151.101.10.10", 443), &mut raised);
        assert!(raised.is_empty(), "{raised:#?}");
        // Another /16, another port, private to public: drift, high.
        d.observe(&connect(730, "151.102.1.1", 443), &mut raised);
        d.observe(&connect(740, "151.101.5.5", 8443), &mut raised);
        d.observe(&connect(750, "10.96.20.16", 443), &mut raised);
        let above = above_low(&raised);
        assert_eq!(above.len(), 3, "{raised:#?}");
        assert_eq!(above[0].1, Severity::High);
        assert_eq!(above[1].1, Severity::High);
    }

    fn connect_named(second: i64, address: &str, name: &str, port: u16) -> Event {
        let mut e = connect(second, address, port);
        if let EventKind::Network { dns_name, .. } = &mut e.kind {
            *dns_name = Some(name.into());
        }
        e
    }

    #[test]
    fn later_names_beside_two_learned_ones_are_low_then_their_shape_is_learned() {
        let mut d = learned_sparsely([
            connect_named(100, "13.32.1.5", "d3kq9zv2mx7tpa.cdn.example.net", 443),
            connect_named(200, "13.32.8.9", "dq7wn4hz0rb2ke.cdn.example.net", 443),
        ]);
        let mut raised = Vec::new();
        d.observe(
            &connect_named(700, "13.32.2.2", "d8m2xj5tq0wcnv.cdn.example.net", 443),
            &mut raised,
        );
        d.observe(
            &connect_named(710, "13.32.3.3", "dz4hp7bk1s9fyr.cdn.example.net", 443),
            &mut raised,
        );
        assert_eq!(above_low(&raised), vec![], "{raised:#?}");
        assert_eq!(raised.len(), 2, "{raised:#?}");
        assert!(
            raised[1]
                .explanation
                .contains("`connect tcp d<[a-z0-9-]{13}>.cdn.example.net:443` is learned"),
            "{}",
            raised[1].explanation
        );
        raised.clear();
        d.observe(
            &connect_named(720, "13.32.4.4", "D6tn3vq8yl2wgj.cdn.example.net.", 443),
            &mut raised,
        );
        assert!(raised.is_empty(), "{raised:#?}");
        // A name of another domain, or of another shape below the same one, is drift.
        d.observe(
            &connect_named(730, "13.32.5.5", "raiz3gjkgtfhkkc.example-c2.com", 443),
            &mut raised,
        );
        d.observe(
            &connect_named(740, "13.32.6.6", "upload.cdn.example.net", 443),
            &mut raised,
        );
        let above = above_low(&raised);
        assert_eq!(above.len(), 2, "{raised:#?}");
        assert!(above.iter().all(|(_, s)| *s == Severity::High), "{above:?}");
    }

    #[test]
    fn a_network_learned_over_one_slash_24_widens_over_its_neighbour_after_two_new_addresses() {
        let mut d = learned_sparsely(
            ["52.216.9.17", "52.216.9.200", "52.216.9.99", "52.216.9.4"]
                .iter()
                .enumerate()
                .map(|(i, a)| connect(100 + i as i64, a, 443)),
        );
        let mut raised = Vec::new();
        d.observe(&connect(700, "52.216.8.128", 443), &mut raised);
        d.observe(&connect(710, "52.216.8.21", 443), &mut raised);
        assert_eq!(above_low(&raised), vec![], "{raised:#?}");
        assert_eq!(raised.len(), 2, "{raised:#?}");
        assert!(
            raised[0]
                .explanation
                .contains("learned once 2 destinations of it are seen"),
            "{}",
            raised[0].explanation
        );
        assert!(
            raised[1]
                .explanation
                .contains("`connect tcp 52.216.8.0/23:443` is learned"),
            "{}",
            raised[1].explanation
        );
        raised.clear();
        d.observe(&connect(720, "52.216.8.230", 443), &mut raised);
        assert!(raised.is_empty(), "{raised:#?}");
        // Beyond the bound it is drift.
        d.observe(&connect(730, "52.217.8.1", 443), &mut raised);
        assert_eq!(above_low(&raised).len(), 1, "{raised:#?}");
    }

    #[test]
    fn kin_samples_survive_a_restart() {
        let d = learned_sparsely([
            write(100, "/tmp/tmpbqymhbpj"),
            write(200, "/tmp/tmpkzmwzqxa"),
        ]);
        let mut d = Detector::restore(d.config().clone(), d.snapshot()).expect("restores");
        let mut raised = Vec::new();
        d.observe(&write(700, "/tmp/tmpqgwhexrt"), &mut raised);
        assert_eq!(above_low(&raised), vec![], "{raised:#?}");
        assert_eq!(raised.len(), 1, "{raised:#?}");
    }

    /// A record dated an hour ahead, accepted under the future skew, must not close
    /// every service's rate buckets an hour early.
    #[test]
    fn one_future_dated_record_does_not_move_the_rate_clock() {
        let mut d = Detector::new(config());
        learned(&mut d);
        let mut raised = Vec::new();
        d.advance(Nanos(T0 + 11 * MIN), &mut raised);
        let before = d.rate_clock;
        let mut ahead = exec(11, "/app/server");
        ahead.service = "other/svc".into();
        ahead.time = Nanos(T0 + 70 * MIN);
        d.observe(&ahead, &mut raised);
        d.advance(ahead.time, &mut raised);
        assert!(
            d.rate_clock <= before + 1,
            "the clock followed a future-dated record: {before} → {}",
            d.rate_clock
        );
        // The series it would have opened in the future was not opened.
        assert_eq!(d.service("other/svc").unwrap().rates.series().count(), 0);
    }

    /// Behaviour dated inside a finished learning period, arriving well after it ended,
    /// is judged, not learned.
    #[test]
    fn a_record_backdated_into_finished_learning_is_judged_as_monitoring() {
        let mut d = Detector::new(config());
        learned(&mut d);
        let mut raised = Vec::new();
        // The clock moves on well past the end of learning…
        for m in 11..40 {
            d.observe(&exec(m, "/app/server"), &mut raised);
        }
        assert!(raised.is_empty(), "{raised:#?}");
        // …then a record claims to be from minute 5.
        d.observe(&exec(5, "/usr/bin/nc"), &mut raised);
        assert_eq!(raised.len(), 1, "{raised:#?}");
        assert!(raised[0].subject.contains("/usr/bin/nc"), "{raised:#?}");
        // Arriving late but within minutes of the end, it would still have been learned.
        let mut d = Detector::new(config());
        learned(&mut d);
        let mut raised = Vec::new();
        d.observe(&exec(5, "/usr/bin/late"), &mut raised);
        assert!(raised.is_empty(), "{raised:#?}");
    }

    /// One service's records on two partitions, the first read to its end before the
    /// second (a member catching up on a backlog): the second's records dated inside
    /// learning are learned, as they are in time order. Lateness is asked of a record's
    /// own partition: backdated behind its own stream, or an hour behind every stream,
    /// a record is judged.
    #[test]
    fn a_partition_read_after_another_still_delivers_its_learning() {
        let on = |partition: i32, mut e: Event| {
            e.provenance = Provenance::kafka("raw", partition, e.time.0 / MIN - T0 / MIN);
            e
        };
        let mut d = Detector::new(config());
        let mut raised = Vec::new();
        for m in 0..40 {
            d.observe(&on(0, exec(m, "/app/server")), &mut raised);
        }
        for m in 0..40 {
            d.observe(&on(1, exec(m, "/app/worker")), &mut raised);
        }
        assert!(raised.is_empty(), "{raised:#?}");
        let api = d.service("shop/api").unwrap();
        assert_eq!(api.learned_at.map(|(at, _)| at), Some(Nanos(T0 + 10 * MIN)));
        // Dated back into learning behind its own partition: judged.
        d.observe(&on(1, exec(5, "/usr/bin/nc")), &mut raised);
        assert_eq!(raised.len(), 1, "{raised:#?}");
        // A third partition's first record, dated in learning but over an hour behind
        // the others: judged too.
        for m in 40..75 {
            d.observe(&on(0, exec(m, "/app/server")), &mut raised);
        }
        d.observe(&on(2, exec(6, "/usr/bin/socat")), &mut raised);
        assert_eq!(raised.len(), 2, "{raised:#?}");
        assert!(raised[1].subject.contains("socat"), "{raised:#?}");
    }

    /// Two services share two raw partitions, and each service's records reach this
    /// detector in a stream of their own (a repartition topic's partition, read at its
    /// own pace). One service's records on partition 0 are read to minute 40 before the
    /// other's, whose records on partition 1 come first and end its learning. That
    /// other's partition-0 records, dated inside its learning, are in order in its own
    /// stream: they are learned, whatever the first service moved partition 0 to.
    #[test]
    fn a_partition_is_late_by_the_services_own_records_in_it() {
        let on = |service: &str, partition: i32, mut e: Event| {
            e.provenance = Provenance::kafka("raw", partition, e.time.0 / MIN - T0 / MIN);
            e.service = service.into();
            e
        };
        let mut d = Detector::new(config());
        let mut raised = Vec::new();
        for m in 0..40 {
            d.observe(&on("shop/web", 0, exec(m, "/app/server")), &mut raised);
            d.observe(&on("shop/web", 1, exec(m, "/app/worker")), &mut raised);
        }
        for m in 0..40 {
            d.observe(&on("shop/api", 1, exec(m, "/app/worker")), &mut raised);
        }
        for m in 0..40 {
            d.observe(&on("shop/api", 0, exec(m, "/app/server")), &mut raised);
        }
        assert!(raised.is_empty(), "{raised:#?}");
        // Backdated behind the service's own records on a partition: still judged.
        d.observe(&on("shop/api", 0, exec(5, "/usr/bin/nc")), &mut raised);
        assert_eq!(raised.len(), 1, "{raised:#?}");
    }

    /// Whichever partition delivers a service's first record, learning starts at its
    /// earliest record: a record dated before the first one read moves the start back.
    #[test]
    fn learning_starts_at_the_earliest_record_whichever_arrives_first() {
        let on = |partition: i32, mut e: Event| {
            e.provenance = Provenance::kafka("raw", partition, e.time.0 / MIN - T0 / MIN);
            e
        };
        let mut d = Detector::new(config());
        let mut raised = Vec::new();
        d.observe(&on(1, exec(3, "/app/worker")), &mut raised);
        d.observe(&on(0, exec(0, "/app/server")), &mut raised);
        assert_eq!(d.service("shop/api").unwrap().learning_since, Nanos(T0));
        for m in 1..=10 {
            d.observe(&on(0, exec(m, "/app/server")), &mut raised);
        }
        let api = d.service("shop/api").unwrap();
        assert_eq!(api.phase, Phase::Monitoring);
        assert_eq!(api.learned_at.map(|(at, _)| at), Some(Nanos(T0 + 10 * MIN)));
        // A record dated a day before every other does not move a learning start back.
        let mut d = Detector::new(config());
        d.observe(&on(0, exec(0, "/app/server")), &mut raised);
        d.observe(&on(1, exec(-24 * 60, "/app/server")), &mut raised);
        let api = d.service("shop/api").unwrap();
        assert_eq!(api.learning_since, Nanos(T0));
        assert_eq!(api.phase, Phase::Learning);
    }

    /// A producer spraying service keys fills the cap once: one alert, the rest
    /// counted, and the services already tracked are judged as before.
    #[test]
    fn services_beyond_the_cap_are_refused_with_one_alert() {
        let mut d = Detector::new(DetectConfig {
            max_services: 3,
            ..config()
        });
        learned(&mut d);
        let mut raised = Vec::new();
        for i in 0..100 {
            let mut e = exec(11, "/app/server");
            e.service = format!("spray/{i}");
            d.observe(&e, &mut raised);
        }
        assert_eq!(d.services().count(), 3);
        assert_eq!(d.capacity().events_refused, 98);
        assert_eq!(raised.len(), 1, "{raised:#?}");
        assert_eq!(raised[0].kind, AlertKind::Capacity);
        // The tracked service still pages.
        d.observe(&exec(12, "/usr/bin/nc"), &mut raised);
        assert_eq!(raised.len(), 2, "{raised:#?}");
        assert_eq!(raised[1].service, "shop/api");
    }

    #[test]
    fn idle_services_are_forgotten_after_the_retention() {
        let mut d = Detector::new(DetectConfig {
            service_retention: Duration::from_secs(3600),
            ..config()
        });
        learned(&mut d);
        let mut raised = Vec::new();
        let mut other = exec(11, "/app/server");
        other.service = "shop/worker".into();
        for m in 11..200 {
            other.time = Nanos(T0 + m * MIN);
            d.observe(&other, &mut raised);
            d.advance(other.time, &mut raised);
        }
        assert!(d.service("shop/api").is_none(), "idle for over an hour");
        assert!(d.service("shop/worker").is_some());
        assert_eq!(d.capacity().services_evicted, 1);
    }

    #[test]
    fn alerts_past_the_cap_go_oldest_resolved_first() {
        let mut d = Detector::new(DetectConfig {
            max_alerts: 10,
            max_baseline_entries: 1000,
            ..config()
        });
        learned(&mut d);
        let mut raised = Vec::new();
        for m in 0..40 {
            d.observe(&exec(20 + m, &format!("/usr/bin/tool{m}")), &mut raised);
        }
        assert!(d.alerts().len() <= 11, "{}", d.alerts().len());
        assert!(d.capacity().alerts_evicted >= 29);
        // The newest alerts are the ones kept.
        assert!(d.alerts().iter().any(|a| a.subject.contains("tool39")));
    }

    #[test]
    fn drift_after_learning_does_not_make_a_settled_dimension_growing() {
        let mut d = Detector::new(config());
        learned(&mut d);
        let mut raised = Vec::new();
        for m in 0..20 {
            d.observe(&exec(20 + m, &format!("/usr/bin/tool{m}")), &mut raised);
        }
        assert!(
            raised.iter().all(|a| a.severity == Severity::Medium),
            "{raised:#?}"
        );
        assert!(d.service("shop/api").unwrap().growing().is_empty());
    }

    #[test]
    fn a_flood_of_unique_log_lines_hits_the_template_cap_with_one_alert() {
        let mut c = config();
        c.logs.templates.max_templates = 5;
        let mut d = Detector::new(c);
        let mut raised = Vec::new();
        for i in 0..200i64 {
            let words = vec!["w"; i as usize + 1].join(" ");
            let mut e = exec(i / 20, "/app/server");
            e.kind = EventKind::Log {
                stream: None,
                message: words,
                template_id: None,
            };
            d.observe(&e, &mut raised);
        }
        let caps: Vec<&Alert> = raised
            .iter()
            .filter(|a| a.subject == "template cap")
            .collect();
        assert_eq!(caps.len(), 1, "{raised:#?}");
        assert_eq!(caps[0].kind, AlertKind::LogTemplate);
        assert!(caps[0].explanation.contains("cap of 5 log templates"));
        assert_eq!(d.service("shop/api").unwrap().logs.miner().len(), 6);
    }

    #[test]
    fn an_accepted_subject_joins_the_baseline_and_stops_alerting() {
        let mut d = Detector::new(config());
        learned(&mut d);
        let mut raised = Vec::new();
        d.observe(&exec(11, "/usr/bin/curl"), &mut raised);
        assert_eq!(raised.len(), 1);
        let accepted = d.accept(&raised[0].id).unwrap();
        assert_eq!(accepted.status, AlertStatus::Resolved);
        let mut again = Vec::new();
        d.observe(&exec(12, "/usr/bin/curl"), &mut again);
        assert!(again.is_empty());
        let entry = &d.service("shop/api").unwrap().baseline[&EntryKey {
            dimension: Dimension::Process,
            key: "/usr/bin/curl (parent /app/server)".into(),
        }];
        assert_eq!(entry.origin, Origin::Accepted);
    }

    #[test]
    fn a_locked_service_learns_nothing_even_after_a_new_image() {
        let mut d = Detector::new(config());
        learned(&mut d);
        assert!(d.lock("shop/api"));
        let mut e = exec(11, "/usr/bin/node");
        e.workload.image.digest = Some("sha256:new".into());
        let mut raised = Vec::new();
        d.observe(&e, &mut raised);
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].severity, Severity::Medium);
    }

    #[test]
    fn flapping_back_to_a_known_image_opens_no_new_grace_period() {
        let mut d = Detector::new(config());
        let with = |mut e: Event, digest: &str| {
            e.workload.image.digest = Some(digest.into());
            e
        };
        let mut raised = Vec::new();
        for m in 0..=10 {
            d.observe(&with(exec(m, "/app/server"), "sha256:a"), &mut raised);
        }
        d.observe(&with(exec(11, "/app/server"), "sha256:b"), &mut raised);
        d.observe(&with(exec(30, "/app/server"), "sha256:a"), &mut raised);
        d.observe(&with(exec(31, "/usr/bin/nc"), "sha256:a"), &mut raised);
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(
            raised[0].severity,
            Severity::Medium,
            "drift, not a grace-period info"
        );
    }

    #[test]
    fn a_sensor_alert_about_a_connection_joins_the_drift_alert_about_its_remote_end() {
        let mut d = Detector::new(config());
        learned(&mut d);
        let mut raised = Vec::new();
        let connect = Event {
            kind: EventKind::Network {
                direction: ingest::event::Direction::Connect,
                address: "10.96.0.1".into(),
                port: 443,
                protocol: "tcp".into(),
                dns_name: None,
                process: Some(Process {
                    exe: "/app/server".into(),
                    ..Process::default()
                }),
            },
            ..exec(11, "/app/server")
        };
        d.observe(&connect, &mut raised);
        assert_eq!(raised.len(), 1, "{raised:?}");
        // Falco names the process differently (`handler`), and the connection only in
        // `fd.name`; the remote end is the same act.
        let rule = Event {
            kind: EventKind::SensorAlert {
                rule: "Contact K8S API Server From Container".into(),
                priority: "Notice".into(),
                tags: vec![],
                process: Some(Process {
                    exe: "handler".into(),
                    ..Process::default()
                }),
                file: None,
                remote: Some("10.96.0.1:443".into()),
                output: None,
            },
            ..exec(11, "handler")
        };
        d.observe(&rule, &mut raised);
        assert_eq!(
            d.alerts()[0].sensor_rules,
            ["Contact K8S API Server From Container"]
        );
    }

    #[test]
    fn a_sensor_alert_joins_only_the_alert_about_its_own_executable() {
        let mut d = Detector::new(config());
        learned(&mut d);
        let mut raised = Vec::new();
        let mut curl = exec(11, "/usr/bin/curl");
        if let EventKind::ProcessExec { process } = &mut curl.kind {
            process.parent_exe = Some("/bin/sh".into());
        }
        d.observe(&curl, &mut raised);
        let shell_rule = Event {
            kind: EventKind::SensorAlert {
                rule: "Terminal shell in container".into(),
                priority: "Notice".into(),
                tags: vec![],
                process: Some(Process {
                    exe: "/bin/sh".into(),
                    ..Process::default()
                }),
                file: None,
                remote: None,
                output: None,
            },
            ..exec(11, "/bin/sh")
        };
        d.observe(&shell_rule, &mut raised);
        assert!(
            d.alerts()[0].sensor_rules.is_empty(),
            "a rule about /bin/sh joined the curl alert"
        );
    }

    #[test]
    fn relearning_starts_a_new_learning_period() {
        let mut d = Detector::new(config());
        learned(&mut d);
        assert!(d.relearn("shop/api"));
        let mut raised = Vec::new();
        d.observe(&exec(20, "/usr/bin/curl"), &mut raised);
        assert!(raised.is_empty());
        assert_eq!(d.service("shop/api").unwrap().phase, Phase::Learning);
    }

    #[test]
    fn the_baseline_cap_stops_learning_and_says_so_once() {
        let mut d = Detector::new(config());
        let mut raised = Vec::new();
        for (m, exe) in ["/a", "/b", "/c", "/d", "/e", "/f"].iter().enumerate() {
            d.observe(&exec(m as i64, exe), &mut raised);
        }
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(raised[0].kind, AlertKind::BaselineCap);
        assert_eq!(d.service("shop/api").unwrap().baseline.len(), 4);
    }

    #[test]
    fn an_alert_about_driftwatch_itself_lasts_until_resolved_then_opens_anew() {
        let mut d = Detector::new(config());
        let raise = |d: &mut Detector, s: i64| {
            d.raise_health(
                Nanos(s * 1_000_000_000),
                AlertKind::Delivery,
                Severity::Critical,
                "notification outbox full",
                format!("at {s}"),
            )
        };
        let (first, new) = raise(&mut d, 10);
        assert!(new);
        assert_eq!(first.service, HEALTH_SERVICE);
        // Days later, still the same open alert: no dedup window.
        let (again, new) = raise(&mut d, 10 + 3 * 86_400);
        assert!(!new);
        assert_eq!((again.id.as_str(), again.count), (first.id.as_str(), 2));
        assert_eq!(again.explanation, format!("at {}", 10 + 3 * 86_400));
        // Accepting it into a baseline makes no sense.
        assert!(d.accept(&first.id).is_none());
        let resolved = d
            .resolve_health(AlertKind::Delivery, "notification outbox full")
            .unwrap();
        assert_eq!(resolved.status, AlertStatus::Resolved);
        assert!(
            d.resolve_health(AlertKind::Delivery, "notification outbox full")
                .is_none()
        );
        let (next, new) = raise(&mut d, 20 + 3 * 86_400);
        assert!(new);
        assert_ne!(next.id, first.id);
    }

    #[test]
    fn dedup_keys_are_stable_across_detectors() {
        let run = || {
            let mut d = Detector::new(config());
            learned(&mut d);
            let mut raised = Vec::new();
            d.observe(&exec(11, "/bin/sh"), &mut raised);
            raised.remove(0)
        };
        let (a, b) = (run(), run());
        assert_eq!((a.id, a.dedup_key), (b.id, b.dedup_key));
    }
}
