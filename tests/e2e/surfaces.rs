//! The analyst's surfaces against a running demo, through real clients: psql and
//! psycopg over the PostgreSQL wire protocol running every dashboard query, a real
//! Prometheus scraping `/metrics` and evaluating every dashboard expression, and the
//! dashboards and the OpenAPI document checked against their schemas. The HTTP API's
//! endpoints and roles are in `api.rs`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{driftwatch, eventually, free_port, http_get, require_program};
use crate::demo::{Demo, PG_PASSWORD, VIEWER};

fn grafana_dir() -> PathBuf {
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("grafana")
}

/// Every dashboard target, macros expanded as Grafana expands them.
fn panel_queries(from: &str, to: &str) -> Vec<Value> {
    let out = Command::new("python3")
        .arg(grafana_dir().join("check/panel_queries.py"))
        .args(["--from", from, "--to", to, "--service", "shop/api"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "panel_queries.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A time range around the demo's data: its event time runs ahead of the clock.
fn range() -> (String, String) {
    let now = chrono::Utc::now();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    (
        fmt(now - chrono::Duration::hours(1)),
        fmt(now + chrono::Duration::days(2)),
    )
}

/// Runs SQL through psql; returns (success, stdout, stderr).
fn psql(demo: &Demo, password: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(require_program("psql"))
        .arg("-X")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg(demo.conninfo())
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The header line of psql's unaligned output, as column names.
fn psql_columns(demo: &Demo, sql: &str) -> Result<Vec<String>, String> {
    let (ok, out, err) = psql(demo, PG_PASSWORD, &["-A", "-F", "\t", "-c", sql]);
    if !ok {
        return Err(err);
    }
    Ok(out
        .lines()
        .next()
        .unwrap_or_default()
        .split('\t')
        .map(str::to_owned)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_psycopg_run_every_dashboard_query_as_grafana_sends_it() {
    let demo = Demo::start().await;
    let (from, to) = range();
    let queries: Vec<Value> = panel_queries(&from, &to)
        .into_iter()
        .filter(|q| q["kind"] == "sql")
        .collect();
    assert!(
        queries.len() >= 10,
        "dashboards hold {} SQL targets",
        queries.len()
    );

    // Grafana's health check.
    let (ok, _, err) = psql(&demo, PG_PASSWORD, &["-c", "-- ping"]);
    assert!(ok, "-- ping: {err}");
    // psql's catalog commands.
    let (ok, out, err) = psql(&demo, PG_PASSWORD, &["-c", "\\dt"]);
    assert!(ok, "\\dt: {err}");
    for table in [
        "events",
        "alerts",
        "baselines",
        "services",
        "log_templates",
        "audit",
        "findings",
        "posture",
        "notifications",
    ] {
        assert!(
            out.contains(&format!(" {table} ")),
            "\\dt lacks {table}:\n{out}"
        );
    }
    let (ok, out, err) = psql(&demo, PG_PASSWORD, &["-c", "\\d alerts"]);
    assert!(ok, "\\d alerts: {err}");
    assert!(
        out.contains("timestamp with time zone") && out.contains("bigint"),
        "{out}"
    );

    // The query builder's schema queries: tables (as Grafana 11 sends it), columns.
    let grafana_tables = "select quote_ident(table_name) as \"table\" from information_schema.tables \
        where quote_ident(table_schema) not in ('information_schema', 'pg_catalog', '_timescaledb_cache', \
        '_timescaledb_catalog', '_timescaledb_internal', '_timescaledb_config', 'timescaledb_information', \
        'timescaledb_experimental') and table_type = 'BASE TABLE' and quote_ident(table_schema) IN (\
        SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END FROM generate_series(\
        array_lower(string_to_array(current_setting('search_path'),','),1), \
        array_upper(string_to_array(current_setting('search_path'),','),1)) as i, \
        string_to_array(current_setting('search_path'),',') s)";
    let (ok, out, err) = psql(&demo, PG_PASSWORD, &["-A", "-t", "-c", grafana_tables]);
    assert!(ok, "{err}");
    let tables: Vec<&str> = out.lines().collect();
    assert_eq!(
        tables,
        [
            "alerts",
            "audit",
            "baselines",
            "events",
            "findings",
            "log_templates",
            "notifications",
            "posture",
            "services"
        ]
    );
    let (ok, out, err) = psql(
        &demo,
        PG_PASSWORD,
        &[
            "-A",
            "-t",
            "-c",
            "SELECT column_name, data_type FROM information_schema.columns \
           WHERE table_name = 'alerts' ORDER BY column_name",
        ],
    );
    assert!(
        ok && out.lines().any(|l| l.starts_with("severity|")),
        "{out}{err}"
    );

    let mut psql_columns_by_query = Vec::new();
    let mut with_rows = 0;
    for q in &queries {
        let sql = q["query"].as_str().unwrap();
        let what = format!("{} / {} / {}", q["dashboard"], q["panel"], q["refId"]);
        let columns = psql_columns(&demo, sql).unwrap_or_else(|e| panic!("{what}: {e}\n{sql}"));
        assert!(columns.iter().all(|c| !c.is_empty()), "{what}: {columns:?}");
        if q["format"] == "time_series" {
            assert!(
                columns.iter().any(|c| c == "time"),
                "{what}: a time series needs a time column, got {columns:?}"
            );
        }
        let (_, out, _) = psql(&demo, PG_PASSWORD, &["-A", "-t", "-c", sql]);
        with_rows += usize::from(!out.trim().is_empty());
        psql_columns_by_query.push(columns);
    }
    assert!(
        with_rows * 2 >= queries.len(),
        "only {with_rows} of {} dashboard queries returned rows on the demo",
        queries.len()
    );

    // Grafana sends a panel's statements in one Simple Query message.
    let first = queries[0]["query"].as_str().unwrap();
    let (ok, out, err) = psql(
        &demo,
        PG_PASSWORD,
        &[
            "-A",
            "-c",
            &format!("{first}; SELECT count(*) AS n FROM alerts"),
        ],
    );
    assert!(ok, "two statements: {err}");
    assert!(out.lines().any(|l| l == "n"), "{out}");

    // The second client, psycopg, over the extended protocol (with a bound parameter).
    let script = r#"
import json, sys
import psycopg
queries = json.load(sys.stdin)
out = []
with psycopg.connect(sys.argv[1], password=sys.argv[2]) as conn:
    for q in queries:
        cur = conn.execute(q, prepare=True)
        cur.fetchall()
        out.append([d.name for d in cur.description])
    cur = conn.execute("SELECT service, count(*) AS n FROM events WHERE service = %s GROUP BY service", ("shop/api",))
    rows = cur.fetchall()
    assert rows and rows[0][0] == "shop/api" and rows[0][1] > 0, rows
    try:
        conn.execute("DELETE FROM alerts")
        raise SystemExit("DELETE was accepted")
    except psycopg.Error as e:
        assert e.sqlstate == "25006", e.sqlstate
print(json.dumps(out))
"#;
    let sqls: Vec<&str> = queries
        .iter()
        .map(|q| q["query"].as_str().unwrap())
        .collect();
    let out = crate::common::run_with_input(
        Command::new(require_program("python3")).args([
            "-c",
            script,
            &demo.conninfo(),
            PG_PASSWORD,
        ]),
        &serde_json::to_string(&sqls).unwrap(),
    );
    assert!(
        out.status.success(),
        "psycopg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let psycopg_columns: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(psycopg_columns, psql_columns_by_query);

    // Read only, over the wire too, and the tables are unchanged.
    for sql in [
        "DROP TABLE events",
        "CREATE TABLE x (a INT)",
        "INSERT INTO alerts SELECT * FROM alerts",
    ] {
        let (ok, _, err) = psql(&demo, PG_PASSWORD, &["-c", sql]);
        assert!(!ok && err.contains("read-only"), "{sql}: {err}");
    }
    // Passwords are checked.
    let (ok, _, err) = psql(&demo, "wrong", &["-c", "SELECT 1"]);
    assert!(!ok && err.contains("authentication failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_offered_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new(require_program("openssl"))
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = free_port();
    let config = dir.path().join("driftwatch.toml");
    // Replay keeps no server up; `run` needs Kafka: an embedded broker serves.
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("native", 1, 1).unwrap();
    cluster
        .create_topic("driftwatch-dead-letter", 1, 1)
        .unwrap();
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\n[[kafka.topics]]\nname = \"native\"\nformat = \"native\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [postgres]\nlisten = \"127.0.0.1:{port}\"\ntls-cert = \"{}\"\ntls-key = \"{}\"\n\
             [[postgres.users]]\nname = \"analyst\"\npassword-env = \"DW_TEST_PG_PASSWORD\"\n",
            cluster.bootstrap_servers(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let mut daemon = driftwatch()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("DW_TEST_PG_PASSWORD", "s3cret-pass")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let conninfo = |mode: &str| {
        format!("host=127.0.0.1 port={port} user=analyst dbname=driftwatch sslmode={mode}")
    };
    let query = |mode: &str| {
        Command::new(require_program("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                &conninfo(mode),
                "-c",
                "SELECT count(*) FROM services",
            ])
            .env("PGPASSWORD", "s3cret-pass")
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .unwrap()
    };
    eventually(Duration::from_secs(30), "the TLS wire server", || {
        query("require").status.success()
    })
    .await;
    let out = Command::new(require_program("psql"))
        .args(["-X", "-A", "-t", &conninfo("require"), "-c", "\\conninfo"])
        .env("PGPASSWORD", "s3cret-pass")
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(info.contains("SSL connection"), "{info}");
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}

/// Waits for a Prometheus query to return at least one series; returns the result.
async fn prom_query(client: &reqwest::Client, prom: &str, expr: &str) -> Vec<Value> {
    let mut last = Value::Null;
    for _ in 0..60 {
        let v: Value = client
            .get(format!("http://{prom}/api/v1/query"))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(r) = v["data"]["result"].as_array()
            && !r.is_empty()
        {
            return r.clone();
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("PromQL {expr} returned no data: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_driftwatch_and_every_dashboard_expression_has_data() {
    let prometheus = require_program("prometheus");
    let demo = Demo::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: driftwatch\n    static_configs:\n      - targets: ['{}']\n",
            demo.http
        ),
    )
    .unwrap();
    let port = free_port();
    let prom_addr = format!("127.0.0.1:{port}");
    let mut prom = Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prom_addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // On two busy cores Prometheus can take a while to open its port.
    eventually(Duration::from_secs(60), "Prometheus to be ready", || {
        http_get(&prom_addr, "/-/ready").is_ok_and(|b| b.contains("Ready"))
    })
    .await;
    let client = reqwest::Client::new();
    // The SQL panels' own queries give the SQL metrics their series.
    let sql = client
        .post(format!("http://{}/api/v1/sql", demo.http))
        .bearer_auth(VIEWER)
        .json(&json!({"sql": "SELECT count(*) FROM alerts"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sql.status().as_u16(), 200);
    let (ok, _, err) = psql(&demo, PG_PASSWORD, &["-c", "SELECT count(*) FROM events"]);
    assert!(ok, "{err}");
    let up = prom_query(&client, &prom_addr, "up{job=\"driftwatch\"} == 1").await;
    assert_eq!(up.len(), 1);
    let build = prom_query(&client, &prom_addr, "driftwatch_build_info").await;
    assert_eq!(build[0]["metric"]["version"], env!("CARGO_PKG_VERSION"));
    // Rates need a few scrapes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (from, to) = range();
    let exprs: Vec<String> = panel_queries(&from, &to)
        .into_iter()
        .filter(|q| q["kind"] == "promql")
        .map(|q| q["query"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        exprs.len() >= 5,
        "dashboards hold {} PromQL targets",
        exprs.len()
    );
    for expr in &exprs {
        prom_query(&client, &prom_addr, expr).await;
    }
    // Names follow the exposition rules: prefix, base units, counters end in _total.
    let metrics = client
        .get(format!("http://{}/metrics", demo.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in metrics.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(name.starts_with("driftwatch_"), "{line}");
    }
    for name in [
        "driftwatch_alerts_raised_total",
        "driftwatch_services{",
        "driftwatch_pipeline_stage_duration_seconds_bucket",
        "driftwatch_sql_queries_total",
        "driftwatch_records_dead_lettered_total",
        "driftwatch_consumer_lag",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    prom.kill().unwrap();
    prom.wait().unwrap();
}

#[test]
fn the_openapi_document_is_valid_and_lists_every_route() {
    let doc: Value = serde_json::from_str(driftwatch::api::OPENAPI).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let source = std::fs::read_to_string(
        std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("src/api/mod.rs"),
    )
    .unwrap();
    let routes: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix(".route(\""))
        .map(|l| &l[..l.find('"').unwrap()])
        .collect();
    assert!(routes.len() >= 15, "{routes:?}");
    for route in routes.iter().chain(&["/metrics", "/healthz"]) {
        assert!(paths.contains_key(*route), "openapi.json lacks {route}");
    }
    let out = crate::common::run_with_input(
        Command::new(require_program("python3")).args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(sys.stdin))\nprint('valid')",
        ]),
        driftwatch::api::OPENAPI,
    );
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_dashboard_type_checks_against_grafana_schema() {
    require_program("node");
    let out = Command::new("node")
        .arg(grafana_dir().join("check/typecheck.mjs"))
        .current_dir(grafana_dir().join("check"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "typecheck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
