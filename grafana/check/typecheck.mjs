#!/usr/bin/env node
// Checks driftwatch's Grafana dashboards (grafana/dashboards/*.json):
//
// 1. Every dashboard type-checks as `Dashboard` from @grafana/schema. Each JSON file is
//    written into gen/ as `const dashboard: Dashboard = <json>;` and compiled with tsc,
//    so an object literal's excess property checks catch misspelt or misplaced keys.
// 2. Every panel, target and template variable names a data source by a uid that
//    grafana/provisioning/datasources/ provisions, with the matching type; SQL targets
//    carry rawSql, format, rawQuery and editorMode, Prometheus targets an expr; panel ids
//    and refIds are unique; dashboard uids are unique.
//
// Usage: cd grafana/check && npm ci && node typecheck.mjs
// Exits non-zero on any problem.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dashboardsDir = join(here, '..', 'dashboards');
const datasourcesDir = join(here, '..', 'provisioning', 'datasources');
const genDir = join(here, 'gen');

const problems = [];
const problem = (where, what) => problems.push(`${where}: ${what}`);

// --- provisioned data sources --------------------------------------------------------

/** uid -> type, from the data source provisioning files (a list of `- name:` items). */
function provisionedDatasources() {
  const found = new Map();
  for (const file of readdirSync(datasourcesDir).filter((f) => /\.ya?ml$/.test(f))) {
    const text = readFileSync(join(datasourcesDir, file), 'utf8');
    // One block per list item of `datasources:`; comments dropped.
    const items = text
      .split('\n')
      .map((l) => l.replace(/(^|\s)#.*$/, ''))
      .join('\n')
      .split(/^\s*-\s+(?=\w+:)/m)
      .slice(1);
    for (const item of items) {
      const field = (key) => {
        const m = item.match(new RegExp(`^\\s*${key}:\\s*["']?([^"'\\s]+)["']?\\s*$`, 'm'));
        return m ? m[1] : undefined;
      };
      const uid = field('uid');
      const type = field('type');
      if (!uid) continue; // e.g. a deleteDatasources entry or a dashboard provider
      if (found.has(uid)) problem(file, `data source uid ${uid} is provisioned twice`);
      found.set(uid, type);
    }
  }
  return found;
}

// --- structural checks ---------------------------------------------------------------

const SQL_TYPES = new Set(['grafana-postgresql-datasource', 'postgres']);
const SQL_FORMATS = new Set(['time_series', 'table']);

function checkRef(where, ref, datasources) {
  if (!ref || typeof ref !== 'object') {
    problem(where, 'has no datasource {type, uid}');
    return;
  }
  if (!ref.uid || !ref.type) {
    problem(where, `datasource needs both type and uid, has ${JSON.stringify(ref)}`);
    return;
  }
  if (!datasources.has(ref.uid)) {
    problem(where, `datasource uid ${ref.uid} is not provisioned (provisioned: ${[...datasources.keys()].join(', ')})`);
  } else if (datasources.get(ref.uid) !== ref.type) {
    problem(where, `datasource ${ref.uid} has type ${ref.type}, but is provisioned as ${datasources.get(ref.uid)}`);
  }
}

function checkTarget(where, target, panelRef, datasources) {
  if (!target.refId) problem(where, 'target has no refId');
  checkRef(where, target.datasource, datasources);
  const ref = target.datasource ?? panelRef;
  if (panelRef && target.datasource && panelRef.uid !== target.datasource.uid) {
    problem(where, `target uses ${target.datasource.uid} but its panel ${panelRef.uid} (use one data source per panel)`);
  }
  if (ref && SQL_TYPES.has(ref.type)) {
    if (typeof target.rawSql !== 'string' || !target.rawSql.trim()) problem(where, 'SQL target has no rawSql');
    if (!SQL_FORMATS.has(target.format)) problem(where, `SQL target format must be time_series or table, is ${target.format}`);
    if (target.rawQuery !== true) problem(where, 'SQL target needs rawQuery: true');
    if (target.editorMode !== 'code') problem(where, 'SQL target needs editorMode: "code"');
    if (target.format === 'time_series' && !/AS\s+"?time"?/i.test(target.rawSql ?? '') && !/\$__timeGroupAlias\(/.test(target.rawSql ?? '')) {
      problem(where, 'time_series SQL needs a column named time ($__timeGroupAlias)');
    }
  } else if (ref && ref.type === 'prometheus') {
    if (typeof target.expr !== 'string' || !target.expr.trim()) problem(where, 'Prometheus target has no expr');
  }
}

function* panelsOf(dashboard) {
  for (const p of dashboard.panels ?? []) {
    yield p;
    for (const inner of p.panels ?? []) yield inner;
  }
}

function checkDashboard(file, d, datasources) {
  if (!d.uid) problem(file, 'dashboard has no uid');
  if (!d.title) problem(file, 'dashboard has no title');
  const ids = new Set();
  for (const p of panelsOf(d)) {
    const where = `${file}: panel ${JSON.stringify(p.title ?? p.id)}`;
    if (ids.has(p.id)) problem(where, `panel id ${p.id} is used twice`);
    ids.add(p.id);
    if (p.type === 'row') continue;
    checkRef(where, p.datasource, datasources);
    const targets = p.targets ?? [];
    if (targets.length === 0) problem(where, 'panel has no targets');
    const refIds = new Set();
    for (const t of targets) {
      if (refIds.has(t.refId)) problem(where, `refId ${t.refId} is used twice`);
      refIds.add(t.refId);
      checkTarget(`${where} target ${t.refId}`, t, p.datasource, datasources);
    }
  }
  for (const v of d.templating?.list ?? []) {
    if (v.datasource !== undefined) checkRef(`${file}: variable ${v.name}`, v.datasource, datasources);
  }
}

// --- main ----------------------------------------------------------------------------

const datasources = provisionedDatasources();
if (datasources.size === 0) problem(datasourcesDir, 'no data source uids found');

const files = readdirSync(dashboardsDir).filter((f) => f.endsWith('.json')).sort();
if (files.length === 0) problem(dashboardsDir, 'no dashboards');

rmSync(genDir, { recursive: true, force: true });
mkdirSync(genDir, { recursive: true });
const uids = new Map();
for (const file of files) {
  let d;
  try {
    d = JSON.parse(readFileSync(join(dashboardsDir, file), 'utf8'));
  } catch (e) {
    problem(file, `not valid JSON: ${e.message}`);
    continue;
  }
  if (d.uid && uids.has(d.uid)) problem(file, `uid ${d.uid} is also used by ${uids.get(d.uid)}`);
  uids.set(d.uid, file);
  checkDashboard(file, d, datasources);
  const ts =
    `// Generated by typecheck.mjs from grafana/dashboards/${file}; do not edit.\n` +
    `import type { Dashboard } from '@grafana/schema';\n\n` +
    `const dashboard: Dashboard = ${JSON.stringify(d, null, 2)};\n\n` +
    `export default dashboard;\n`;
  writeFileSync(join(genDir, `${basename(file, '.json')}.ts`), ts);
}

console.log(`data sources provisioned: ${[...datasources].map(([u, t]) => `${u} (${t})`).join(', ')}`);
console.log(`dashboards: ${files.join(', ')}`);

let tscFailed = false;
if (!existsSync(join(here, 'node_modules', '@grafana', 'schema'))) {
  problem(here, 'node_modules is missing: run `npm ci` in grafana/check first');
} else {
  const tsc = spawnSync('npx', ['--no-install', 'tsc', '--noEmit', '-p', join(here, 'tsconfig.json')], {
    cwd: here,
    stdio: 'inherit',
  });
  if (tsc.error) problem('tsc', tsc.error.message);
  tscFailed = tsc.status !== 0;
  if (tscFailed) problem('tsc', `type errors against @grafana/schema (exit ${tsc.status})`);
}

if (problems.length) {
  for (const p of problems) console.error(`error: ${p}`);
  console.error(`${problems.length} problem(s) in the Grafana dashboards`);
  process.exit(1);
}
console.log(`${files.length} dashboards type-check against @grafana/schema and use only provisioned data sources`);
