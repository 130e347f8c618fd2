#!/usr/bin/env python3
"""Checks the built-in control catalog and its golden cases without building driftwatch.

    pip install cel-python
    python3 compliance/tests/golden/check_catalog.py

It validates compliance/controls/builtin.toml the way the Rust loader does (id pattern
and uniqueness, severities, framework references, trigger kinds), checks that every
control has golden cases that fail and that do not, and evaluates every case in
controls.json with cel-python: `applies` (default true) false gives not_applicable,
else `check` true gives pass and false fail. Cases with `"expect": "none"` name a
trigger that no control may fire on.

The Rust `cel` crate evaluates the catalog in driftwatch; the cases are shaped the way
the engine hands them to it (the event as its native form re-serialized, the alert as a
whole drift alert), and `cargo test -p compliance --test golden` runs the same cases
there.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import tomllib
from pathlib import Path

try:
    import celpy
except ImportError:  # pragma: no cover
    sys.exit("check_catalog.py needs cel-python: pip install cel-python")

HERE = Path(__file__).resolve().parent
CATALOG = HERE.parent.parent / "controls" / "builtin.toml"
CASES = HERE / "controls.json"

ID = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$")
SEVERITIES = {"info", "low", "medium", "high", "critical"}
SECTION = r"^\d+(\.\d+)+$"
FRAMEWORKS = {
    "cis-docker": re.compile(SECTION),
    "cis-kubernetes": re.compile(SECTION),
    "nist-800-190": re.compile(SECTION),
    "nist-800-53": re.compile(r"^[A-Z]{2}-\d+(\(\d+\))?$"),
    "pci-dss": re.compile(r"^\d+(\.\d+)*$"),
}
ALERT_KINDS = {
    "process", "file", "sensitive_read", "network", "exec", "baseline_cap",
    "log_template", "rate",
}
EVENT_KINDS = {
    "process_exec", "process_exit", "file_access", "network", "exec_into", "container",
    "log", "sensor_alert",
}
# Kinds no control may run on: drift in rates and log templates says nothing a control
# can judge, and log lines are the log-template detector's business.
NEVER_ALERTS = {"rate", "log_template"}
NEVER_EVENTS = {"log"}
FIELDS = {
    "id", "title", "rationale", "severity", "remediation", "references", "triggers",
    "applies", "check",
}
REQUIRED = FIELDS - {"applies"}
EXPECT = {"fail", "pass", "not_applicable", "none"}


def validate_catalog(controls: list[dict]) -> list[str]:
    problems = []
    seen = set()
    for c in controls:
        cid = c.get("id", "?")
        for f in sorted(REQUIRED - c.keys()):
            problems.append(f"{cid}: missing {f}")
        for f in sorted(c.keys() - FIELDS):
            problems.append(f"{cid}: unknown field {f}")
        if not ID.match(cid):
            problems.append(f"{cid}: id does not match {ID.pattern}")
        if cid in seen:
            problems.append(f"{cid}: duplicate id")
        seen.add(cid)
        if c.get("severity") not in SEVERITIES:
            problems.append(f"{cid}: severity {c.get('severity')!r}")
        refs = c.get("references", [])
        if not refs:
            problems.append(f"{cid}: no references")
        for r in refs:
            fw, _, section = r.partition(":")
            pattern = FRAMEWORKS.get(fw)
            if pattern is None:
                problems.append(f"{cid}: unknown framework in {r!r}")
            elif not pattern.match(section):
                problems.append(f"{cid}: {section!r} is not a {fw} section id")
        if len(refs) != len(set(refs)):
            problems.append(f"{cid}: repeated reference")
        t = c.get("triggers", {})
        if set(t) - {"alerts", "events"}:
            problems.append(f"{cid}: unknown trigger keys {sorted(set(t) - {'alerts', 'events'})}")
        alerts, events = t.get("alerts", []), t.get("events", [])
        if not alerts and not events:
            problems.append(f"{cid}: triggers name no alert or event kind")
        for a in alerts:
            if a not in ALERT_KINDS:
                problems.append(f"{cid}: unknown alert kind {a!r}")
            if a in NEVER_ALERTS:
                problems.append(f"{cid}: no control runs on {a} alerts")
        for e in events:
            if e not in EVENT_KINDS:
                problems.append(f"{cid}: unknown event kind {e!r}")
            if e in NEVER_EVENTS:
                problems.append(f"{cid}: no control runs on {e} events")
    return problems


# --- The shapes the engine evaluates --------------------------------------------------

def native_event(e: dict) -> dict:
    """The event as driftwatch re-serializes native input: defaults filled in, empty
    optional lists and maps left out."""
    e = copy.deepcopy(e)
    e.setdefault("source", "native")
    e.setdefault("workload", {})
    e.setdefault("service", "")
    w = e["workload"]
    if not any(w.get("image", {}).get(k) for k in ("repository", "tag", "digest")):
        w.pop("image", None)
    if not w.get("labels"):
        w.pop("labels", None)
    p = e.get("process")
    if isinstance(p, dict) and not p.get("args"):
        p.pop("args", None)
    for key in ("tags", "source_ips"):
        if key in e and not e[key]:
            del e[key]
    if e.get("kind") == "exec_into":
        e.setdefault("command", [])
    f = e.get("facts")
    if isinstance(f, dict):
        for key in ("capabilities", "mounts"):
            if key in f and not f[key]:
                del f[key]
        for m in f.get("mounts", []):
            m.setdefault("read_only", False)
        if not f:
            del e["facts"]
    return e


def whole_alert(a: dict | None, event: dict) -> dict | None:
    """A whole drift alert from a case's partial one (the keys a case leaves out get
    the values the Rust golden test gives them)."""
    if a is None:
        return None
    full = {
        "id": "golden-alert", "time": event["time"], "last_seen": event["time"],
        "service": event.get("service", ""), "severity": "high", "subject": "",
        "explanation": "", "evidence": [], "dedup_key": "k", "count": 1, "status": "open",
    }
    full.update(a)
    if "dimension" not in full:
        kind = full.get("kind", "")
        full["dimension"] = {"baseline_cap": "process", "rate": "process"}.get(kind, kind)
    return full


def whole_facts(f: dict | None) -> dict:
    f = f or {}
    image = f.get("image") or {}
    return {
        "known": bool(f.get("known", False)),
        "user": f.get("user") or "",
        "privileged": bool(f.get("privileged", False)),
        "capabilities": list(f.get("capabilities") or []),
        "mounts": [
            {"source": m["source"], "destination": m["destination"],
             "read_only": bool(m.get("read_only", False))}
            for m in f.get("mounts") or []
        ],
        "read_only_rootfs": bool(f.get("read_only_rootfs", False)),
        "image": {k: image.get(k) or "" for k in ("repository", "tag", "digest")},
        "namespace": f.get("namespace") or "",
    }


class Evaluator:
    def __init__(self) -> None:
        self.env = celpy.Environment()
        self.programs: dict[str, object] = {}

    def program(self, source: str):
        if source not in self.programs:
            self.programs[source] = self.env.program(self.env.compile(source))
        return self.programs[source]

    def run(self, source: str, activation: dict) -> bool:
        result = self.program(source).evaluate(activation)
        if isinstance(result, Exception):
            raise result
        if not isinstance(result, celpy.celtypes.BoolType):
            raise TypeError(f"gave {type(result).__name__}, not a bool")
        return bool(result)

    def status(self, control: dict, event: dict, alert: dict | None, facts: dict,
               service: str) -> tuple[str, str | None]:
        activation = {
            "event": celpy.json_to_cel(event),
            "alert": celpy.json_to_cel(alert),
            "facts": celpy.json_to_cel(facts),
            "service": celpy.celtypes.StringType(service),
        }
        try:
            if "applies" in control and not self.run(control["applies"], activation):
                return "not_applicable", None
        except Exception as e:  # noqa: BLE001 - an evaluation error is a finding note
            return "not_applicable", f"applies could not be evaluated: {e}"
        try:
            return ("pass" if self.run(control["check"], activation) else "fail"), None
        except Exception as e:  # noqa: BLE001
            return "not_applicable", f"check could not be evaluated: {e}"


def main() -> int:
    controls = tomllib.loads(CATALOG.read_text())["control"]
    problems = validate_catalog(controls)
    by_id = {c["id"]: c for c in controls}
    cases = json.loads(CASES.read_text())
    evaluator = Evaluator()
    # Every expression compiles.
    for c in controls:
        for key in ("applies", "check"):
            if key in c:
                try:
                    evaluator.program(c[key])
                except Exception as e:  # noqa: BLE001
                    problems.append(f"{c['id']}: {key} is not valid CEL: {e}")

    outcomes: dict[str, set[str]] = {cid: set() for cid in by_id}
    names = set()
    passed = failed = 0
    for case in cases:
        name = case.get("name", "?")
        if name in names:
            problems.append(f"case {name!r}: duplicate name")
        names.add(name)
        expect = case.get("expect")
        if expect not in EXPECT:
            problems.append(f"case {name!r}: expect {expect!r}")
            continue
        trigger = case.get("trigger")
        event = case.get("event") or {}
        alert = case.get("alert")
        kind = event.get("kind")
        if kind not in EVENT_KINDS or "time" not in event:
            problems.append(f"case {name!r}: the event needs a time and a known kind")
            continue
        if (trigger == "alert") != (alert is not None) or trigger not in ("alert", "event"):
            problems.append(f"case {name!r}: trigger {trigger!r} and alert disagree")
            continue
        if alert is not None and alert.get("kind") not in ALERT_KINDS:
            problems.append(f"case {name!r}: unknown alert kind {alert.get('kind')!r}")
            continue

        if expect == "none":
            fired = [
                c["id"] for c in controls
                if (alert is not None and alert["kind"] in c["triggers"].get("alerts", []))
                or (alert is None and kind in c["triggers"].get("events", []))
            ]
            if fired:
                problems.append(f"case {name!r}: expected no control, fires {fired}")
                failed += 1
            else:
                passed += 1
            continue

        cid = case.get("control")
        control = by_id.get(cid)
        if control is None:
            problems.append(f"case {name!r}: no control {cid!r}")
            continue
        if alert is not None and alert["kind"] not in control["triggers"].get("alerts", []):
            problems.append(f"case {name!r}: {cid} is not fired by {alert['kind']} alerts")
            continue
        if alert is None and kind not in control["triggers"].get("events", []):
            problems.append(f"case {name!r}: {cid} is not fired by {kind} events")
            continue

        ev = native_event(event)
        al = whole_alert(alert, ev)
        status, note = evaluator.status(control, ev, al, whole_facts(case.get("facts")),
                                        ev["service"])
        if status != expect:
            problems.append(
                f"case {name!r}: {cid} gave {status}, expected {expect}"
                + (f" ({note})" if note else "")
            )
            failed += 1
        else:
            passed += 1
            if note and expect == "not_applicable":
                problems.append(f"case {name!r}: {cid} is not applicable only through an error ({note})")
        outcomes[cid].add(status)

    for cid, seen in outcomes.items():
        if "fail" not in seen:
            problems.append(f"{cid}: no golden case fails")
        if not seen & {"pass", "not_applicable"}:
            problems.append(f"{cid}: no golden case passes or is not applicable")
    if not any(c.get("expect") == "none" for c in cases):
        problems.append("no case names a trigger that fires no control")

    for p in problems:
        print(p, file=sys.stderr)
    frameworks = sorted({r.split(":")[0] for c in controls for r in c["references"]})
    print(f"{len(controls)} controls ({', '.join(frameworks)}), {len(cases)} golden cases")
    print(f"{passed} passed, {failed} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
