//! Log drift: each service's template miner, what each template looked like when it
//! appeared, and the two log alerts: a template never seen while the service learned,
//! and a shift in the mix of templates (Jensen–Shannon divergence between the learned
//! distribution and a sliding window of recent lines).
//!
//! A template is a baseline entry like a process or a destination (dimension
//! `log_template`, key `#<id>`), so learning, the image grace period, locking,
//! accepting and the entry cap treat it like any other behaviour.

use std::collections::{HashMap, VecDeque};

use ingest::Nanos;
use serde::{Deserialize, Serialize};

use crate::alert::Severity;
use crate::templates::{Added, Miner, MinerConfig, MinerSnapshot};

/// Log settings (`[detect.logs]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogConfig {
    /// The template miner, one per service (the defaults serve every log format).
    #[serde(default)]
    pub templates: MinerConfig,
    /// Recent lines the template mix is measured over.
    #[serde(default = "default_mix_window")]
    pub mix_window: usize,
    /// Jensen–Shannon divergence (bits, 0 to 1) between the learned template mix and
    /// the recent window above which a `log_template` alert says the mix shifted.
    #[serde(default = "default_mix_threshold")]
    pub mix_threshold: f64,
    /// Lines learned before a service's mix is a baseline at all.
    #[serde(default = "default_mix_min_lines")]
    pub mix_min_lines: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            templates: MinerConfig::default(),
            mix_window: default_mix_window(),
            mix_threshold: default_mix_threshold(),
            mix_min_lines: default_mix_min_lines(),
        }
    }
}

/// 500 lines: enough that sampling noise over a few dozen templates stays far below
/// the threshold (about 0.03 bits), few enough that a shift shows within minutes.
fn default_mix_window() -> usize {
    500
}
/// 0.25 bits: a quarter of the way from identical to disjoint; a template taking over
/// half the lines crosses it, ordinary hour-to-hour variation does not.
fn default_mix_threshold() -> f64 {
    0.25
}
/// 200 lines: a smaller sample is not a distribution.
fn default_mix_min_lines() -> u64 {
    200
}

/// How often (in lines) the mix is measured once the window is full: a tenth of the
/// window, at most every 50 lines (a JSD over 500 lines costs a few microseconds).
fn mix_check_every(window: usize) -> u32 {
    (window / 10).clamp(1, 50) as u32
}

/// Bytes of a line kept as a template's example.
const EXAMPLE_BYTES: usize = 512;

/// What the first line of a template looked like, and when it came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInfo {
    pub first_seen: Nanos,
    pub example: String,
}

/// One service's logs.
#[derive(Debug, Clone, Default)]
pub struct LogState {
    pub(crate) miner: Miner,
    /// By template id.
    pub(crate) info: Vec<TemplateInfo>,
    /// Template counts when learning ended: the mix recent lines are compared with.
    pub(crate) mix_baseline: Vec<(u32, u64)>,
    window: VecDeque<u32>,
    since_check: u32,
}

/// The snapshot form of a service's logs (the recent window is not kept).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogSnapshot {
    pub templates: MinerSnapshot,
    pub info: Vec<TemplateInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mix_baseline: Vec<(u32, u64)>,
}

/// A measured shift of the template mix.
#[derive(Debug, Clone, PartialEq)]
pub struct MixShift {
    pub divergence: f64,
    /// Templates whose share moved most: (id, learned share, recent share).
    pub movers: Vec<(u32, f64, f64)>,
}

fn example(line: &str) -> String {
    let mut end = line.len().min(EXAMPLE_BYTES);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_owned()
}

impl LogState {
    /// Live templates of the service's miner.
    pub fn template_count(&self) -> usize {
        self.miner.len()
    }

    pub fn new(config: &LogConfig) -> Self {
        LogState {
            miner: Miner::new(config.templates.clone()),
            ..LogState::default()
        }
    }

    pub fn miner(&self) -> &Miner {
        &self.miner
    }

    pub fn info(&self, id: u32) -> Option<&TemplateInfo> {
        self.info.get(id as usize)
    }

    /// Mines a line and keeps it in the recent window.
    pub(crate) fn add(&mut self, line: &str, time: Nanos, window: usize) -> Added {
        let added = self.miner.add(line);
        while self.info.len() < self.miner.all_templates().len() {
            self.info.push(TemplateInfo {
                first_seen: time,
                example: example(line),
            });
        }
        if self.window.len() == window.max(1) {
            self.window.pop_front();
        }
        self.window.push_back(added.id);
        self.since_check += 1;
        added
    }

    /// Freezes the learned mix (when learning ends).
    pub(crate) fn freeze_mix(&mut self) {
        self.mix_baseline = self
            .miner
            .templates()
            .map(|t| (t.id, t.count))
            .filter(|(_, n)| *n > 0)
            .collect();
    }

    /// The `n` most frequent templates of the learned mix.
    pub(crate) fn top_templates(&self, n: usize) -> Vec<u32> {
        let mut mix = self.mix_baseline.clone();
        mix.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        mix.into_iter().take(n).map(|(id, _)| id).collect()
    }

    /// Lines the learned mix was counted over.
    pub fn learned_lines(&self) -> u64 {
        self.mix_baseline.iter().map(|(_, n)| n).sum()
    }

    /// The shift of the mix, measured every few lines once the window is full and the
    /// learned mix is large enough; `None` between measurements.
    pub(crate) fn measure_mix(&mut self, config: &LogConfig) -> Option<MixShift> {
        if self.window.len() < config.mix_window
            || self.since_check < mix_check_every(config.mix_window)
            || self.learned_lines() < config.mix_min_lines
        {
            return None;
        }
        self.since_check = 0;
        let mut learned: HashMap<u32, f64> = HashMap::new();
        for (id, n) in &self.mix_baseline {
            *learned.entry(self.miner.resolve(*id)).or_default() += *n as f64;
        }
        let mut recent: HashMap<u32, f64> = HashMap::new();
        for id in &self.window {
            *recent.entry(self.miner.resolve(*id)).or_default() += 1.0;
        }
        Some(divergence(&learned, &recent))
    }

    pub(crate) fn snapshot(&self) -> Option<LogSnapshot> {
        (!self.miner.is_empty()).then(|| LogSnapshot {
            templates: self.miner.snapshot(),
            info: self.info.clone(),
            mix_baseline: self.mix_baseline.clone(),
        })
    }

    pub(crate) fn restore(config: &LogConfig, snapshot: LogSnapshot) -> Self {
        LogState {
            miner: Miner::restore(config.templates.clone(), snapshot.templates),
            info: snapshot.info,
            mix_baseline: snapshot.mix_baseline,
            window: VecDeque::new(),
            since_check: 0,
        }
    }
}

/// Jensen–Shannon divergence in bits between two count distributions, with the
/// templates whose share moved most.
pub fn divergence(p: &HashMap<u32, f64>, q: &HashMap<u32, f64>) -> MixShift {
    let (pn, qn) = (p.values().sum::<f64>(), q.values().sum::<f64>());
    let mut ids: Vec<u32> = p.keys().chain(q.keys()).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut js = 0.0;
    let mut movers = Vec::with_capacity(ids.len());
    for id in ids {
        let a = p.get(&id).copied().unwrap_or(0.0) / pn.max(f64::MIN_POSITIVE);
        let b = q.get(&id).copied().unwrap_or(0.0) / qn.max(f64::MIN_POSITIVE);
        let m = (a + b) / 2.0;
        if a > 0.0 {
            js += 0.5 * a * (a / m).log2();
        }
        if b > 0.0 {
            js += 0.5 * b * (b / m).log2();
        }
        movers.push((id, a, b));
    }
    movers.sort_by(|x, y| {
        (y.2 - y.1)
            .abs()
            .total_cmp(&(x.2 - x.1).abs())
            .then(x.0.cmp(&y.0))
    });
    movers.truncate(5);
    MixShift {
        divergence: js.clamp(0.0, 1.0),
        movers,
    }
}

/// Words that make a new template worth more attention, strongest first.
const ALARMING: [(&str, Severity); 20] = [
    ("segfault", Severity::High),
    ("segmentation fault", Severity::High),
    ("core dumped", Severity::High),
    ("panic", Severity::High),
    ("fatal", Severity::High),
    ("out of memory", Severity::High),
    ("permission denied", Severity::High),
    ("access denied", Severity::High),
    ("unauthorized", Severity::High),
    ("forbidden", Severity::High),
    ("authentication fail", Severity::High),
    ("denied", Severity::High),
    ("traceback", Severity::Medium),
    ("exception", Severity::Medium),
    ("error", Severity::Medium),
    ("fail", Severity::Medium),
    ("refused", Severity::Medium),
    ("timed out", Severity::Medium),
    ("timeout", Severity::Medium),
    ("invalid", Severity::Medium),
];

/// The severity of a new template, from what it says; the word that decided it.
pub fn weigh(template: &str) -> (Severity, Option<&'static str>) {
    let lower = template.to_ascii_lowercase();
    ALARMING
        .iter()
        .find(|(word, _)| lower.contains(word))
        .map_or((Severity::Low, None), |(word, s)| (*s, Some(*word)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_mixes_do_not_diverge_and_disjoint_ones_do_fully() {
        let p: HashMap<u32, f64> = [(1, 50.0), (2, 50.0)].into();
        let same: HashMap<u32, f64> = [(1, 5.0), (2, 5.0)].into();
        let other: HashMap<u32, f64> = [(3, 7.0)].into();
        assert!(divergence(&p, &same).divergence.abs() < 1e-12);
        assert!((divergence(&p, &other).divergence - 1.0).abs() < 1e-12);
        // Half the lines moving to a new template: JSD of (.5,.5,0) vs (.25,.25,.5).
        let shifted: HashMap<u32, f64> = [(1, 25.0), (2, 25.0), (3, 50.0)].into();
        let d = divergence(&p, &shifted);
        assert!((d.divergence - 0.311_278).abs() < 1e-5, "{}", d.divergence);
        assert_eq!(d.movers[0], (3, 0.0, 0.5));
    }

    #[test]
    fn alarming_words_weigh_more() {
        assert_eq!(weigh("worker <*> segfault at <*>").0, Severity::High);
        assert_eq!(weigh("Connection refused to <*>").0, Severity::Medium);
        assert_eq!(weigh("GET <*> 200").0, Severity::Low);
    }
}
