//! The daemon's configuration: one serde struct per crate, composed here.
//!
//! Keys are kebab-case, unknown keys are errors, durations are human (`"90s"`), and
//! every default lives in a named function that says where its number comes from.
//! Secrets may come from the environment instead of the file (`DRIFTWATCH_*`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use detect::DetectConfig;

use ingest::{KafkaConfig, ServiceKeyConfig};
use pipeline::StateConfig;
use serde::Deserialize;
use store::{ByteSize, StoreConfig};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub log: LoggingConfig,
    /// Required by `run`; `replay` and `demo` do without.
    pub kafka: Option<KafkaConfig>,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub detect: DetectConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub search: SearchConfig,
    #[serde(default)]
    pub sql: queries::sql::SqlLimits,
    #[serde(default)]
    pub postgres: queries::pg::PgConfig,
    #[serde(default)]
    pub compliance: compliance::worker::ComplianceConfig,
    #[serde(default)]
    pub reports: compliance::ReportsConfig,
    #[serde(default)]
    pub notify: notify::NotifyConfig,
}

/// Full-text search over log lines (`[search]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SearchConfig {
    /// Index log lines at all.
    #[serde(default = "default_search_enabled")]
    pub enabled: bool,
    /// Where the index lives; by default `log-index` in the state's data directory, and
    /// in memory when there is none.
    #[serde(default)]
    pub index_dir: Option<PathBuf>,
    /// Lines become searchable at most this long after they are applied.
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    /// The most the index may take, on disk or in memory; past it older lines go
    /// sooner than the store's retention.
    #[serde(default = "default_search_max_bytes")]
    pub max_bytes: ByteSize,
}

/// 4 GiB: twice the events table's default, since the index keeps every log line's
/// text and terms; far less than a node's disk.
fn default_search_max_bytes() -> ByteSize {
    ByteSize(4 << 30)
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            enabled: default_search_enabled(),
            index_dir: None,
            commit_interval: default_commit_interval(),
            max_bytes: default_search_max_bytes(),
        }
    }
}

fn default_search_enabled() -> bool {
    true
}

/// Five seconds: an analyst searching an incident waits no longer than a page refresh,
/// and a commit (segment flush and file syncs) every few seconds costs little.
fn default_commit_interval() -> Duration {
    Duration::from_secs(5)
}

impl Config {
    /// The log index's directory, if it has one (else it lives in memory).
    pub fn index_dir(&self) -> Option<PathBuf> {
        self.search
            .index_dir
            .clone()
            .or_else(|| self.state.data_dir.as_ref().map(|d| d.join("log-index")))
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoggingConfig {
    /// `pretty` for people, `json` for log shippers.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter (`info`, `driftwatch=debug,rdkafka=warn`). `DRIFTWATCH_LOG`
    /// overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngestConfig {
    /// Records larger than this are dead-lettered unread.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: ByteSize,
    /// Events timed further than this ahead of the wall clock are dead-lettered.
    #[serde(default = "default_max_future_skew", with = "humantime_serde")]
    pub max_future_skew: std::time::Duration,
    /// Events timed further than this behind the newest event are dead-lettered; unset
    /// accepts any lag.
    #[serde(default, with = "humantime_serde")]
    pub max_past_skew: Option<std::time::Duration>,
    #[serde(default)]
    pub service_key: ServiceKeyConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_record_bytes: default_max_record_bytes(),
            max_future_skew: default_max_future_skew(),
            max_past_skew: None,
            service_key: ServiceKeyConfig::default(),
        }
    }
}

fn default_max_future_skew() -> std::time::Duration {
    ingest::decode::DEFAULT_MAX_FUTURE_SKEW
}

fn default_max_record_bytes() -> ByteSize {
    ByteSize(ingest::decode::DEFAULT_MAX_RECORD_BYTES)
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpConfig {
    /// Where the API, `/metrics` and the health endpoints listen. Loopback by default.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// API tokens (their SHA-256) and roles. With none, the API needs no token, which
    /// is only allowed on a loopback address.
    #[serde(default)]
    pub tokens: Vec<crate::api::ApiToken>,
    /// Connections served at once; more wait in the kernel's backlog, so that clients
    /// cannot take the file descriptors the state file, outbox and Kafka client need.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A client must send a request's headers within this long, also between the
    /// requests of a kept-alive connection, or the connection is closed.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: std::time::Duration,
    /// A request (its body, and the answer) that takes longer gets 408.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: std::time::Duration,
    /// The largest request body any route accepts.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: ByteSize,
    /// The nice value of the threads that answer the API (two of their own): above 0,
    /// a dashboard yields the CPU to detection whenever both want it.
    #[serde(default = "default_http_nice")]
    pub nice: i32,
}

/// 10, as `nice` defaults: an answer waits a little when ingest is busy; ingest does
/// not wait for the dashboard.
fn default_http_nice() -> i32 {
    10
}

/// 256: far more than the dashboards, Prometheus and an operator's tools open, far
/// fewer than the default limit of 1,024 file descriptors.
fn default_max_connections() -> usize {
    256
}

/// 10 s: a client on any network sends a request's headers in well under a second.
fn default_header_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

/// 60 s: longer than the SQL time limit (30 s), so a slow query answers for itself.
fn default_request_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

/// 16 MiB: a baseline import of thousands of services; every other body is tiny.
fn default_max_body_bytes() -> ByteSize {
    ByteSize(16 << 20)
}

impl HttpConfig {
    pub fn limits(&self) -> crate::http::HttpLimits {
        crate::http::HttpLimits {
            max_connections: self.max_connections.max(1),
            header_timeout: self.header_timeout,
            request_timeout: self.request_timeout,
            max_body_bytes: self.max_body_bytes.0,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            tokens: Vec::new(),
            max_connections: default_max_connections(),
            header_timeout: default_header_timeout(),
            request_timeout: default_request_timeout(),
            max_body_bytes: default_max_body_bytes(),
            nice: default_http_nice(),
        }
    }
}

/// 8484: driftwatch's HTTP port, on loopback so nothing is exposed by default.
pub fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8484))
}

/// Environment variables that override secrets in the Kafka properties.
const SECRET_ENV: [(&str, &str); 3] = [
    ("DRIFTWATCH_KAFKA_SASL_PASSWORD", "sasl.password"),
    ("DRIFTWATCH_KAFKA_SSL_KEY_PASSWORD", "ssl.key.password"),
    (
        "DRIFTWATCH_KAFKA_SSL_KEYSTORE_PASSWORD",
        "ssl.keystore.password",
    ),
];

/// A TOML error as line, column and message, without the source line TOML quotes and
/// with quoted values masked: the line may hold a password, a token or a sink URL.
fn toml_error(text: &str, e: &toml::de::Error) -> anyhow::Error {
    let at = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("line {line}, column {column}: ")
    });
    let mut message = String::new();
    let mut quoted = false;
    for c in e.message().chars() {
        match c {
            '"' => {
                quoted = !quoted;
                message.push_str(if quoted { "\"…" } else { "\"" });
            }
            _ if quoted => {}
            c => message.push(c),
        }
    }
    anyhow::anyhow!("{}{}", at.unwrap_or_default(), message.trim_end())
}

impl Config {
    /// Reads and checks a config file. Errors name the file, and the line and column
    /// where TOML parsing failed.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config = Config::parse(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        config.apply_env(|k| std::env::var(k).ok());
        Ok(config)
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(kafka) = &mut self.kafka {
            for (env, property) in SECRET_ENV {
                if let Some(v) = var(env) {
                    kafka.properties.insert(property.to_owned(), v);
                }
            }
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(kafka) = &self.kafka {
            if kafka.topics.is_empty() {
                bail!("[kafka] lists no topics: add at least one [[kafka.topics]]");
            }
            if let Some(c) = &self.state.changelog_topic
                && (kafka.repartition_topic.is_none()
                    || self.state.data_dir.is_none()
                    || kafka.topics.iter().any(|t| &t.name == c)
                    || Some(c) == kafka.repartition_topic.as_ref())
            {
                bail!(
                    "[state] changelog-topic {c:?} needs [kafka] repartition-topic (services keyed to \
                     partitions) and [state] data-dir, and a topic of its own"
                );
            }
            if let Some(r) = &kafka.repartition_topic
                && (kafka.topics.iter().any(|t| &t.name == r) || *r == kafka.dead_letter_topic)
            {
                bail!(
                    "[kafka] repartition-topic {r:?} is also read as a raw topic or used for dead letters: \
                     the decode stage would read its own output; give it a topic of its own"
                );
            }
            if let Some(c) = &kafka.cluster_topic
                && (kafka.topics.iter().any(|t| &t.name == c)
                    || *c == kafka.dead_letter_topic
                    || Some(c) == kafka.repartition_topic.as_ref()
                    || Some(c) == self.state.changelog_topic.as_ref())
            {
                bail!(
                    "[kafka] cluster-topic {c:?} is also an input, dead-letter, repartition or changelog \
                     topic: give it a topic of its own"
                );
            }
            if let Some(m) = &kafka.member
                && (m.trim().is_empty() || m.len() > 253 || m.chars().any(char::is_control))
            {
                bail!(
                    "[kafka] member {m:?} is not a name: give each daemon a non-empty name of up to                      253 characters, or leave it out for the host name"
                );
            }
            let mut names = std::collections::HashSet::new();
            for t in &kafka.topics {
                if !names.insert(&t.name) {
                    bail!("[[kafka.topics]] names topic {:?} twice", t.name);
                }
                if t.name == kafka.dead_letter_topic {
                    bail!(
                        "topic {:?} is both an input and the dead-letter topic",
                        t.name
                    );
                }
            }
            if kafka
                .properties
                .get("enable.auto.offset.store")
                .is_some_and(|v| v != "false")
            {
                bail!(
                    "kafka property enable.auto.offset.store must stay false: offsets are stored after events are applied"
                );
            }
        }
        if self.ingest.max_record_bytes.0 == 0 {
            bail!("[ingest] max-record-bytes must be positive");
        }
        if self.store.partition.is_zero() || self.store.retention.is_zero() {
            bail!("[store] retention and partition must be positive durations");
        }
        if self.http.tokens.is_empty() && !self.http.listen.ip().is_loopback() {
            bail!(
                "http.listen is {} (not loopback) but no [[http.tokens]] are configured: \
                 refusing to serve the API without authentication beyond this machine",
                self.http.listen
            );
        }
        crate::api::Api::tokens(&self.http.tokens)?;
        let sql = &self.sql;
        if sql.max_rows == 0
            || sql.timeout.is_zero()
            || sql.threads == 0
            || sql.max_result_bytes == 0
            || sql.max_value_bytes == 0
            || sql.max_batch_bytes == 0
        {
            bail!(
                "[sql] max-rows, timeout, threads, max-result-bytes, max-value-bytes and max-batch-bytes must be positive"
            );
        }
        // Passwords from the environment are read at start; the rest is checked now.
        if self.postgres.enabled
            && self.postgres.users.is_empty()
            && !self.postgres.listen.ip().is_loopback()
        {
            self.postgres.users()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_in_the_repository_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("driftwatch.example.toml");
        let config = Config::load(&path).unwrap();
        let kafka = config.kafka.expect("the example configures Kafka");
        assert!(kafka.topics.len() >= 5);
        assert_eq!(config.http.listen, default_http_listen());
    }

    /// The configuration the Kubernetes manifest mounts is one driftwatch accepts.
    #[test]
    fn the_deployment_manifests_config_loads() {
        let manifest = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/driftwatch.yaml"),
        )
        .unwrap();
        let toml: String = manifest
            .split("driftwatch.toml: |\n")
            .nth(1)
            .expect("the ConfigMap holds driftwatch.toml")
            .lines()
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .map(|l| format!("{}\n", l.get(4..).unwrap_or_default()))
            .collect();
        let config = Config::parse(&toml).unwrap();
        let kafka = config.kafka.expect("the manifest configures Kafka");
        assert_eq!(
            kafka.repartition_topic.as_deref(),
            Some("driftwatch-events")
        );
        assert!(kafka.topics.len() >= 4);
    }

    #[test]
    fn a_repartition_topic_that_is_also_an_input_is_refused() {
        let err = Config::parse(
            "[kafka]\nbrokers = \"b\"\nrepartition-topic = \"falco\"\n\
             [[kafka.topics]]\nname = \"falco\"\nformat = \"falco\"\n",
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("read its own output"),
            "{err:#}"
        );
    }

    #[test]
    fn a_cluster_topic_shared_with_another_use_is_refused() {
        let err = Config::parse(
            "[kafka]\nbrokers = \"b\"\nrepartition-topic = \"events\"\ncluster-topic = \"events\"\n\
             [[kafka.topics]]\nname = \"falco\"\nformat = \"falco\"\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("cluster-topic"), "{err:#}");
    }

    #[test]
    fn a_member_name_must_be_a_name() {
        let parse = |member: &str| {
            Config::parse(&format!(
                "[kafka]\nbrokers = \"b\"\nmember = {member:?}\n\
                 [[kafka.topics]]\nname = \"falco\"\nformat = \"falco\"\n"
            ))
        };
        for bad in ["", "  ", "a\nb"] {
            let err = parse(bad).unwrap_err();
            assert!(format!("{err:#}").contains("[kafka] member"), "{err:#}");
        }
        let c = parse("dw-1").unwrap();
        assert_eq!(c.kafka.unwrap().member.as_deref(), Some("dw-1"));
    }

    #[test]
    fn unknown_keys_are_errors_that_say_where() {
        let err = Config::parse("[store]\nretention = \"1h\"\nretension = \"2h\"\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("retension"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn human_durations_and_sizes_parse() {
        let c = Config::parse("[store]\nretention = \"90m\"\nmax-bytes = \"512MiB\"\n").unwrap();
        assert_eq!(c.store.retention.as_secs(), 5400);
        assert_eq!(c.store.max_bytes.0, 512 << 20);
        assert_eq!(c.ingest.max_past_skew, None);
        let c = Config::parse("[ingest]\nmax-past-skew = \"6h\"\n").unwrap();
        assert_eq!(
            c.ingest.max_past_skew,
            Some(std::time::Duration::from_secs(6 * 3600))
        );
    }

    #[test]
    fn the_offset_store_cannot_be_turned_back_on() {
        let text = "[kafka]\nbrokers = \"b:9092\"\n[[kafka.topics]]\nname = \"t\"\n[kafka.properties]\n\"enable.auto.offset.store\" = \"true\"\n";
        assert!(
            format!("{:#}", Config::parse(text).unwrap_err()).contains("enable.auto.offset.store")
        );
    }

    #[test]
    fn serving_beyond_loopback_needs_credentials() {
        let err = Config::parse("[http]\nlisten = \"0.0.0.0:8484\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("no [[http.tokens]]"), "{err:#}");
        let hash = crate::api::token_hash("t");
        Config::parse(&format!(
            "[http]\nlisten = \"0.0.0.0:8484\"\n[[http.tokens]]\nname = \"ops\"\nrole = \"viewer\"\nsha256 = \"{hash}\"\n"
        ))
        .unwrap();
        let err = Config::parse("[postgres]\nlisten = \"0.0.0.0:5433\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("no postgres.users"), "{err:#}");
        let err =
            Config::parse("[[http.tokens]]\nname = \"ops\"\nrole = \"viewer\"\nsha256 = \"abc\"\n")
                .unwrap_err();
        assert!(format!("{err:#}").contains("64 hex digits"), "{err:#}");
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let mut c =
            Config::parse("[kafka]\nbrokers = \"b:9092\"\n[[kafka.topics]]\nname = \"t\"\n")
                .unwrap();
        c.apply_env(|k| (k == "DRIFTWATCH_KAFKA_SASL_PASSWORD").then(|| "s3cret".to_owned()));
        assert_eq!(c.kafka.unwrap().properties["sasl.password"], "s3cret");
    }

    #[test]
    fn a_config_error_never_repeats_a_value() {
        for text in [
            "[notify]\noutbox-dir = \"/tmp/x\"\n[[notify.sink]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\nsecert = \"SECRET-VALUE\"\n",
            "[postgres]\nusers = [{ name = \"a\", pasword = \"SECRET-VALUE\" }]\n",
            "[http]\ntokens = \"SECRET-VALUE\"\n",
        ] {
            let e = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(!e.contains("SECRET-VALUE"), "{e}");
            assert!(e.contains("line "), "{e}");
        }
    }
}
