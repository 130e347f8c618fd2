//! The pipeline stage: applies decoded batches to the store and to detection, publishes
//! their counts, and only then lets the source commit their offsets: at once, or, with a
//! data directory, when a state file holding them has been written.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use detect::{Alert, AlertKind, Detector, Severity};
use ingest::{Batch, IngestMetrics, IngestStats, KafkaSource, Nanos};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use store::{EventTable, StoreMetrics};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::compliance::Item;
use crate::state::{self, Offsets, StateFile};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    kind: &'static str,
    severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// Metrics of the pipeline: time per stage and batch, alerts raised, services by phase.
#[derive(Clone, Debug)]
pub struct PipelineMetrics {
    stage_seconds: Family<StageLabels, Histogram>,
    alerts_raised: Family<AlertLabels, Counter>,
    services: Family<PhaseLabels, Gauge>,
    services_updated: Arc<Mutex<Option<std::time::Instant>>>,
    capped: Family<CapLabels, Counter>,
    /// The detector's capacity counts last published.
    capped_seen: Arc<Mutex<detect::Capacity>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapLabels {
    what: &'static str,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        PipelineMetrics {
            // 10 µs to about 5 s per batch.
            stage_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_01, 4.0, 10))
            }),
            alerts_raised: Family::default(),
            services: Family::default(),
            services_updated: Arc::new(Mutex::new(None)),
            capped: Family::default(),
            capped_seen: Arc::default(),
        }
    }
}

impl PipelineMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = PipelineMetrics::default();
        registry.register(
            "pipeline_stage_duration_seconds",
            "Time a batch spends in each pipeline stage (detect, store, index)",
            m.stage_seconds.clone(),
        );
        registry.register(
            "alerts_raised",
            "Drift alerts raised, by kind and severity",
            m.alerts_raised.clone(),
        );
        registry.register(
            "services",
            "Services by lifecycle phase (learning, monitoring, locked)",
            m.services.clone(),
        );
        registry.register(
            "state_capped",
            "What the state caps did: events of services beyond max-services not judged \
             (events_refused), idle services forgotten (services_evicted), alerts dropped past max-alerts \
             (alerts_evicted)",
            m.capped.clone(),
        );
        m
    }

    fn stage(&self, stage: &'static str, started: std::time::Instant) {
        self.stage_seconds
            .get_or_create(&StageLabels { stage })
            .observe(started.elapsed().as_secs_f64());
    }

    fn raised(&self, alert: &Alert) {
        self.alerts_raised
            .get_or_create(&AlertLabels {
                kind: alert.kind.as_str(),
                severity: alert.severity.as_str(),
            })
            .inc();
    }

    /// Counts services by phase, at most once a second.
    fn phases(&self, detector: &Detector) {
        let mut updated = self.services_updated.lock().expect("metrics lock poisoned");
        if updated.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
            return;
        }
        *updated = Some(std::time::Instant::now());
        let (mut learning, mut monitoring, mut locked) = (0, 0, 0);
        for (_, s) in detector.services() {
            match s.phase {
                detect::Phase::Learning => learning += 1,
                detect::Phase::Monitoring => monitoring += 1,
                detect::Phase::Locked => locked += 1,
            }
        }
        for (phase, n) in [
            ("learning", learning),
            ("monitoring", monitoring),
            ("locked", locked),
        ] {
            self.services.get_or_create(&PhaseLabels { phase }).set(n);
        }
        let now = detector.capacity();
        let mut seen = self.capped_seen.lock().expect("metrics lock poisoned");
        for (what, total, before) in [
            ("events_refused", now.events_refused, seen.events_refused),
            (
                "services_evicted",
                now.services_evicted,
                seen.services_evicted,
            ),
            ("alerts_evicted", now.alerts_evicted, seen.alerts_evicted),
        ] {
            self.capped
                .get_or_create(&CapLabels { what })
                .inc_by(total.saturating_sub(before));
        }
        *seen = now;
    }
}

/// Shared state every stage of one daemon uses.
#[derive(Clone)]
pub struct Stages {
    pub events: Arc<EventTable>,
    pub detector: Arc<Mutex<Detector>>,
    pub ingest_metrics: IngestMetrics,
    pub store_metrics: StoreMetrics,
    pub pipeline_metrics: PipelineMetrics,
    /// Print each raised alert on stdout as a readable line (the demo does).
    pub print_alerts: bool,
    /// Log lines go to full-text search through it.
    pub log_index: Option<crate::logindex::LogIndexer>,
    /// Events and alerts that fire controls go to the compliance worker through it.
    pub compliance: Option<crate::compliance::Compliance>,
    /// Scheduled compliance reports, moved by the event time of each batch.
    pub reports: Option<crate::reports::Reports>,
    /// Alert delivery (`[notify]`), when sinks are configured.
    pub notifier: Option<notify::Notifier>,
}

/// Periodic state files, and offsets committed only with them.
pub struct Persistence {
    pub dir: PathBuf,
    pub interval: Duration,
    pub source: Arc<KafkaSource>,
    /// Offsets the restored state file reflects.
    pub restored: Offsets,
}

/// What goes to the compliance worker: an event of the batch (by index), or an item.
enum Check {
    Event(usize),
    Item(Item),
}

impl Stages {
    /// Applies batches until the source hangs up, adding their counts to `totals`.
    /// Without `persistence`, each batch's offsets are stored once it is applied.
    pub async fn apply_all(
        &self,
        mut rx: mpsc::Receiver<Batch>,
        totals: &Mutex<IngestStats>,
        persistence: Option<Persistence>,
    ) -> anyhow::Result<()> {
        let mut raised = Vec::new();
        let mut applied = persistence
            .as_ref()
            .map(|p| p.restored.clone())
            .unwrap_or_default();
        // What the last state file holds: nothing to write (or commit) until it changes.
        let mut persisted = applied.clone();
        let period = persistence
            .as_ref()
            .map_or(Duration::from_secs(3600), |p| p.interval);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let batch = tokio::select! {
                batch = rx.recv() => match batch {
                    Some(b) => b,
                    None => break,
                },
                _ = tick.tick(), if persistence.is_some() => {
                    if applied != persisted && self.persist(persistence.as_ref().expect("checked"), &applied).await {
                        persisted.clone_from(&applied);
                    }
                    continue;
                }
            };
            let mut batch = batch;
            let started = std::time::Instant::now();
            let mut checks = Vec::new();
            let mut newest = Nanos(i64::MIN);
            let mut oldest = Nanos(i64::MAX);
            {
                // Detection first: it names each log line's template, which the store keeps.
                let mut detector = self.detector.lock().expect("detector lock poisoned");
                for (i, event) in batch.events.iter_mut().enumerate() {
                    let before = raised.len();
                    let template = detector.observe(event, &mut raised);
                    if let (Some(id), ingest::EventKind::Log { template_id, .. }) =
                        (template, &mut event.kind)
                    {
                        *template_id = Some(id);
                    }
                    newest = newest.max(event.time);
                    oldest = oldest.min(event.time);
                    if let Some(c) = &self.compliance {
                        // The alerts an event raised go first: a control that both fire
                        // makes one finding, and the alert's is the one that names it.
                        for a in &raised[before..] {
                            if c.wants_alert(a.kind) {
                                checks.push(Check::Item(Item::Alert(Box::new((
                                    a.clone(),
                                    Some(event.clone()),
                                )))));
                            }
                        }
                        if c.wants(event) {
                            // Moved to the worker once stored, rather than copied.
                            checks.push(Check::Event(i));
                        }
                    }
                }
                if newest.0 != i64::MIN {
                    let before = raised.len();
                    detector.advance(newest, &mut raised);
                    // Scheduled reports follow the robust clock too: one record dated
                    // days ahead fires no report.
                    if let Some(clock) = detector.clock() {
                        newest = newest.min(clock);
                    }
                    if let Some(c) = &self.compliance {
                        for a in &raised[before..] {
                            if c.wants_alert(a.kind) {
                                checks.push(Check::Item(Item::Alert(Box::new((a.clone(), None)))));
                            }
                        }
                    }
                }
                self.pipeline_metrics.phases(&detector);
            }
            self.pipeline_metrics.stage("detect", started);
            let started = std::time::Instant::now();
            let outcome = self.events.append(&batch.events);
            self.store_metrics.record(&self.events, &outcome);
            self.pipeline_metrics.stage("store", started);
            let started = std::time::Instant::now();
            if let Some(indexer) = &self.log_index {
                let lines = batch
                    .events
                    .iter()
                    .filter_map(crate::logindex::log_line)
                    .collect();
                indexer.send(lines).await;
                self.pipeline_metrics.stage("index", started);
            }
            if let Some(c) = &self.compliance {
                // Indexes of events come in increasing order, each once.
                let mut events = std::mem::take(&mut batch.events).into_iter().enumerate();
                let items = checks
                    .drain(..)
                    .filter_map(|check| match check {
                        Check::Event(i) => events
                            .by_ref()
                            .find(|(j, _)| *j == i)
                            .map(|(_, e)| Item::Event(e)),
                        Check::Item(item) => Some(item),
                    })
                    .collect();
                c.send(items).await;
                if let Some(r) = &self.reports {
                    r.saw(oldest, newest);
                    r.tick(c).await;
                }
            }
            if !batch.stats.unreadable.is_empty() {
                let kinds: Vec<String> = batch
                    .stats
                    .unreadable
                    .iter()
                    .map(|(error, n)| format!("{n} {error}"))
                    .collect();
                let explanation = format!(
                    "The Kafka consumer received batches it cannot read ({}): their records are neither events nor \
                     dead letters, so the services behind them are not judged. A producer compressing with a codec \
                     driftwatch lacks, or a corrupt batch, does this; see driftwatch_batches_unreadable_total and \
                     the daemon's log.",
                    kinds.join(", ")
                );
                let (alert, new) = self
                    .detector
                    .lock()
                    .expect("detector lock poisoned")
                    .raise_health(
                        Nanos::now(),
                        AlertKind::Ingestion,
                        Severity::High,
                        "unreadable batches",
                        explanation,
                    );
                if new {
                    raised.push(alert);
                }
            }
            let mut deliver = Vec::new();
            for alert in raised.drain(..) {
                self.pipeline_metrics.raised(&alert);
                self.announce(&alert);
                if self.notifier.is_some() {
                    deliver.push(notify::Item::from_alert(&alert));
                }
            }
            if let Some(n) = &self.notifier {
                n.submit_all(deliver);
            }
            self.ingest_metrics.record(&batch.stats);
            totals
                .lock()
                .expect("totals lock poisoned")
                .add(&batch.stats);
            if persistence.is_some() {
                for (topic, partition, offset) in batch.offsets() {
                    applied
                        .entry(topic.to_owned())
                        .or_default()
                        .insert(partition, offset + 1);
                }
            } else {
                batch.ack()?;
            }
        }
        if let Some(p) = &persistence
            && applied != persisted
        {
            self.persist(p, &applied).await;
        }
        Ok(())
    }

    /// Writes the state file, then commits the offsets it holds; false if either failed.
    /// A failure is logged and retried at the next tick: until then the previous file and
    /// the committed offsets still agree, or the commit lags the file (which only makes a
    /// restart re-read a little).
    async fn persist(&self, p: &Persistence, applied: &Offsets) -> bool {
        let started = std::time::Instant::now();
        let snapshot = self
            .detector
            .lock()
            .expect("detector lock poisoned")
            .snapshot();
        let state = StateFile {
            written_at: Nanos::now(),
            offsets: applied.clone(),
            detector: snapshot,
        };
        let dir = p.dir.clone();
        let saved = tokio::task::spawn_blocking(move || state::save(&dir, &state))
            .await
            .context("state writer panicked");
        if let Err(e) = saved.and_then(|r| r) {
            warn!(
                error = format!("{e:#}"),
                "Writing the state file failed; offsets stay uncommitted until it succeeds."
            );
            return false;
        }
        let source = p.source.clone();
        let next: Vec<(String, i32, i64)> = applied
            .iter()
            .flat_map(|(t, parts)| parts.iter().map(move |(p, o)| (t.clone(), *p, *o)))
            .collect();
        let committed = tokio::task::spawn_blocking(move || {
            source.commit_offsets(next.iter().map(|(t, p, o)| (t.as_str(), *p, *o)))
        })
        .await;
        match committed {
            Ok(Ok(())) => {
                debug!(elapsed = ?started.elapsed(), "State written; offsets committed.");
                true
            }
            Ok(Err(e)) => {
                warn!(error = %e, "Committing the state file's offsets failed; the next state file retries.");
                false
            }
            Err(e) => {
                warn!(error = %e, "The commit task panicked.");
                false
            }
        }
    }

    /// Raises an alert about driftwatch itself while the notification outbox is full
    /// (notifications are being lost) and resolves it once the outbox has drained;
    /// both go through the routes like any alert (the outbox keeps room for them).
    /// Runs until the notifier stops or `cancel` fires; without delivery, returns.
    pub async fn watch_outbox(&self, cancel: tokio_util::sync::CancellationToken) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        let mut health = notifier.outbox_health();
        let subject = "notification outbox full";
        let mut open = false;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = health.changed() => if changed.is_err() { return },
            }
            let h = *health.borrow_and_update();
            if h.full {
                let explanation = format!(
                    "The notification outbox holds {} notifications, its limit ([notify] max-pending = {}); \
                     {} were refused and are lost. A sink is down or slower than alerts arrive: \
                     see GET /api/v1/notifications?state=pending and driftwatch_notifications_pending.",
                    h.pending, h.limit, h.refused
                );
                let (alert, new) = self
                    .detector
                    .lock()
                    .expect("detector lock poisoned")
                    .raise_health(
                        Nanos::now(),
                        AlertKind::Delivery,
                        Severity::Critical,
                        subject,
                        explanation,
                    );
                if new {
                    self.pipeline_metrics.raised(&alert);
                    self.announce(&alert);
                    notifier.submit(notify::Item::from_alert(&alert));
                }
                open = true;
            } else if open {
                open = false;
                let resolved = self
                    .detector
                    .lock()
                    .expect("detector lock poisoned")
                    .resolve_health(AlertKind::Delivery, subject);
                if let Some(alert) = resolved {
                    info!(id = %alert.id, pending = h.pending, "The notification outbox has drained; its alert is resolved.");
                    notifier.submit(notify::Item::from_alert(&alert));
                    if self.print_alerts {
                        println!(
                            "RESOLVED {} {}: {}",
                            alert.kind.as_str(),
                            alert.service,
                            alert.subject
                        );
                    }
                }
            }
        }
    }

    fn announce(&self, alert: &Alert) {
        if alert.service == detect::HEALTH_SERVICE {
            tracing::error!(
                id = %alert.id, kind = alert.kind.as_str(), severity = ?alert.severity,
                subject = %alert.subject, explanation = %alert.explanation, "driftwatch alert about itself."
            );
        } else {
            warn!(
                id = %alert.id, service = %alert.service, kind = alert.kind.as_str(), severity = ?alert.severity,
                subject = %alert.subject, "Drift alert."
            );
        }
        // The demo's view pages like an analyst's would: info and low alerts (grace
        // periods, baselines still growing) stay in the tables and the API.
        if self.print_alerts && alert.severity > detect::Severity::Low {
            println!(
                "ALERT {:?} {} {}: {}\n      {}{}",
                alert.severity,
                alert.kind.as_str(),
                alert.service,
                alert.subject,
                alert.explanation,
                alert
                    .mitre
                    .as_ref()
                    .map(|t| format!(" [{} {}]", t.id, t.name))
                    .unwrap_or_default()
            );
        }
    }
}

/// Restores the detector from the data directory's state file, if there is one.
pub fn restore(config: &crate::config::Config) -> anyhow::Result<(Detector, Offsets)> {
    let fresh = || (Detector::new(config.detect.clone()), Offsets::new());
    let Some(dir) = &config.state.data_dir else {
        return Ok(fresh());
    };
    let Some(file) = state::load(dir)? else {
        return Ok(fresh());
    };
    let services = file.detector.services.len();
    let alerts = file.detector.alerts.len();
    let detector =
        Detector::restore(config.detect.clone(), file.detector).map_err(anyhow::Error::msg)?;
    info!(services, alerts, written_at = %file.written_at, "State restored.");
    Ok((detector, file.offsets))
}
