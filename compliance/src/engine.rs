//! Targeted execution: an alert or event runs only the controls whose triggers name
//! its kind, against the triggering event and what is known about its container.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use cel::common::value::Val;
use regex::Regex;

use detect::{Alert, AlertKind, Severity};
use ingest::event::{ContainerFacts, EventKind, Image, Mount};
use ingest::{Event, Nanos, Provenance};
use serde::Serialize;

use crate::catalog::{Catalog, Control};
use crate::memo::{Memo, Recall, Values};

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

    /// Whether the event's workload says something these facts do not hold yet.
    fn would_see(&self, event: &Event) -> bool {
        let w = &event.workload;
        let news = |held: &str, seen: &Option<String>| seen.as_deref().is_some_and(|s| s != held);
        news(&self.image.repository, &w.image.repository)
            || news(&self.image.tag, &w.image.tag)
            || news(&self.image.digest, &w.image.digest)
            || news(&self.namespace, &w.namespace)
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
    #[serde(serialize_with = "shared_str")]
    pub service: Arc<str>,
    /// Container id, pod or name; the service when the event did not say.
    #[serde(serialize_with = "shared_str")]
    pub container: Arc<str>,
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
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "shared_opt_str"
    )]
    pub alert: Option<Arc<str>>,
    /// The triggering records (the alert's evidence, or the event itself).
    #[serde(serialize_with = "shared_slice")]
    pub evidence: Arc<[Provenance]>,
    /// The container facts the check read (shared by the findings of one trigger).
    #[serde(serialize_with = "shared_facts")]
    pub facts: Arc<Facts>,
    /// Why a control did not apply, when it could not be evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The service failed this control until this finding (a failure to resolve
    /// downstream, e.g. in paging).
    #[serde(skip)]
    pub clears_failure: bool,
}

// Shared parts of findings serialize as what they hold.
fn shared_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

fn shared_opt_str<S: serde::Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    v.as_deref().serialize(s)
}

fn shared_strings<S: serde::Serializer>(v: &Arc<[String]>, s: S) -> Result<S::Ok, S::Error> {
    v[..].serialize(s)
}

fn shared_slice<T: Serialize, S: serde::Serializer>(v: &Arc<[T]>, s: S) -> Result<S::Ok, S::Error> {
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
    facts: HashMap<String, Known>,
    /// Shared parts of each control's findings, by catalog index.
    meta: Vec<Meta>,
    /// By service, then catalog index.
    posture: HashMap<String, Vec<Option<PostureEntry>>>,
    /// Control results remembered by the values they read.
    memo: Memo,
    /// The causes of the latest failures, so that one cause is one finding.
    causes: Causes,
    /// Containers with facts, then services with posture, oldest first: past their
    /// caps the oldest go.
    facts_order: std::collections::VecDeque<String>,
    posture_order: std::collections::VecDeque<String>,
    /// Services whose posture changed (or went) since the last `take_posture_changes`.
    posture_changed: std::collections::HashSet<String>,
    /// Containers and services forgotten at the caps.
    evicted: u64,
}

/// Containers whose facts are kept: a large cluster's worth, several times over. A
/// producer inventing container ids pushes out the oldest, never memory.
pub const MAX_CONTAINERS: usize = 50_000;

/// Services whose posture is kept: the detector's own default cap on services.
pub const MAX_POSTURE_SERVICES: usize = 20_000;

/// Control results remembered by default (see [`Engine::with_result_cache`]).
pub const RESULT_CACHE: usize = 65_536;

/// Failing causes remembered: an alert reaches the engine in the same batch as the event
/// that raised it, so a few thousand cover every pair many batches over.
const CAUSES_KEPT: usize = 4096;

/// The latest failures by cause: the control, the service, and the first evidence (the
/// record that fired it) with its event time. An event and the alert raised by that same
/// event are one cause, and so is a record delivered twice; the second run is not a
/// second finding.
#[derive(Default)]
struct Causes {
    order: std::collections::VecDeque<(usize, String, String)>,
    set: std::collections::HashSet<(usize, String, String)>,
}

impl Causes {
    /// Remembers a failing cause; false when it was already remembered.
    fn first(&mut self, control: usize, service: &str, evidence: &str, time: &str) -> bool {
        let cause = (control, service.to_owned(), format!("{evidence}@{time}"));
        if self.set.contains(&cause) {
            return false;
        }
        if self.order.len() == CAUSES_KEPT
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(cause.clone());
        self.set.insert(cause);
        true
    }
}

/// A container's facts, shared with the findings that read them, and as checks read
/// them (made when a trigger first needs them after a change).
#[derive(Default)]
struct Known {
    facts: Arc<Facts>,
    json: Option<Arc<serde_json::Value>>,
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

/// JSON to CEL values that borrow the JSON's strings, in one pass: integers stay
/// integers (CEL does not compare `int` with `uint`).
fn cel_value(v: &serde_json::Value) -> Box<dyn Val + '_> {
    use cel::common::types::{
        CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString,
    };
    match v {
        serde_json::Value::Null => Box::new(CelNull),
        serde_json::Value::Bool(b) => Box::new(CelBool::from(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Box::new(CelInt::from(i)),
            None => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        serde_json::Value::String(s) => Box::new(CelString::from(s.as_str())),
        serde_json::Value::Array(a) => Box::new(CelList::from(
            a.iter().map(cel_value).collect::<Vec<Box<dyn Val + '_>>>(),
        )),
        serde_json::Value::Object(o) => Box::new(CelMap::from(
            o.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), cel_value(v)))
                .collect::<HashMap<CelMapKey<'_>, Box<dyn Val + '_>>>(),
        )),
    }
}

/// What a control reads.
pub struct Subject<'a> {
    pub event: &'a serde_json::Value,
    pub alert: Option<&'a serde_json::Value>,
    /// The container's facts as JSON (see [`Facts::to_json`]).
    pub facts: &'a serde_json::Value,
    pub service: &'a str,
}

/// A subject bound into a CEL context once, for all the controls it fires (binding
/// converts the values, which costs more than most checks). The context borrows the
/// subject's strings.
pub struct Prepared<'v> {
    ctx: cel::Context<'v, 'v>,
}

impl<'a> Subject<'a> {
    pub fn prepare(&self) -> Prepared<'a> {
        let mut ctx = cel::Context::with_env(environment());
        ctx.add_variable_as_val("event", cel_value(self.event));
        ctx.add_variable_as_val(
            "alert",
            self.alert
                .map_or_else(|| Box::new(cel::common::types::CelNull), cel_value),
        );
        ctx.add_variable_as_val("facts", cel_value(self.facts));
        ctx.add_variable_as_val(
            "service",
            Box::new(cel::common::types::CelString::from(self.service)),
        );
        Prepared { ctx }
    }
}

impl Facts {
    /// The facts as checks read them.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
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
pub fn evaluate_prepared(control: &Control, s: &Prepared<'_>) -> (Status, Option<String>) {
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
        Engine::with_result_cache(catalog, RESULT_CACHE)
    }

    /// An engine that remembers up to `capacity` control results by the exact values
    /// each control reads (0: evaluate every run).
    pub fn with_result_cache(catalog: Arc<Catalog>, capacity: usize) -> Engine {
        let memo = Memo::new(
            capacity,
            catalog.controls().iter().map(|c| {
                (
                    c.applies.as_ref().map(|a| a.expression()),
                    c.check.expression(),
                )
            }),
        );
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
            memo,
            causes: Causes::default(),
            facts_order: Default::default(),
            posture_order: Default::default(),
            posture_changed: Default::default(),
            evicted: 0,
        }
    }

    /// Containers' facts and services' posture forgotten at their caps, so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Control runs answered from remembered results, and runs evaluated, so far.
    pub fn result_cache_stats(&self) -> (u64, u64) {
        (self.memo.hits, self.memo.misses)
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The catalog, shared.
    pub fn catalog_arc(&self) -> Arc<Catalog> {
        self.catalog.clone()
    }

    /// Whether an alert of this kind fires any control.
    pub fn wants_alert(&self, kind: AlertKind) -> bool {
        self.by_alert.contains_key(&kind)
    }

    /// Learns facts from the event and runs the controls its kind fires.
    pub fn on_event(&mut self, event: &Event, out: &mut Vec<Finding>) {
        let key = self.see(event);
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

    /// Learns the facts an event carries about its container (once: seeing the same
    /// event again changes nothing); returns the container's key.
    fn see(&mut self, event: &Event) -> String {
        let key = container_key(event);
        if !self.facts.contains_key(&key) {
            if self.facts.len() >= MAX_CONTAINERS
                && let Some(old) = self.facts_order.pop_front()
            {
                self.facts.remove(&old);
                self.evicted += 1;
            }
            self.facts_order.push_back(key.clone());
            self.facts.insert(key.clone(), Known::default());
        }
        let known = self.facts.get_mut(&key).expect("inserted above");
        let lifecycle = match &event.kind {
            EventKind::Container { facts, .. } => Some(facts),
            _ => None,
        };
        if lifecycle.is_some() || known.facts.would_see(event) {
            let facts = Arc::make_mut(&mut known.facts);
            facts.see(event);
            if let Some(f) = lifecycle {
                facts.learn(f);
            }
            known.json = None;
        }
        key
    }

    /// Runs the controls an alert fires, against the event that raised it (if given).
    pub fn on_alert(&mut self, alert: &Alert, event: Option<&Event>, out: &mut Vec<Finding>) {
        let Some(controls) = self.by_alert.get(&alert.kind) else {
            return;
        };
        let controls = controls.clone();
        // The alert may come before its event: the checks see what the event says.
        if let Some(e) = event {
            self.see(e);
        }
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

    /// Runs controls on one trigger, the container's facts as they are now, and
    /// records each result in the posture. A failing run is always a finding (each is
    /// evidence of a violation); a passing or not applicable one is a finding when it
    /// changes the posture, and otherwise only moves the posture's `last_checked`.
    fn run(
        &mut self,
        controls: &[usize],
        event: &serde_json::Value,
        alert: Option<&serde_json::Value>,
        t: Trigger<'_>,
        out: &mut Vec<Finding>,
    ) {
        let known = match self.facts.get_mut(&t.container) {
            Some(k) => k,
            None => self.facts.entry(t.container.clone()).or_default(),
        };
        let facts = known.facts.clone();
        let facts_json = known
            .json
            .get_or_insert_with(|| Arc::new(facts.to_json()))
            .clone();
        let subject = Subject {
            event,
            alert,
            facts: &facts_json,
            service: t.service,
        };
        let values = Values {
            event,
            alert,
            facts: &facts_json,
            service: t.service,
        };
        // Bound on the first control that must be evaluated.
        let mut prepared = None;
        self.memo.begin();
        if !self.posture.contains_key(t.service) {
            if self.posture.len() >= MAX_POSTURE_SERVICES
                && let Some(old) = self.posture_order.pop_front()
            {
                self.posture.remove(&old);
                self.posture_changed.insert(old);
                self.evicted += 1;
            }
            self.posture_order.push_back(t.service.to_owned());
            self.posture
                .insert(t.service.to_owned(), vec![None; self.meta.len()]);
        }
        if !self.posture_changed.contains(t.service) {
            self.posture_changed.insert(t.service.to_owned());
        }
        let posture = self.posture.get_mut(t.service).expect("inserted above");
        // What every finding of this trigger shares, made for its first finding.
        let mut shared: Option<Shared> = None;
        for &i in controls {
            let control = &self.catalog.controls()[i];
            let by_parts = self.memo.by_parts(i, &values, &mut |part| {
                let p = prepared.get_or_insert_with(|| subject.prepare());
                match cel::Value::resolve(part, &p.ctx) {
                    Ok(cel::Value::Bool(b)) => Some(b),
                    _ => None,
                }
            });
            let (status, note) = match by_parts
                .map_or_else(|| self.memo.recall(i, &values), Recall::Hit)
            {
                Recall::Hit(result) => result,
                Recall::Miss => {
                    let p = prepared.get_or_insert_with(|| subject.prepare());
                    let result = evaluate_prepared(control, p);
                    self.memo.remember(&result);
                    result
                }
                Recall::Off => {
                    evaluate_prepared(control, prepared.get_or_insert_with(|| subject.prepare()))
                }
            };
            let held = &mut posture[i];
            // A control that did not apply judged nothing: it leaves a pass or a failure
            // in place (and is a finding only when it could not be evaluated).
            let judged = status != Status::NotApplicable
                || held
                    .as_ref()
                    .is_none_or(|p| p.status == Status::NotApplicable);
            if let Some(p) = held
                && p.status == status
                && status != Status::Fail
            {
                p.last_checked = p.last_checked.max(t.time);
                continue;
            }
            if !judged && note.is_none() {
                continue;
            }
            let sh = shared.get_or_insert_with(|| Shared {
                first: t
                    .evidence
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                time: t.time.0.to_string(),
                service: t.service.into(),
                container: t.container.as_str().into(),
                alert: t.alert.map(Into::into),
                evidence: t.evidence.as_slice().into(),
            });
            // The same record failing the same control again (the event, then the alert
            // it raised) is the finding already made.
            if status == Status::Fail
                && !sh.first.is_empty()
                && !self.causes.first(i, t.service, &sh.first, &sh.time)
            {
                if let Some(p) = held {
                    p.last_checked = p.last_checked.max(t.time);
                }
                continue;
            }
            let meta = &self.meta[i];
            let id = detect::stable_hash(&[
                &control.id,
                t.service,
                &sh.first,
                &sh.time,
                t.alert.unwrap_or(""),
            ]);
            let finding = Finding {
                id: format!("{id:016x}"),
                time: t.time,
                service: sh.service.clone(),
                container: sh.container.clone(),
                control: meta.id.clone(),
                title: meta.title.clone(),
                status,
                severity: control.severity,
                references: meta.references.clone(),
                alert: sh.alert.clone(),
                evidence: sh.evidence.clone(),
                facts: facts.clone(),
                note,
                clears_failure: held.as_ref().is_some_and(|p| p.status == Status::Fail)
                    && judged
                    && status != Status::Fail,
            };
            match held {
                _ if !judged => {}
                Some(p) if p.status == status => {
                    p.last_checked = p.last_checked.max(t.time);
                    p.finding.clone_from(&finding.id);
                }
                _ => {
                    *held = Some(PostureEntry {
                        service: t.service.to_owned(),
                        control: meta.id.clone(),
                        status,
                        since: t.time,
                        last_checked: t.time,
                        finding: finding.id.clone(),
                    });
                }
            }
            out.push(finding);
        }
    }

    /// The services whose posture changed since the last call: a reader's copy of the
    /// posture needs to take only theirs again.
    pub fn take_posture_changes(&mut self) -> std::collections::HashSet<String> {
        std::mem::take(&mut self.posture_changed)
    }

    /// One service's posture, by control; empty for a service without one.
    pub fn posture_of(&self, service: &str) -> Vec<PostureEntry> {
        let mut entries: Vec<PostureEntry> = self
            .posture
            .get(service)
            .map(|p| p.iter().flatten().cloned().collect())
            .unwrap_or_default();
        entries.sort_by(|a, b| a.control.cmp(&b.control));
        entries
    }

    /// The posture per service and control, by service then control.
    pub fn posture(&self) -> impl Iterator<Item = &PostureEntry> {
        let mut all: Vec<&PostureEntry> = self.posture.values().flatten().flatten().collect();
        all.sort_by(|a, b| (&a.service, &a.control).cmp(&(&b.service, &b.control)));
        all.into_iter()
    }
}

/// What the findings of one trigger share.
struct Shared {
    first: String,
    time: String,
    service: Arc<str>,
    container: Arc<str>,
    alert: Option<Arc<str>>,
    evidence: Arc<[Provenance]>,
}
