//! Cilium Tetragon's JSON export (protojson: snake_case keys, zero values omitted,
//! 64-bit integers as strings, `arguments` one space-joined string).
//!
//! `process_exec` and `process_exit` map directly. `process_kprobe` maps by hook
//! function: file hooks become `file_access`, socket hooks `network`; hooks driftwatch
//! does not model are ignored (counted).
//!
//! Tetragon's reports on itself become `sensor_health` events: `process_throttle`
//! (`THROTTLE_START`: it stops reporting a cgroup's process events to keep up;
//! `THROTTLE_STOP`: it reports them again) and `rate_limit_info` (events its export
//! rate limit dropped).
//!
//! Also taken: file paths Tetragon printed without their leading slash (relative to the
//! mount's root: `etc/passwd` is `/etc/passwd`), a `process_exec` without a top-level
//! `time` (its process's `start_time` is the exec), and the older `process_connect`
//! event (`destination_ip`, `destination_port`, `protocol`) as a connection.
//! `<kernel>` as a parent is kept as written: the kernel started the process.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::lenient::{
    opt_i64, opt_string, opt_u16, opt_u32, short_container_id, split_words, string_map,
};
use super::{parse, parse_time, wrong_shape};
use crate::error::DecodeError;
use crate::event::{
    Direction, Event, EventKind, FileOp, Image, Process, SensorReport, Source, Workload,
};

#[derive(Deserialize)]
struct Record {
    process_exec: Option<Exec>,
    process_exit: Option<Exit>,
    process_kprobe: Option<Kprobe>,
    process_throttle: Option<Throttle>,
    process_connect: Option<Connect>,
    rate_limit_info: Option<RateLimitInfo>,
    #[serde(default, deserialize_with = "opt_string")]
    node_name: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    cluster_name: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    time: Option<String>,
}

#[derive(Deserialize)]
struct Throttle {
    #[serde(rename = "type", default, deserialize_with = "opt_string")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    cgroup: Option<String>,
}

#[derive(Deserialize)]
struct Connect {
    process: TProcess,
    parent: Option<TProcess>,
    #[serde(default, deserialize_with = "opt_string")]
    destination_ip: Option<String>,
    #[serde(default, deserialize_with = "opt_u16")]
    destination_port: Option<u16>,
    #[serde(default, deserialize_with = "opt_string")]
    protocol: Option<String>,
}

#[derive(Deserialize)]
struct RateLimitInfo {
    #[serde(default, deserialize_with = "opt_i64")]
    number_of_dropped_process_events: Option<i64>,
}

#[derive(Deserialize)]
struct TProcess {
    #[serde(default, deserialize_with = "opt_u32")]
    pid: Option<u32>,
    #[serde(default, deserialize_with = "opt_u32")]
    uid: Option<u32>,
    #[serde(default, deserialize_with = "opt_string")]
    cwd: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    binary: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    arguments: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    start_time: Option<String>,
    pod: Option<Pod>,
    #[serde(default, deserialize_with = "opt_string")]
    docker: Option<String>,
}

#[derive(Deserialize)]
struct Pod {
    #[serde(default, deserialize_with = "opt_string")]
    namespace: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    name: Option<String>,
    container: Option<Container>,
    #[serde(default, deserialize_with = "string_map")]
    pod_labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "opt_string")]
    workload: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    workload_kind: Option<String>,
}

#[derive(Deserialize)]
struct Container {
    #[serde(default, deserialize_with = "opt_string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    name: Option<String>,
    image: Option<ContainerImage>,
}

#[derive(Deserialize)]
struct ContainerImage {
    /// `repo@sha256:…`: the digest.
    #[serde(default, deserialize_with = "opt_string")]
    id: Option<String>,
    /// `repo:tag`.
    #[serde(default, deserialize_with = "opt_string")]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Exec {
    process: TProcess,
    parent: Option<TProcess>,
}

#[derive(Deserialize)]
struct Exit {
    process: TProcess,
    parent: Option<TProcess>,
    #[serde(default, deserialize_with = "opt_string")]
    signal: Option<String>,
    /// Omitted when 0 (protojson drops zero values).
    #[serde(default, deserialize_with = "opt_i64")]
    status: Option<i64>,
}

#[derive(Deserialize)]
struct Kprobe {
    process: TProcess,
    parent: Option<TProcess>,
    #[serde(default)]
    function_name: String,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(rename = "return")]
    return_arg: Option<Arg>,
}

#[derive(Deserialize)]
struct Arg {
    file_arg: Option<FileArg>,
    path_arg: Option<FileArg>,
    sock_arg: Option<SockArg>,
    #[serde(default, deserialize_with = "opt_i64")]
    int_arg: Option<i64>,
    #[serde(default, deserialize_with = "opt_string")]
    string_arg: Option<String>,
}

/// `openat`'s directory argument meaning "the process's working directory".
const AT_FDCWD: i64 = -100;
/// `open` flags that make an open a write: `O_WRONLY`, `O_RDWR`, `O_CREAT`, `O_TRUNC`.
const OPEN_WRITES: i64 = 0o1 | 0o2 | 0o100 | 0o1000;

#[derive(Deserialize)]
struct FileArg {
    #[serde(default, deserialize_with = "opt_string")]
    path: Option<String>,
}

#[derive(Deserialize)]
struct SockArg {
    #[serde(default, deserialize_with = "opt_string")]
    protocol: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    daddr: Option<String>,
    #[serde(default, deserialize_with = "opt_u16")]
    dport: Option<u16>,
    #[serde(default, deserialize_with = "opt_u16")]
    sport: Option<u16>,
}

/// `security_file_permission`'s mask argument: MAY_WRITE and MAY_READ.
const MAY_WRITE: i64 = 2;
const MAY_READ: i64 = 4;

pub(super) fn decode(
    payload: &[u8],
    out: &mut Vec<Event>,
) -> Result<Option<&'static str>, DecodeError> {
    let record: Record = parse(payload)?;
    let exec_start = record
        .process_exec
        .as_ref()
        .and_then(|e| e.process.start_time.as_deref());
    let time = match (record.time.as_deref(), exec_start) {
        (Some(t), _) => parse_time("time", t)?,
        (None, Some(t)) => parse_time("process.start_time", t)?,
        (None, None) => return Err(wrong_shape("Tetragon event has no time")),
    };
    if let Some(health) = sensor_health(&record) {
        out.push(Event {
            time,
            source: Source::Tetragon,
            provenance: Default::default(),
            workload: Workload {
                node: record.node_name,
                cluster: record.cluster_name,
                ..Workload::default()
            },
            service: String::new(),
            kind: health?,
        });
        return Ok(None);
    }
    let (process, kind) = if let Some(exec) = record.process_exec {
        let process = to_process(&exec.process, exec.parent.as_ref())?;
        (exec.process, EventKind::ProcessExec { process })
    } else if let Some(exit) = record.process_exit {
        let process = to_process(&exit.process, exit.parent.as_ref())?;
        let kind = EventKind::ProcessExit {
            process,
            status: Some(exit.status.unwrap_or(0)),
            signal: exit.signal,
        };
        (exit.process, kind)
    } else if let Some(connect) = record.process_connect {
        let process = to_process(&connect.process, connect.parent.as_ref())?;
        let address = connect
            .destination_ip
            .ok_or_else(|| wrong_shape("process_connect has no destination_ip"))?;
        let kind = EventKind::Network {
            direction: Direction::Connect,
            address,
            port: connect.destination_port.unwrap_or(0),
            protocol: connect
                .protocol
                .map_or_else(|| "tcp".to_owned(), |p| p.to_ascii_lowercase()),
            dns_name: None,
            process: Some(process),
        };
        (connect.process, kind)
    } else if let Some(kprobe) = record.process_kprobe {
        let process = to_process(&kprobe.process, kprobe.parent.as_ref())?;
        let Some(kind) = kprobe_kind(&kprobe, process)? else {
            return Ok(Some("unmodelled_kprobe"));
        };
        (kprobe.process, kind)
    } else if record.node_name.is_some() {
        // process_tracepoint, process_lsm, process_loader, rate_limit_info, …: Tetragon
        // adds event types over time, all carrying node_name.
        return Ok(Some("unmodelled_event"));
    } else {
        return Err(wrong_shape(
            "Tetragon record has no event key driftwatch knows",
        ));
    };
    out.push(Event {
        time,
        source: Source::Tetragon,
        provenance: Default::default(),
        workload: workload(&process, record.node_name, record.cluster_name),
        service: String::new(),
        kind,
    });
    Ok(None)
}

/// Tetragon's reports on itself, when the record is one.
fn sensor_health(record: &Record) -> Option<Result<EventKind, DecodeError>> {
    let health = |report, lost, detail| EventKind::SensorHealth {
        sensor: "tetragon".to_owned(),
        report,
        lost,
        seen: None,
        detail,
    };
    if let Some(t) = &record.process_throttle {
        let report = match t.kind.as_deref() {
            Some("THROTTLE_START") => SensorReport::Throttled,
            Some("THROTTLE_STOP") => SensorReport::Resumed,
            other => {
                return Some(Err(wrong_shape(format!(
                    "process_throttle type {other:?} is neither THROTTLE_START nor THROTTLE_STOP"
                ))));
            }
        };
        return Some(Ok(health(report, 0, t.cgroup.clone())));
    }
    let dropped = record
        .rate_limit_info
        .as_ref()?
        .number_of_dropped_process_events
        .unwrap_or(0);
    Some(Ok(health(
        SensorReport::Dropped,
        u64::try_from(dropped).unwrap_or(0),
        None,
    )))
}

fn to_process(p: &TProcess, parent: Option<&TProcess>) -> Result<Process, DecodeError> {
    let exe = p
        .binary
        .clone()
        .ok_or_else(|| wrong_shape("Tetragon process has no binary"))?;
    Ok(Process {
        exe,
        args: p.arguments.as_deref().map(split_words).unwrap_or_default(),
        parent_exe: parent.and_then(|pp| pp.binary.clone()),
        pid: p.pid,
        // protojson omits uid 0: a process with no uid field ran as root.
        uid: Some(p.uid.unwrap_or(0)),
        user: None,
        cwd: p.cwd.clone(),
    })
}

fn workload(p: &TProcess, node: Option<String>, cluster: Option<String>) -> Workload {
    let mut w = Workload {
        node,
        cluster,
        ..Workload::default()
    };
    if let Some(pod) = &p.pod {
        w.namespace.clone_from(&pod.namespace);
        w.pod.clone_from(&pod.name);
        w.workload.clone_from(&pod.workload);
        w.workload_kind.clone_from(&pod.workload_kind);
        w.labels.clone_from(&pod.pod_labels);
        if let Some(c) = &pod.container {
            w.container_id = c.id.as_deref().and_then(short_container_id);
            w.container_name.clone_from(&c.name);
            if let Some(image) = &c.image {
                let mut parsed = image.name.as_deref().map(Image::parse).unwrap_or_default();
                if let Some(id) = image.id.as_deref() {
                    parsed.merge(Image::parse(id));
                }
                w.image = parsed;
            }
        }
    }
    if w.container_id.is_none() {
        w.container_id = p.docker.as_deref().and_then(short_container_id);
    }
    w
}

fn kprobe_kind(k: &Kprobe, process: Process) -> Result<Option<EventKind>, DecodeError> {
    let file_path = |i: usize| {
        k.args
            .get(i)
            .and_then(|a| a.file_arg.as_ref().or(a.path_arg.as_ref()))
            .and_then(|f| f.path.clone())
    };
    let first_path = || {
        k.args
            .iter()
            .find_map(|a| a.file_arg.as_ref().or(a.path_arg.as_ref())?.path.clone())
    };
    let file = |op: FileOp, path: Option<String>| {
        path.map(|path| EventKind::FileAccess {
            op,
            // Printed relative to the mount's root at times: `etc/passwd`.
            path: if path.starts_with('/') || path.is_empty() {
                path
            } else {
                format!("/{path}")
            },
            process: Some(process.clone()),
        })
        .ok_or_else(|| wrong_shape(format!("{} event has no file argument", k.function_name)))
    };
    let kind = match k.function_name.as_str() {
        "security_file_permission" => {
            let mask = k.args.get(1).and_then(|a| a.int_arg).unwrap_or(0);
            let op = if mask & MAY_WRITE != 0 {
                FileOp::Write
            } else if mask & MAY_READ != 0 {
                FileOp::Read
            } else {
                return Ok(None);
            };
            file(op, file_path(0))?
        }
        // fd_install is the open: the file is the second argument.
        "fd_install" | "security_file_open" | "security_mmap_file" => {
            file(FileOp::Read, file_path(1).or_else(first_path))?
        }
        "security_path_chmod"
        | "sys_fchmodat"
        | "__x64_sys_fchmodat"
        | "security_inode_setattr" => file(FileOp::Chmod, first_path())?,
        "security_path_unlink"
        | "security_inode_unlink"
        | "sys_unlinkat"
        | "__x64_sys_unlinkat" => file(FileOp::Unlink, first_path())?,
        "security_inode_create" | "security_path_mknod" | "security_path_mkdir" => {
            file(FileOp::Create, first_path())?
        }
        "security_path_truncate" | "sys_write" | "__x64_sys_write" | "vfs_write" => {
            file(FileOp::Write, first_path())?
        }
        "sys_read" | "__x64_sys_read" | "ksys_read" | "vfs_read" => {
            file(FileOp::Read, first_path())?
        }
        // The syscall itself: (dirfd, path as a string, flags); a relative path is the
        // working directory's when dirfd is AT_FDCWD.
        "sys_openat" | "__x64_sys_openat" | "__arm64_sys_openat" => {
            let name = k.args.get(1).and_then(|a| a.string_arg.clone());
            let at_cwd = k.args.first().and_then(|a| a.int_arg) == Some(AT_FDCWD);
            let path = name.map(|n| match (&process.cwd, at_cwd) {
                (Some(cwd), true) if !n.starts_with('/') => {
                    format!("{}/{n}", cwd.trim_end_matches('/'))
                }
                _ => n,
            });
            let flags = k.args.get(2).and_then(|a| a.int_arg).unwrap_or(0);
            let op = if flags & OPEN_WRITES != 0 {
                FileOp::Write
            } else {
                FileOp::Read
            };
            file(op, path)?
        }
        "tcp_connect" | "udp_sendmsg" | "ip4_datagram_connect" => {
            let sock = k.args.iter().find_map(|a| a.sock_arg.as_ref());
            network(Direction::Connect, sock, &k.function_name, process)?
        }
        "inet_csk_accept" => {
            // The accepted socket is the return value: `daddr` is the peer, `sport` the
            // local port it connected to.
            let sock = k.return_arg.as_ref().and_then(|a| a.sock_arg.as_ref());
            network(Direction::Accept, sock, &k.function_name, process)?
        }
        _ => return Ok(None),
    };
    Ok(Some(kind))
}

fn network(
    direction: Direction,
    sock: Option<&SockArg>,
    function: &str,
    process: Process,
) -> Result<EventKind, DecodeError> {
    let sock =
        sock.ok_or_else(|| wrong_shape(format!("{function} event has no socket argument")))?;
    let (address, port) = match direction {
        Direction::Connect => (sock.daddr.clone(), sock.dport),
        Direction::Accept => (sock.daddr.clone(), sock.sport),
    };
    let address =
        address.ok_or_else(|| wrong_shape(format!("{function} socket has no address")))?;
    let protocol = match sock.protocol.as_deref() {
        Some(p) => p.trim_start_matches("IPPROTO_").to_ascii_lowercase(),
        None if function.starts_with("udp") => "udp".to_owned(),
        None => "tcp".to_owned(),
    };
    Ok(EventKind::Network {
        direction,
        address,
        port: port.unwrap_or(0),
        protocol,
        dns_name: None,
        process: Some(process),
    })
}
