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
use crate::error::NotifyError;
use crate::message::{self, Item};
use crate::outbox::{Entry, Outbox};
use crate::sign::Secret;

mod metrics;
mod sink;

pub use metrics::NotifyMetrics;
pub use sink::MERGE_ITEMS;
use sink::{Queued, run_sink, takes_several};

/// Where one item stands at one sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryStatus {
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

/// Ids of the alerts submitted and not yet written to the outbox (queued for the
/// router, or waiting in a group), each with how many copies are.
#[derive(Clone, Default)]
struct Unrouted(Arc<Mutex<HashMap<String, usize>>>);

impl Unrouted {
    fn add<'a>(&self, items: impl IntoIterator<Item = &'a Item>) {
        let mut ids = self.0.lock().expect("unrouted lock poisoned");
        for i in items.into_iter().filter(|i| i.source == "alert") {
            *ids.entry(i.id.clone()).or_default() += 1;
        }
    }

    fn remove(&self, alert_ids: &[String]) {
        let mut ids = self.0.lock().expect("unrouted lock poisoned");
        for id in alert_ids {
            if let Some(n) = ids.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    ids.remove(id);
                }
            }
        }
    }

    fn ids(&self) -> Vec<String> {
        let ids = self.0.lock().expect("unrouted lock poisoned");
        ids.keys().cloned().collect()
    }
}

fn alert_ids<'a>(items: impl IntoIterator<Item = &'a Item>) -> Vec<String> {
    items
        .into_iter()
        .filter(|i| i.source == "alert")
        .map(|i| i.id.clone())
        .collect()
}

#[derive(Default)]
struct Statuses {
    by_key: HashMap<(String, String), DeliveryStatus>,
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
                DeliveryStatus {
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
    tx: mpsc::Sender<Vec<Item>>,
    /// The `notify_queue_depth` gauge: items submitted and not yet routed.
    depth: prometheus_client::metrics::gauge::Gauge,
    statuses: Arc<Mutex<Statuses>>,
    /// Items submitted and not yet routed, plus items in open groups.
    unrouted: Arc<AtomicUsize>,
    /// The alerts among them, by id.
    unrouted_alerts: Unrouted,
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
    pub fn start(config: &NotifyConfig, metrics: NotifyMetrics) -> Result<Notifier, NotifyError> {
        config.validate().map_err(NotifyError::Config)?;
        let (outbox, held) = Outbox::open(&config.outbox_dir, config.max_pending)?;
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
            .map_err(NotifyError::Http)?;
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
            let env = |name: &Option<String>| -> Result<Option<String>, NotifyError> {
                name.as_ref()
                    .map(|n| {
                        std::env::var(n).map_err(|_| {
                            NotifyError::Config(format!("notify sink {:?}: {n} is not set", s.name))
                        })
                    })
                    .transpose()
            };
            let (secret, routing_key) = match &s.kind {
                SinkKind::Webhook {
                    secret, secret_env, ..
                } => {
                    let text = secret.clone().or(env(secret_env)?);
                    (
                        text.map(|t| Secret::parse(&t))
                            .transpose()
                            .map_err(NotifyError::Config)?,
                        String::new(),
                    )
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
            let url = reqwest::Url::parse(&url).map_err(|e| {
                NotifyError::Config(format!(
                    "notify sink {:?}: its URL does not parse: {e}",
                    s.name
                ))
            })?;
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
        let (tx, rx) = mpsc::channel(SUBMIT_QUEUE);
        let unrouted: Arc<AtomicUsize> = Arc::default();
        let unrouted_alerts = Unrouted::default();
        let depth = metrics.queued.clone();
        // Delivery runs on a thread and runtime of its own: outbox writes (fsync) and
        // slow receivers never take time from the pipeline's runtime.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(NotifyError::Thread)?;
        let router = Router {
            config: config.clone(),
            senders,
            outbox,
            metrics,
            statuses: statuses.clone(),
            unrouted: unrouted.clone(),
            unrouted_alerts: unrouted_alerts.clone(),
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
            .map_err(NotifyError::Thread)?;
        Ok(Notifier {
            tx,
            depth,
            statuses,
            unrouted,
            unrouted_alerts,
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

    /// Hands an alert or a failing finding to the routes; waits while the queue to
    /// the router is full ([`SUBMIT_QUEUE`]).
    pub async fn submit(&self, item: Item) {
        self.submit_all(vec![item]).await;
    }

    /// Hands several over at once (one wake-up of the delivery thread for all of
    /// them, where one each would cost the caller a system call per item); waits while
    /// the queue to the router is full.
    pub async fn submit_all(&self, items: Vec<Item>) {
        let n = self.queued(&items);
        if n == 0 {
            return;
        }
        let ids = alert_ids(&items);
        if self.tx.send(items).await.is_err() {
            self.unqueued(n, &ids);
        }
    }

    /// [`Notifier::submit_all`] for a thread outside any async runtime (the compliance
    /// worker's): blocks while the queue is full. Called on a runtime's thread, it
    /// panics, as blocking there would stall the runtime.
    pub fn submit_all_blocking(&self, items: Vec<Item>) {
        let n = self.queued(&items);
        if n == 0 {
            return;
        }
        let ids = alert_ids(&items);
        if self.tx.blocking_send(items).is_err() {
            self.unqueued(n, &ids);
        }
    }

    /// Counts items in before they are sent; returns how many.
    fn queued(&self, items: &[Item]) -> usize {
        let n = items.len();
        if n > 0 {
            self.unrouted_alerts.add(items);
            let now = self.unrouted.fetch_add(n, Ordering::Relaxed) + n;
            self.depth.set(i64::try_from(now).unwrap_or(i64::MAX));
        }
        n
    }

    /// Counts `n` items out again when the notifier has stopped.
    fn unqueued(&self, n: usize, alert_ids: &[String]) {
        self.unrouted_alerts.remove(alert_ids);
        self.unrouted.fetch_sub(n, Ordering::Relaxed);
        warn!(
            n,
            "The notifier has stopped; notifications were not queued."
        );
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

    /// The alerts whose latest trigger or resolve some sink has not taken yet: queued
    /// for routing, waiting in a group, or pending in the outbox. What a member hands
    /// over with a service's state, so that the next owner sends it.
    pub fn undelivered(&self) -> std::collections::HashSet<String> {
        // Unrouted first: the router marks an entry pending before it counts its items
        // out, so an item between the two is seen in one or the other.
        let mut ids: std::collections::HashSet<String> =
            self.unrouted_alerts.ids().into_iter().collect();
        let s = self.statuses.lock().expect("statuses lock poisoned");
        ids.extend(
            s.by_key
                .values()
                .filter(|d| d.source == "alert" && d.state == "pending")
                .map(|d| d.item.clone()),
        );
        ids
    }

    /// Delivery statuses, newest change last.
    pub fn statuses(&self) -> Vec<DeliveryStatus> {
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

/// Batches of items submitted and not yet taken by the router. The router takes a
/// batch per receive and writes the outbox at most every [`COMMIT_EVERY`], so it keeps
/// up with any pipeline; 1,024 batches (one per applied Kafka batch at most) absorb a
/// stall of the delivery thread of seconds. Beyond it the submitter waits: the
/// pipeline slows and the Kafka consumer pauses, and no notification is dropped. The
/// queues to each sink need no bound of their own: every entry in them is in the
/// outbox, which holds at most `max-pending` and refuses (and reports) beyond it.
pub const SUBMIT_QUEUE: usize = 1024;

/// Routes items; groups bursts per sink and service; writes entries to the outbox and
/// hands them to their sink.
struct Router {
    config: NotifyConfig,
    senders: HashMap<String, mpsc::UnboundedSender<Queued>>,
    outbox: Arc<Outbox>,
    metrics: NotifyMetrics,
    statuses: Arc<Mutex<Statuses>>,
    unrouted: Arc<AtomicUsize>,
    unrouted_alerts: Unrouted,
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

    async fn run(self, mut rx: mpsc::Receiver<Vec<Item>>) {
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
            // Counted out once routed: what is grouped is counted in again below.
            let mut routed = alert_ids(&items);
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
                // A transition a sink took before (an alert handed over again after a
                // restart) is not sent again.
                sinks.retain(|sink| !self.outbox.sent(sink, &item));
                for sink in sinks {
                    match windows.get(sink) {
                        Some(window) => {
                            grouped += 1;
                            self.unrouted_alerts.add([&item]);
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
                    routed.extend(alert_ids(&items));
                    batch.push(Self::entry(&key.0, items));
                }
            }
            self.unrouted.fetch_add(grouped, Ordering::Relaxed);
            if !batch.is_empty() {
                last_commit = Instant::now();
            }
            self.commit(batch);
            self.unrouted_alerts.remove(&routed);
            let left = self
                .unrouted
                .fetch_sub(received + flushed, Ordering::Release)
                - (received + flushed);
            self.metrics
                .queued
                .set(i64::try_from(left).unwrap_or(i64::MAX));
        }
    }
}
