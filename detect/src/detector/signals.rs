//! What the detector raises beyond one event's novelty: the template cap, shifts in a
//! service's log mix, and rate anomalies as the clock moves.

use super::*;
use ingest::SensorReport;

impl Detector {
    /// One alert when a service's template miner reaches its cap.
    pub(super) fn log_cap_alert(&mut self, event: &Event, raised: &mut Vec<Alert>) {
        let cap = self.config.logs.templates.max_templates;
        let obs = Observation {
            dimension: Dimension::LogTemplate,
            key: "template cap".to_owned(),
            severity: Severity::Medium,
            mitre: None,
            exe: None,
        };
        let explanation = format!(
            "{} reached its cap of {cap} log templates; further new kinds of line count against one \
             overflow template and are no longer told apart (a flood of unique lines, or logging \
             that embeds unique words in every line).",
            event.service
        );
        self.raise(event, AlertKind::LogTemplate, &obs, explanation, raised);
    }

    /// The template mix drifted from the learned one.
    pub(super) fn mix_alert(
        &mut self,
        event: &Event,
        shift: &crate::logs::MixShift,
        raised: &mut Vec<Alert>,
    ) {
        let state = self.services.get(&event.service).expect("observed service");
        let text = |id: u32| {
            state
                .logs
                .miner()
                .template(id)
                .map_or_else(|| format!("#{id}"), |t| format!("#{id} {}", t.text()))
        };
        let movers = shift
            .movers
            .iter()
            .map(|(id, was, now)| {
                format!("`{}` {:.1}% → {:.1}%", text(*id), was * 100.0, now * 100.0)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let explanation = format!(
            "The mix of {}'s log templates shifted: Jensen–Shannon divergence {:.2} bits between the \
             {} lines learned and the last {} lines (threshold {:.2}). Moved most: {movers}.",
            event.service,
            shift.divergence,
            state.logs.learned_lines(),
            self.config.logs.mix_window,
            self.config.logs.mix_threshold
        );
        let obs = Observation {
            dimension: Dimension::LogTemplate,
            key: "template mix".to_owned(),
            severity: Severity::Medium,
            mitre: None,
            exe: None,
        };
        self.raise(event, AlertKind::LogTemplate, &obs, explanation, raised);
    }

    /// Counts an event into its service's rate series.
    pub(super) fn count_rate(
        &mut self,
        event: &Event,
        template: Option<u32>,
        raised: &mut Vec<Alert>,
    ) {
        let settings = &self.config.rate;
        let bucket = event.time.0.div_euclid(nanos(settings.bucket).max(1));
        let state = self
            .services
            .get_mut(&event.service)
            .expect("observed service");
        let monitoring = state.phase != Phase::Learning;
        let mut found = Vec::new();
        found.extend(state.rates.count(event.kind.name(), bucket, settings));
        if let Some(id) = template
            && state.rates.templates.contains(&id)
        {
            found.extend(state.rates.count(&format!("log #{id}"), bucket, settings));
        }
        if monitoring {
            for f in found {
                self.rate_alert(&event.service, &f, raised);
            }
        }
    }

    /// Moves the rate clock to `now`, the low watermark of the input partitions (the
    /// pipeline's `pipeline::watermark`; a replay's newest event): buckets every
    /// series has passed are closed and scored, so that a service gone silent is
    /// noticed. Only the clock closes buckets, so how partitions interleave changes no
    /// count.
    pub fn advance(&mut self, now: Nanos, raised: &mut Vec<Alert>) {
        // Never past the robust clock: a future-dated record closes no bucket early.
        let now = match self.clock.now() {
            i64::MIN => now,
            clock => Nanos(now.0.min(clock)),
        };
        // One bucket of slack for events that arrive a little out of order.
        let bucket = now.0.div_euclid(nanos(self.config.rate.bucket).max(1)) - 1;
        if bucket <= self.rate_clock {
            return;
        }
        self.rate_clock = bucket;
        self.evict_idle(now.0);
        let settings = &self.config.rate;
        let mut found = Vec::new();
        // Rate buckets are not in any view: closing them marks no service changed.
        for (name, state) in self.services.iter_mut_unpublished() {
            let closed = state.rates.advance(bucket, settings);
            if state.phase != Phase::Learning {
                found.extend(closed.into_iter().map(|f| (name.clone(), f)));
            }
        }
        found.sort_by(|a, b| (&a.0, &a.1.series).cmp(&(&b.0, &b.1.series)));
        for (service, f) in found {
            self.rate_alert(&service, &f, raised);
        }
    }

    pub(super) fn rate_alert(&mut self, service: &str, f: &RateFinding, raised: &mut Vec<Alert>) {
        let way = match f.direction {
            Direction::Down => "drop",
            _ => "spike",
        };
        let key = format!("{} {way}", f.series);
        let bucket = self.config.rate.bucket;
        let time = Nanos(f.bucket_start.saturating_mul(1_000_000_000));
        if self.count_repeat_at(service, time, None, AlertKind::Rate, &key) {
            return;
        }
        let series = match f.series.strip_prefix("log #") {
            Some(id) => {
                let text = id
                    .parse()
                    .ok()
                    .and_then(|id| self.services.get(service)?.logs.miner().template(id))
                    .map(|t| t.text())
                    .unwrap_or_default();
                format!("log lines of template #{id} `{text}`")
            }
            None => format!("{} events", f.series),
        };
        let recent = f
            .recent
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let explanation = format!(
            "A {way} of {series} for {service}: {} in the {} from {} (anomaly score {:.2}); the {} before: {recent}.",
            f.value,
            humantime::format_duration(bucket),
            crate::anomaly::format_timestamp(f.bucket_start),
            f.score,
            if f.recent.len() == 1 {
                "bucket"
            } else {
                "buckets"
            },
        );
        // Medium pages: a near-certain score, and a count a steady rate would give less
        // than once in a million buckets (two years of minutes). With many series over
        // a day, four Poisson deviations alone come up a few times: those stay low.
        let mean = if f.recent.is_empty() {
            0.0
        } else {
            f.recent.iter().sum::<u64>() as f64 / f.recent.len() as f64
        };
        let chance = crate::rates::poisson_tail(f.value, mean);
        let severity = if f.score >= 0.99 && chance <= 1e-6 {
            Severity::Medium
        } else {
            Severity::Low
        };
        let explanation = format!(
            "{explanation} At the recent mean, a steady rate gives a count this far out with probability {chance:.1e}."
        );
        let obs = Observation {
            dimension: Dimension::Rate,
            key,
            severity,
            mitre: None,
            exe: None,
        };
        let alert = self.new_alert(
            service,
            time,
            Vec::new(),
            AlertKind::Rate,
            &obs,
            explanation,
        );
        self.record(alert, raised);
    }

    /// A sensor's report on itself: lost events raise (or count into) one alert per
    /// sensor and node; throttling raises one that its end resolves.
    pub(super) fn sensor_health(&mut self, event: &Event, raised: &mut Vec<Alert>) {
        let EventKind::SensorHealth {
            sensor,
            report,
            lost,
            seen,
            detail,
        } = &event.kind
        else {
            return;
        };
        let node = event.workload.node.as_deref().unwrap_or("an unnamed node");
        let name = sensor_name(sensor);
        let (subject, explanation) = match report {
            SensorReport::Dropped | SensorReport::Metrics if *lost == 0 => return,
            SensorReport::Dropped | SensorReport::Metrics => {
                let window = match (report, sensor.as_str()) {
                    (SensorReport::Metrics, _) => {
                        " syscall events since its previous metrics snapshot"
                    }
                    (_, "falco") => " syscall events in the last second",
                    _ => " events since its last report",
                };
                let of = seen.map_or(String::new(), |s| format!(" (of {} seen)", thousands(s)));
                (
                    format!("{sensor} on {node} loses events"),
                    format!(
                        "{node}'s {name} dropped {}{window}{of}: detection there is partly blind, and what \
                         it did not see raises no alert. A sensor drops events when its buffers overflow \
                         (a busy node, too small a ring buffer) or its rate limit is reached.{}",
                        thousands(*lost),
                        detail
                            .as_deref()
                            .map(|d| format!(" It said: {d}"))
                            .unwrap_or_default()
                    ),
                )
            }
            SensorReport::Throttled | SensorReport::Resumed => {
                let what = detail.as_deref().unwrap_or("a cgroup");
                let subject = format!("{sensor} on {node} throttles {what}");
                if *report == SensorReport::Resumed {
                    if let Some(alert) = self.resolve_health(AlertKind::SensorHealth, &subject) {
                        raised.push(alert);
                    }
                    return;
                }
                let explanation = format!(
                    "{node}'s {name} stopped reporting the process events of {what} to keep up: \
                     detection is blind to them until it reports them again (the alert resolves then)."
                );
                (subject, explanation)
            }
        };
        let (alert, new) = self.raise_health(
            event.time,
            AlertKind::SensorHealth,
            Severity::High,
            &subject,
            explanation,
        );
        if new {
            raised.push(alert);
        }
    }
}

/// A sensor's name as its project writes it.
fn sensor_name(sensor: &str) -> String {
    match sensor {
        "falco" => "Falco".to_owned(),
        "tetragon" => "Tetragon".to_owned(),
        other => other.to_owned(),
    }
}

/// `1204567` as `1,204,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use ingest::event::{Source, Workload};

    use super::*;

    const T0: i64 = 1_772_445_600 * 1_000_000_000;

    fn health(second: i64, sensor: &str, report: SensorReport, lost: u64, detail: &str) -> Event {
        Event {
            time: Nanos(T0 + second * 1_000_000_000),
            source: Source::Falco,
            provenance: Provenance::default(),
            workload: Workload {
                node: Some("node-a".into()),
                ..Workload::default()
            },
            service: "unattributed/node-a".into(),
            kind: EventKind::SensorHealth {
                sensor: sensor.into(),
                report,
                lost,
                seen: Some(90_210),
                detail: Some(detail.into()),
            },
        }
    }

    #[test]
    fn dropped_events_raise_one_alert_per_sensor_and_node_and_learn_nothing() {
        let mut d = Detector::new(DetectConfig::default());
        let mut raised = Vec::new();
        d.observe(
            &health(0, "falco", SensorReport::Dropped, 1204, "x"),
            &mut raised,
        );
        d.observe(
            &health(1, "falco", SensorReport::Dropped, 7, "x"),
            &mut raised,
        );
        d.observe(
            &health(2, "falco", SensorReport::Dropped, 0, "x"),
            &mut raised,
        );
        assert_eq!(raised.len(), 1, "{raised:?}");
        let a = &raised[0];
        assert_eq!(
            (a.kind, a.severity),
            (AlertKind::SensorHealth, Severity::High)
        );
        assert_eq!(a.subject, "falco on node-a loses events");
        assert!(
            a.explanation.starts_with(
                "node-a's Falco dropped 1,204 syscall events in the last second (of 90,210 seen): \
                 detection there is partly blind"
            ),
            "{}",
            a.explanation
        );
        assert_eq!(
            d.alert(&a.id).unwrap().count,
            2,
            "the second drop counts in"
        );
        assert!(d.services().next().is_none(), "no service learned from it");
    }

    #[test]
    fn a_metrics_snapshot_that_counted_drops_raises_the_same_alert() {
        let mut d = Detector::new(DetectConfig::default());
        let mut raised = Vec::new();
        d.observe(
            &health(0, "falco", SensorReport::Metrics, 0, "x"),
            &mut raised,
        );
        assert!(raised.is_empty(), "nothing dropped, nothing raised");
        d.observe(
            &health(60, "falco", SensorReport::Metrics, 1200, "x"),
            &mut raised,
        );
        assert_eq!(raised[0].subject, "falco on node-a loses events");
        assert!(
            raised[0]
                .explanation
                .contains("dropped 1,200 syscall events since its previous metrics snapshot"),
            "{}",
            raised[0].explanation
        );
    }

    #[test]
    fn throttling_raises_an_alert_its_end_resolves() {
        let mut d = Detector::new(DetectConfig::default());
        let mut raised = Vec::new();
        d.observe(
            &health(0, "tetragon", SensorReport::Throttled, 0, "pod42.slice"),
            &mut raised,
        );
        assert_eq!(
            raised[0].subject,
            "tetragon on node-a throttles pod42.slice"
        );
        d.observe(
            &health(9, "tetragon", SensorReport::Resumed, 0, "pod42.slice"),
            &mut raised,
        );
        assert_eq!(raised.len(), 2);
        assert_eq!(raised[1].status, AlertStatus::Resolved);
        assert_eq!(raised[1].id, raised[0].id);
    }
}
