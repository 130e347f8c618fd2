//! The demo's workload simulator: a small shop (web frontend, API, database, worker,
//! checkout, and a legacy Docker cron job) whose sensors and log shipper publish what
//! real ones would, in the real formats: Tetragon process and kprobe events, Fluent Bit
//! container logs, Kubernetes audit events, Docker engine events and the odd Falco
//! notice. Event time runs faster than the wall clock (`speed`), so a learning phase of
//! an hour of event time passes in a minute.
//!
//! The shop churns as real workloads do: Python, `mktemp` and Go temp files with random
//! names, uploads to object storage and a CDN whose addresses rotate within the
//! provider's ranges, a cleanup job every ten minutes, the CI bot's migration check
//! exec'ed into the API every quarter hour, pods rescheduled under new names
//! every few hours, and an image rollout now and then. None of it is drift.
//!
//! A small share of records is deliberately broken (cut short, not JSON) so the demo
//! shows dead-lettering at work.

use std::collections::VecDeque;

use serde_json::json;

use ingest::Nanos;

mod records;

/// Topics the simulator publishes to, with the format each carries.
pub const TOPICS: [(&str, &str); 6] = [
    ("tetragon", "tetragon"),
    ("falco", "falco"),
    ("k8s-audit", "k8s-audit"),
    ("docker", "docker"),
    ("logs", "fluent-bit"),
    // What a shipper resolving destination names writes (the simulated CDN's edges), and
    // for custom shippers (and `kcat`) to try.
    ("native", "native"),
];

/// One record for one topic.
pub struct Record {
    pub topic: &'static str,
    pub key: String,
    pub payload: Vec<u8>,
}

/// SplitMix64: tiny, fast, and reproducible from a seed; the simulator needs no more.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, per_thousand: u64) -> bool {
        self.below(1000) < per_thousand
    }
    fn word(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| char::from(*self.pick(alphabet))).collect()
    }
    fn hex(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect()
    }
}

/// A simulated Kubernetes service.
struct Service {
    name: &'static str,
    pod: String,
    container_id: String,
    image: &'static str,
    digest: String,
    node: &'static str,
    /// (binary, arguments, parent binary)
    processes: &'static [(&'static str, &'static str, &'static str)],
    /// Paths written (placeholders as in [`Simulator::fill`]).
    writes: &'static [&'static str],
    reads: &'static [&'static str],
    /// (address, port); an octet may be a range (`8-9`) or `*` (any host octet), for
    /// endpoints that rotate within a provider's range. `name@address` is a destination
    /// by its DNS name (placeholders as in [`Simulator::fill`]), sent in the native format.
    connects: &'static [(&'static str, u16)],
    logs: &'static [&'static str],
}

const NAMESPACE: &str = "shop";

pub struct Simulator {
    rng: Rng,
    /// The DNS names of destinations, drawn apart so that naming them leaves every other
    /// random choice as it was.
    names: Rng,
    services: Vec<Service>,
    now: Nanos,
    /// Event-time nanoseconds per record, so `rate` records a wall second cover
    /// `speed` seconds of event time.
    step: i64,
    bad_per_thousand: u64,
    audit_seq: u64,
    /// Records queued to go out before any new one (the steps of an attack).
    queued: VecDeque<Record>,
    /// When the next attack happens, and how far apart they are.
    attacks: Option<(Nanos, i64)>,
    next_attack: usize,
    /// The attacks injected so far.
    injected: Vec<Injected>,
    /// When the worker's cleanup job runs next.
    next_cron: Nanos,
    /// When the CI bot next execs its migration check into the API.
    next_migration_check: Nanos,
    /// When a pod is next rescheduled (new name, new container), and an image next rolls out.
    next_reschedule: Nanos,
    next_rollout: Nanos,
}

/// One injected attack: which, on which service, at what event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    pub attack: usize,
    pub service: &'static str,
    pub time: Nanos,
}

/// An alert on an attacked service within this much event time after the attack is
/// about it.
pub const CAUGHT_WITHIN: i64 = 3 * 60 * 1_000_000_000;

impl Injected {
    /// Whether an alert on `service` at `time` is about this attack: on its service, at
    /// most [`CAUGHT_WITHIN`] after it (audit timestamps carry microseconds, so the
    /// alert may be up to one before the simulator's nanosecond clock).
    pub fn explains(&self, service: &str, time: Nanos) -> bool {
        service.strip_prefix("shop/") == Some(self.service)
            && time.0 >= self.time.0 - 1_000
            && time.0 - self.time.0 <= CAUGHT_WITHIN
    }
}

/// A run of the shop through a detector with the default configuration.
pub struct DetectionRun {
    pub detector: detect::Detector,
    /// Every alert raised, in order.
    pub alerts: Vec<detect::Alert>,
    pub injected: Vec<Injected>,
    pub records: u64,
}

/// Runs the shop from `start` until `until` of event time at `rate` records a second of
/// wall time at 60x, the attacks from `attacks_from` every three hours, every record
/// decoded and fed to a detector.
pub fn detect(
    seed: u64,
    start: Nanos,
    until: Nanos,
    rate: u64,
    attacks_from: Nanos,
) -> DetectionRun {
    let mut sim = Simulator::new(seed, start, rate, 60, 0);
    sim.schedule_attacks(attacks_from, std::time::Duration::from_secs(3 * 3600));
    let mut decoder = ingest::Decoder::new(
        ingest::DecodeLimits {
            max_future_skew: std::time::Duration::from_secs(u64::from(u32::MAX)),
            ..ingest::DecodeLimits::default()
        },
        ingest::ServiceKeyer::default(),
    );
    let mut detector = detect::Detector::new(detect::DetectConfig::default());
    let (mut alerts, mut events) = (Vec::new(), Vec::new());
    let mut records = 0u64;
    while sim.now() < until {
        let record = sim.next_record();
        events.clear();
        decoder
            .decode(
                ingest::Format::Auto,
                &record.payload,
                &ingest::Provenance::kafka(record.topic, 0, records as i64),
                &mut events,
            )
            .expect("simulated records decode");
        for e in &events {
            detector.observe(e, &mut alerts);
        }
        records += 1;
    }
    DetectionRun {
        detector,
        alerts,
        injected: sim.injected().to_vec(),
        records,
    }
}

/// The service each of [`ATTACKS`] happens in.
pub const ATTACKED: [&str; 6] = ["api", "worker", "checkout", "frontend", "postgres", "api"];

/// How often the worker's cleanup job runs, a pod is rescheduled, and an image rolls
/// out, in event time.
const CRON_EVERY: i64 = 10 * 60 * 1_000_000_000;
const MIGRATION_CHECK_EVERY: i64 = 15 * 60 * 1_000_000_000;
const RESCHEDULE_EVERY: i64 = 4 * 3600 * 1_000_000_000;
const ROLLOUT_EVERY: i64 = 9 * 3600 * 1_000_000_000;

/// The attacks the demo injects once the services have learned, in order.
pub const ATTACKS: [&str; 6] = [
    "a shell in the API container",
    "a package manager run in the worker",
    "a binary dropped in /tmp and executed in checkout",
    "a write below /etc in the frontend",
    "a connection from the database to a new external address",
    "a kubectl exec into the API by an unusual user",
];

fn pod_name(rng: &mut Rng, workload: &str, stateful: bool) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut s = |n: usize| -> String { (0..n).map(|_| char::from(*rng.pick(ALPHABET))).collect() };
    if stateful {
        format!("{workload}-0")
    } else {
        format!("{workload}-{}-{}", s(9), s(5))
    }
}

impl Simulator {
    /// `rate` records per wall second covering `speed` seconds of event time each second.
    pub fn new(seed: u64, start: Nanos, rate: u64, speed: u64, bad_per_thousand: u64) -> Self {
        let mut rng = Rng(seed);
        let mut service = |name: &'static str, stateful: bool| {
            let pod = pod_name(&mut rng, name, stateful);
            (pod, rng.hex(64))
        };
        let (frontend_pod, frontend_id) = service("frontend", false);
        let (api_pod, api_id) = service("api", false);
        let (db_pod, db_id) = service("postgres", true);
        let (worker_pod, worker_id) = service("worker", false);
        let (checkout_pod, checkout_id) = service("checkout", false);
        let services = vec![
            Service {
                name: "frontend",
                pod: frontend_pod,
                container_id: frontend_id,
                image: "docker.io/library/nginx:1.27",
                digest: "sha256:6f1c9a7e3b2d".to_owned(),
                node: "node-a",
                processes: &[("/usr/sbin/nginx", "-g daemon off;", "/usr/sbin/nginx")],
                writes: &[
                    "/var/cache/nginx/proxy_temp/{n}",
                    "/var/log/nginx/access.log",
                ],
                reads: &["/etc/nginx/nginx.conf", "/usr/share/nginx/html/index.html"],
                // Product images come from a CDN whose edge names rotate (`name@addresses`).
                connects: &[
                    ("10.96.12.40", 8080),
                    ("d{cf}.cdn.acme-assets.net@13.32.*.*", 443),
                ],
                logs: &[
                    "10.0.3.{n} - - \"GET /product/{n} HTTP/1.1\" 200 5123 \"-\" \"Mozilla/5.0\"",
                    "10.0.3.{n} - - \"GET /cart HTTP/1.1\" 200 812 \"-\" \"Mozilla/5.0\"",
                    "10.0.3.{n} - - \"POST /checkout HTTP/1.1\" 302 0 \"-\" \"Mozilla/5.0\"",
                ],
            },
            Service {
                name: "api",
                pod: api_pod,
                container_id: api_id,
                image: "ghcr.io/acme/shop-api:2.4.1",
                digest: "sha256:0b8e4f1d2c3a".to_owned(),
                node: "node-a",
                processes: &[
                    (
                        "/usr/local/bin/python3.12",
                        "/usr/local/bin/gunicorn app:app -w 4",
                        "/usr/local/bin/python3.12",
                    ),
                    (
                        "/usr/local/bin/python3.12",
                        "-m app.healthcheck",
                        "/usr/local/bin/gunicorn",
                    ),
                ],
                // gunicorn's worker heartbeat files and the app's `tempfile` uploads.
                writes: &[
                    "/tmp/upload-{n}",
                    "/tmp/gunicorn-{n}.tmp",
                    "/tmp/wgunicorn-{py}",
                    "/tmp/tmp{py}",
                ],
                reads: &[
                    "/app/config.yaml",
                    "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                ],
                // The CDN's edge addresses rotate within its /22.
                connects: &[
                    ("10.96.20.15", 5432),
                    ("10.96.30.7", 6379),
                    ("151.101.0-3.*", 443),
                ],
                logs: &[
                    "INFO request handled path=/api/cart/{n} status=200 duration_ms={n}",
                    "INFO request handled path=/api/product/{n} status=200 duration_ms={n}",
                    "WARNING slow query took {n} ms",
                ],
            },
            Service {
                name: "postgres",
                pod: db_pod,
                container_id: db_id,
                image: "docker.io/library/postgres:16.4",
                digest: "sha256:9a2b7c4d1e0f".to_owned(),
                node: "node-b",
                processes: &[(
                    "/usr/lib/postgresql/16/bin/postgres",
                    "-D /var/lib/postgresql/data",
                    "/usr/lib/postgresql/16/bin/postgres",
                )],
                writes: &[
                    "/var/lib/postgresql/data/base/16384/{n}",
                    "/var/lib/postgresql/data/pg_wal/0000000100000000000000{n}",
                ],
                reads: &["/var/lib/postgresql/data/postgresql.conf"],
                connects: &[],
                logs: &[
                    "LOG:  checkpoint starting: time",
                    "LOG:  checkpoint complete: wrote {n} buffers ({n}.0%); 0 WAL file(s) added",
                    "LOG:  connection received: host=10.0.4.{n} port={n}",
                ],
            },
            Service {
                name: "worker",
                pod: worker_pod,
                container_id: worker_id,
                image: "ghcr.io/acme/shop-worker:2.4.1",
                digest: "sha256:3c5d7e9f1a2b".to_owned(),
                node: "node-b",
                processes: &[
                    (
                        "/usr/local/bin/python3.12",
                        "/usr/local/bin/celery -A tasks worker",
                        "/usr/local/bin/python3.12",
                    ),
                    (
                        "/usr/bin/convert",
                        "/tmp/in-{n}.png -resize 200x200 /tmp/out-{n}.png",
                        "/usr/local/bin/python3.12",
                    ),
                ],
                // Python `tempfile` and a shell helper's `mktemp` beside the reports.
                writes: &[
                    "/tmp/report-{n}.csv",
                    "/tmp/out-{n}.png",
                    "/tmp/tmp{py}",
                    "/tmp/tmp.{mk}",
                ],
                reads: &["/app/celeryconfig.py"],
                // Uploads go to object storage, whose endpoints rotate across a /23.
                connects: &[
                    ("10.96.30.7", 6379),
                    ("10.96.20.15", 5432),
                    ("52.216.8-9.*", 443),
                ],
                logs: &[
                    "Task tasks.send_email[{n}] succeeded in 0.{n}s: None",
                    "Task tasks.resize_image[{n}] received",
                ],
            },
            Service {
                name: "checkout",
                pod: checkout_pod,
                container_id: checkout_id,
                image: "ghcr.io/acme/checkout:1.8.2",
                digest: "sha256:aa11bb22cc33".to_owned(),
                node: "node-a",
                processes: &[("/app/checkout", "--listen :8443", "/app/checkout")],
                // Go's `os.CreateTemp("", "receipt*.pdf")`.
                writes: &["/tmp/receipt{go}.pdf"],
                reads: &["/etc/ssl/certs/ca-certificates.crt"],
                connects: &[("10.96.12.40", 8080), ("34.120.8.9", 443)],
                logs: &[
                    "{\"level\":\"info\",\"msg\":\"payment authorized\",\"order\":{n}}",
                    "{\"level\":\"info\",\"msg\":\"cart checked out\",\"items\":{n}}",
                ],
            },
        ];
        let rate = rate.max(1) as i64;
        let speed = speed.max(1) as i64;
        Simulator {
            rng,
            services,
            now: start,
            names: Rng(seed ^ 0x6e61_6d65_7300_0000),
            step: speed * 1_000_000_000 / rate,
            bad_per_thousand,
            audit_seq: 0,
            queued: VecDeque::new(),
            attacks: None,
            next_attack: 0,
            injected: Vec::new(),
            next_cron: start.saturating_add(CRON_EVERY / 2),
            next_migration_check: start.saturating_add(MIGRATION_CHECK_EVERY / 3),
            next_reschedule: start.saturating_add(RESCHEDULE_EVERY),
            next_rollout: start.saturating_add(ROLLOUT_EVERY),
        }
    }

    /// The next record, advancing event time by one step (with jitter).
    /// Injects [`ATTACKS`] one after another, the first at `first`, then every `every`.
    pub fn schedule_attacks(&mut self, first: Nanos, every: std::time::Duration) {
        self.attacks = Some((first, i64::try_from(every.as_nanos()).unwrap_or(i64::MAX)));
    }

    /// The attacks injected so far, in order.
    pub fn injected(&self) -> &[Injected] {
        &self.injected
    }

    /// The current event time.
    pub fn now(&self) -> Nanos {
        self.now
    }

    /// Stamps the next records at `now` (event time never moves back) instead of at a
    /// fixed pace: for a producer that follows the wall clock.
    pub fn set_now(&mut self, now: Nanos) {
        self.now = self.now.max(now);
        self.step = 0;
    }

    pub fn next_record(&mut self) -> Record {
        if let Some(r) = self.queued.pop_front() {
            return r;
        }
        if let Some((at, every)) = self.attacks
            && self.now >= at
            && self.next_attack < ATTACKS.len()
        {
            self.attacks = Some((at.saturating_add(every), every));
            self.attack(self.next_attack);
            self.injected.push(Injected {
                attack: self.next_attack,
                service: ATTACKED[self.next_attack],
                time: self.now,
            });
            self.next_attack += 1;
            if let Some(r) = self.queued.pop_front() {
                return r;
            }
        }
        self.churn();
        if let Some(r) = self.queued.pop_front() {
            return r;
        }
        self.now = self
            .now
            .saturating_add(self.step / 2 + self.rng.below(self.step.max(1) as u64) as i64);
        let roll = self.rng.below(1000);
        let mut record = if roll < 5 {
            self.docker_event()
        } else if roll < 15 {
            self.audit_event(false)
        } else if roll < 18 {
            self.falco_notice()
        } else if roll < 450 {
            self.log_line()
        } else {
            self.tetragon_event()
        };
        if self.rng.chance(self.bad_per_thousand) {
            // A shipper restart cuts a record short, or a sidecar writes plain text.
            let cut = record.payload.len() / 2;
            if self.rng.chance(500) {
                record.payload.truncate(cut);
            } else {
                record.payload = b"WARN shipper buffer overflow, dropping chunk".to_vec();
            }
        }
        record
    }

    /// The churn of an ordinary day: the cleanup job, pods rescheduled, images rolled out.
    fn churn(&mut self) {
        if self.now >= self.next_cron {
            self.next_cron = self.next_cron.saturating_add(CRON_EVERY);
            let args = self.fill("/app/jobs/cleanup.py --older-than {n}h");
            let write = json!({ "function_name": "security_file_permission",
                "args": [ { "file_arg": { "path": "/tmp/cleanup.lock" } }, { "int_arg": 2 } ], "action": "KPROBE_ACTION_POST" });
            let exec = self.tetragon(
                "worker",
                "/usr/local/bin/python3.12",
                &args,
                "/usr/local/bin/celery",
                serde_json::Value::Null,
            );
            let lock = self.tetragon(
                "worker",
                "/usr/local/bin/python3.12",
                &args,
                "/usr/local/bin/celery",
                write,
            );
            self.queued.extend([exec, lock]);
        }
        if self.now >= self.next_migration_check {
            self.next_migration_check = self
                .next_migration_check
                .saturating_add(MIGRATION_CHECK_EVERY);
            let check = self.audit_event(true);
            self.queued.push_back(check);
        }
        if self.now >= self.next_reschedule {
            self.next_reschedule = self.next_reschedule.saturating_add(RESCHEDULE_EVERY);
            let i = self.rng.below(self.services.len() as u64) as usize;
            let stateful = self.services[i].name == "postgres";
            let pod = pod_name(&mut self.rng, self.services[i].name, stateful);
            let container = self.rng.hex(64);
            let s = &mut self.services[i];
            s.pod = pod;
            s.container_id = container;
        }
        if self.now >= self.next_rollout {
            self.next_rollout = self.next_rollout.saturating_add(ROLLOUT_EVERY);
            let i = self.rng.below(self.services.len() as u64) as usize;
            self.services[i].digest = format!("sha256:{}", self.rng.hex(12));
        }
    }

    /// Fills a template's placeholders: `{n}` a number below 10,000, `{py}` a Python
    /// `tempfile` name (8 of `[a-z0-9_]`), `{mk}` a `mktemp` name (10 of `[A-Za-z0-9]`),
    /// `{go}` a Go `os.CreateTemp` number (a random `uint32`), `{cf}` a CDN edge's label
    /// (13 of `[a-z0-9]`).
    /// Fills a destination name's template from the names' own stream.
    fn fill_name(&mut self, template: &str) -> String {
        std::mem::swap(&mut self.rng, &mut self.names);
        let name = self.fill(template);
        std::mem::swap(&mut self.rng, &mut self.names);
        name
    }

    fn fill(&mut self, template: &str) -> String {
        const PYTHON: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
        const MKTEMP: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        const CDN_EDGE: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut out = String::with_capacity(template.len() + 8);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            match &rest[open + 1..open + close] {
                "n" => out.push_str(&self.rng.below(10_000).to_string()),
                "py" => out.push_str(&self.rng.word(PYTHON, 8)),
                "mk" => out.push_str(&self.rng.word(MKTEMP, 10)),
                "go" => out.push_str(&self.rng.below(u64::from(u32::MAX)).to_string()),
                "cf" => out.push_str(&self.rng.word(CDN_EDGE, 13)),
                other => {
                    out.push('{');
                    out.push_str(other);
                    out.push('}');
                }
            }
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        out
    }

    /// An address of a pattern whose octets may be ranges (`52.216.8-9.*`).
    fn address(&mut self, pattern: &str) -> String {
        pattern
            .split('.')
            .map(|octet| {
                if octet == "*" {
                    (1 + self.rng.below(254)).to_string()
                } else if let Some((a, b)) = octet.split_once('-')
                    && let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>())
                {
                    (a + self.rng.below(b.saturating_sub(a) + 1)).to_string()
                } else {
                    octet.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    fn pod_json(&self, s: &Service) -> serde_json::Value {
        json!({
            "namespace": NAMESPACE,
            "name": s.pod,
            "container": {
                "id": format!("containerd://{}", s.container_id),
                "name": s.name,
                "image": { "id": format!("{}@{}", s.image.rsplit_once(':').map_or(s.image, |(r, _)| r), s.digest), "name": s.image },
            },
            "pod_labels": { "app": s.name },
            "workload": s.name,
            "workload_kind": if s.name == "postgres" { "StatefulSet" } else { "Deployment" },
        })
    }

    fn service(&self, name: &str) -> &Service {
        self.services
            .iter()
            .find(|s| s.name == name)
            .expect("simulated service")
    }
}
