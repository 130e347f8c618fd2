//! The one normalized `Event` every input format decodes into.
//!
//! Its serde form is driftwatch's *native* input format: what the simulator publishes,
//! what a custom shipper writes, and what the golden decoder tests expect. The layout is
//! documented in `docs/native-format.md`; keep the two in step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::Nanos;

/// One thing that happened in or to a container, normalized from any input format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event time (UTC). Every window downstream is measured in event time.
    pub time: Nanos,
    /// Which input format produced the event (`native` when a native record omits it).
    #[serde(default = "Source::native")]
    pub source: Source,
    /// Where the record came from, so an alert can cite it.
    #[serde(default, skip_serializing_if = "Provenance::is_unknown")]
    pub provenance: Provenance,
    /// The workload the event belongs to.
    #[serde(default)]
    pub workload: Workload,
    /// Derived service key (see [`crate::service::ServiceKeyer`]); every replica of a
    /// deployment shares it. Native input may leave it out and have it derived.
    #[serde(default)]
    pub service: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The input format an event was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Falco,
    Tetragon,
    K8sAudit,
    Docker,
    Log,
    Native,
}

impl Source {
    pub const ALL: [Source; 6] = [
        Source::Falco,
        Source::Tetragon,
        Source::K8sAudit,
        Source::Docker,
        Source::Log,
        Source::Native,
    ];

    fn native() -> Source {
        Source::Native
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Falco => "falco",
            Source::Tetragon => "tetragon",
            Source::K8sAudit => "k8s_audit",
            Source::Docker => "docker",
            Source::Log => "log",
            Source::Native => "native",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a record was read: a Kafka topic/partition/offset, or a file and line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// Kafka topic, or the replayed file's path (`-` for stdin).
    #[serde(default)]
    pub origin: String,
    /// Kafka partition; absent for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Kafka offset, or the 1-based line number in a file.
    #[serde(default)]
    pub offset: i64,
}

impl Provenance {
    pub fn kafka(topic: &str, partition: i32, offset: i64) -> Self {
        Provenance {
            origin: topic.to_owned(),
            partition: Some(partition),
            offset,
        }
    }

    pub fn file(path: &str, line: i64) -> Self {
        Provenance {
            origin: path.to_owned(),
            partition: None,
            offset: line,
        }
    }

    pub fn is_unknown(&self) -> bool {
        self.origin.is_empty() && self.partition.is_none() && self.offset == 0
    }
}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.partition {
            Some(p) => write!(f, "{}/{}@{}", self.origin, p, self.offset),
            None => write!(f, "{}:{}", self.origin, self.offset),
        }
    }
}

/// The workload identity of an event. Every field is optional: sources know different
/// parts of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Container id, normalized to the 12-hex short form every source can produce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Image::is_empty")]
    pub image: Image,
    /// The owning workload (Deployment, StatefulSet, …) when the source knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_kind: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A container image reference split into its parts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl Image {
    pub fn is_empty(&self) -> bool {
        self.repository.is_none() && self.tag.is_none() && self.digest.is_none()
    }

    /// Splits `registry:5000/repo/name:tag@sha256:…` into repository, tag and digest.
    /// The tag separator is the last `:` after the last `/`, so a registry port is kept
    /// in the repository.
    pub fn parse(reference: &str) -> Image {
        let reference = reference.trim();
        if reference.is_empty() {
            return Image::default();
        }
        // An image referenced by id: `sha256:…` alone is a digest, not repository:tag.
        if reference.starts_with("sha256:") && !reference.contains('/') {
            return Image {
                digest: Some(reference.to_owned()),
                ..Image::default()
            };
        }
        let (name, digest) = match reference.split_once('@') {
            Some((n, d)) => (n, Some(d.to_owned())),
            None => (reference, None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name[..at], Some(name[at + 1..].to_owned()))
            }
            None => (name, None),
        };
        Image {
            repository: (!repository.is_empty()).then(|| repository.to_owned()),
            tag: tag.filter(|t| !t.is_empty()),
            digest,
        }
    }

    /// Fills the parts this image lacks from another reference of the same image.
    pub fn merge(&mut self, other: Image) {
        if self.repository.is_none() {
            self.repository = other.repository;
        }
        if self.tag.is_none() {
            self.tag = other.tag;
        }
        if self.digest.is_none() {
            self.digest = other.digest;
        }
    }
}

/// What happened, one variant per kind of behaviour driftwatch learns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// A process started (execve).
    ProcessExec { process: Process },
    /// A process ended.
    ProcessExit {
        process: Process,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
    },
    /// A file was read, written, created, chmod-ed or removed.
    FileAccess {
        op: FileOp,
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        process: Option<Process>,
    },
    /// An outbound connection or an accepted inbound one.
    Network {
        direction: Direction,
        address: String,
        port: u16,
        protocol: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dns_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        process: Option<Process>,
    },
    /// Somebody ran a command inside a running container (`kubectl exec`, `docker exec`).
    ExecInto {
        /// Who: the Kubernetes user, or `docker` when the engine does not say.
        actor: String,
        command: Vec<String>,
        via: ExecVia,
        /// `Some(false)` when the API server denied it; `None` when the source does not say.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allowed: Option<bool>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        source_ips: Vec<String>,
    },
    /// A container was created, started, stopped, …, with what is known about it.
    Container {
        action: String,
        #[serde(default, skip_serializing_if = "ContainerFacts::is_empty")]
        facts: ContainerFacts,
    },
    /// One line a container wrote.
    Log {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<String>,
        message: String,
        /// The service's log template the line belongs to, set by detection (the
        /// template miner); input leaves it out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template_id: Option<u32>,
    },
    /// An alert a sensor (Falco) raised itself, with the fields it carried.
    SensorAlert {
        rule: String,
        priority: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tags: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        process: Option<Process>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        /// The remote end of the connection the alert is about (`address:port`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
    },
    /// A sensor reporting on itself: events it lost or stopped reporting on the node in
    /// `workload.node` (Falco's syscall event drops, Tetragon's throttling). Not
    /// behaviour of any service: nothing is learned from it.
    SensorHealth {
        /// `falco` or `tetragon`.
        sensor: String,
        /// What the sensor reports ([`SensorReport`]).
        report: SensorReport,
        /// Events it says it lost in the report's window.
        #[serde(default)]
        lost: u64,
        /// Events it handled in the same window, when it says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seen: Option<u64>,
        /// The sensor's own words, or what it reports about (a cgroup).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}

/// What a sensor says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorReport {
    /// It dropped events it should have seen (Falco: in the last second).
    Dropped,
    /// It stopped reporting some events to keep up (Tetragon's `THROTTLE_START`).
    Throttled,
    /// It reports them again (`THROTTLE_STOP`).
    Resumed,
    /// A periodic snapshot of its counters (Falco's metrics): `lost` is what it dropped
    /// since the previous snapshot.
    Metrics,
}

impl SensorReport {
    pub fn as_str(self) -> &'static str {
        match self {
            SensorReport::Dropped => "dropped",
            SensorReport::Throttled => "throttled",
            SensorReport::Resumed => "resumed",
            SensorReport::Metrics => "metrics",
        }
    }
}

impl EventKind {
    /// The `kind` tag, as it appears in native JSON and in the `events` table.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::ProcessExec { .. } => "process_exec",
            EventKind::ProcessExit { .. } => "process_exit",
            EventKind::FileAccess { .. } => "file_access",
            EventKind::Network { .. } => "network",
            EventKind::ExecInto { .. } => "exec_into",
            EventKind::Container { .. } => "container",
            EventKind::Log { .. } => "log",
            EventKind::SensorAlert { .. } => "sensor_alert",
            EventKind::SensorHealth { .. } => "sensor_health",
        }
    }

    /// The process the event is about, when it names one.
    pub fn process(&self) -> Option<&Process> {
        match self {
            EventKind::ProcessExec { process } | EventKind::ProcessExit { process, .. } => {
                Some(process)
            }
            EventKind::FileAccess { process, .. }
            | EventKind::Network { process, .. }
            | EventKind::SensorAlert { process, .. } => process.as_ref(),
            _ => None,
        }
    }
}

/// A process as the sensors describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Executable path (or the bare name when the sensor gives no path).
    pub exe: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_exe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    Read,
    Write,
    Create,
    Chmod,
    Unlink,
}

impl FileOp {
    pub fn as_str(self) -> &'static str {
        match self {
            FileOp::Read => "read",
            FileOp::Write => "write",
            FileOp::Create => "create",
            FileOp::Chmod => "chmod",
            FileOp::Unlink => "unlink",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Connect,
    Accept,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Connect => "connect",
            Direction::Accept => "accept",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecVia {
    K8sAudit,
    Docker,
}

impl ExecVia {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecVia::K8sAudit => "k8s_audit",
            ExecVia::Docker => "docker",
        }
    }
}

/// What is known about a container from its lifecycle events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerFacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_rootfs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

impl ContainerFacts {
    pub fn is_empty(&self) -> bool {
        *self == ContainerFacts::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: String,
    pub destination: String,
    #[serde(default)]
    pub read_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_reference_keeps_the_registry_port_in_the_repository() {
        let image = Image::parse("registry.local:5000/acme/api:2.1@sha256:abc");
        assert_eq!(
            image.repository.as_deref(),
            Some("registry.local:5000/acme/api")
        );
        assert_eq!(image.tag.as_deref(), Some("2.1"));
        assert_eq!(image.digest.as_deref(), Some("sha256:abc"));
    }

    #[test]
    fn image_reference_without_tag_has_none() {
        let image = Image::parse("registry.local:5000/acme/api");
        assert_eq!(
            image.repository.as_deref(),
            Some("registry.local:5000/acme/api")
        );
        assert_eq!(image.tag, None);
    }
}
