//! Delivery settings (`[notify]`): sinks, and routes that say which alerts and findings
//! go to which sink.

use std::path::PathBuf;
use std::time::Duration;

use detect::Severity;
use serde::Deserialize;

use crate::message::Item;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotifyConfig {
    /// Where pending notifications are kept.
    #[serde(default = "default_outbox")]
    pub outbox_dir: PathBuf,
    /// Pending notifications at most; past it new ones are refused (and counted).
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// The API's address as responders reach it, for links in notifications.
    #[serde(default)]
    pub link_base: Option<String>,
    /// The delivery thread's nice value (0 to 19): above 0, ingest has the CPU first
    /// when both want it, and delivery runs whenever a core is free.
    #[serde(default = "default_nice")]
    pub nice: i32,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkConfig>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            outbox_dir: default_outbox(),
            max_pending: default_max_pending(),
            link_base: None,
            nice: default_nice(),
            retry: RetryConfig::default(),
            sinks: Vec::new(),
            routes: Vec::new(),
        }
    }
}

fn default_outbox() -> PathBuf {
    PathBuf::from("outbox")
}

fn default_max_pending() -> usize {
    10_000
}

fn default_nice() -> i32 {
    10
}

/// Exponential backoff with full jitter between `initial` and `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetryConfig {
    #[serde(with = "humantime_serde", default = "default_initial")]
    pub initial: Duration,
    #[serde(with = "humantime_serde", default = "default_max")]
    pub max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: default_initial(),
            max: default_max(),
        }
    }
}

fn default_initial() -> Duration {
    Duration::from_secs(1)
}

fn default_max() -> Duration {
    Duration::from_secs(300)
}

/// A sink. Unknown keys are refused, naming the sink and the keys its type takes
/// (serde's own check does not work through the flattened kind).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    rename_all = "kebab-case",
    try_from = "serde_json::Map<String, serde_json::Value>"
)]
pub struct SinkConfig {
    pub name: String,
    #[serde(flatten)]
    pub kind: SinkKind,
    /// Requests per second at most (PagerDuty takes about 2 per routing key).
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Alerts about one service within this window go out as one notification (Slack
    /// and webhooks; PagerDuty and Alertmanager keep one identity per alert). 0: none.
    #[serde(with = "humantime_serde", default)]
    pub group_window: Duration,
    /// How long one request may take before it counts as failed (and is retried).
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The same fields, read after the keys are checked.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct CheckedSink {
    name: String,
    #[serde(flatten)]
    kind: SinkKind,
    #[serde(default = "default_rate")]
    rate: f64,
    #[serde(with = "humantime_serde", default)]
    group_window: Duration,
    #[serde(with = "humantime_serde", default = "default_timeout")]
    timeout: Duration,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for SinkConfig {
    type Error = String;

    fn try_from(raw: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let name = raw
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or("?")
            .to_owned();
        let kind = raw.get("type").and_then(|t| t.as_str()).unwrap_or_default();
        let own: &[&str] = match kind {
            "pagerduty" => &["url", "routing-key", "routing-key-env"],
            "alertmanager" => &["url", "resend-interval"],
            "slack" => &["url"],
            "webhook" => &["url", "secret", "secret-env"],
            other => {
                return Err(format!(
                    "notify sink {name:?}: type {other:?} is not pagerduty, alertmanager, slack or webhook"
                ));
            }
        };
        let common = ["name", "type", "rate", "group-window", "timeout"];
        if let Some(unknown) = raw
            .keys()
            .find(|k| !common.contains(&k.as_str()) && !own.contains(&k.as_str()))
        {
            return Err(format!(
                "notify sink {name:?}: unknown key {unknown:?} (a {kind} sink takes {})",
                common
                    .iter()
                    .chain(own)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let s: CheckedSink = serde_json::from_value(serde_json::Value::Object(raw))
            .map_err(|e| format!("notify sink {name:?}: {e}"))?;
        Ok(SinkConfig {
            name: s.name,
            kind: s.kind,
            rate: s.rate,
            group_window: s.group_window,
            timeout: s.timeout,
        })
    }
}

fn default_rate() -> f64 {
    2.0
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SinkKind {
    /// PagerDuty Events API v2.
    #[serde(rename_all = "kebab-case")]
    Pagerduty {
        #[serde(default = "default_pagerduty_url")]
        url: String,
        routing_key: Option<String>,
        /// An environment variable holding the routing key.
        routing_key_env: Option<String>,
    },
    /// Prometheus Alertmanager (`/api/v2/alerts` is appended).
    #[serde(rename_all = "kebab-case")]
    Alertmanager {
        url: String,
        /// How often firing alerts are sent again.
        #[serde(with = "humantime_serde", default = "default_resend")]
        resend_interval: Duration,
    },
    /// A Slack incoming webhook.
    Slack { url: String },
    /// A JSON webhook signed per Standard Webhooks.
    #[serde(rename_all = "kebab-case")]
    Webhook {
        url: String,
        /// `whsec_<base64>`; or `secret-env`. Without either, requests are not signed.
        secret: Option<String>,
        secret_env: Option<String>,
    },
}

fn default_pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

fn default_resend() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouteConfig {
    pub name: String,
    pub sink: String,
    /// The least severity that goes (default: all).
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Alert kinds (`process`, `file`, …, and `compliance` for findings); empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Service patterns with `*` wildcards; empty: all.
    #[serde(default)]
    pub services: Vec<String>,
    /// Frameworks a finding must refer to; empty: all.
    #[serde(default)]
    pub frameworks: Vec<String>,
    #[serde(default = "yes")]
    pub alerts: bool,
    /// Failing compliance findings.
    #[serde(default)]
    pub findings: bool,
}

fn yes() -> bool {
    true
}

impl RouteConfig {
    pub fn matches(&self, item: &Item) -> bool {
        let wanted = if item.source == "finding" {
            self.findings
        } else {
            self.alerts
        };
        wanted
            && self.min_severity.is_none_or(|m| item.severity >= m)
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| *k == item.kind))
            && (self.services.is_empty()
                || self
                    .services
                    .iter()
                    .any(|p| compliance::report::service_matches(p, &item.service)))
            && (self.frameworks.is_empty()
                || item
                    .frameworks()
                    .any(|f| self.frameworks.iter().any(|w| w == f)))
    }
}

impl NotifyConfig {
    /// Checks names, references and secrets; says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !(0..=19).contains(&self.nice) {
            return Err(format!("notify nice is {}: it must be 0 to 19", self.nice));
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.sinks {
            if !names.insert(s.name.as_str()) {
                return Err(format!("notify sink {:?} is defined twice", s.name));
            }
            if !(s.rate > 0.0) {
                return Err(format!("notify sink {:?}: rate must be above 0", s.name));
            }
            let url = match &s.kind {
                SinkKind::Pagerduty {
                    url,
                    routing_key,
                    routing_key_env,
                } => {
                    if routing_key.is_none() && routing_key_env.is_none() {
                        return Err(format!(
                            "notify sink {:?}: routing-key or routing-key-env is required",
                            s.name
                        ));
                    }
                    url
                }
                SinkKind::Alertmanager { url, .. } | SinkKind::Slack { url } => url,
                SinkKind::Webhook { url, secret, .. } => {
                    if let Some(secret) = secret {
                        crate::sign::Secret::parse(secret)
                            .map_err(|e| format!("notify sink {:?}: {e}", s.name))?;
                    }
                    url
                }
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "notify sink {:?}: {} is not an http(s) URL",
                    s.name,
                    crate::redact::url(url)
                ));
            }
        }
        for r in &self.routes {
            if !names.contains(r.sink.as_str()) {
                return Err(format!(
                    "notify route {:?} names no sink {:?}",
                    r.name, r.sink
                ));
            }
            for f in &r.frameworks {
                if compliance::Framework::parse(f).is_none() {
                    return Err(format!(
                        "notify route {:?}: unknown framework {f:?}",
                        r.name
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NotifyConfig, String> {
        let c: NotifyConfig = toml::from_str(s).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn sinks_and_routes_are_checked() {
        let ok = parse(
            "[[sink]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\nresend-interval = \"30s\"\n[[route]]\nname = \"r\"\nsink = \"am\"\nmin-severity = \"high\"\n",
        )
        .unwrap();
        assert_eq!(ok.sinks[0].rate, 2.0);
        for (bad, says) in [
            (
                "[[sink]]\nname = \"s\"\ntype = \"slack\"\nurll = \"http://x\"",
                "unknown key \"urll\"",
            ),
            (
                "[[sink]]\nname = \"s\"\ntype = \"teams\"\nurl = \"http://x\"",
                "type \"teams\"",
            ),
            (
                "[[sink]]\nname = \"s\"\ntype = \"slack\"\nurl = \"ftp://x\"",
                "not an http(s) URL",
            ),
            (
                "[[sink]]\nname = \"p\"\ntype = \"pagerduty\"",
                "routing-key",
            ),
            (
                "[[sink]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"http://x\"\nsecret = \"whsec_!!\"",
                "base64",
            ),
            (
                "[[route]]\nname = \"r\"\nsink = \"nowhere\"",
                "names no sink",
            ),
            ("nice = -5", "0 to 19"),
            (
                "[[sink]]\nname = \"s\"\ntype = \"slack\"\nurl = \"http://x\"\n[[route]]\nname = \"r\"\nsink = \"s\"\nframeworks = [\"sox\"]",
                "unknown framework",
            ),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
