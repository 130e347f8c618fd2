//! The pipeline stage: applies decoded batches to the store and to detection, hands
//! what follows to the log indexer, the compliance worker, report schedules and
//! delivery, publishes what readers see, and only then lets the source commit the
//! batches' offsets: at once, or, with a data directory, once a state file holding them
//! has been written ([`crate::state`]).
//!
//! The stage owns the detector ([`Owner`]): nothing else reads or changes it. Readers
//! load the views it publishes; changes arrive as commands between batches.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use compliance::worker::{Compliance, Trigger, Triggers};
use detect::{Alert, AlertKind, Command, Detector, DetectorView, Outcome, Severity, Views};
use ingest::{Batch, IngestMetrics, IngestStats, KafkaSource, Nanos};
use store::{EventTable, StoreMetrics};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::command::{Commands, Owner};
use crate::error::PipelineError;
use crate::metrics::PipelineMetrics;
use crate::state::{self, Offsets, StateFile};
use crate::watermark::Watermarks;

/// Shared handles every stage of one daemon uses. The detector is not among them: the
/// pipeline owns it ([`Owner`]); readers load its published [`Views`] and changes reach
/// it as [`Commands`].
#[derive(Clone)]
pub struct Stages {
    pub events: Arc<EventTable>,
    /// What readers see of the detector, published by the pipeline.
    pub views: Views,
    /// Changes for the detector, applied by the pipeline between batches.
    pub commands: Commands,
    pub ingest_metrics: IngestMetrics,
    pub store_metrics: StoreMetrics,
    pub pipeline_metrics: PipelineMetrics,
    /// Print each raised alert on stdout as a readable line (the demo does).
    pub print_alerts: bool,
    /// Log lines go to full-text search through it.
    pub log_index: Option<queries::indexer::LogIndexer>,
    /// Events and alerts that fire controls go to the compliance worker through it.
    pub compliance: Option<Compliance>,
    /// Scheduled compliance reports, moved by the event time of each batch.
    pub reports: Option<compliance::Reports>,
    /// Alert delivery (`[notify]`), when sinks are configured.
    pub notifier: Option<notify::Notifier>,
    /// The cluster topic (`[kafka] cluster-topic`): every published change of an alert
    /// goes there, for the other daemons' tables.
    pub cluster: Option<crate::cluster::Cluster>,
}

/// Readers see the detector's state at most this late while batches flow. A publish
/// costs a copy of every service that changed since the last, so publishing after
/// every batch of a busy topic would copy the busiest services' baselines thousands of
/// times a second; four times a second is fresher than any dashboard refreshes.
/// Commands publish at once, so their answer and the next read agree.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// Periodic state files, and offsets committed only with them.
pub struct Persistence {
    pub dir: PathBuf,
    pub interval: Duration,
    pub source: Arc<KafkaSource>,
    /// Offsets the restored state file reflects.
    pub restored: Offsets,
    /// Alerts raised or changed since the last state file, synced before delivery.
    pub journal: crate::journal::Journal,
    /// Per-service state in Kafka, so that partitions move between daemons.
    pub changelog: Option<crate::changelog::Changelog>,
    /// Requests to write state now (partitions are about to be revoked), each answered
    /// once the batches already handed over are applied and the state, the changelog
    /// and the offsets are written.
    pub flushes: Option<mpsc::Receiver<std::sync::mpsc::SyncSender<()>>>,
}

/// What the pipeline has counted (records, events, ignored, dead letters), as last
/// published: readers load it, and only the pipeline stores it, with each view.
/// Cloning shares it.
#[derive(Clone, Default)]
pub struct Totals(Arc<arc_swap::ArcSwap<IngestStats>>);

impl Totals {
    /// The counts as last published.
    pub fn load(&self) -> Arc<IngestStats> {
        self.0.load_full()
    }
}

impl Stages {
    /// Applies batches until the source hangs up, and the commands that arrive between
    /// them; the batches' counts are added to `totals`, published with each view. Publishes what readers see after batches
    /// (at most every [`PUBLISH_INTERVAL`]), after every command, before each state
    /// file and at the end. Without `persistence`, each batch's offsets are stored once
    /// it is applied.
    pub async fn apply_all(
        &self,
        owner: Owner,
        mut rx: mpsc::Receiver<Batch>,
        totals: &Totals,
        mut persistence: Option<Persistence>,
    ) -> Result<(), PipelineError> {
        let Owner {
            mut detector,
            mut inbox,
        } = owner;
        // The counts so far, published with every view.
        let mut counted = IngestStats::clone(&totals.load());
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
        let mut last_publish = tokio::time::Instant::now();
        // Whether batches were applied since the last publish.
        let mut unpublished = false;
        let mut watermarks = Watermarks::default();
        let mut flushes = persistence.as_mut().and_then(|p| p.flushes.take());
        // Journaled alerts are checked for delivery this often while some wait for it.
        let mut marks = tokio::time::interval(crate::changelog::Changelog::MARK_EVERY);
        marks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let batch = tokio::select! {
                // Commands first: an analyst waits on each, and each is cheap.
                biased;
                Some(request) = inbox.recv() => {
                    let outcome = detector.apply(request.command);
                    // An analyst's change survives a crash before it is seen.
                    let changed = match &outcome {
                        Outcome::Alert(Some(alert)) | Outcome::Raised { alert, .. } => Some(alert),
                        _ => None,
                    };
                    if let (Some(alert), Some(p)) = (changed, persistence.as_mut()) {
                        journal(&mut p.journal, std::slice::from_ref(alert));
                        if let Some(c) = p.changelog.as_mut() {
                            journal_to_changelog(c, std::slice::from_ref(alert)).await;
                        }
                    }
                    self.publish(&mut detector, totals, &counted);
                    (last_publish, unpublished) = (tokio::time::Instant::now(), false);
                    // The asker may have given up (its request timed out): the command
                    // is applied all the same.
                    let _ = request.reply.send(outcome);
                    continue;
                }
                batch = rx.recv() => match batch {
                    Some(b) => b,
                    None => break,
                },
                () = tokio::time::sleep_until(last_publish + PUBLISH_INTERVAL), if unpublished => {
                    self.publish(&mut detector, totals, &counted);
                    (last_publish, unpublished) = (tokio::time::Instant::now(), false);
                    self.mark_delivered(persistence.as_mut());
                    continue;
                }
                _ = marks.tick(), if awaiting_delivery(persistence.as_ref()) => {
                    self.mark_delivered(persistence.as_mut());
                    continue;
                }
                Some(done) = async {
                    match flushes.as_mut() {
                        Some(f) => f.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    // Partitions are being revoked: what the source handed over is
                    // applied, and the state written, before another member reads it.
                    while let Ok(batch) = rx.try_recv() {
                        self.apply_batch(
                            &mut detector,
                            batch,
                            &mut raised,
                            &mut counted,
                            &mut applied,
                            &mut watermarks,
                            persistence.as_mut().map(|p| (&mut p.journal, p.changelog.as_mut())),
                        )
                        .await?;
                    }
                    let view = self.publish(&mut detector, totals, &counted);
                    (last_publish, unpublished) = (tokio::time::Instant::now(), false);
                    if let Some(p) = persistence.as_mut()
                        && self.persist(p, view, &applied).await
                    {
                        persisted.clone_from(&applied);
                    }
                    let _ = done.send(());
                    continue;
                }
                _ = tick.tick(), if persistence.is_some() => {
                    if applied != persisted {
                        let view = self.publish(&mut detector, totals, &counted);
                        (last_publish, unpublished) = (tokio::time::Instant::now(), false);
                        if self.persist(persistence.as_mut().expect("checked"), view, &applied).await {
                            persisted.clone_from(&applied);
                        }
                    }
                    continue;
                }
            };
            self.apply_batch(
                &mut detector,
                batch,
                &mut raised,
                &mut counted,
                &mut applied,
                &mut watermarks,
                persistence
                    .as_mut()
                    .map(|p| (&mut p.journal, p.changelog.as_mut())),
            )
            .await?;
            unpublished = true;
            self.pipeline_metrics
                .batches_queued
                .set(i64::try_from(rx.len()).unwrap_or(i64::MAX));
            if last_publish.elapsed() >= PUBLISH_INTERVAL {
                self.publish(&mut detector, totals, &counted);
                (last_publish, unpublished) = (tokio::time::Instant::now(), false);
                self.mark_delivered(persistence.as_mut());
            }
        }
        let view = self.publish(&mut detector, totals, &counted);
        if let Some(p) = &mut persistence
            && applied != persisted
        {
            self.persist(p, view, &applied).await;
        }
        Ok(())
    }

    /// Marks delivered, in the state changelog, the journaled alerts every sink took.
    /// Without delivery there is nothing to wait for.
    fn mark_delivered(&self, persistence: Option<&mut Persistence>) {
        let Some(c) = persistence.and_then(|p| p.changelog.as_mut()) else {
            return;
        };
        if c.awaiting_delivery() {
            let undelivered = self
                .notifier
                .as_ref()
                .map(notify::Notifier::undelivered)
                .unwrap_or_default();
            c.mark_delivered(&undelivered);
        }
    }

    /// Publishes the detector's state for readers, and the metrics that follow it.
    fn publish(
        &self,
        detector: &mut Detector,
        totals: &Totals,
        counted: &IngestStats,
    ) -> Arc<DetectorView> {
        let view = detector.publish();
        self.views.store(view.clone());
        if let Some(c) = &self.cluster {
            c.publish_alerts(view.changed_alerts.iter().map(AsRef::as_ref));
        }
        totals.0.store(Arc::new(counted.clone()));
        self.pipeline_metrics
            .published(&view, self.commands.depth());
        if let Some(indexer) = &self.log_index {
            self.pipeline_metrics
                .index_queued
                .set(i64::try_from(indexer.depth()).unwrap_or(i64::MAX));
            self.pipeline_metrics
                .index_kept
                .set(i64::try_from(indexer.kept().as_secs()).unwrap_or(i64::MAX));
        }
        view
    }

    /// Applies one batch: detection, the store, the log index, compliance, delivery.
    async fn apply_batch(
        &self,
        detector: &mut Detector,
        mut batch: Batch,
        raised: &mut Vec<Alert>,
        counted: &mut IngestStats,
        applied: &mut Offsets,
        watermarks: &mut Watermarks,
        persisting: Option<(
            &mut crate::journal::Journal,
            Option<&mut crate::changelog::Changelog>,
        )>,
    ) -> Result<(), PipelineError> {
        let (journal, mut changelog) = match persisting {
            Some((j, c)) => (Some(j), c),
            None => (None, None),
        };
        if let Some(c) = changelog.as_deref_mut() {
            // Services of a partition this daemon did not hold come back first, with
            // what their previous owner had not delivered.
            let handed = c.restore(detector, &batch.partitions).await;
            if let Some(n) = &self.notifier
                && !handed.is_empty()
            {
                info!(
                    alerts = handed.len(),
                    "Alerts the previous owner had not delivered are sent from here."
                );
                n.submit_all(handed.iter().map(notify::Item::from_alert).collect())
                    .await;
            }
        }
        let started = std::time::Instant::now();
        let mut checks = Vec::with_capacity(if self.compliance.is_some() {
            batch.events.len()
        } else {
            0
        });
        let mut newest = Nanos(i64::MIN);
        let mut oldest = Nanos(i64::MAX);
        // Detection first: it names each log line's template, which the store keeps.
        for (i, event) in batch.events.iter_mut().enumerate() {
            if let (Some(c), Some(p)) = (changelog.as_deref_mut(), batch.partitions.get(i)) {
                c.saw(&event.service, *p);
            }
            let before = raised.len();
            let template = detector.observe(event, raised);
            if let (Some(id), ingest::EventKind::Log { template_id, .. }) =
                (template, &mut event.kind)
            {
                *template_id = Some(id);
            }
            newest = newest.max(event.time);
            oldest = oldest.min(event.time);
            if let ingest::EventKind::SensorHealth {
                sensor,
                lost: lost @ 1..,
                ..
            } = &event.kind
            {
                self.pipeline_metrics
                    .sensor_lost(sensor, event.workload.node.as_deref(), *lost);
            }
            if let Some(c) = &self.compliance {
                // The alerts an event raised go first: a control that both fire
                // makes one finding, and the alert's is the one that names it.
                for a in &raised[before..] {
                    if c.wants_alert(a.kind) {
                        checks.push(Trigger::Alert(Box::new((a.clone(), Some(i as u32)))));
                    }
                }
                if c.wants(event) {
                    // The batch moves to the worker once stored; no event is copied.
                    checks.push(Trigger::Event(i as u32));
                }
            }
        }
        watermarks.saw(&batch.events, std::time::Instant::now());
        if newest.0 != i64::MIN
            && let Some(low) = watermarks.low(std::time::Instant::now())
        {
            let before = raised.len();
            // Rates close on the low watermark: a lagging partition's events still
            // find their buckets open.
            detector.advance(low, raised);
            // Scheduled reports follow the robust clock too: one record dated
            // days ahead fires no report.
            if let Some(clock) = detector.clock() {
                newest = newest.min(clock);
            }
            if let Some(c) = &self.compliance {
                for a in &raised[before..] {
                    if c.wants_alert(a.kind) {
                        checks.push(Trigger::Alert(Box::new((a.clone(), None))));
                    }
                }
            }
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
                .filter_map(queries::indexer::log_line)
                .collect();
            indexer.send(lines).await;
            self.pipeline_metrics.stage("index", started);
        }
        if let Some(c) = &self.compliance {
            c.send(Triggers {
                events: std::mem::take(&mut batch.events),
                order: checks,
            })
            .await;
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
            let (alert, new) = detector.raise_health(
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
        let persisting = journal.is_some();
        if let Some(j) = journal {
            self::journal(j, raised);
        }
        if let Some(c) = changelog
            && !raised.is_empty()
        {
            journal_to_changelog(c, raised).await;
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
            n.submit_all(deliver).await;
        }
        self.ingest_metrics.record(&batch.stats);
        counted.add(&batch.stats);
        if persisting {
            for (topic, partition, offset) in batch.offsets() {
                applied
                    .entry(topic.to_owned())
                    .or_default()
                    .insert(partition, offset + 1);
            }
        } else {
            batch.ack().map_err(PipelineError::Commit)?;
        }
        Ok(())
    }

    /// Writes the state file, then commits the offsets it holds; false if either failed.
    /// A failure is logged and retried at the next tick: until then the previous file and
    /// the committed offsets still agree, or the commit lags the file (a restart then
    /// fetches a little more, and skips what the file holds).
    async fn persist(
        &self,
        p: &mut Persistence,
        view: Arc<DetectorView>,
        applied: &Offsets,
    ) -> bool {
        let started = std::time::Instant::now();
        let (dir, offsets) = (p.dir.clone(), applied.clone());
        let journal_seq = p.journal.seq();
        // Built from the published view, off the runtime's threads.
        let saved = tokio::task::spawn_blocking(move || {
            let state = StateFile {
                written_at: Nanos::now(),
                offsets,
                detector: view.snapshot(),
                journal_seq,
            };
            state::save(&dir, &state).map(|()| state)
        })
        .await
        .map_err(|e| PipelineError::Panicked("state writer", e))
        .and_then(|r| r.map_err(PipelineError::State));
        let state = match saved {
            Ok(state) => state,
            Err(e) => {
                warn!(
                    error = %ingest::chain(&e),
                    "Writing the state file failed; offsets stay uncommitted until it succeeds."
                );
                return false;
            }
        };
        if let Err(e) = p.journal.clear() {
            // Harmless: the next start skips the lines this file reflects.
            warn!(error = %ingest::chain(&e), "Emptying the alert journal failed.");
        }
        let undelivered = self
            .notifier
            .as_ref()
            .map(notify::Notifier::undelivered)
            .unwrap_or_default();
        if let Some(c) = &mut p.changelog
            && let Err(e) = c.write(&state.detector, &undelivered).await
        {
            warn!(error = %ingest::chain(&e), "Writing the state changelog failed; offsets stay uncommitted until it succeeds.");
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
                let raised = self
                    .commands
                    .apply(Command::RaiseHealth {
                        time: Nanos::now(),
                        kind: AlertKind::Delivery,
                        severity: Severity::Critical,
                        subject: subject.to_owned(),
                        explanation,
                    })
                    .await;
                let Ok(Outcome::Raised { alert, new }) = raised else {
                    return;
                };
                if new {
                    self.pipeline_metrics.raised(&alert);
                    self.announce(&alert);
                    notifier.submit(notify::Item::from_alert(&alert)).await;
                }
                open = true;
            } else if open {
                open = false;
                let resolved = self
                    .commands
                    .apply(Command::ResolveHealth {
                        kind: AlertKind::Delivery,
                        subject: subject.to_owned(),
                    })
                    .await;
                if let Ok(Outcome::Alert(Some(alert))) = resolved {
                    info!(id = %alert.id, pending = h.pending, "The notification outbox has drained; its alert is resolved.");
                    notifier.submit(notify::Item::from_alert(&alert)).await;
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

/// Journals alerts to the state changelog before they are delivered. A failure is
/// logged, not fatal, as for the local journal: should this member die before its next
/// state file, the next owner raises those alerts again and sends them once more.
async fn journal_to_changelog(changelog: &mut crate::changelog::Changelog, alerts: &[Alert]) {
    if let Err(e) = changelog.journal(alerts).await {
        warn!(error = %ingest::chain(&e), alerts = alerts.len(), "Journaling alerts to the state changelog failed; should this member die before its next state file, the next owner sends them again.");
    }
}

fn awaiting_delivery(persistence: Option<&Persistence>) -> bool {
    persistence
        .and_then(|p| p.changelog.as_ref())
        .is_some_and(crate::changelog::Changelog::awaiting_delivery)
}

/// Appends alerts to the journal. A failure is logged, not fatal: the alerts are still
/// delivered, and only a crash before the next state file would lose them.
fn journal(journal: &mut crate::journal::Journal, alerts: &[Alert]) {
    if let Err(e) = journal.append(alerts) {
        warn!(error = %ingest::chain(&e), alerts = alerts.len(), "Journaling alerts failed; a crash before the next state file loses them.");
    }
}
