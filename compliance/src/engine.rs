//! Targeted execution: an alert or event runs only the controls whose triggers name
//! its kind, against the triggering event and what is known about its container.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use regex::Regex;

use detect::{Alert, AlertKind, Severity};
use ingest::event::{ContainerFacts, EventKind, Image, Mount};
use ingest::{Event, Nanos, Provenance};
use serde::Serialize;

use crate::catalog::{Catalog, Control};

/// The result of one control on one trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Fail,
    Pass,
    NotApplicable,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Fail => "fail",
            Status::Pass => "pass",
            Status::NotApplicable => "not_applicable",
        }
    }
}

/// What is known about a container from its lifecycle events and the events' workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// Any lifecycle fact has been seen.
    pub known: bool,
    pub user: String,
    pub privileged: bool,
    pub capabilities: Vec<String>,
    pub mounts: Vec<Mount>,
    pub read_only_rootfs: bool,
    pub image: FactsImage,
    pub namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FactsImage {
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

impl Facts {
    fn learn(&mut self, facts: &ContainerFacts) {
        let configured = facts.user.is_some()
            || facts.privileged.is_some()
            || !facts.capabilities.is_empty()
            || !facts.mounts.is_empty()
            || facts.read_only_rootfs.is_some();
        // A stop event (only an exit code) says nothing about the configuration.
        if !configured {
            return;
        }
        self.known = true;
        if let Some(u) = &facts.user {
            self.user.clone_from(u);
        }
        if let Some(p) = facts.privileged {
            self.privileged = p;
        }
        if !facts.capabilities.is_empty() {
            self.capabilities.clone_from(&facts.capabilities);
        }
        if !facts.mounts.is_empty() {
            self.mounts.clone_from(&facts.mounts);
        }
        if let Some(r) = facts.read_only_rootfs {
            self.read_only_rootfs = r;
        }
    }

    fn see(&mut self, event: &Event) {
        let w = &event.workload;
        let Image {
            repository,
            tag,
            digest,
        } = &w.image;
        for (slot, value) in [
            (&mut self.image.repository, repository),
            (&mut self.image.tag, tag),
            (&mut self.image.digest, digest),
            (&mut self.namespace, &w.namespace),
        ] {
            if let Some(v) = value {
                slot.clone_from(v);
            }
        }
    }
}

/// One evaluated control.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Stable for the trigger: the control, the service and the triggering record.
    pub id: String,
    /// Event time of the trigger.
    pub time: Nanos,
    pub service: String,
    /// Container id, pod or name; empty when the event did not say.
    pub container: String,
    #[serde(serialize_with = "shared_str")]
    pub control: Arc<str>,
    #[serde(serialize_with = "shared_str")]
    pub title: Arc<str>,
    pub status: Status,
    pub severity: Severity,
    /// `framework:section`.
    #[serde(serialize_with = "shared_strings")]
    pub references: Arc<[String]>,
    /// The drift alert that fired the control, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    /// The triggering records (the alert's evidence, or the event itself).
    pub evidence: Vec<Provenance>,
    /// The container facts the check read (shared by the findings of one trigger).
    #[serde(serialize_with = "shared_facts")]
    pub facts: Arc<Facts>,
    /// Why a control did not apply, when it could not be evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

// Shared parts of findings serialize as what they hold.
fn shared_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

fn shared_strings<S: serde::Serializer>(v: &Arc<[String]>, s: S) -> Result<S::Ok, S::Error> {
    v[..].serialize(s)
}

fn shared_facts<S: serde::Serializer>(v: &Arc<Facts>, s: S) -> Result<S::Ok, S::Error> {
    (**v).serialize(s)
}

/// Where a service stands on a control: the last result and since when it holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostureEntry {
    pub service: String,
    #[serde(serialize_with = "shared_str")]
    pub control: Arc<str>,
    pub status: Status,
    /// When the current status began (the first finding of the current run of it).
    pub since: Nanos,
    pub last_checked: Nanos,
    /// The finding that set the current status last.
    pub finding: String,
}

/// The engine: the catalog indexed by trigger, facts per container, and posture.
pub struct Engine {
    catalog: Arc<Catalog>,
    by_alert: HashMap<AlertKind, Arc<[usize]>>,
    by_event: HashMap<&'static str, Arc<[usize]>>,
    facts: HashMap<String, Facts>,
    /// Shared parts of each control's findings, by catalog index.
    meta: Vec<Meta>,
    /// By service, then control.
    posture: HashMap<String, HashMap<Arc<str>, PostureEntry>>,
}

/// What fired a run of controls.
struct Trigger<'a> {
    service: &'a str,
    /// The key the container's facts are kept under.
    container: String,
    time: Nanos,
    alert: Option<&'a str>,
    evidence: Vec<Provenance>,
}

struct Meta {
    id: Arc<str>,
    title: Arc<str>,
    references: Arc<[String]>,
}

/// The key facts are kept under: the container id, else the pod, else the service.
fn container_key(event: &Event) -> String {
    let w = &event.workload;
    w.container_id
        .clone()
        .or_else(|| w.pod.clone())
        .or_else(|| w.container_name.clone())
        .unwrap_or_else(|| event.service.clone())
}

/// JSON to CEL: integers stay integers (CEL does not compare `int` with `uint`).
fn cel_value(v: &serde_json::Value) -> cel::Value {
    match v {
        serde_json::Value::Null => cel::Value::Null,
        serde_json::Value::Bool(b) => cel::Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        serde_json::Value::Array(a) => a.iter().map(cel_value).collect::<Vec<_>>().into(),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| (k.clone(), cel_value(v)))
            .collect::<HashMap<String, cel::Value>>()
            .into(),
    }
}

/// What a control reads.
pub struct Subject<'a> {
    pub event: &'a serde_json::Value,
    pub alert: Option<&'a serde_json::Value>,
    pub facts: &'a Facts,
    pub service: &'a str,
}

/// A subject bound into a CEL context once, for all the controls it fires (binding
/// converts the values, which costs more than most checks).
pub struct Prepared {
    ctx: cel::Context<'static, 'static>,
}

impl Subject<'_> {
    pub fn prepare(&self) -> Prepared {
        let mut ctx = cel::Context::with_env(environment());
        ctx.add_variable_from_value("event", cel_value(self.event));
        ctx.add_variable_from_value("alert", self.alert.map_or(cel::Value::Null, cel_value));
        ctx.add_variable_from_value(
            "facts",
            cel_value(&serde_json::to_value(self.facts).unwrap_or_default()),
        );
        ctx.add_variable_from_value("service", self.service.to_owned());
        Prepared { ctx }
    }
}

/// Runs one control; the note says why it did not apply when evaluation failed.
pub fn evaluate(control: &Control, s: &Subject<'_>) -> (Status, Option<String>) {
    evaluate_prepared(control, &s.prepare())
}

/// CEL's `matches` (RE2 syntax, a match anywhere unless anchored), with each pattern
/// compiled once.
fn matches(
    this: &cel::common::types::CelString<'_>,
    re: &cel::common::types::CelString<'_>,
) -> Result<cel::common::types::CelBool, cel::ExecutionError> {
    static COMPILED: LazyLock<RwLock<HashMap<String, Regex>>> = LazyLock::new(Default::default);
    let pattern = re.inner();
    if let Some(r) = COMPILED.read().expect("regex cache poisoned").get(pattern) {
        return Ok(cel::common::types::CelBool::from(r.is_match(this.inner())));
    }
    let compiled = Regex::new(pattern).map_err(|err| cel::ExecutionError::FunctionError {
        function: "matches".to_string(),
        message: format!("'{pattern}' not a valid regex:\n{err}"),
    })?;
    let found = compiled.is_match(this.inner());
    COMPILED
        .write()
        .expect("regex cache poisoned")
        .insert(pattern.to_owned(), compiled);
    Ok(cel::common::types::CelBool::from(found))
}

/// The CEL environment controls run in: the standard library and `matches`. Built once.
pub fn environment() -> Arc<cel::Env> {
    static ENV: LazyLock<Arc<cel::Env>> = LazyLock::new(|| {
        let mut env = cel::Env::stdlib();
        cel::add_overload!(env, fn matches: (cel::common::types::CelString, cel::common::types::CelString) -> Result<cel::common::types::CelBool>, id = "matches")
            .expect("matches is not in the standard library without regex support");
        cel::add_member_overload!(env, fn matches: (cel::common::types::CelString, cel::common::types::CelString) -> Result<cel::common::types::CelBool>)
            .expect("matches is not in the standard library without regex support");
        Arc::new(env)
    });
    ENV.clone()
}

/// Runs one control on a prepared subject.
pub fn evaluate_prepared(control: &Control, s: &Prepared) -> (Status, Option<String>) {
    let ctx = &s.ctx;
    let run = |program: &cel::Program, what: &str| match program.execute(ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("{what} gave {other:?}, not a bool")),
        Err(e) => Err(format!("{what} could not be evaluated: {e}")),
    };
    if let Some(applies) = &control.applies {
        match run(applies, "applies") {
            Ok(true) => {}
            Ok(false) => return (Status::NotApplicable, None),
            Err(note) => return (Status::NotApplicable, Some(note)),
        }
    }
    match run(&control.check, "check") {
        Ok(true) => (Status::Pass, None),
        Ok(false) => (Status::Fail, None),
        Err(note) => (Status::NotApplicable, Some(note)),
    }
}

impl Engine {
    pub fn new(catalog: Arc<Catalog>) -> Engine {
        let meta = catalog
            .controls()
            .iter()
            .map(|c| Meta {
                id: c.id.as_str().into(),
                title: c.title.as_str().into(),
                references: c.references.iter().map(ToString::to_string).collect(),
            })
            .collect();
        let mut by_alert: HashMap<AlertKind, Vec<usize>> = HashMap::new();
        let mut by_event: HashMap<&'static str, Vec<usize>> = HashMap::new();
        for (i, c) in catalog.controls().iter().enumerate() {
            for a in &c.triggers.alerts {
                by_alert.entry(*a).or_default().push(i);
            }
            for e in &c.triggers.events {
                by_event.entry(e).or_default().push(i);
            }
        }
        Engine {
            catalog,
            by_alert: by_alert.into_iter().map(|(k, v)| (k, v.into())).collect(),
            by_event: by_event.into_iter().map(|(k, v)| (k, v.into())).collect(),
            facts: HashMap::new(),
            meta,
            posture: HashMap::new(),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Whether an alert of this kind fires any control.
    pub fn wants_alert(&self, kind: AlertKind) -> bool {
        self.by_alert.contains_key(&kind)
    }

    /// Learns facts from the event and runs the controls its kind fires.
    pub fn on_event(&mut self, event: &Event, out: &mut Vec<Finding>) {
        let key = container_key(event);
        let facts = self.facts.entry(key.clone()).or_default();
        facts.see(event);
        if let EventKind::Container { facts: f, .. } = &event.kind {
            facts.learn(f);
        }
        let Some(controls) = self.by_event.get(event.kind.name()) else {
            return;
        };
        let controls = controls.clone();
        let json = serde_json::to_value(event).unwrap_or_default();
        let trigger = Trigger {
            service: &event.service,
            container: key,
            time: event.time,
            alert: None,
            evidence: vec![event.provenance.clone()],
        };
        self.run(&controls, &json, None, trigger, out);
    }

    /// Runs the controls an alert fires, against the event that raised it (if given).
    pub fn on_alert(&mut self, alert: &Alert, event: Option<&Event>, out: &mut Vec<Finding>) {
        let Some(controls) = self.by_alert.get(&alert.kind) else {
            return;
        };
        let controls = controls.clone();
        let event_json = event
            .and_then(|e| serde_json::to_value(e).ok())
            .unwrap_or_else(|| serde_json::json!({ "service": alert.service, "kind": "" }));
        let alert_json = serde_json::to_value(alert).unwrap_or_default();
        let evidence = if alert.evidence.is_empty() {
            event
                .map(|e| vec![e.provenance.clone()])
                .unwrap_or_default()
        } else {
            alert.evidence.clone()
        };
        let trigger = Trigger {
            service: &alert.service,
            container: event.map_or_else(|| alert.service.clone(), container_key),
            time: event.map_or(alert.last_seen, |e| e.time),
            alert: Some(&alert.id),
            evidence,
        };
        self.run(&controls, &event_json, Some(&alert_json), trigger, out);
    }

    /// Runs controls on one trigger, the container's facts as they are now; each run
    /// is a finding, recorded in the posture.
    fn run(
        &mut self,
        controls: &[usize],
        event: &serde_json::Value,
        alert: Option<&serde_json::Value>,
        t: Trigger<'_>,
        out: &mut Vec<Finding>,
    ) {
        let facts = Arc::new(self.facts.get(&t.container).cloned().unwrap_or_default());
        let prepared = Subject {
            event,
            alert,
            facts: &facts,
            service: t.service,
        }
        .prepare();
        let first = t.evidence.first().cloned().unwrap_or_default();
        for &i in controls {
            let control = &self.catalog.controls()[i];
            let (status, note) = evaluate_prepared(control, &prepared);
            let meta = &self.meta[i];
            let finding = Finding {
                id: finding_id(&control.id, t.service, &first, t.time, t.alert),
                time: t.time,
                service: t.service.to_owned(),
                container: t.container.clone(),
                control: meta.id.clone(),
                title: meta.title.clone(),
                status,
                severity: control.severity,
                references: meta.references.clone(),
                alert: t.alert.map(str::to_owned),
                evidence: t.evidence.clone(),
                facts: facts.clone(),
                note,
            };
            self.record(&finding);
            out.push(finding);
        }
    }

    fn record(&mut self, f: &Finding) {
        let service = match self.posture.get_mut(f.service.as_str()) {
            Some(s) => s,
            None => self.posture.entry(f.service.clone()).or_default(),
        };
        match service.get_mut(&*f.control) {
            Some(p) if p.status == f.status => {
                p.last_checked = p.last_checked.max(f.time);
                p.finding.clone_from(&f.id);
            }
            _ => {
                service.insert(
                    f.control.clone(),
                    PostureEntry {
                        service: f.service.clone(),
                        control: f.control.clone(),
                        status: f.status,
                        since: f.time,
                        last_checked: f.time,
                        finding: f.id.clone(),
                    },
                );
            }
        }
    }

    /// The posture per service and control, by service then control.
    pub fn posture(&self) -> impl Iterator<Item = &PostureEntry> {
        let mut all: Vec<&PostureEntry> = self.posture.values().flat_map(HashMap::values).collect();
        all.sort_by(|a, b| (&a.service, &a.control).cmp(&(&b.service, &b.control)));
        all.into_iter()
    }
}

fn finding_id(
    control: &str,
    service: &str,
    provenance: &Provenance,
    time: Nanos,
    alert: Option<&str>,
) -> String {
    format!(
        "{:016x}",
        detect::stable_hash(&[
            control,
            service,
            &provenance.to_string(),
            &time.0.to_string(),
            alert.unwrap_or(""),
        ])
    )
}
