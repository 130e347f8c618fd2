//! Golden cases per control (`tests/golden/controls.json`): a trigger (an event, or an
//! alert with its event) and the container's facts go in, the expected status comes
//! out; and triggers that concern no control fire none.

use std::sync::Arc;

use compliance::{Catalog, Engine, Facts, Status, Subject, evaluate};
use detect::{Alert, AlertKind};
use ingest::Event;
use serde_json::{Value, json};

fn cases() -> Vec<Value> {
    let path =
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("tests/golden/controls.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The event as the engine sees it: parsed as native input, serialized back.
fn event(case: &Value) -> Event {
    serde_json::from_value(case["event"].clone())
        .unwrap_or_else(|e| panic!("{}: event: {e}", case["name"]))
}

/// A whole alert from a case's partial one.
fn alert(case: &Value, event: &Event) -> Option<Alert> {
    let a = case["alert"].as_object()?;
    let mut full = json!({
        "id": "golden-alert", "time": event.time, "last_seen": event.time,
        "service": event.service, "severity": "high", "subject": "", "explanation": "",
        "evidence": [], "dedup_key": "k", "count": 1, "status": "open",
    });
    for (k, v) in a {
        full[k] = v.clone();
    }
    if full.get("dimension").is_none() {
        let kind = full["kind"].as_str().unwrap_or_default().to_owned();
        full["dimension"] = json!(match kind.as_str() {
            "exec" => "exec".to_owned(),
            "baseline_cap" | "rate" => "process".to_owned(),
            other => other.to_owned(),
        });
    }
    Some(serde_json::from_value(full).unwrap_or_else(|e| panic!("{}: alert: {e}", case["name"])))
}

fn facts(case: &Value) -> Facts {
    let f = &case["facts"];
    let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
    Facts {
        known: f["known"].as_bool().unwrap_or(false),
        user: s("user"),
        privileged: f["privileged"].as_bool().unwrap_or(false),
        capabilities: serde_json::from_value(f["capabilities"].clone()).unwrap_or_default(),
        mounts: serde_json::from_value(f["mounts"].clone()).unwrap_or_default(),
        read_only_rootfs: f["read_only_rootfs"].as_bool().unwrap_or(false),
        image: compliance::engine::FactsImage {
            repository: f["image"]["repository"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            tag: f["image"]["tag"].as_str().unwrap_or_default().to_owned(),
            digest: f["image"]["digest"].as_str().unwrap_or_default().to_owned(),
        },
        namespace: s("namespace"),
    }
}

#[test]
fn every_control_gives_its_golden_results() {
    let catalog = Catalog::builtin();
    let mut failures = Vec::new();
    let mut checked = std::collections::HashMap::<String, (bool, bool)>::new();
    for case in cases() {
        let name = case["name"].as_str().unwrap().to_owned();
        if case["expect"] == "none" {
            continue;
        }
        let id = case["control"].as_str().unwrap();
        let control = catalog
            .get(id)
            .unwrap_or_else(|| panic!("{name}: no control {id}"));
        let event = event(&case);
        let alert = alert(&case, &event);
        match (&alert, case["trigger"].as_str()) {
            (Some(a), Some("alert")) => assert!(
                control.triggers.alerts.contains(&a.kind),
                "{name}: {id} is not fired by {:?} alerts",
                a.kind
            ),
            (None, Some("event")) => assert!(
                control.triggers.events.contains(&event.kind.name()),
                "{name}: {id} is not fired by {} events",
                event.kind.name()
            ),
            other => panic!("{name}: trigger and alert disagree: {other:?}"),
        }
        let event_json = serde_json::to_value(&event).unwrap();
        let alert_json = alert.as_ref().map(|a| serde_json::to_value(a).unwrap());
        let facts = facts(&case).to_json();
        let (status, note) = evaluate(
            control,
            &Subject {
                event: &event_json,
                alert: alert_json.as_ref(),
                facts: &facts,
                service: &event.service,
            },
        );
        let expected = case["expect"].as_str().unwrap();
        if status.as_str() != expected {
            failures.push(format!(
                "{name}: {id} gave {} ({note:?}), expected {expected}",
                status.as_str()
            ));
        }
        let seen = checked.entry(id.to_owned()).or_default();
        seen.0 |= status == Status::Fail;
        seen.1 |= status != Status::Fail;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for c in catalog.controls() {
        let (fail, other) = checked.get(&c.id).copied().unwrap_or_default();
        assert!(
            fail && other,
            "{} needs golden cases that fail and that do not",
            c.id
        );
    }
}

#[test]
fn triggers_that_concern_no_control_fire_none() {
    let catalog = Arc::new(Catalog::builtin());
    let none: Vec<Value> = cases()
        .into_iter()
        .filter(|c| c["expect"] == "none")
        .collect();
    assert!(!none.is_empty());
    for case in none {
        let mut engine = Engine::new(catalog.clone());
        let event = event(&case);
        let mut out = Vec::new();
        match alert(&case, &event) {
            Some(a) => engine.on_alert(&a, Some(&event), &mut out),
            None => engine.on_event(&event, &mut out),
        }
        assert!(
            out.is_empty(),
            "{}: fired {:?}",
            case["name"],
            out.iter().map(|f| &f.control).collect::<Vec<_>>()
        );
    }
    // In particular, rate and log-template drift concern no control.
    let engine = Engine::new(catalog);
    assert!(!engine.wants_alert(AlertKind::Rate));
    assert!(!engine.wants_alert(AlertKind::LogTemplate));
}

#[test]
fn facts_from_a_container_start_reach_the_checks_an_alert_fires() {
    let catalog = Arc::new(Catalog::builtin());
    let mut engine = Engine::new(catalog.clone());
    let start: Event = serde_json::from_value(json!({
        "time": "2026-03-02T10:00:00Z", "service": "prod/api", "kind": "container", "action": "start",
        "workload": {"namespace": "prod", "pod": "api-1", "container_id": "0b8e4f1d2c3a"},
        "facts": {"user": "root", "privileged": true, "capabilities": ["CAP_SYS_ADMIN"],
                  "mounts": [{"source": "/var/run/docker.sock", "destination": "/var/run/docker.sock"}],
                  "read_only_rootfs": false}
    }))
    .unwrap();
    let mut out = Vec::new();
    engine.on_event(&start, &mut out);
    let failing: Vec<&str> = out
        .iter()
        .filter(|f| f.status == Status::Fail)
        .map(|f| &*f.control)
        .collect();
    assert!(
        failing.len() >= 4,
        "a privileged root container with the docker socket fails several controls: {failing:?}"
    );
    let shell: Event = serde_json::from_value(json!({
        "time": "2026-03-02T10:05:00Z", "service": "prod/api", "kind": "process_exec",
        "workload": {"namespace": "prod", "pod": "api-1", "container_id": "0b8e4f1d2c3a"},
        "process": {"exe": "/bin/sh", "parent_exe": "/usr/local/bin/python3.12"}
    }))
    .unwrap();
    let alert: Alert = serde_json::from_value(json!({
        "id": "a1", "time": "2026-03-02T10:05:00Z", "last_seen": "2026-03-02T10:05:00Z",
        "service": "prod/api", "kind": "process", "severity": "critical",
        "subject": "/bin/sh (parent /usr/local/bin/python3.12)", "dimension": "process",
        "explanation": "never seen", "evidence": [{"origin": "tetragon", "partition": 0, "offset": 7}],
        "dedup_key": "k", "count": 1, "status": "open"
    }))
    .unwrap();
    let mut out = Vec::new();
    engine.on_alert(&alert, Some(&shell), &mut out);
    assert!(!out.is_empty());
    for f in &out {
        assert_eq!(f.alert.as_deref(), Some("a1"));
        assert_eq!(f.evidence[0].offset, 7);
        assert!(f.facts.privileged && f.facts.user == "root", "{f:?}");
    }
    assert!(out.iter().any(|f| f.status == Status::Fail));
    // Posture says since when a control fails.
    let p = engine
        .posture()
        .find(|p| p.status == Status::Fail)
        .expect("a failing control");
    assert_eq!(p.service, "prod/api");
}

#[test]
fn remembered_results_equal_evaluated_ones() {
    let catalog = Arc::new(Catalog::builtin());
    // Every golden trigger, twice, so that the second pass can reuse results; the
    // facts are whatever the engine learned from the cases' container events so far.
    let run = |engine: &mut Engine| {
        let mut got = Vec::new();
        for _ in 0..2 {
            for case in cases() {
                let event = event(&case);
                let mut out = Vec::new();
                match alert(&case, &event) {
                    Some(a) => engine.on_alert(&a, Some(&event), &mut out),
                    None => engine.on_event(&event, &mut out),
                }
                got.extend(out.into_iter().map(|f| (f.control, f.status, f.note)));
            }
        }
        got
    };
    let mut remembering = Engine::new(catalog.clone());
    let mut evaluating = Engine::with_result_cache(catalog, 0);
    let (with, without) = (run(&mut remembering), run(&mut evaluating));
    // The second pass repeats the first one's records: their failures are the findings
    // already made, so only changes of posture come again.
    assert!(with.len() > 150, "{} results", with.len());
    assert_eq!(with, without);
    let (hits, misses) = remembering.result_cache_stats();
    assert!(
        hits >= misses,
        "the second pass reuses results: {hits} hits, {misses} misses"
    );
    let (none, evaluated) = evaluating.result_cache_stats();
    assert_eq!((none, evaluated), (0, hits + misses));
    // And the posture they lead to.
    assert!(remembering.posture().eq(evaluating.posture()));
}

#[test]
fn repeated_passes_move_the_posture_and_every_failure_is_a_finding() {
    let catalog = Arc::new(Catalog::builtin());
    let mut engine = Engine::new(catalog);
    let exec = |minute: u32, exe: &str| -> Event {
        serde_json::from_value(json!({
            "time": format!("2026-03-02T10:{minute:02}:00Z"), "service": "prod/api",
            "kind": "process_exec",
            "workload": {"namespace": "prod", "pod": "api-1", "container_id": "0b8e4f1d2c3a"},
            "process": {"exe": exe, "parent_exe": "/usr/local/bin/gunicorn"}
        }))
        .unwrap()
    };
    let mut first = Vec::new();
    engine.on_event(&exec(0, "/usr/local/bin/python3.12"), &mut first);
    assert!(!first.is_empty() && first.iter().all(|f| f.status != Status::Fail));
    // The same pass again: no new finding, a later `last_checked`.
    let mut again = Vec::new();
    engine.on_event(&exec(1, "/usr/local/bin/python3.12"), &mut again);
    assert!(again.is_empty(), "{again:?}");
    let p = engine
        .posture()
        .find(|p| p.control == first[0].control)
        .unwrap();
    assert_eq!(
        (p.since.to_rfc3339(), p.last_checked.to_rfc3339()),
        (
            "2026-03-02T10:00:00.000000000Z".to_owned(),
            "2026-03-02T10:01:00.000000000Z".to_owned()
        )
    );
    // A package manager fails a control each time it runs, and the posture keeps the
    // first failure's time.
    let mut fails = Vec::new();
    for minute in [2, 3] {
        let mut out = Vec::new();
        engine.on_event(&exec(minute, "/usr/bin/apt-get"), &mut out);
        fails.extend(out.into_iter().filter(|f| f.status == Status::Fail));
    }
    let control = fails[0].control.clone();
    assert_eq!(fails.iter().filter(|f| f.control == control).count(), 2);
    let p = engine.posture().find(|p| p.control == control).unwrap();
    assert_eq!(p.status, Status::Fail);
    assert_eq!(p.since.to_rfc3339(), "2026-03-02T10:02:00.000000000Z");
    assert_eq!(p.finding, fails.last().unwrap().id);
    // A shell started by the application fails DW-RT-015; a later process it does not
    // apply to leaves that failure, and since when it holds, in place.
    let mut out = Vec::new();
    engine.on_event(&exec(4, "/bin/sh"), &mut out);
    assert!(
        out.iter()
            .any(|f| &*f.control == "DW-RT-015" && f.status == Status::Fail)
    );
    // The package-manager control passes again: that finding ends its failure.
    let cleared = out
        .iter()
        .find(|f| &*f.control == "DW-RT-001")
        .expect("a finding for the end of the failure");
    assert!(cleared.status == Status::Pass && cleared.clears_failure);
    assert!(
        out.iter()
            .filter(|f| f.clears_failure)
            .all(|f| f.status != Status::Fail)
    );
    let mut out = Vec::new();
    engine.on_event(&exec(5, "/usr/local/bin/python3.12"), &mut out);
    assert!(!out.iter().any(|f| &*f.control == "DW-RT-015"), "{out:?}");
    let p = engine
        .posture()
        .find(|p| &*p.control == "DW-RT-015")
        .unwrap();
    assert_eq!(p.status, Status::Fail);
    assert_eq!(p.since.to_rfc3339(), "2026-03-02T10:04:00.000000000Z");
}

/// A producer inventing service keys and container ids fills the caps and pushes the
/// oldest out; memory stays bounded and the newest are judged.
#[test]
fn sprayed_services_and_containers_stay_within_the_caps() {
    use compliance::engine::{MAX_CONTAINERS, MAX_POSTURE_SERVICES};
    let mut engine = Engine::new(Arc::new(Catalog::builtin()));
    let n = MAX_POSTURE_SERVICES.max(MAX_CONTAINERS) + 100;
    let mut out = Vec::new();
    for i in 0..n {
        let start: Event = serde_json::from_value(json!({
            "time": "2026-03-02T10:00:00Z", "service": format!("spray/{i}"), "kind": "container",
            "action": "start",
            "workload": {"namespace": "spray", "pod": format!("p-{i}"), "container_id": format!("{i:012x}")},
            "facts": {"user": "root", "privileged": true}
        }))
        .unwrap();
        engine.on_event(&start, &mut out);
        out.clear();
    }
    let services: std::collections::HashSet<&str> =
        engine.posture().map(|p| p.service.as_str()).collect();
    assert_eq!(services.len(), MAX_POSTURE_SERVICES);
    assert!(services.contains(format!("spray/{}", n - 1).as_str()));
    assert!(!services.contains("spray/0"));
    assert_eq!(
        engine.evicted() as usize,
        (n - MAX_CONTAINERS) + (n - MAX_POSTURE_SERVICES)
    );
}
