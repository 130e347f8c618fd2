//! The notifier: routes items to sinks, groups bursts, writes each notification to the
//! outbox, and delivers it from one task per sink (so a dead receiver stalls only its
//! own sink), with a rate limit, exponential backoff with jitter, `Retry-After` on 429,
//! and 4xx other than 408 and 429 final.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::{NotifyConfig, RetryConfig, SinkConfig, SinkKind};
use crate::message::{self, Item};
use crate::outbox::{Entry, Outbox};
use crate::sign::Secret;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

/// Delivery metrics per sink.
#[derive(Clone, Debug)]
pub struct NotifyMetrics {
    sent: Family<SinkLabels, Counter>,
    failed: Family<SinkLabels, Counter>,
    retried: Family<SinkLabels, Counter>,
    refused: Family<SinkLabels, Counter>,
    pending: Family<SinkLabels, Gauge>,
    latency: Family<SinkLabels, Histogram, fn() -> Histogram>,
    limit: Gauge,
}

impl Default for NotifyMetrics {
    fn default() -> Self {
        NotifyMetrics {
            sent: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            refused: Family::default(),
            pending: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            limit: Gauge::default(),
        }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0])
}

impl NotifyMetrics {
    pub fn register(registry: &mut Registry) -> NotifyMetrics {
        let m = NotifyMetrics::default();
        registry.register(
            "notifications_sent",
            "Notifications a receiver accepted",
            m.sent.clone(),
        );
        registry.register(
            "notifications_failed",
            "Notifications a receiver refused for good (a 4xx other than 408 and 429)",
            m.failed.clone(),
        );
        registry.register(
            "notifications_retried",
            "Delivery attempts that will be retried",
            m.retried.clone(),
        );
        registry.register(
            "notifications_refused",
            "Notifications not queued because the outbox was full or could not be written",
            m.refused.clone(),
        );
        registry.register(
            "notifications_pending",
            "Notifications waiting in the outbox",
            m.pending.clone(),
        );
        registry.register(
            "notifications_outbox_limit",
            "Notifications the outbox holds at most ([notify] max-pending)",
            m.limit.clone(),
        );
        registry.register(
            "notification_latency_seconds",
            "From the notification's making to a receiver accepting it",
            m.latency.clone(),
        );
        m
    }

    fn labels(sink: &str) -> SinkLabels {
        SinkLabels {
            sink: sink.to_owned(),
        }
    }
}

/// Where one item stands at one sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The alert or finding id.
    pub item: String,
    pub source: String,
    pub sink: String,
    pub notification: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// RFC 3339 of the last change.
    pub updated: String,
}

/// Statuses kept in memory for the API and the `notifications` table.
pub const STATUSES_KEPT: usize = 100_000;

#[derive(Default)]
struct Statuses {
    by_key: HashMap<(String, String), Status>,
    order: std::collections::VecDeque<(String, String)>,
}

impl Statuses {
    fn set(&mut self, entry: &Entry, state: &str, attempts: u32, last_error: Option<String>) {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for item in &entry.items {
            let key = (item.id.clone(), entry.sink.clone());
            if !self.by_key.contains_key(&key) {
                if self.order.len() == STATUSES_KEPT {
                    if let Some(old) = self.order.pop_front() {
                        self.by_key.remove(&old);
                    }
                }
                self.order.push_back(key.clone());
            }
            self.by_key.insert(
                key,
                Status {
                    item: item.id.clone(),
                    source: item.source.clone(),
                    sink: entry.sink.clone(),
                    notification: entry.id.clone(),
                    state: state.to_owned(),
                    attempts,
                    last_error: last_error.clone(),
                    updated: now.clone(),
                },
            );
        }
    }
}

/// How full the outbox is, as the notifier reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxHealth {
    /// Notifications are being refused: the outbox reached its limit and has not yet
    /// drained to 90% of it.
    pub full: bool,
    /// Notifications refused since it last filled.
    pub refused: u64,
    /// Pending when this was last reported.
    pub pending: usize,
    pub limit: usize,
}

/// A handle on the running notifier.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::UnboundedSender<Vec<Item>>,
    statuses: Arc<Mutex<Statuses>>,
    /// Items submitted and not yet routed, plus items in open groups.
    unrouted: Arc<AtomicUsize>,
    health: Arc<watch::Sender<OutboxHealth>>,
    routes: Arc<Vec<crate::config::RouteConfig>>,
    resumers: Arc<HashMap<String, mpsc::UnboundedSender<Vec<Item>>>>,
}

/// What a sink task needs.
struct Sink {
    config: SinkConfig,
    /// Where requests go, parsed once.
    url: reqwest::Url,
    http: reqwest::Client,
    secret: Option<Secret>,
    routing_key: String,
    link_base: Option<String>,
    retry: RetryConfig,
    outbox: Arc<Outbox>,
    metrics: NotifyMetrics,
    statuses: Arc<Mutex<Statuses>>,
    health: Arc<watch::Sender<OutboxHealth>>,
}

impl Notifier {
    /// Opens the outbox, resumes what it holds and starts one task per sink. Must run
    /// inside a tokio runtime.
    pub fn start(config: &NotifyConfig, metrics: NotifyMetrics) -> Result<Notifier, String> {
        config.validate()?;
        let (outbox, held) =
            Outbox::open(&config.outbox_dir, config.max_pending).map_err(|e| e.to_string())?;
        let outbox = Arc::new(outbox);
        metrics
            .limit
            .set(i64::try_from(config.max_pending).unwrap_or(i64::MAX));
        let statuses: Arc<Mutex<Statuses>> = Arc::default();
        let health = Arc::new(watch::Sender::new(OutboxHealth {
            limit: config.max_pending,
            ..OutboxHealth::default()
        }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut senders: HashMap<String, mpsc::UnboundedSender<Queued>> = HashMap::new();
        // Alertmanager sinks' firing alerts, resumed at start.
        let mut resumers: HashMap<String, mpsc::UnboundedSender<Vec<Item>>> = HashMap::new();
        let mut sinks = Vec::new();
        for s in &config.sinks {
            // Every sink's series exist from the start, so that rules on their increase
            // see the first failure.
            let labels = NotifyMetrics::labels(&s.name);
            metrics.sent.get_or_create(&labels).inc_by(0);
            metrics.failed.get_or_create(&labels).inc_by(0);
            metrics.retried.get_or_create(&labels).inc_by(0);
            metrics.refused.get_or_create(&labels).inc_by(0);
            metrics.pending.get_or_create(&labels).set(0);
            let env = |name: &Option<String>| -> Result<Option<String>, String> {
                name.as_ref()
                    .map(|n| {
                        std::env::var(n)
                            .map_err(|_| format!("notify sink {:?}: {n} is not set", s.name))
                    })
                    .transpose()
            };
            let (secret, routing_key) = match &s.kind {
                SinkKind::Webhook {
                    secret, secret_env, ..
                } => {
                    let text = secret.clone().or(env(secret_env)?);
                    (text.map(|t| Secret::parse(&t)).transpose()?, String::new())
                }
                SinkKind::Pagerduty {
                    routing_key,
                    routing_key_env,
                    ..
                } => (
                    None,
                    routing_key
                        .clone()
                        .or(env(routing_key_env)?)
                        .unwrap_or_default(),
                ),
                _ => (None, String::new()),
            };
            let url = match &s.kind {
                SinkKind::Pagerduty { url, .. }
                | SinkKind::Slack { url }
                | SinkKind::Webhook { url, .. } => url.clone(),
                SinkKind::Alertmanager { url, .. } => {
                    format!("{}/api/v2/alerts", url.trim_end_matches('/'))
                }
            };
            let url = reqwest::Url::parse(&url)
                .map_err(|e| format!("notify sink {:?}: its URL does not parse: {e}", s.name))?;
            let (tx, rx) = mpsc::unbounded_channel();
            let (firing_tx, firing_rx) = mpsc::unbounded_channel();
            if matches!(s.kind, SinkKind::Alertmanager { .. }) {
                resumers.insert(s.name.clone(), firing_tx);
            }
            let sink = Arc::new(Sink {
                config: s.clone(),
                url,
                http: http.clone(),
                secret,
                routing_key,
                link_base: config.link_base.clone(),
                retry: config.retry,
                outbox: outbox.clone(),
                metrics: metrics.clone(),
                statuses: statuses.clone(),
                health: health.clone(),
            });
            sinks.push((sink, rx, firing_rx));
            senders.insert(s.name.clone(), tx);
        }
        // What the outbox still held goes out first.
        for e in held {
            match senders.get(&e.sink) {
                Some(tx) => {
                    metrics
                        .pending
                        .get_or_create(&NotifyMetrics::labels(&e.sink))
                        .inc();
                    statuses
                        .lock()
                        .expect("statuses lock poisoned")
                        .set(&e, "pending", 0, None);
                    let _ = tx.send(Queued {
                        entry: e,
                        fresh: false,
                    });
                }
                None => {
                    warn!(sink = %e.sink, id = %e.id, "An outbox entry names a sink no longer configured; it stays in the outbox.")
                }
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let unrouted: Arc<AtomicUsize> = Arc::default();
        // Delivery runs on a thread and runtime of its own: outbox writes (fsync) and
        // slow receivers never take time from the pipeline's runtime.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the delivery runtime: {e}"))?;
        let router = Router {
            config: config.clone(),
            senders,
            outbox,
            metrics,
            statuses: statuses.clone(),
            unrouted: unrouted.clone(),
            health: health.clone(),
        };
        let nice = config.nice;
        std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                lower_priority(nice);
                runtime.block_on(async move {
                    for (sink, rx, firing_rx) in sinks {
                        tokio::spawn(run_sink(sink, rx, firing_rx));
                    }
                    // Until every handle is dropped; pending notifications stay in the
                    // outbox for the next start.
                    router.run(rx).await;
                });
            })
            .map_err(|e| format!("cannot start the delivery thread: {e}"))?;
        Ok(Notifier {
            tx,
            statuses,
            unrouted,
            health,
            routes: Arc::new(config.routes.clone()),
            resumers: Arc::new(resumers),
        })
    }

    /// Alerts still open when driftwatch starts (restored from its state file):
    /// Alertmanager sinks whose routes match send them again on their
    /// `resend-interval`, as they would have had driftwatch never stopped, so that
    /// Alertmanager does not time them out. Nothing is sent at once.
    pub fn resume_firing(&self, items: &[Item]) {
        for (sink, tx) in self.resumers.iter() {
            let firing: Vec<Item> = items
                .iter()
                .filter(|i| !i.resolved)
                .filter(|i| self.routes.iter().any(|r| &r.sink == sink && r.matches(i)))
                .cloned()
                .collect();
            if !firing.is_empty() {
                let _ = tx.send(firing);
            }
        }
    }

    /// How full the outbox is; changes when it fills (and with every refusal while
    /// full) and when it has drained.
    pub fn outbox_health(&self) -> watch::Receiver<OutboxHealth> {
        self.health.subscribe()
    }

    /// Hands an alert or a failing finding to the routes; never waits.
    pub fn submit(&self, item: Item) {
        self.submit_all(vec![item]);
    }

    /// Hands several over at once (one wake-up of the delivery thread for all of
    /// them, where one each would cost the caller a system call per item); never waits.
    pub fn submit_all(&self, items: Vec<Item>) {
        let n = items.len();
        if n == 0 {
            return;
        }
        self.unrouted.fetch_add(n, Ordering::Relaxed);
        if self.tx.send(items).is_err() {
            self.unrouted.fetch_sub(n, Ordering::Relaxed);
            warn!(
                n,
                "The notifier has stopped; notifications were not queued."
            );
        }
    }

    /// Waits until nothing is pending (or `timeout` passes); whether nothing is.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            // Items still being routed have no status yet: they are counted first, so
            // that one routed in between shows as pending.
            let unrouted = self.unrouted.load(Ordering::Acquire);
            let pending = {
                let s = self.statuses.lock().expect("statuses lock poisoned");
                s.by_key.values().any(|s| s.state == "pending")
            };
            if !pending && unrouted == 0 {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Delivery statuses, newest change last.
    pub fn statuses(&self) -> Vec<Status> {
        let s = self.statuses.lock().expect("statuses lock poisoned");
        s.order
            .iter()
            .filter_map(|k| s.by_key.get(k).cloned())
            .collect()
    }
}

/// Delivery yields the CPU to ingest (`[notify] nice`): when both want it, the
/// pipeline runs first and notifications wait; an idle core runs delivery at full
/// speed. On Linux the nice value belongs to the thread, so only this one is lowered.
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
        warn!(error = %e, nice, "Cannot lower the delivery thread's priority; it competes with ingest as an equal.");
    }
}

fn stable_id(parts: &[&str]) -> String {
    format!("msg_{:016x}", detect::stable_hash(parts))
}

/// The outbox is synced at most this often; items handed over in between are written
/// together.
pub const COMMIT_EVERY: Duration = Duration::from_millis(20);

/// Routes items; groups bursts per sink and service; writes entries to the outbox and
/// hands them to their sink.
struct Router {
    config: NotifyConfig,
    senders: HashMap<String, mpsc::UnboundedSender<Queued>>,
    outbox: Arc<Outbox>,
    metrics: NotifyMetrics,
    statuses: Arc<Mutex<Statuses>>,
    unrouted: Arc<AtomicUsize>,
    health: Arc<watch::Sender<OutboxHealth>>,
}

impl Router {
    fn entry(sink: &str, items: Vec<Item>) -> Entry {
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        let action = if items.iter().all(|i| i.resolved) {
            "resolve"
        } else {
            "trigger"
        };
        let mut parts = vec![sink, action];
        parts.extend(ids);
        Entry {
            id: stable_id(&parts),
            sink: sink.to_owned(),
            created: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
            items,
            merges: Vec::new(),
        }
    }

    /// Writes entries to the outbox together, with one sync, then hands them to their
    /// sinks. What the outbox refuses is counted, logged and reported as its health.
    fn commit(&self, batch: Vec<Entry>) {
        if batch.is_empty() {
            return;
        }
        let (written, refused) = match self.outbox.put_all(batch) {
            Ok(split) => split,
            Err(e) => {
                tracing::error!(error = %e, "The outbox could not be written; notifications are lost.");
                return;
            }
        };
        for e in &refused {
            self.metrics
                .refused
                .get_or_create(&NotifyMetrics::labels(&e.sink))
                .inc();
            tracing::error!(sink = %e.sink, id = %e.id, limit = self.outbox.capacity(), "The outbox is full; a notification is lost.");
        }
        if !refused.is_empty() {
            let pending = self.outbox.pending();
            self.health.send_modify(|h| {
                h.full = true;
                h.refused += refused.len() as u64;
                h.pending = pending;
            });
        }
        let mut s = self.statuses.lock().expect("statuses lock poisoned");
        for e in written {
            self.metrics
                .pending
                .get_or_create(&NotifyMetrics::labels(&e.sink))
                .inc();
            s.set(&e, "pending", 0, None);
            if let Some(tx) = self.senders.get(&e.sink) {
                let _ = tx.send(Queued {
                    entry: e,
                    fresh: true,
                });
            }
        }
    }

    async fn run(self, mut rx: mpsc::UnboundedReceiver<Vec<Item>>) {
        let windows: HashMap<&str, Duration> = self
            .config
            .sinks
            .iter()
            .filter(|s| matches!(s.kind, SinkKind::Slack { .. } | SinkKind::Webhook { .. }))
            .map(|s| (s.name.as_str(), s.group_window))
            .filter(|(_, w)| !w.is_zero())
            .collect();
        let mergeable: std::collections::HashSet<&str> = self
            .config
            .sinks
            .iter()
            .filter(|s| takes_several(&s.kind))
            .map(|s| s.name.as_str())
            .collect();
        // Open groups: (sink, service) → (deadline, items).
        let mut groups: BTreeMap<(String, String), (Instant, Vec<Item>)> = BTreeMap::new();
        // At most this many items go into one outbox write.
        const BATCH: usize = 8192;
        let mut last_commit = Instant::now()
            .checked_sub(COMMIT_EVERY)
            .unwrap_or_else(Instant::now);
        let mut open = true;
        while open {
            let next_deadline = groups.values().map(|(d, _)| *d).min();
            let first = tokio::select! {
                items = rx.recv() => match items {
                    Some(i) => Some(i),
                    None => {
                        open = false;
                        None
                    }
                },
                () = async {
                    match next_deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                } => None,
            };
            // One outbox sync per COMMIT_EVERY at most: what arrives in between is
            // written with it (a sync costs the disk and the host far more than the
            // few milliseconds an alert waits).
            if first.is_some() {
                tokio::time::sleep_until((last_commit + COMMIT_EVERY).into()).await;
            }
            let mut items: Vec<Item> = first.unwrap_or_default();
            while items.len() < BATCH {
                match rx.try_recv() {
                    Ok(more) => items.extend(more),
                    Err(_) => break,
                }
            }
            let received = items.len();
            let mut batch = Vec::new();
            // Items for sinks that take several in one request, routed together: one
            // notification per sink (up to MERGE_ITEMS items), not one each.
            let mut direct: BTreeMap<String, Vec<Item>> = BTreeMap::new();
            // Routed once every copy is written or grouped; groups count their items
            // until they are written.
            let mut grouped = 0;
            for item in items {
                // One copy per sink, however many of its routes match.
                let mut sinks: Vec<&str> = self
                    .config
                    .routes
                    .iter()
                    .filter(|r| r.matches(&item))
                    .map(|r| r.sink.as_str())
                    .collect();
                sinks.sort_unstable();
                sinks.dedup();
                for sink in sinks {
                    match windows.get(sink) {
                        Some(window) => {
                            grouped += 1;
                            groups
                                .entry((sink.to_owned(), item.service.clone()))
                                .or_insert_with(|| (Instant::now() + *window, Vec::new()))
                                .1
                                .push(item.clone());
                        }
                        None if mergeable.contains(sink) => direct
                            .entry(sink.to_owned())
                            .or_default()
                            .push(item.clone()),
                        None => batch.push(Self::entry(sink, vec![item.clone()])),
                    }
                }
            }
            for (sink, items) in direct {
                for chunk in items.chunks(MERGE_ITEMS) {
                    batch.push(Self::entry(&sink, chunk.to_vec()));
                }
            }
            let now = Instant::now();
            let due: Vec<(String, String)> = groups
                .iter()
                .filter(|(_, (d, _))| *d <= now || !open)
                .map(|(k, _)| k.clone())
                .collect();
            let mut flushed = 0;
            for key in due {
                if let Some((_, items)) = groups.remove(&key) {
                    flushed += items.len();
                    batch.push(Self::entry(&key.0, items));
                }
            }
            self.unrouted.fetch_add(grouped, Ordering::Relaxed);
            if !batch.is_empty() {
                last_commit = Instant::now();
            }
            self.commit(batch);
            self.unrouted
                .fetch_sub(received + flushed, Ordering::Release);
        }
    }
}

/// The outcome of one attempt.
enum Attempt {
    Delivered,
    /// Retry, after at least this long when the receiver said.
    Retry(String, Option<Duration>),
    Final(String),
}

/// One sink's deliveries, in order, each retried until it is taken or refused for
/// good; Alertmanager's firing alerts are sent again on their interval.
/// An entry on its way to its sink task.
struct Queued {
    entry: Entry,
    /// Written by this run and never tried: no receiver can have seen its id, so it
    /// may be merged with others. Entries held from an earlier run may have been.
    fresh: bool,
}

/// Whether one request of the sink carries several items (PagerDuty takes one event
/// per request).
fn takes_several(kind: &SinkKind) -> bool {
    matches!(
        kind,
        SinkKind::Webhook { .. } | SinkKind::Slack { .. } | SinkKind::Alertmanager { .. }
    )
}

/// Items one request carries at most when entries waiting together are merged.
pub const MERGE_ITEMS: usize = 100;

/// A sink's queue: what its channel delivers, and what was taken out of it and put
/// back.
struct SinkQueue {
    rx: mpsc::UnboundedReceiver<Queued>,
    back: std::collections::VecDeque<Queued>,
}

impl SinkQueue {
    async fn next(&mut self) -> Option<Queued> {
        match self.back.pop_front() {
            Some(q) => Some(q),
            None => self.rx.recv().await,
        }
    }

    fn ready(&mut self) -> Option<Queued> {
        self.back.pop_front().or_else(|| self.rx.try_recv().ok())
    }

    fn is_empty(&self) -> bool {
        self.back.is_empty() && self.rx.is_empty()
    }
}

/// Entries that wait together for a sink that takes several items in one request
/// (webhooks, Slack, Alertmanager) go out as one: a burst costs a few requests, not
/// one per alert. Only fresh entries are merged, and the merged entry is in the
/// outbox before it is tried, so an id a receiver may have seen never changes.
fn coalesce(sink: &Sink, first: Queued, queue: &mut SinkQueue) -> Entry {
    let mergeable = first.fresh && takes_several(&sink.config.kind);
    if !mergeable {
        return first.entry;
    }
    let mut parts = vec![first.entry];
    let mut items = parts[0].items.len();
    while items < MERGE_ITEMS {
        let Some(next) = queue.ready() else { break };
        if !next.fresh || items + next.entry.items.len() > MERGE_ITEMS {
            queue.back.push_front(next);
            break;
        }
        items += next.entry.items.len();
        parts.push(next.entry);
    }
    if parts.len() == 1 {
        return parts.remove(0);
    }
    let ids: Vec<String> = parts.iter().map(|e| e.id.clone()).collect();
    let mut id_parts = vec!["merge", sink.config.name.as_str()];
    id_parts.extend(ids.iter().map(String::as_str));
    let merged = Entry {
        id: stable_id(&id_parts),
        sink: sink.config.name.clone(),
        created: parts.iter().map(|e| e.created).min().unwrap_or(0),
        items: parts.iter().flat_map(|e| e.items.iter().cloned()).collect(),
        merges: ids,
    };
    match sink.outbox.merge(&merged) {
        Ok(()) => {
            sink.statuses
                .lock()
                .expect("statuses lock poisoned")
                .set(&merged, "pending", 0, None);
            merged
        }
        Err(e) => {
            warn!(sink = %sink.config.name, error = %e, "Waiting notifications could not be merged; they go out one by one.");
            let mut parts = parts.into_iter();
            let first = parts.next().expect("at least two parts");
            for (i, entry) in parts.enumerate() {
                queue.back.insert(
                    i,
                    Queued {
                        entry,
                        fresh: false,
                    },
                );
            }
            first
        }
    }
}

async fn run_sink(
    sink: Arc<Sink>,
    rx: mpsc::UnboundedReceiver<Queued>,
    mut resumed: mpsc::UnboundedReceiver<Vec<Item>>,
) {
    let mut queue = SinkQueue {
        rx,
        back: std::collections::VecDeque::new(),
    };
    let labels = NotifyMetrics::labels(&sink.config.name);
    let spacing = Duration::from_secs_f64(1.0 / sink.config.rate);
    let mut last_send = Instant::now() - spacing;
    let mut firing: BTreeMap<String, Item> = BTreeMap::new();
    let resend = match &sink.config.kind {
        SinkKind::Alertmanager {
            resend_interval, ..
        } => Some(*resend_interval),
        _ => None,
    };
    let mut refresh = tokio::time::interval(resend.unwrap_or(Duration::from_secs(3600)));
    refresh.tick().await;
    loop {
        let entry = tokio::select! {
            q = queue.next() => match q {
                Some(q) => coalesce(&sink, q, &mut queue),
                None => return,
            },
            Some(items) = resumed.recv() => {
                for item in items {
                    firing.entry(item.dedup_key.clone()).or_insert(item);
                }
                continue;
            }
            _ = refresh.tick(), if resend.is_some() && !firing.is_empty() => {
                let items: Vec<Item> = firing.values().cloned().collect();
                let refresh_entry = Entry {
                    id: stable_id(&["refresh", &sink.config.name]),
                    sink: sink.config.name.clone(),
                    created: 0,
                    items,
                    merges: Vec::new(),
                };
                if let Attempt::Retry(why, _) | Attempt::Final(why) = attempt(&sink, &refresh_entry, 1).await {
                    warn!(sink = %sink.config.name, error = %why, "Re-sending firing alerts failed; next interval tries again.");
                }
                continue;
            }
        };
        let mut attempts = 0u32;
        let mut wait = sink.retry.initial;
        loop {
            // The rate limit: requests spaced evenly.
            let since = last_send.elapsed();
            if since < spacing {
                tokio::time::sleep(spacing - since).await;
            }
            last_send = Instant::now();
            attempts += 1;
            match attempt(&sink, &entry, attempts).await {
                Attempt::Delivered => {
                    sink.metrics.sent.get_or_create(&labels).inc();
                    let age = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - entry.created;
                    sink.metrics
                        .latency
                        .get_or_create(&labels)
                        .observe(age.max(0) as f64 / 1e9);
                    if let Err(e) = sink.outbox.done(&entry) {
                        warn!(error = %e, "A delivered notification could not be removed from the outbox.");
                    }
                    sink.statuses.lock().expect("statuses lock poisoned").set(
                        &entry,
                        "delivered",
                        attempts,
                        None,
                    );
                    if resend.is_some() {
                        for item in &entry.items {
                            if item.resolved {
                                firing.remove(&item.dedup_key);
                            } else {
                                firing.insert(item.dedup_key.clone(), item.clone());
                            }
                        }
                    }
                    break;
                }
                Attempt::Final(why) => {
                    sink.metrics.failed.get_or_create(&labels).inc();
                    warn!(sink = %sink.config.name, id = %entry.id, error = %why, "The receiver refused a notification for good.");
                    if let Err(e) = sink.outbox.fail(&entry, &why) {
                        warn!(error = %e, "A refused notification could not be moved aside.");
                    }
                    sink.statuses.lock().expect("statuses lock poisoned").set(
                        &entry,
                        "failed",
                        attempts,
                        Some(why),
                    );
                    break;
                }
                Attempt::Retry(why, after) => {
                    sink.metrics.retried.get_or_create(&labels).inc();
                    sink.statuses.lock().expect("statuses lock poisoned").set(
                        &entry,
                        "pending",
                        attempts,
                        Some(why.clone()),
                    );
                    // Full jitter, never less than what the receiver asked for.
                    let jittered = wait.mul_f64(fastrand::f64());
                    let delay = after.map_or(jittered, |a| a.max(jittered));
                    info!(sink = %sink.config.name, id = %entry.id, attempts, error = %why, delay_ms = delay.as_millis() as u64, "Delivery failed; retrying.");
                    tokio::time::sleep(delay).await;
                    wait = (wait * 2).min(sink.retry.max);
                }
            }
        }
        sink.metrics
            .pending
            .get_or_create(&labels)
            .set(sink.outbox.pending_for(&sink.config.name) as i64);
        if queue.is_empty()
            && let Err(e) = sink.outbox.flush_settled()
        {
            warn!(error = %e, "Settled notifications could not be recorded; they may be sent again after a restart.");
        }
        if sink.health.borrow().full {
            let pending = sink.outbox.pending();
            if pending <= sink.outbox.capacity().saturating_mul(9) / 10 {
                sink.health.send_modify(|h| {
                    *h = OutboxHealth {
                        full: false,
                        refused: 0,
                        pending,
                        limit: h.limit,
                    }
                });
            }
        }
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One request for an entry.
async fn attempt(sink: &Sink, entry: &Entry, n: u32) -> Attempt {
    let link = sink.link_base.as_deref();
    let bodies: Vec<serde_json::Value> = match &sink.config.kind {
        SinkKind::Pagerduty { .. } => entry
            .items
            .iter()
            .map(|i| message::pagerduty(i, &sink.routing_key, link))
            .collect(),
        SinkKind::Alertmanager { .. } => {
            vec![message::alertmanager(&entry.items, &now_rfc3339(), link)]
        }
        SinkKind::Slack { .. } => vec![message::slack(&entry.items)],
        SinkKind::Webhook { .. } => {
            vec![message::envelope(&entry.id, &entry.items, &now_rfc3339())]
        }
    };
    for body in bodies {
        let body = serde_json::to_vec(&body).expect("payloads serialize");
        let mut request = sink
            .http
            .post(sink.url.clone())
            .timeout(sink.config.timeout)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("driftwatch/", env!("CARGO_PKG_VERSION")),
            );
        if matches!(sink.config.kind, SinkKind::Webhook { .. }) {
            let timestamp = chrono::Utc::now().timestamp();
            request = request
                .header("webhook-id", &entry.id)
                .header("webhook-timestamp", timestamp.to_string());
            if let Some(secret) = &sink.secret {
                request = request.header(
                    "webhook-signature",
                    secret.sign(&entry.id, timestamp, &body),
                );
            }
        }
        let response = match request.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let why = format!(
                    "attempt {n}: {} ({})",
                    crate::redact::request_error(e),
                    crate::redact::url(sink.url.as_str())
                );
                return Attempt::Retry(why, None);
            }
        };
        let status = response.status();
        if status.is_success() {
            continue;
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let why = format!(
            "attempt {n}: {status} {}",
            text.chars().take(200).collect::<String>()
        );
        return match status.as_u16() {
            408 | 429 => Attempt::Retry(why, retry_after),
            400..=499 => Attempt::Final(why),
            _ => Attempt::Retry(why, retry_after),
        };
    }
    Attempt::Delivered
}
