//! The compliance worker: a thread of its own runs the controls that events and alerts
//! fire, so that checks never slow detection. The pipeline hands it each batch whole,
//! naming the events and alerts that can fire a control (or carry container facts),
//! through a bounded queue.
//!
//! The worker is the one owner of the engine and the findings. Once it has caught up
//! with its queue, and at least every [`PUBLISH_EVERY`] while it has not, it publishes
//! a [`ComplianceView`]; the API, the SQL tables and reports read that, and never wait
//! for a control to run. A view shares the findings and every
//! unchanged service's posture with the one before, so publishing costs what changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use detect::{Alert, AlertKind};
use ingest::Event;
use ingest::Nanos;
use ingest::event::EventKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::catalog::Catalog;
use crate::engine::{Engine, Finding, PostureEntry, Status};

/// Compliance settings (`[compliance]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ComplianceConfig {
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Control files added to the built-in catalog (same format as
    /// `compliance/controls/builtin.toml`).
    #[serde(default)]
    pub controls: Vec<std::path::PathBuf>,
    /// Control results remembered by the exact values each control reads, so that a
    /// repeated trigger is not evaluated again (0 evaluates every run).
    #[serde(default = "default_result_cache")]
    pub result_cache: usize,
}

impl Default for ComplianceConfig {
    fn default() -> Self {
        ComplianceConfig {
            enabled: default_enabled(),
            controls: Vec::new(),
            result_cache: default_result_cache(),
        }
    }
}

fn default_enabled() -> bool {
    true
}

fn default_result_cache() -> usize {
    crate::engine::RESULT_CACHE
}

/// Findings kept in memory for the `findings` table: the newest ones.
pub const FINDINGS_KEPT: usize = 200_000;

/// Batches queued for the worker before the pipeline waits: a few seconds of a busy
/// topic's triggers, so that a slow control run is absorbed rather than felt.
const QUEUED: usize = 64;

/// How late the published view may be while batches keep arriving, as for the
/// detector's: a busy worker takes each touched service's posture again once per this,
/// not after every batch (a 1,000-record batch touches hundreds of services, and copying
/// their posture was a sixth of the worker's time). An idle worker, and `flush`,
/// publish at once.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// One thing for the worker to check, in the order the pipeline saw it. Events are
/// named by their index in the batch sent with them: the batch moves to the worker
/// whole, so no event is copied or moved one by one, and a trigger is two words.
pub enum Trigger {
    Event(u32),
    /// An alert, with the index of the event that raised it when there is one (boxed:
    /// alerts are rare next to events).
    Alert(Box<(Alert, Option<u32>)>),
}

/// A batch's events and what to check of them. An index out of the batch names
/// nothing and is skipped.
pub struct Triggers {
    pub events: Vec<Event>,
    pub order: Vec<Trigger>,
}

enum Message {
    Items(Triggers),
    Flush(oneshot::Sender<()>),
}

/// What readers see of the worker's state, at one publish. It never changes.
#[derive(Clone, Default)]
pub struct ComplianceView {
    /// The newest findings, oldest first (at most [`FINDINGS_KEPT`]), each once.
    pub findings: imbl::Vector<Arc<Finding>>,
    /// The ids of `findings`.
    finding_ids: imbl::HashSet<String>,
    /// The posture of each service, by control.
    posture: imbl::OrdMap<String, Arc<Vec<PostureEntry>>>,
    /// Control runs reused from the result cache, and evaluated.
    pub control_runs: (u64, u64),
}

impl ComplianceView {
    /// Whether the finding with this id is among `findings`.
    pub fn holds(&self, id: &str) -> bool {
        self.finding_ids.contains(id)
    }

    /// The posture per service and control, by service then control.
    pub fn posture(&self) -> impl Iterator<Item = &PostureEntry> {
        self.posture.values().flat_map(|p| p.iter())
    }

    /// The time of the newest check: the newest finding, or the latest check that
    /// confirmed a posture.
    pub fn newest_check(&self) -> Option<Nanos> {
        self.posture()
            .map(|p| p.last_checked)
            .chain(self.findings.back().map(|f| f.time))
            .max()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FindingLabels {
    framework: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct ComplianceMetrics {
    findings: Family<FindingLabels, Counter>,
    waits: Counter,
    results: Family<CacheLabels, Counter>,
    queued: Gauge,
}

impl ComplianceMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ComplianceMetrics::default();
        registry.register(
            "findings",
            "Compliance findings by framework and status (fail, pass, not_applicable); a finding counts once per framework it refers to",
            m.findings.clone(),
        );
        registry.register(
            "compliance_queue_waits",
            "Times the pipeline waited because the compliance worker was behind",
            m.waits.clone(),
        );
        registry.register(
            "compliance_control_runs",
            "Control runs by outcome: evaluated, or reused (the control's inputs were seen before)",
            m.results.clone(),
        );
        registry.register(
            "compliance_queue_depth",
            "Batches of triggers waiting for the compliance worker (it holds 64; the pipeline waits when full)",
            m.queued.clone(),
        );
        m
    }
}

/// What the worker does with findings beyond keeping them: delivery, printing.
pub type OnFindings = Box<dyn FnMut(&[Finding]) + Send>;

/// A handle on the running worker.
#[derive(Clone)]
pub struct Compliance {
    tx: mpsc::Sender<Message>,
    views: Arc<ArcSwap<ComplianceView>>,
    pub catalog: Arc<Catalog>,
    events: Arc<std::collections::HashSet<&'static str>>,
    alerts: Arc<std::collections::HashSet<AlertKind>>,
    metrics: ComplianceMetrics,
}

/// The worker's body: run it on a thread of its own. It returns once every
/// [`Compliance`] handle is gone.
pub struct ComplianceWorker {
    rx: mpsc::Receiver<Message>,
    engine: Engine,
    views: Arc<ArcSwap<ComplianceView>>,
    metrics: ComplianceMetrics,
    on_findings: OnFindings,
}

impl ComplianceWorker {
    /// Runs controls until every handle is gone; blocking.
    pub fn run(self) {
        run(self);
    }
}

impl Compliance {
    /// Loads the catalog; returns the handle and the worker to run on a thread, or
    /// `None` when compliance is disabled. `on_findings` sees every batch of new
    /// findings, in order.
    pub fn new(
        config: &ComplianceConfig,
        metrics: ComplianceMetrics,
        on_findings: OnFindings,
    ) -> Result<Option<(Compliance, ComplianceWorker)>, crate::CatalogError> {
        if !config.enabled {
            return Ok(None);
        }
        let catalog = Arc::new(Catalog::load(&config.controls)?);
        let mut events = std::collections::HashSet::new();
        let mut alerts = std::collections::HashSet::new();
        for c in catalog.controls() {
            events.extend(c.triggers.events.iter().copied());
            alerts.extend(c.triggers.alerts.iter().copied());
        }
        let (tx, rx) = mpsc::channel(QUEUED);
        let views = Arc::new(ArcSwap::from_pointee(ComplianceView::default()));
        let worker = ComplianceWorker {
            rx,
            engine: Engine::with_result_cache(catalog.clone(), config.result_cache),
            views: views.clone(),
            metrics: metrics.clone(),
            on_findings,
        };
        Ok(Some((
            Compliance {
                tx,
                views,
                catalog,
                events: Arc::new(events),
                alerts: Arc::new(alerts),
                metrics,
            },
            worker,
        )))
    }

    /// Whether an event goes to the worker: it fires a control or carries facts.
    pub fn wants(&self, event: &Event) -> bool {
        matches!(event.kind, EventKind::Container { .. }) || self.events.contains(event.kind.name())
    }

    pub fn wants_alert(&self, kind: AlertKind) -> bool {
        self.alerts.contains(&kind)
    }

    /// Queues items; waits only when the worker is a whole queue behind.
    pub async fn send(&self, items: Triggers) {
        if items.order.is_empty() {
            return;
        }
        let message = match self.tx.try_send(Message::Items(items)) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(m)) => {
                self.metrics.waits.inc();
                m
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                warn!("The compliance worker has stopped; controls no longer run.");
                return;
            }
        };
        if self.tx.send(message).await.is_err() {
            warn!("The compliance worker has stopped; controls no longer run.");
        }
    }

    /// Returns once everything queued so far has been checked and published.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_err() || wait.await.is_err() {
            warn!("The compliance worker has stopped.");
        }
    }

    /// A report from what the worker knows once it has caught up with everything
    /// queued so far.
    pub async fn report(
        &self,
        request: &crate::report::Request<'_>,
        previous: Option<&crate::report::Report>,
    ) -> crate::report::Report {
        self.flush().await;
        let view = self.view();
        crate::report::build(
            request,
            &self.catalog,
            view.findings.iter().map(AsRef::as_ref),
            view.posture(),
            previous,
        )
    }

    /// The worker's last published view.
    pub fn view(&self) -> Arc<ComplianceView> {
        self.views.load_full()
    }

    /// Batches queued and not yet checked.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The `findings` table: this daemon's findings, then those of `others` (other
    /// daemons') it does not hold, from one view.
    pub fn findings_tables<'a>(
        &self,
        others: impl IntoIterator<Item = &'a crate::tables::FindingRecord>,
    ) -> Vec<arrow::record_batch::RecordBatch> {
        let view = self.view();
        vec![
            crate::tables::findings_table(view.findings.iter().map(AsRef::as_ref), &self.catalog),
            crate::tables::finding_records_table(
                others.into_iter().filter(|r| !view.holds(&r.id)),
                &self.catalog,
            ),
        ]
    }

    /// The `findings` table.
    pub fn findings_table(&self) -> arrow::record_batch::RecordBatch {
        let view = self.view();
        crate::tables::findings_table(view.findings.iter().map(AsRef::as_ref), &self.catalog)
    }

    /// The `posture` table.
    pub fn posture_table(&self) -> arrow::record_batch::RecordBatch {
        crate::tables::posture_table(self.view().posture(), &self.catalog)
    }
}

fn run(worker: ComplianceWorker) {
    let ComplianceWorker {
        mut rx,
        mut engine,
        views,
        metrics,
        mut on_findings,
    } = worker;
    let catalog = engine.catalog_arc();
    let mut out = Vec::new();
    // The counters a finding adds to, by control and status: one per framework the
    // control refers to. Findings of one control share its id, so its address keys it.
    let mut counters: HashMap<(usize, Status), Vec<Counter>> = HashMap::new();
    let mut view = ComplianceView::default();
    let mut published = Instant::now();
    // Findings or posture changed since the view was last published.
    let mut unpublished = false;
    while let Some(message) = rx.blocking_recv() {
        let items = match message {
            Message::Items(items) => items,
            Message::Flush(done) => {
                if unpublished {
                    publish(&mut engine, &mut view, &views);
                    (published, unpublished) = (Instant::now(), false);
                }
                let _ = done.send(());
                continue;
            }
        };
        let (hits, misses) = engine.result_cache_stats();
        let event = |i: u32| items.events.get(i as usize);
        for item in &items.order {
            match item {
                Trigger::Event(i) => {
                    if let Some(e) = event(*i) {
                        engine.on_event(e, &mut out);
                    }
                }
                Trigger::Alert(pair) => {
                    engine.on_alert(&pair.0, pair.1.and_then(event), &mut out);
                }
            }
        }
        // A finding's id is its control's, service's and triggering record's: records
        // read again (after a rebalance handed a partition back, or from an older
        // snapshot) make the findings already made, which are neither counted nor sent
        // again.
        out.retain(|f| view.finding_ids.insert(f.id.clone()).is_none());
        let (h, m) = engine.result_cache_stats();
        for (outcome, n) in [("reused", h - hits), ("evaluated", m - misses)] {
            metrics
                .results
                .get_or_create(&CacheLabels { outcome })
                .inc_by(n);
        }
        for f in &out {
            let counted = counters
                .entry((Arc::as_ptr(&f.control).cast::<u8>() as usize, f.status))
                .or_insert_with(|| {
                    let mut frameworks: Vec<&'static str> = catalog
                        .get(&f.control)
                        .map(|c| c.references.iter().map(|r| r.framework.as_str()).collect())
                        .unwrap_or_default();
                    frameworks.sort_unstable();
                    frameworks.dedup();
                    frameworks
                        .into_iter()
                        .map(|framework| {
                            metrics
                                .findings
                                .get_or_create(&FindingLabels {
                                    framework,
                                    status: f.status.as_str(),
                                })
                                .clone()
                        })
                        .collect()
                });
            for c in counted {
                c.inc();
            }
        }
        if !out.is_empty() {
            on_findings(&out);
        }
        for f in out.drain(..) {
            if view.findings.len() == FINDINGS_KEPT
                && let Some(old) = view.findings.pop_front()
            {
                view.finding_ids.remove(&old.id);
            }
            view.findings.push_back(Arc::new(f));
        }
        view.control_runs = (h, m);
        metrics
            .queued
            .set(i64::try_from(rx.len()).unwrap_or(i64::MAX));
        unpublished = true;
        if rx.is_empty() || published.elapsed() >= PUBLISH_EVERY {
            publish(&mut engine, &mut view, &views);
            (published, unpublished) = (Instant::now(), false);
        }
    }
}

/// Takes the posture of the services whose posture changed into `view`, and publishes it.
fn publish(engine: &mut Engine, view: &mut ComplianceView, views: &ArcSwap<ComplianceView>) {
    for service in engine.take_posture_changes() {
        let posture = engine.posture_of(&service);
        if posture.is_empty() {
            view.posture.remove(&service);
        } else {
            view.posture.insert(service, Arc::new(posture));
        }
    }
    views.store(Arc::new(view.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(exe: &str, service: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "time": 1_772_445_600_000_000_000i64,
            "kind": "process_exec",
            "service": service,
            "process": { "exe": exe },
        }))
        .unwrap()
    }

    /// A worker with the default catalog, running on a thread of its own, and a runtime
    /// to send it batches from.
    fn started(
        on_findings: OnFindings,
    ) -> (
        Compliance,
        std::thread::JoinHandle<()>,
        tokio::runtime::Runtime,
    ) {
        let (handle, worker) = Compliance::new(
            &ComplianceConfig::default(),
            ComplianceMetrics::default(),
            on_findings,
        )
        .unwrap()
        .expect("enabled by default");
        let thread = std::thread::spawn(move || worker.run());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        (handle, thread, runtime)
    }

    /// Only the events a trigger names are checked, an index outside the batch names
    /// nothing, and `flush` returns once what it waited for is published.
    #[test]
    fn triggers_name_events_of_their_batch_and_a_flush_publishes_them() {
        let (handle, thread, runtime) = started(Box::new(|_| {}));
        runtime.block_on(async {
            handle
                .send(Triggers {
                    events: vec![
                        exec("/usr/bin/apt-get", "shop/unnamed"),
                        exec("/usr/bin/yum", "shop/named"),
                    ],
                    order: vec![Trigger::Event(1), Trigger::Event(7)],
                })
                .await;
            handle.flush().await;
        });
        let view = handle.view();
        let failed: Vec<(String, String)> = view
            .findings
            .iter()
            .filter(|f| f.status == Status::Fail)
            .map(|f| (f.service.to_string(), f.control.to_string()))
            .collect();
        assert!(
            failed.contains(&("shop/named".to_owned(), "DW-RT-001".to_owned())),
            "{failed:?}"
        );
        assert!(
            view.findings.iter().all(|f| &*f.service == "shop/named"),
            "{failed:?}"
        );
        let posture: Vec<&str> = view.posture().map(|p| p.service.as_str()).collect();
        assert!(posture.contains(&"shop/named"), "{posture:?}");
        drop(handle);
        thread.join().unwrap();
    }

    /// Records read again make the findings already made, under the same ids: the view
    /// holds each once and the findings' receiver gets each once.
    #[test]
    fn a_finding_made_again_is_held_and_passed_on_once() {
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (handle, thread, runtime) = started(Box::new({
            let received = received.clone();
            move |found: &[Finding]| {
                let mut received = received.lock().unwrap();
                received.extend(found.iter().map(|f| f.id.clone()));
            }
        }));
        let batch = || Triggers {
            events: vec![exec("/usr/bin/apt-get", "shop/api")],
            order: vec![Trigger::Event(0), Trigger::Event(0)],
        };
        runtime.block_on(async {
            handle.send(batch()).await;
            handle.send(batch()).await;
            handle.flush().await;
        });
        let view = handle.view();
        let held: Vec<&str> = view.findings.iter().map(|f| f.id.as_str()).collect();
        let once: std::collections::BTreeSet<&str> = held.iter().copied().collect();
        assert!(!held.is_empty());
        assert_eq!(held.len(), once.len(), "{held:?}");
        assert!(held.iter().all(|id| view.holds(id)));
        assert_eq!(*received.lock().unwrap(), held);
        drop(handle);
        thread.join().unwrap();
    }
}
