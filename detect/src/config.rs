//! Detection settings (`[detect]` in the config file).

use std::time::Duration;

use serde::Deserialize;

use crate::logs::LogConfig;
use crate::rates::RateSettings;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DetectConfig {
    /// A service learns for at least this long in event time…
    #[serde(default = "default_learning_period", with = "humantime_serde")]
    pub learning_period: Duration,
    /// …and until it has seen at least this many events.
    #[serde(default = "default_min_learning_events")]
    pub min_learning_events: u64,
    /// After a new image digest, new behaviour is learned (and reported as `info`) for
    /// this long instead of raising drift.
    #[serde(default = "default_image_grace", with = "humantime_serde")]
    pub image_grace: Duration,
    /// The same subject on the same service within this window increments the open
    /// alert instead of raising a new one.
    #[serde(default = "default_dedup_window", with = "humantime_serde")]
    pub dedup_window: Duration,
    /// A sensor (Falco) alert joins a drift alert about the same act within this much
    /// event time of it.
    #[serde(default = "default_correlation_window", with = "humantime_serde")]
    pub correlation_window: Duration,
    /// Baseline entries a service may hold; past it nothing more is learned and one
    /// alert says so.
    #[serde(default = "default_max_baseline_entries")]
    pub max_baseline_entries: usize,
    /// IPv4 destinations are learned as networks of this prefix length.
    #[serde(default = "default_ipv4_prefix")]
    pub ipv4_prefix: u8,
    /// IPv6 destinations are learned as networks of this prefix length.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// A dimension still growing when learning ends (new entries still come often)
    /// keeps learning for at most this long, reporting what it learns at `low`…
    #[serde(default = "default_growth_period", with = "humantime_serde")]
    pub growth_period: Duration,
    /// …and at most this many more entries per dimension.
    #[serde(default = "default_growth_max_entries")]
    pub growth_max_entries: u64,
    /// Services tracked at most. Events of a service beyond it are not judged; one
    /// `capacity` alert says so. Existing services are watched as before.
    #[serde(default = "default_max_services")]
    pub max_services: usize,
    /// A service with no event for this long (in event time) is forgotten, which
    /// frees its room; it learns again if it comes back.
    #[serde(default = "default_service_retention", with = "humantime_serde")]
    pub service_retention: Duration,
    /// Alerts kept in memory (and in the state file) at most; past it the oldest
    /// resolved ones go first, then the oldest. Delivered alerts stay with the receivers.
    #[serde(default = "default_max_alerts")]
    pub max_alerts: usize,
    /// Log templates and template-mix drift (`[detect.logs]`).
    #[serde(default)]
    pub logs: LogConfig,
    /// Rate anomalies per event kind and log template (`[detect.rate]`).
    #[serde(default)]
    pub rate: RateSettings,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            learning_period: default_learning_period(),
            min_learning_events: default_min_learning_events(),
            image_grace: default_image_grace(),
            dedup_window: default_dedup_window(),
            correlation_window: default_correlation_window(),
            max_baseline_entries: default_max_baseline_entries(),
            ipv4_prefix: default_ipv4_prefix(),
            ipv6_prefix: default_ipv6_prefix(),
            growth_period: default_growth_period(),
            growth_max_entries: default_growth_max_entries(),
            max_services: default_max_services(),
            service_retention: default_service_retention(),
            max_alerts: default_max_alerts(),
            logs: LogConfig::default(),
            rate: RateSettings::default(),
        }
    }
}

/// 20,000: ten times the services of a large cluster; a service with a full baseline
/// holds some tens of KiB, so the cap is a few hundred MiB at most.
fn default_max_services() -> usize {
    20_000
}
/// Seven days: a weekly job's service keeps its baseline between runs.
fn default_service_retention() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
/// 100,000: weeks of a noisy cluster's alerts, about 200 MiB at most.
fn default_max_alerts() -> usize {
    100_000
}

/// One hour: long enough to see a service's periodic jobs of the hour, short enough to
/// protect a new service soon.
fn default_learning_period() -> Duration {
    Duration::from_secs(3600)
}
/// 100 events: an hour of a nearly idle service is not a baseline.
fn default_min_learning_events() -> u64 {
    100
}
/// Ten minutes: a rollout's new pods start and settle well within it.
fn default_image_grace() -> Duration {
    Duration::from_secs(600)
}
/// One hour: a repeated act within an hour is the same incident for a pager.
fn default_dedup_window() -> Duration {
    Duration::from_secs(3600)
}
/// Five minutes: sensors report the same syscall within seconds; minutes cover
/// shipping delays between topics.
fn default_correlation_window() -> Duration {
    Duration::from_secs(300)
}
/// 10,000 entries: hundreds of times what a well-behaved service learns.
fn default_max_baseline_entries() -> usize {
    10_000
}
/// A day: a workload's daily cycle (batch windows, traffic peaks, the nightly job)
/// shows what an hour of learning missed.
fn default_growth_period() -> Duration {
    Duration::from_secs(24 * 3600)
}
/// 500 entries: more than a settling dimension finds in a day, few enough that a
/// dimension that never settles pages again.
fn default_growth_max_entries() -> u64 {
    500
}
/// /32: exact addresses; set 24 to learn destination subnets.
fn default_ipv4_prefix() -> u8 {
    32
}
/// /64: one IPv6 subnet, the smallest unit addresses are assigned from.
fn default_ipv6_prefix() -> u8 {
    64
}
