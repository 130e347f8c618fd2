//! What readers see of the detector: an immutable [`DetectorView`] that the detector's
//! one owner publishes, and readers (the API, SQL tables, the state file writer) read
//! without any lock the owner needs.
//!
//! The contract, in four sentences. Only the owner of the [`Detector`] publishes, with
//! [`Detector::publish`], between batches; a reader loads the current view and keeps it
//! as long as it likes. A view never changes: a publish builds a new one that shares
//! every unchanged service and alert with the previous one (persistent maps), so its
//! cost follows what changed since the last publish, not the size of the state. A view
//! holds everything a published service or alert says at the moment of the publish,
//! except the rate buckets, which no reader shows. Every mutable access to a service or
//! an alert goes through [`Tracked`], which is how a publish knows what changed.

use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ingest::Nanos;

use crate::alert::{Alert, AlertStatus};
use crate::detector::{Capacity, Detector, PendingSensor, ServiceState};
use crate::observe::Dimension;
use crate::snapshot::{DetectorSnapshot, SNAPSHOT_VERSION, ServiceSnapshot};

/// A map that remembers which keys were changed, inserted or removed since the last
/// [`take_changed`](Tracked::take_changed). Reads go through `Deref`; writes through
/// its own methods, so none is missed.
#[derive(Debug, Clone)]
pub struct Tracked<V> {
    map: HashMap<String, V>,
    changed: HashSet<String>,
}

impl<V> Default for Tracked<V> {
    fn default() -> Self {
        Tracked {
            map: HashMap::new(),
            changed: HashSet::new(),
        }
    }
}

impl<V> Deref for Tracked<V> {
    type Target = HashMap<String, V>;

    fn deref(&self) -> &HashMap<String, V> {
        &self.map
    }
}

impl<V> Tracked<V> {
    fn mark(&mut self, key: &str) {
        // Looked up first: the key is cloned once per publish, not once per access.
        if !self.changed.contains(key) {
            self.changed.insert(key.to_owned());
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        if self.map.contains_key(key) {
            self.mark(key);
        }
        self.map.get_mut(key)
    }

    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        self.mark(&key);
        self.map.insert(key, value)
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let removed = self.map.remove(key);
        if removed.is_some() {
            self.mark(key);
        }
        removed
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut V) -> bool) {
        let changed = &mut self.changed;
        self.map.retain(|k, v| {
            let kept = keep(k, v);
            if !kept {
                changed.insert(k.clone());
            }
            kept
        });
    }

    /// Mutable access to every value without marking any: only for what no view shows.
    pub fn iter_mut_unpublished(&mut self) -> impl Iterator<Item = (&String, &mut V)> {
        self.map.iter_mut()
    }

    /// The keys changed since the last call.
    pub fn take_changed(&mut self) -> HashSet<String> {
        std::mem::take(&mut self.changed)
    }
}

/// One log template as a view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateView {
    pub id: u32,
    pub text: String,
    pub first_seen: Nanos,
    pub count: u64,
    pub example: String,
    /// Whether the template is in the service's baseline.
    pub learned: bool,
}

/// One service as a view shows it: its snapshot (what the state file and baseline
/// files hold) and what the tables derive from the live state.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    pub snapshot: ServiceSnapshot,
    /// The dimensions still growing, in [`LEARNED_DIMENSIONS`] order.
    pub growing: Vec<Dimension>,
    /// Live log templates, by id.
    pub templates: Vec<TemplateView>,
}

impl ServiceView {
    pub(crate) fn of(name: &str, state: &ServiceState) -> ServiceView {
        let templates = state
            .logs
            .miner()
            .templates()
            .map(|t| {
                let info = state.logs.info(t.id);
                TemplateView {
                    id: t.id,
                    text: t.text(),
                    first_seen: info.map_or(Nanos(0), |i| i.first_seen),
                    count: t.count,
                    example: info.map(|i| i.example.clone()).unwrap_or_default(),
                    learned: state.baseline.contains_key(&crate::EntryKey {
                        dimension: Dimension::LogTemplate,
                        key: format!("#{}", t.id),
                    }),
                }
            })
            .collect::<Vec<_>>();
        let mut templates = templates;
        templates.sort_by_key(|t| t.id);
        ServiceView {
            snapshot: crate::snapshot::service_snapshot(name, state),
            growing: state.growing(),
            templates,
        }
    }

    pub fn is_growing(&self, dimension: Dimension) -> bool {
        self.growing.contains(&dimension)
    }
}

/// The detector as readers see it, at one publish.
#[derive(Debug, Clone, Default)]
pub struct DetectorView {
    /// Every service, by name.
    pub services: imbl::OrdMap<String, Arc<ServiceView>>,
    alerts: imbl::HashMap<String, Arc<Alert>>,
    /// The same alerts by (time of first occurrence, id): oldest first.
    by_time: imbl::OrdMap<(Nanos, String), Arc<Alert>>,
    pub pending_sensor: Arc<Vec<PendingSensor>>,
    pub capacity: Capacity,
    /// The detector's robust event clock, if it has seen events.
    pub clock: Option<Nanos>,
    /// Counts publishes: a later view has a larger number.
    pub version: u64,
    /// The alerts raised or changed since the previous publish, as they are now.
    pub changed_alerts: Arc<Vec<Arc<Alert>>>,
}

impl DetectorView {
    /// One alert by id.
    pub fn alert(&self, id: &str) -> Option<&Arc<Alert>> {
        self.alerts.get(id)
    }

    /// Every alert, oldest first.
    pub fn alerts(&self) -> impl DoubleEndedIterator<Item = &Arc<Alert>> + '_ {
        self.by_time.values()
    }

    pub fn alert_count(&self) -> usize {
        self.alerts.len()
    }

    /// Open (not resolved) alerts per service.
    pub fn open_alerts(&self) -> HashMap<&str, i64> {
        let mut open = HashMap::new();
        for a in self.alerts.values() {
            if a.status != AlertStatus::Resolved {
                *open.entry(a.service.as_str()).or_default() += 1;
            }
        }
        open
    }

    /// The whole state as the state file holds it: services by name, alerts oldest
    /// first.
    pub fn snapshot(&self) -> DetectorSnapshot {
        DetectorSnapshot {
            version: SNAPSHOT_VERSION,
            services: self.services.values().map(|s| s.snapshot.clone()).collect(),
            alerts: self.alerts().map(|a| Alert::clone(a)).collect(),
            pending_sensor: self.pending_sensor.as_ref().clone(),
        }
    }

    /// Services by phase: learning, monitoring, locked.
    pub fn phases(&self) -> [usize; 3] {
        let mut n = [0; 3];
        for s in self.services.values() {
            n[match s.snapshot.phase {
                crate::Phase::Learning => 0,
                crate::Phase::Monitoring => 1,
                crate::Phase::Locked => 2,
            }] += 1;
        }
        n
    }
}

/// Where the owner publishes views and readers load them. Cloning shares the cell.
#[derive(Clone, Default)]
pub struct Views(Arc<ArcSwap<DetectorView>>);

impl Views {
    /// The current view; readers keep it as long as they need, without blocking
    /// anyone.
    pub fn load(&self) -> Arc<DetectorView> {
        self.0.load_full()
    }

    pub fn store(&self, view: Arc<DetectorView>) {
        self.0.store(view);
    }
}

impl Detector {
    /// Builds the view of the state now from the last one, sharing whatever did not
    /// change, and keeps it as the base of the next publish.
    pub fn publish(&mut self) -> Arc<DetectorView> {
        let mut view = DetectorView::clone(&self.published);
        let mut changed_alerts = Vec::new();
        for name in self.services.take_changed() {
            match self.services.get(&name) {
                Some(state) => {
                    let built = Arc::new(ServiceView::of(&name, state));
                    view.services.insert(name, built);
                }
                None => {
                    view.services.remove(&name);
                }
            }
        }
        for id in self.alerts.take_changed() {
            let old = match self.alerts.get(&id) {
                Some(alert) => {
                    let alert = Arc::new(alert.clone());
                    changed_alerts.push(alert.clone());
                    view.by_time.insert((alert.time, id.clone()), alert.clone());
                    view.alerts
                        .insert(id.clone(), alert.clone())
                        .filter(|old| old.time != alert.time)
                }
                None => view.alerts.remove(&id),
            };
            if let Some(old) = old {
                view.by_time.remove(&(old.time, id));
            }
        }
        if self.pending_changed {
            self.pending_changed = false;
            view.pending_sensor = Arc::new(self.pending_sensor_alerts());
        }
        view.capacity = self.capacity();
        view.clock = self.clock();
        view.version += 1;
        view.changed_alerts = Arc::new(changed_alerts);
        let view = Arc::new(view);
        self.published = view.clone();
        view
    }

    /// A view of the state now, built whole and not published: for tools and tests
    /// that hold the detector themselves.
    pub fn view_now(&self) -> DetectorView {
        let mut view = DetectorView::default();
        for (name, state) in self.services.iter() {
            view.services
                .insert(name.clone(), Arc::new(ServiceView::of(name, state)));
        }
        for (id, alert) in self.alerts.iter() {
            let alert = Arc::new(alert.clone());
            view.by_time.insert((alert.time, id.clone()), alert.clone());
            view.alerts.insert(id.clone(), alert);
        }
        view.pending_sensor = Arc::new(self.pending_sensor_alerts());
        view.capacity = self.capacity();
        view.clock = self.clock();
        view.version = self.published.version;
        view
    }

    /// Numbers the next views after `version` (a detector rebuilt in place).
    pub(crate) fn continue_versions(&mut self, version: u64) {
        Arc::make_mut(&mut self.published).version = version;
    }

    /// The last view published (empty before the first publish).
    pub fn published(&self) -> &Arc<DetectorView> {
        &self.published
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DetectConfig;
    use ingest::event::{EventKind, Process, Source, Workload};
    use ingest::{Event, Provenance};

    fn exec(service: &str, exe: &str, t: i64) -> Event {
        Event {
            time: Nanos(t * 1_000_000_000),
            source: Source::Native,
            provenance: Provenance::file("t", t),
            workload: Workload::default(),
            service: service.into(),
            kind: EventKind::ProcessExec {
                process: Process {
                    exe: exe.into(),
                    ..Process::default()
                },
            },
        }
    }

    #[test]
    fn a_published_view_never_changes_after_the_detector_moves_on() {
        let mut d = Detector::new(DetectConfig::default());
        let mut raised = Vec::new();
        d.observe(&exec("shop/api", "/usr/bin/python3", 1_000), &mut raised);
        let first = d.publish();
        assert_eq!(first.services["shop/api"].snapshot.events, 1);
        d.observe(&exec("shop/api", "/usr/bin/python3", 1_001), &mut raised);
        d.observe(&exec("shop/db", "/usr/bin/postgres", 1_001), &mut raised);
        let second = d.publish();
        assert_eq!(first.services["shop/api"].snapshot.events, 1);
        assert_eq!(first.services.len(), 1);
        assert_eq!(second.services["shop/api"].snapshot.events, 2);
        assert_eq!(second.services.len(), 2);
        assert!(second.version > first.version);
    }

    #[test]
    fn an_unchanged_service_is_shared_between_views_not_rebuilt() {
        let mut d = Detector::new(DetectConfig::default());
        let mut raised = Vec::new();
        d.observe(&exec("shop/api", "/usr/bin/python3", 1_000), &mut raised);
        d.observe(&exec("shop/db", "/usr/bin/postgres", 1_000), &mut raised);
        let first = d.publish();
        d.observe(&exec("shop/db", "/usr/bin/postgres", 1_001), &mut raised);
        let second = d.publish();
        assert!(Arc::ptr_eq(
            &first.services["shop/api"],
            &second.services["shop/api"]
        ));
        assert!(!Arc::ptr_eq(
            &first.services["shop/db"],
            &second.services["shop/db"]
        ));
    }

    #[test]
    fn the_view_follows_removals_and_matches_the_detectors_snapshot() {
        let mut d = Detector::new(DetectConfig::default());
        let mut raised = Vec::new();
        for (i, s) in ["a", "b", "c"].iter().enumerate() {
            d.observe(&exec(s, "/bin/x", 1_000 + i as i64), &mut raised);
        }
        d.publish();
        assert!(d.relearn("b"));
        let view = d.publish();
        assert_eq!(view.services.keys().collect::<Vec<_>>(), vec!["a", "c"]);
        assert_eq!(view.snapshot(), d.snapshot());
    }

    #[test]
    fn alert_changes_reach_the_next_view_only() {
        let mut d = Detector::new(DetectConfig::default());
        let (alert, _) = d.raise_health(
            Nanos(5),
            crate::AlertKind::Delivery,
            crate::Severity::Critical,
            "outbox full",
            "full".into(),
        );
        let first = d.publish();
        assert_eq!(
            first.alert(&alert.id).map(|a| a.status),
            Some(AlertStatus::Open)
        );
        d.set_status(&alert.id, AlertStatus::Acknowledged);
        assert_eq!(
            first.alert(&alert.id).map(|a| a.status),
            Some(AlertStatus::Open)
        );
        let second = d.publish();
        assert_eq!(
            second.alert(&alert.id).map(|a| a.status),
            Some(AlertStatus::Acknowledged)
        );
        assert_eq!(second.alerts().count(), 1);
    }
}
