//! What the detector raises beyond one event's novelty: the template cap, shifts in a
//! service's log mix, and rate anomalies as the clock moves.

use super::*;

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

    /// Moves the rate clock to `now` (the newest event time seen): buckets every series
    /// has passed are closed and scored, so that a service gone silent is noticed.
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
}
