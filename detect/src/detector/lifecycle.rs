//! Alert bookkeeping (repeats, ids, the alert cap), the service cap and idle eviction,
//! sensor-alert correlation, and the analysts' commands (accept, relearn, lock).

use super::*;

impl Detector {
    /// Counts a repeat into the open alert with the same dedup key, if there is one
    /// within the window; false when a new alert is due.
    pub(super) fn count_repeat(
        &mut self,
        event: &Event,
        kind: AlertKind,
        obs: &Observation,
    ) -> bool {
        self.count_repeat_at(
            &event.service,
            event.time,
            Some(&event.provenance),
            kind,
            &obs.key,
        )
    }

    pub(super) fn count_repeat_at(
        &mut self,
        service: &str,
        time: Nanos,
        evidence: Option<&Provenance>,
        kind: AlertKind,
        subject_key: &str,
    ) -> bool {
        let key = dedup_key(service, kind, subject_key);
        let window = nanos(self.config.dedup_window);
        let Some(open) = self.latest.get(&key).and_then(|id| self.alerts.get_mut(id)) else {
            return false;
        };
        if open.status == AlertStatus::Resolved {
            // What it saw up to its resolve belongs to it: a record re-read after a
            // restart, or one arriving late, does not open it again.
            return time <= open.last_seen;
        }
        if time.0.saturating_sub(open.last_seen.0) > window {
            return false;
        }
        open.count += 1;
        open.last_seen = open.last_seen.max(time);
        if let Some(p) = evidence
            && open.evidence.len() < MAX_EVIDENCE
        {
            open.evidence.push(p.clone());
        }
        true
    }

    pub(super) fn new_alert(
        &self,
        service: &str,
        time: Nanos,
        evidence: Vec<Provenance>,
        kind: AlertKind,
        obs: &Observation,
        explanation: String,
    ) -> Alert {
        let key = dedup_key(service, kind, &obs.key);
        // A template's key is its id; the subject adds what it says.
        let subject = match obs.dimension {
            Dimension::LogTemplate => self
                .services
                .get(service)
                .and_then(|s| {
                    let id = obs.key.strip_prefix('#')?.parse().ok()?;
                    s.logs.miner().template(id)
                })
                .map_or_else(|| obs.key.clone(), |t| format!("{} {}", obs.key, t.text())),
            _ => obs.key.clone(),
        };
        Alert {
            id: alert_id(&key, time),
            time,
            last_seen: time,
            service: service.to_owned(),
            kind,
            severity: obs.severity,
            subject,
            dimension: obs.dimension,
            explanation,
            evidence,
            mitre: obs.mitre.clone(),
            dedup_key: key,
            count: 1,
            status: AlertStatus::Open,
            sensor_rules: Vec::new(),
        }
    }

    /// Keeps a new alert and reports it.
    pub(super) fn record(&mut self, alert: Alert, raised: &mut Vec<Alert>) {
        self.by_service
            .entry(alert.service.clone())
            .or_default()
            .push(alert.id.clone());
        self.latest
            .insert(alert.dedup_key.clone(), alert.id.clone());
        raised.push(alert.clone());
        self.alerts.insert(alert.id.clone(), alert);
        // A tenth over the cap before trimming: the trim scans every alert.
        let max = self.config.max_alerts.max(1);
        if self.alerts.len() > max + max / 10 {
            self.trim_alerts(max);
        }
    }

    /// Drops alerts down to `max`: the oldest resolved ones first, then the oldest.
    pub(super) fn trim_alerts(&mut self, max: usize) {
        let mut order: Vec<(bool, Nanos, String)> = self
            .alerts
            .values()
            .map(|a| (a.status != AlertStatus::Resolved, a.last_seen, a.id.clone()))
            .collect();
        order.sort();
        let drop: std::collections::HashSet<String> = order
            .into_iter()
            .take(self.alerts.len() - max)
            .map(|(_, _, id)| id)
            .collect();
        self.alerts.retain(|id, _| !drop.contains(id));
        self.latest.retain(|_, id| !drop.contains(id));
        for ids in self.by_service.values_mut() {
            ids.retain(|id| !drop.contains(id));
        }
        self.by_service.retain(|_, ids| !ids.is_empty());
        self.capacity.alerts_evicted += drop.len() as u64;
    }

    /// An event of a service beyond the cap: counted, and said once by an alert.
    pub(super) fn refuse(&mut self, event: &Event, raised: &mut Vec<Alert>) {
        self.capacity.events_refused += 1;
        let explanation = format!(
            "driftwatch tracks at most {} services ([detect] max-services), and events of {} other services \
             arrived ({} events so far, the latest of {}); they are not judged. Services already tracked are \
             watched as before. A service with no event for {} of event time is forgotten, which frees room; \
             a producer inventing service keys also looks like this.",
            self.config.max_services,
            if self.capacity.events_refused == 1 {
                "an"
            } else {
                "more"
            },
            self.capacity.events_refused,
            event.service,
            humantime::format_duration(self.config.service_retention),
        );
        let (alert, new) = self.raise_health(
            event.time,
            AlertKind::Capacity,
            Severity::High,
            "service cap reached",
            explanation,
        );
        if new {
            raised.push(alert);
        }
    }

    /// Forgets services with no event for `service-retention` before `now`.
    pub(super) fn evict_idle(&mut self, now: i64) {
        let horizon = now.saturating_sub(nanos(self.config.service_retention));
        let before = self.services.len();
        self.services.retain(|_, s| s.last_event.0 >= horizon);
        let evicted = before - self.services.len();
        if evicted > 0 {
            let services = &self.services;
            self.pending_sensor
                .retain(|name, _| services.contains_key(name));
            self.pending_changed = true;
            self.capacity.services_evicted += evicted as u64;
            info!(
                evicted,
                "Idle services forgotten after the service retention."
            );
        }
    }

    /// Reports at low a new file or network entry, after learning, that is kin to what
    /// the service learned (a name of the shape of names it wrote there, an address
    /// beside addresses it reached on that port), and learns the shape or network once
    /// enough share it. False when it is no kin: it is drift at its own severity.
    pub(super) fn kin(
        &mut self,
        event: &Event,
        obs: &Observation,
        raw_path: Option<&str>,
        raised: &mut Vec<Alert>,
    ) -> bool {
        let max_entries = self.config.max_baseline_entries;
        let Some(state) = self.services.get_mut(&event.service) else {
            return false;
        };
        if state.phase != Phase::Monitoring || !absorbed_by_growth(obs) {
            return false;
        }
        let kin = match (obs.dimension, raw_path) {
            (Dimension::File, Some(raw)) => state.general.kin_path(&obs.key, raw),
            (Dimension::Network, _) => state.general.kin_network(&obs.key),
            _ => None,
        };
        let Some(kin) = kin else {
            return false;
        };
        let learned = kin
            .key
            .as_ref()
            .filter(|_| state.baseline.len() < max_entries);
        if let Some(general) = learned {
            info!(service = %event.service, pattern = %general, from = kin.seen, "Learned a generalisation from kin.");
            state.learn(
                EntryKey {
                    dimension: obs.dimension,
                    key: general.clone(),
                },
                Entry {
                    first_seen: event.time,
                    count: 1,
                    origin: Origin::Learned,
                    learned_from: u32::try_from(kin.seen).unwrap_or(u32::MAX),
                },
            );
        }
        let explanation = kin_text(&event.service, state, obs, &kin, learned.is_some());
        let low = Observation {
            severity: Severity::Low,
            ..obs.clone()
        };
        self.raise(event, low.dimension.alert_kind(), &low, explanation, raised);
        true
    }

    /// Raises a new alert, or counts a repeat into the open one.
    pub(super) fn raise(
        &mut self,
        event: &Event,
        kind: AlertKind,
        obs: &Observation,
        explanation: String,
        raised: &mut Vec<Alert>,
    ) {
        if self.count_repeat(event, kind, obs) {
            return;
        }
        let mut alert = self.new_alert(
            &event.service,
            event.time,
            vec![event.provenance.clone()],
            kind,
            obs,
            explanation,
        );
        // Sensor alerts that arrived first about the same act join this alert.
        let window = nanos(self.config.correlation_window);
        if let Some(pending) = self.pending_sensor.get_mut(&event.service) {
            self.pending_changed = true;
            pending.retain(|p| {
                let close = p.time.0.abs_diff(event.time.0) <= window.unsigned_abs();
                let same_act = matches_act(p, obs, &event.kind);
                if close && same_act {
                    if !alert.sensor_rules.contains(&p.rule) {
                        alert.sensor_rules.push(p.rule.clone());
                    }
                    if alert.evidence.len() < MAX_EVIDENCE {
                        alert.evidence.push(p.provenance.clone());
                    }
                }
                !(close && same_act)
            });
        }
        self.record(alert, raised);
    }

    /// Attaches a sensor alert to the open drift alert about the same act, or keeps it
    /// until one is raised (within the correlation window).
    pub(super) fn correlate(&mut self, service: &str, sensor: PendingSensor) {
        let window = nanos(self.config.correlation_window);
        if let Some(keys) = self.by_service.get(service) {
            // Newest first; alerts are created in (roughly) event-time order, so the
            // scan stops at the first one raised well before the sensor alert.
            for id in keys.iter().rev() {
                let Some(alert) = self.alerts.get_mut(id) else {
                    continue;
                };
                if alert.time.0.saturating_add(window) < sensor.time.0
                    && alert.last_seen.0.saturating_add(window) < sensor.time.0
                {
                    break;
                }
                if alert.status == AlertStatus::Resolved
                    || alert.last_seen.0.abs_diff(sensor.time.0) > window.unsigned_abs()
                {
                    continue;
                }
                if subject_is_act(alert, &sensor) {
                    if !alert.sensor_rules.contains(&sensor.rule) {
                        alert.sensor_rules.push(sensor.rule);
                    }
                    if alert.evidence.len() < MAX_EVIDENCE {
                        alert.evidence.push(sensor.provenance);
                    }
                    return;
                }
            }
        }
        self.pending_changed = true;
        let pending = self.pending_sensor.entry(service.to_owned()).or_default();
        pending.retain(|p| sensor.time.0.saturating_sub(p.time.0) <= window);
        pending.push(sensor);
    }

    /// Sensor alerts still waiting for their drift alert, oldest first.
    pub fn pending_sensor_alerts(&self) -> Vec<PendingSensor> {
        let mut all: Vec<PendingSensor> = self.pending_sensor.values().flatten().cloned().collect();
        all.sort_by(|a, b| (a.time, &a.service).cmp(&(b.time, &b.service)));
        all
    }

    pub(crate) fn insert_pending_sensor(&mut self, pending: PendingSensor) {
        self.pending_changed = true;
        self.pending_sensor
            .entry(pending.service.clone())
            .or_default()
            .push(pending);
    }

    pub(crate) fn insert_service(&mut self, name: String, state: ServiceState) {
        self.services.insert(name, state);
    }

    /// Puts a restored alert back, as the latest of its dedup key when it is newer.
    pub(crate) fn insert_alert(&mut self, alert: Alert) {
        let newer = self
            .latest
            .get(&alert.dedup_key)
            .and_then(|id| self.alerts.get(id))
            .is_none_or(|a| a.time <= alert.time);
        if newer {
            self.latest
                .insert(alert.dedup_key.clone(), alert.id.clone());
        }
        self.by_service
            .entry(alert.service.clone())
            .or_default()
            .push(alert.id.clone());
        self.alerts.insert(alert.id.clone(), alert);
    }

    /// Starts learning a service again from scratch, at its next event.
    pub fn relearn(&mut self, service: &str) -> bool {
        self.services.remove(service).is_some()
    }

    /// Lets go of a service and its alerts: another daemon holds its partition now and
    /// carries them on (from the state changelog).
    pub fn release(&mut self, service: &str) -> bool {
        let held = self.services.remove(service).is_some();
        for id in self.by_service.remove(service).unwrap_or_default() {
            if let Some(alert) = self.alerts.remove(&id)
                && self.latest.get(&alert.dedup_key) == Some(&alert.id)
            {
                self.latest.remove(&alert.dedup_key);
            }
        }
        self.pending_sensor.remove(service);
        self.pending_changed = true;
        held
    }

    /// Stops all learning for a service; it monitors from now on.
    pub fn lock(&mut self, service: &str) -> bool {
        let Some(state) = self.services.get_mut(service) else {
            return false;
        };
        state.phase = Phase::Locked;
        state.grace_until = None;
        true
    }

    /// Accepts an alert's subject into its service's baseline and resolves the alert.
    pub fn accept(&mut self, alert_id: &str) -> Option<&Alert> {
        let alert = self.alerts.get_mut(alert_id)?;
        if matches!(
            alert.kind,
            AlertKind::BaselineCap
                | AlertKind::Rate
                | AlertKind::Delivery
                | AlertKind::Capacity
                | AlertKind::Ingestion
                | AlertKind::SensorHealth
        ) {
            return None;
        }
        let dimension = alert.dimension;
        // A template's subject is its key (`#<id>`) and what it says.
        let key = match dimension {
            Dimension::LogTemplate if alert.subject.starts_with('#') => alert
                .subject
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_owned(),
            Dimension::LogTemplate => return None,
            _ => alert.subject.clone(),
        };
        let state = self.services.get_mut(&alert.service)?;
        state.general.index(dimension, &key);
        state.baseline.insert(
            EntryKey { dimension, key },
            Entry {
                first_seen: alert.time,
                count: alert.count,
                origin: Origin::Accepted,
                learned_from: 0,
            },
        );
        alert.status = AlertStatus::Resolved;
        Some(alert)
    }
}
