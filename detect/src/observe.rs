//! What an event says about its service's behaviour: the baseline entries it touches,
//! and how bad each would be as drift (severity, MITRE ATT&CK technique).

use std::net::IpAddr;

use ingest::Event;
use ingest::event::{Direction, EventKind, FileOp};
use serde::{Deserialize, Serialize};

use crate::alert::{AlertKind, Severity, Technique};
use crate::config::DetectConfig;
use crate::pattern::{basename, fold, fold_args};

/// A dimension of a baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Executable with its parent executable.
    Process,
    /// Argument pattern of a known executable.
    Args,
    /// File write, create, chmod or unlink, by path pattern.
    File,
    /// Read of a sensitive file.
    SensitiveRead,
    /// Network destination (or accepted port).
    Network,
    /// Who ran what inside the service's containers.
    Exec,
    /// A log template (`#<id>`, the service's template miner's id).
    LogTemplate,
    /// An event rate (never a baseline entry: rates are learned by their detectors).
    Rate,
    /// driftwatch's own health (never a baseline entry).
    Health,
}

impl Dimension {
    pub fn alert_kind(self) -> AlertKind {
        match self {
            Dimension::Process | Dimension::Args => AlertKind::Process,
            Dimension::File => AlertKind::File,
            Dimension::SensitiveRead => AlertKind::SensitiveRead,
            Dimension::Network => AlertKind::Network,
            Dimension::Exec => AlertKind::Exec,
            Dimension::LogTemplate => AlertKind::LogTemplate,
            Dimension::Rate => AlertKind::Rate,
            Dimension::Health => AlertKind::Delivery,
        }
    }

    /// How the explanation names the known entries of this dimension.
    pub fn plural(self) -> &'static str {
        match self {
            Dimension::Process => "processes",
            Dimension::Args => "argument patterns of this executable",
            Dimension::File => "file changes",
            Dimension::SensitiveRead => "sensitive reads",
            Dimension::Network => "network destinations",
            Dimension::Exec => "exec-ins",
            Dimension::LogTemplate => "log templates",
            Dimension::Rate => "rates",
            Dimension::Health => "health conditions",
        }
    }
}

/// One baseline entry an event touches.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation<'a> {
    pub dimension: Dimension,
    /// The baseline key, also the alert subject.
    pub key: String,
    pub severity: Severity,
    pub mitre: Option<Technique>,
    /// The executable, for written-then-executed checks and sensor correlation.
    pub exe: Option<&'a str>,
}

const SHELLS: [&str; 8] = ["sh", "bash", "dash", "zsh", "ash", "ksh", "csh", "busybox"];
const PACKAGE_MANAGERS: [&str; 13] = [
    "apt", "apt-get", "dpkg", "yum", "dnf", "rpm", "apk", "zypper", "pip", "pip3", "npm", "gem",
    "microdnf",
];
const SYSTEM_BINARY_DIRS: [&str; 8] = [
    "/bin/",
    "/sbin/",
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/local/bin/",
    "/usr/local/sbin/",
    "/lib/",
    "/usr/lib/",
];

/// Files whose read is never normal until an analyst says so.
pub fn is_sensitive(path: &str) -> bool {
    // Prefixes: `/etc/shadow-` is the backup copy, keys live below `/etc/ssl/private/`.
    const PREFIXES: [&str; 6] = [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/sudoers",
        "/etc/kubernetes/admin.conf",
        "/etc/ssl/private/",
        "/proc/kcore",
    ];
    const CONTAINS: [&str; 9] = [
        "/.ssh/",
        "/serviceaccount/token",
        "/.aws/credentials",
        "/.config/gcloud/",
        "/.azure/",
        "/.kube/config",
        "/.docker/config.json",
        "/id_rsa",
        "/etc/sudoers.d/",
    ];
    PREFIXES.iter().any(|p| path.starts_with(p)) || CONTAINS.iter().any(|c| path.contains(c))
}

fn sensitive_read_technique(path: &str) -> Technique {
    if path.starts_with("/etc/shadow") || path.starts_with("/etc/gshadow") {
        Technique::new(
            "T1003.008",
            "OS Credential Dumping: /etc/passwd and /etc/shadow",
        )
    } else if path.contains("/serviceaccount/token") {
        Technique::new("T1528", "Steal Application Access Token")
    } else {
        Technique::new("T1552.001", "Unsecured Credentials: Credentials In Files")
    }
}

/// Masks an address to the configured prefix: `10.96.20.15` → `10.96.20.0/24`.
pub fn network_of(address: &str, config: &DetectConfig) -> String {
    let Ok(ip) = address.parse::<IpAddr>() else {
        return address.to_owned();
    };
    match ip {
        IpAddr::V4(v4) => {
            let prefix = config.ipv4_prefix.min(32);
            if prefix == 32 {
                return v4.to_string();
            }
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            format!(
                "{}/{prefix}",
                std::net::Ipv4Addr::from(u32::from(v4) & mask)
            )
        }
        IpAddr::V6(v6) => {
            let prefix = config.ipv6_prefix.min(128);
            if prefix == 128 {
                return v6.to_string();
            }
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            format!(
                "{}/{prefix}",
                std::net::Ipv6Addr::from(u128::from(v6) & mask)
            )
        }
    }
}

/// A DNS name as a baseline key writes it: lower case, without the root's dot. `None`
/// for what is no host name (the address is used instead), so that a record cannot put
/// spaces, colons or patterns into a key.
fn host_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.parse::<IpAddr>().is_err()
        && name.split('.').all(|l| !l.is_empty() && l.len() <= 63)
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    valid.then(|| name.to_ascii_lowercase())
}

pub(crate) fn is_public(address: &str) -> bool {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            !(v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified())
        }
        Ok(IpAddr::V6(v6)) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
        Err(_) => true,
    }
}

/// The baseline entries an event touches. `dropped(exe)` says whether this service
/// wrote `exe` itself earlier (a binary written then executed).
pub fn observe<'a>(
    event: &'a Event,
    config: &DetectConfig,
    dropped: impl Fn(&str) -> bool,
) -> Vec<Observation<'a>> {
    match &event.kind {
        EventKind::ProcessExec { process } => {
            let exe = process.exe.as_str();
            let name = basename(exe);
            let parent = process.parent_exe.as_deref().unwrap_or("unknown");
            let (severity, mitre) = if dropped(exe) {
                (
                    Severity::Critical,
                    Some(Technique::new("T1105", "Ingress Tool Transfer")),
                )
            } else if SHELLS.contains(&name) {
                (
                    Severity::Critical,
                    Some(Technique::new(
                        "T1059.004",
                        "Command and Scripting Interpreter: Unix Shell",
                    )),
                )
            } else if PACKAGE_MANAGERS.contains(&name) {
                (
                    Severity::High,
                    Some(Technique::new("T1072", "Software Deployment Tools")),
                )
            } else {
                (Severity::Medium, None)
            };
            vec![
                Observation {
                    dimension: Dimension::Process,
                    key: format!("{exe} (parent {parent})"),
                    severity,
                    mitre,
                    exe: Some(exe),
                },
                Observation {
                    dimension: Dimension::Args,
                    key: format!("{exe} {}", fold_args(&process.args))
                        .trim_end()
                        .to_owned(),
                    severity: Severity::Low,
                    mitre: None,
                    exe: Some(exe),
                },
            ]
        }
        EventKind::FileAccess { op, path, process } => {
            let exe = process.as_ref().map(|p| p.exe.as_str());
            if *op == FileOp::Read {
                if !is_sensitive(path) {
                    return Vec::new();
                }
                return vec![Observation {
                    dimension: Dimension::SensitiveRead,
                    key: fold(path),
                    severity: Severity::High,
                    mitre: Some(sensitive_read_technique(path)),
                    exe,
                }];
            }
            let (severity, mitre) = if SYSTEM_BINARY_DIRS.iter().any(|d| path.starts_with(d)) {
                (
                    Severity::High,
                    Some(Technique::new("T1554", "Compromise Host Software Binary")),
                )
            } else if *op == FileOp::Unlink && path.starts_with("/var/log/") {
                (
                    Severity::High,
                    Some(Technique::new(
                        "T1070.002",
                        "Indicator Removal: Clear Linux or Mac System Logs",
                    )),
                )
            } else if path.starts_with("/etc/") {
                (Severity::High, None)
            } else if *op == FileOp::Chmod {
                (
                    Severity::Medium,
                    Some(Technique::new(
                        "T1222.002",
                        "File and Directory Permissions Modification: Linux",
                    )),
                )
            } else {
                (Severity::Medium, None)
            };
            vec![Observation {
                dimension: Dimension::File,
                key: format!("{} {}", op.as_str(), fold(path)),
                severity,
                mitre,
                exe,
            }]
        }
        EventKind::Network {
            direction,
            address,
            port,
            protocol,
            dns_name,
            process,
        } => {
            let exe = process.as_ref().map(|p| p.exe.as_str());
            let (key, severity, mitre) = match direction {
                Direction::Connect => {
                    let dest = dns_name
                        .as_deref()
                        .and_then(host_name)
                        .unwrap_or_else(|| network_of(address, config));
                    if is_public(address) {
                        (
                            format!("connect {protocol} {dest}:{port}"),
                            Severity::High,
                            Some(Technique::new("T1071", "Application Layer Protocol")),
                        )
                    } else {
                        (
                            format!("connect {protocol} {dest}:{port}"),
                            Severity::Medium,
                            None,
                        )
                    }
                }
                Direction::Accept => (format!("accept {protocol} :{port}"), Severity::Medium, None),
            };
            vec![Observation {
                dimension: Dimension::Network,
                key,
                severity,
                mitre,
                exe,
            }]
        }
        EventKind::ExecInto { actor, command, .. } => {
            let program = command.first().map_or("(attach)", |c| c.as_str());
            let severity = if SHELLS.contains(&basename(program)) {
                Severity::Critical
            } else {
                Severity::High
            };
            vec![Observation {
                dimension: Dimension::Exec,
                key: format!("{actor} ran {}", basename(program)),
                severity,
                mitre: Some(Technique::new("T1609", "Container Administration Command")),
                exe: Some(program),
            }]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_masked_to_the_configured_prefix() {
        let mut c = DetectConfig::default();
        assert_eq!(network_of("10.96.20.15", &c), "10.96.20.15");
        c.ipv4_prefix = 24;
        assert_eq!(network_of("10.96.20.15", &c), "10.96.20.0/24");
        assert_eq!(network_of("2001:db8::1", &c), "2001:db8::/64");
        assert_eq!(network_of("not-an-ip", &c), "not-an-ip");
    }

    #[test]
    fn a_dns_name_is_a_key_only_when_it_is_a_host_name() {
        assert_eq!(
            host_name("Web-0.Web.Shop.svc.cluster.local."),
            Some("web-0.web.shop.svc.cluster.local".into())
        );
        assert_eq!(host_name("postgres"), Some("postgres".into()));
        for bad in [
            "",
            ".",
            "a b.example.com",
            "x.example.com:80",
            "a..b",
            "10.0.0.1",
            "<[a-z]{8}>.example.com",
        ] {
            assert_eq!(host_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn sensitive_files_are_recognised() {
        assert!(is_sensitive("/etc/shadow"));
        assert!(is_sensitive(
            "/var/run/secrets/kubernetes.io/serviceaccount/token"
        ));
        assert!(is_sensitive("/root/.ssh/id_ed25519"));
        assert!(!is_sensitive(
            "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
        ));
        assert!(!is_sensitive("/etc/passwd"));
        assert!(is_sensitive("/etc/shadow-"));
        assert!(is_sensitive("/etc/ssl/private/server.key"));
    }
}
