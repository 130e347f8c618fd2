#!/usr/bin/env python3
"""Prints every query of driftwatch's Grafana dashboards as the data sources receive it.

Grafana expands its macros before a query leaves for the data source. This does the
same for the macros the dashboards use, for one fixed time range, so that the SQL can
be run against driftwatch's PostgreSQL wire server and the PromQL against a Prometheus
without a Grafana in between:

    python3 grafana/check/panel_queries.py \\
        --from 2026-03-02T10:00:00Z --to 2026-03-02T16:00:00Z --service shop/api

Output: a JSON list of {dashboard, panel, refId, kind ("sql" or "promql"), query,
format}, one entry per target, plus one per query template variable (panel is then
"variable <name>"). SQL expansions are exactly Grafana's PostgreSQL data source's:

    $__timeFilter(t)            t BETWEEN '<from>' AND '<to>'
    $__timeGroupAlias(t, '5m')  floor(extract(epoch from t)/300)*300 AS "time"
    $__timeGroup(t, '5m')       floor(extract(epoch from t)/300)*300
    $__timeFrom() / $__timeTo() '<from>' / '<to>'
    $__unixEpochFilter(c)       c >= <from epoch> AND c <= <to epoch>

$service and ${service} become the --service value. In PromQL, $__rate_interval becomes
1m and $__interval 15s. Standard library only.
"""

import argparse
import glob
import json
import os
import re
import sys
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DASHBOARDS = os.path.join(HERE, "..", "dashboards")

SQL_TYPES = {"grafana-postgresql-datasource", "postgres"}
PROM_TYPES = {"prometheus"}

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text):
    """An RFC 3339 UTC instant, as Grafana prints it in SQL ('2026-03-02T10:00:00Z')."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


def grafana_time(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def interval_seconds(text):
    m = re.fullmatch(r"\s*'?\s*(\d+)\s*([smhd])\s*'?\s*", text)
    if not m:
        raise ValueError(f"unsupported interval {text!r} (expected e.g. '30s', '5m', '1h')")
    return int(m.group(1)) * UNIT_SECONDS[m.group(2)]


def split_args(text):
    """Splits a macro's arguments on top-level commas."""
    args, depth, cur, quote = [], 0, [], None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    tail = "".join(cur).strip()
    if tail or args:
        args.append(tail)
    return args


def expand_macros(sql, start, end):
    """Replaces each $__macro(args) in sql, innermost first."""
    frm, to = grafana_time(start), grafana_time(end)

    def group(args, alias):
        if len(args) < 2:
            raise ValueError(f"$__timeGroup needs a column and an interval: {args!r}")
        secs = interval_seconds(args[1])
        expr = f"floor(extract(epoch from {args[0]})/{secs})*{secs}"
        return expr + ' AS "time"' if alias else expr

    macros = {
        "timeFilter": lambda a: f"{a[0]} BETWEEN '{frm}' AND '{to}'",
        "timeGroupAlias": lambda a: group(a, True),
        "timeGroup": lambda a: group(a, False),
        "timeFrom": lambda a: f"'{frm}'",
        "timeTo": lambda a: f"'{to}'",
        "unixEpochFilter": lambda a: f"{a[0]} >= {int(start.timestamp())} AND {a[0]} <= {int(end.timestamp())}",
    }
    pattern = re.compile(r"\$__(" + "|".join(sorted(macros, key=len, reverse=True)) + r")\(")
    while True:
        m = pattern.search(sql)
        if not m:
            break
        # Find the matching parenthesis.
        depth, i, quote = 1, m.end(), None
        while i < len(sql) and depth:
            ch = sql[i]
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "'\"":
                quote = ch
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            i += 1
        if depth:
            raise ValueError(f"unbalanced parentheses after ${m.group(0)} in: {sql}")
        args = split_args(sql[m.end() : i - 1])
        sql = sql[: m.start()] + macros[m.group(1)](args) + sql[i:]
    if "$__" in sql:
        raise ValueError(f"unknown Grafana macro left in: {sql}")
    return sql


# Values of the dashboards' other template variables.
VARIABLES = {"framework": "pci-dss"}


def substitute_variables(text, service):
    text = re.sub(r"\$\{service\}|\$service\b", service, text)
    for name, value in VARIABLES.items():
        text = re.sub(r"\$\{%s\}|\$%s\b" % (name, name), value, text)
    return text


def expand_promql(expr, service):
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    return substitute_variables(expr, service)


def kind_of(ds, target):
    t = (ds or {}).get("type")
    if t in SQL_TYPES or "rawSql" in target:
        return "sql"
    if t in PROM_TYPES or "expr" in target:
        return "promql"
    raise ValueError(f"target {target.get('refId')!r} has an unknown data source type {t!r}")


def panels_of(dashboard):
    for p in dashboard.get("panels", []):
        yield p
        # Collapsed rows carry their panels inside.
        for inner in p.get("panels", []) or []:
            yield inner


def queries(paths, start, end, service):
    out = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
        name = os.path.splitext(os.path.basename(path))[0]
        for var in dash.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            q = var.get("query")
            if isinstance(q, dict):
                q = q.get("rawSql") or q.get("query") or q.get("expr")
            kind = kind_of(var.get("datasource"), {})
            query = expand_macros(substitute_variables(q, service), start, end) if kind == "sql" else expand_promql(q, service)
            out.append({
                "dashboard": name,
                "panel": f"variable {var['name']}",
                "refId": "variable",
                "kind": kind,
                "query": query,
                "format": "table" if kind == "sql" else "time_series",
            })
        for panel in panels_of(dash):
            for target in panel.get("targets", []) or []:
                ds = target.get("datasource") or panel.get("datasource")
                kind = kind_of(ds, target)
                if kind == "sql":
                    query = expand_macros(substitute_variables(target["rawSql"], service), start, end)
                    fmt = target.get("format", "time_series")
                else:
                    query = expand_promql(target["expr"], service)
                    fmt = "instant" if target.get("instant") and not target.get("range") else "time_series"
                out.append({
                    "dashboard": name,
                    "panel": panel.get("title", ""),
                    "refId": target.get("refId"),
                    "kind": kind,
                    "query": query,
                    "format": fmt,
                })
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="start", default="2026-03-02T10:00:00Z", help="start of the time range (RFC 3339, UTC)")
    ap.add_argument("--to", dest="end", default="2026-03-02T16:00:00Z", help="end of the time range (RFC 3339, UTC)")
    ap.add_argument("--service", default="shop/api", help="value of the $service variable")
    ap.add_argument("--dashboards", default=DEFAULT_DASHBOARDS, help="folder of dashboard JSON files")
    ap.add_argument("--kind", choices=["sql", "promql"], help="print only queries of this kind")
    args = ap.parse_args(argv)
    start, end = parse_time(args.start), parse_time(args.end)
    if end < start:
        ap.error("--to is before --from")
    paths = sorted(glob.glob(os.path.join(args.dashboards, "*.json")))
    if not paths:
        ap.error(f"no dashboards in {args.dashboards}")
    out = queries(paths, start, end, args.service)
    if args.kind:
        out = [q for q in out if q["kind"] == args.kind]
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
