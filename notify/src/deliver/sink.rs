//! One sink's delivery task: merges what is queued for it, attempts, backs off and
//! retries, and records each outcome in the outbox, the statuses and the metrics.

use super::*;

/// The outcome of one attempt.
enum Attempt {
    Delivered,
    /// Retry, after at least this long when the receiver said.
    Retry(String, Option<Duration>),
    Final(String),
}

/// An entry on its way to its sink task.
pub(super) struct Queued {
    pub(super) entry: Entry,
    /// Written by this run and never tried: no receiver can have seen its id, so it
    /// may be merged with others. Entries held from an earlier run may have been.
    pub(super) fresh: bool,
}

/// Whether one request of the sink carries several items (PagerDuty takes one event
/// per request).
pub(super) fn takes_several(kind: &SinkKind) -> bool {
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

/// One sink's deliveries, in order, each retried until it is taken or refused for
/// good; Alertmanager's firing alerts are sent again on their interval.
pub(super) async fn run_sink(
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
