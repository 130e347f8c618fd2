//! The compliance worker: a thread of its own runs the controls that events and alerts
//! fire, so that checks never slow detection. The pipeline hands it only what can fire a
//! control (or carries container facts), through a bounded queue.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use compliance::{Catalog, Engine, Finding, Status};
use detect::{Alert, AlertKind};
use ingest::Event;
use ingest::event::EventKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

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
    compliance::engine::RESULT_CACHE
}

/// Findings kept in memory for the `findings` table: the newest ones.
pub const FINDINGS_KEPT: usize = 200_000;

/// Batches queued for the worker before the pipeline waits.
const QUEUED: usize = 64;

/// One thing for the worker, in the order the pipeline saw it.
pub enum Item {
    Event(Event),
    /// An alert, with the event that raised it when there is one (boxed: alerts are
    /// rare next to events).
    Alert(Box<(Alert, Option<Event>)>),
}

enum Message {
    Items(Vec<Item>),
    Flush(oneshot::Sender<()>),
}

/// The engine and the findings it produced.
pub struct ComplianceState {
    pub engine: Engine,
    pub findings: VecDeque<Finding>,
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
        m
    }
}

/// A handle on the running worker.
#[derive(Clone)]
pub struct Compliance {
    tx: mpsc::Sender<Message>,
    pub state: Arc<Mutex<ComplianceState>>,
    pub catalog: Arc<Catalog>,
    events: Arc<HashSet<&'static str>>,
    alerts: Arc<HashSet<AlertKind>>,
    metrics: ComplianceMetrics,
}

impl Compliance {
    /// Loads the catalog and starts the worker; `None` when compliance is disabled.
    /// `print` writes each failing finding on stdout (the demo does).
    pub fn start(
        config: &ComplianceConfig,
        metrics: ComplianceMetrics,
        print: bool,
        notifier: Option<notify::Notifier>,
    ) -> anyhow::Result<Option<Compliance>> {
        if !config.enabled {
            return Ok(None);
        }
        let catalog = Arc::new(Catalog::load(&config.controls).context("invalid control file")?);
        let mut events = HashSet::new();
        let mut alerts = HashSet::new();
        for c in catalog.controls() {
            events.extend(c.triggers.events.iter().copied());
            alerts.extend(c.triggers.alerts.iter().copied());
        }
        let state = Arc::new(Mutex::new(ComplianceState {
            engine: Engine::with_result_cache(catalog.clone(), config.result_cache),
            findings: VecDeque::new(),
        }));
        let (tx, rx) = mpsc::channel(QUEUED);
        let worker = state.clone();
        let m = metrics.clone();
        let cat = catalog.clone();
        std::thread::Builder::new()
            .name("compliance".into())
            .spawn(move || run(rx, &worker, &cat, &m, print, notifier.as_ref()))
            .context("cannot start the compliance thread")?;
        Ok(Some(Compliance {
            tx,
            state,
            catalog,
            events: Arc::new(events),
            alerts: Arc::new(alerts),
            metrics,
        }))
    }

    /// Whether an event goes to the worker: it fires a control or carries facts.
    pub fn wants(&self, event: &Event) -> bool {
        matches!(event.kind, EventKind::Container { .. }) || self.events.contains(event.kind.name())
    }

    pub fn wants_alert(&self, kind: AlertKind) -> bool {
        self.alerts.contains(&kind)
    }

    /// Queues items; waits only when the worker is a whole queue behind.
    pub async fn send(&self, items: Vec<Item>) {
        if items.is_empty() {
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

    /// Returns once everything queued so far has been checked.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_err() || wait.await.is_err() {
            warn!("The compliance worker has stopped.");
        }
    }

    /// The `findings` table.
    pub fn findings_table(&self) -> arrow::record_batch::RecordBatch {
        let state = self.state.lock().expect("compliance lock poisoned");
        compliance::tables::findings_table(state.findings.iter(), &self.catalog)
    }

    /// The `posture` table.
    pub fn posture_table(&self) -> arrow::record_batch::RecordBatch {
        let state = self.state.lock().expect("compliance lock poisoned");
        compliance::tables::posture_table(&state.engine)
    }
}

fn run(
    mut rx: mpsc::Receiver<Message>,
    state: &Mutex<ComplianceState>,
    catalog: &Catalog,
    metrics: &ComplianceMetrics,
    print: bool,
    notifier: Option<&notify::Notifier>,
) {
    let mut out = Vec::new();
    // The counters a finding adds to, by control and status: one per framework the
    // control refers to. Findings of one control share its id, so its address keys it.
    let mut counters: HashMap<(usize, Status), Vec<Counter>> = HashMap::new();
    while let Some(message) = rx.blocking_recv() {
        let items = match message {
            Message::Items(items) => items,
            Message::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let mut s = state.lock().expect("compliance lock poisoned");
        let (hits, misses) = s.engine.result_cache_stats();
        for item in &items {
            match item {
                Item::Event(e) => s.engine.on_event(e, &mut out),
                Item::Alert(pair) => s.engine.on_alert(&pair.0, pair.1.as_ref(), &mut out),
            }
        }
        let (h, m) = s.engine.result_cache_stats();
        for (outcome, n) in [("reused", h - hits), ("evaluated", m - misses)] {
            metrics
                .results
                .get_or_create(&CacheLabels { outcome })
                .inc_by(n);
        }
        let mut deliver = Vec::new();
        for f in out.drain(..) {
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
            if notifier.is_some() && (f.status == Status::Fail || f.clears_failure) {
                deliver.push(notify::Item::from_finding(&f));
            }
            if print && f.status == Status::Fail {
                println!(
                    "FINDING fail {} {}: {} [{}]",
                    f.control,
                    f.service,
                    f.title,
                    f.references.join(", ")
                );
            }
            if s.findings.len() == FINDINGS_KEPT {
                s.findings.pop_front();
            }
            s.findings.push_back(f);
        }
        if let Some(n) = notifier {
            n.submit_all(deliver);
        }
    }
}
