//! The HTTP API against a running demo: every endpoint, with its tokens and roles
//! enforced, its errors as JSON, and every mutating or refused call audited.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{driftwatch, eventually};
use crate::demo::{ADMIN, ANALYST, Demo, VIEWER};

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("http://{}{path}", self.base);
        let mut req = match method {
            "GET" => self.client.get(url),
            _ => self.client.post(url),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_endpoint_answers_with_roles_enforced_and_calls_audited() {
    let demo = Demo::start().await;
    let api = Api {
        client: reqwest::Client::new(),
        base: demo.http.clone(),
    };
    // Open endpoints.
    assert_eq!(api.call("GET", "/healthz", None, None).await.0, 200);
    assert_eq!(api.call("GET", "/readyz", None, None).await.0, 200);
    let (status, doc) = api.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");

    // Every protected endpoint refuses a missing or wrong token.
    let protected = [
        ("GET", "/api/v1/alerts"),
        ("GET", "/api/v1/alerts/x"),
        ("POST", "/api/v1/alerts/x/acknowledge"),
        ("POST", "/api/v1/alerts/x/resolve"),
        ("POST", "/api/v1/alerts/x/accept"),
        ("GET", "/api/v1/services"),
        ("GET", "/api/v1/findings"),
        ("GET", "/api/v1/posture"),
        ("GET", "/api/v1/baselines"),
        ("POST", "/api/v1/baselines/import"),
        ("POST", "/api/v1/baselines/relearn?service=shop/api"),
        ("POST", "/api/v1/baselines/lock?service=shop/api"),
        ("POST", "/api/v1/sql"),
        ("GET", "/api/v1/search"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/config"),
    ];
    for (method, path) in protected {
        assert_eq!(
            api.call(method, path, None, None).await.0,
            401,
            "{method} {path}"
        );
        assert_eq!(
            api.call(method, path, Some("not-a-token"), None).await.0,
            401,
            "{method} {path}"
        );
    }
    // Roles: a viewer cannot change anything, an analyst cannot administer.
    for (method, path, token) in [
        ("POST", "/api/v1/alerts/x/acknowledge", VIEWER),
        ("POST", "/api/v1/alerts/x/resolve", VIEWER),
        ("POST", "/api/v1/alerts/x/accept", VIEWER),
        ("POST", "/api/v1/baselines/import", ANALYST),
        (
            "POST",
            "/api/v1/baselines/relearn?service=shop/api",
            ANALYST,
        ),
        ("POST", "/api/v1/baselines/lock?service=shop/api", ANALYST),
        ("GET", "/api/v1/config", VIEWER),
    ] {
        let (status, body) = api.call(method, path, Some(token), Some(json!({}))).await;
        assert_eq!(status, 403, "{method} {path} with {token}: {body}");
    }

    // Alerts: list with filters, get one.
    let (status, body) = api.call("GET", "/api/v1/alerts", Some(VIEWER), None).await;
    assert_eq!(status, 200);
    let alerts = body["alerts"].as_array().unwrap();
    assert!(!alerts.is_empty());
    let shell = alerts
        .iter()
        .find(|a| {
            a["subject"]
                .as_str()
                .unwrap()
                .starts_with("/bin/sh (parent /usr/local/bin/python3.12")
        })
        .expect("the demo's shell alert");
    let id = shell["id"].as_str().unwrap();
    let (status, body) = api
        .call(
            "GET",
            "/api/v1/alerts?service=shop/api&severity=critical&status=open",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let filtered = body["alerts"].as_array().unwrap();
    assert!(
        filtered
            .iter()
            .all(|a| a["service"] == "shop/api" && a["severity"] == "critical")
    );
    assert!(filtered.iter().any(|a| a["id"] == id));
    let (status, body) = api
        .call("GET", "/api/v1/alerts?since=nonsense", Some(VIEWER), None)
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api
        .call("GET", &format!("/api/v1/alerts/{id}"), Some(VIEWER), None)
        .await;
    assert_eq!((status, body["id"].as_str()), (200, Some(id)));
    assert_eq!(
        api.call("GET", "/api/v1/alerts/nope", Some(VIEWER), None)
            .await
            .0,
        404
    );

    // Acknowledge, resolve, accept (analyst).
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/v1/alerts/{id}/acknowledge"),
            Some(ANALYST),
            None,
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("acknowledged"))
    );
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/v1/alerts/{id}/resolve"),
            Some(ANALYST),
            None,
        )
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("resolved")));
    let (status, _) = api
        .call(
            "POST",
            &format!("/api/v1/alerts/{id}/accept"),
            Some(ANALYST),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = api
        .call(
            "GET",
            "/api/v1/baselines?service=shop/api",
            Some(VIEWER),
            None,
        )
        .await;
    let entries = body["services"][0]["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["origin"] == "accepted"
            && e["key"]
                .as_str()
                .unwrap()
                .starts_with("/bin/sh (parent /usr/local/bin/python3.12")),
        "accepted entry missing"
    );
    assert_eq!(
        api.call("GET", "/api/v1/baselines?service=nope", Some(VIEWER), None)
            .await
            .0,
        404
    );

    // Services, import, lock, relearn (admin).
    let (status, body) = api
        .call("GET", "/api/v1/services", Some(VIEWER), None)
        .await;
    assert_eq!(status, 200);
    assert!(
        body["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["service"] == "shop/worker")
    );
    let import = json!({"version": 1, "services": [{"service": "shop/worker",
        "entries": [{"dimension": "process", "key": "/usr/bin/backup (parent /bin/sh)"}]}]});
    let (status, body) = api
        .call(
            "POST",
            "/api/v1/baselines/import",
            Some(ADMIN),
            Some(import),
        )
        .await;
    assert_eq!((status, body["added"].as_u64()), (200, Some(1)), "{body}");
    let (status, body) = api
        .call(
            "POST",
            "/api/v1/baselines/import",
            Some(ADMIN),
            Some(json!({"nope": 1})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/baselines/lock?service=shop/worker",
            Some(ADMIN),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/baselines/relearn?service=shop/frontend",
            Some(ADMIN),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/baselines/lock?service=nope",
            Some(ADMIN),
            None
        )
        .await
        .0,
        404
    );

    // SQL: results as JSON, and the read-only guard.
    let (status, body) = api
        .call(
            "POST",
            "/api/v1/sql",
            Some(VIEWER),
            Some(
                json!({"sql": "SELECT service, phase FROM services WHERE service = 'shop/worker'"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["phase"], "locked");
    assert_eq!(body["columns"][1]["name"], "phase");
    for sql in [
        "DROP TABLE events",
        "INSERT INTO audit SELECT * FROM audit",
        "CREATE TABLE t (a INT)",
    ] {
        let (status, body) = api
            .call(
                "POST",
                "/api/v1/sql",
                Some(ADMIN),
                Some(json!({"sql": sql})),
            )
            .await;
        assert_eq!(status, 403, "{sql}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("read-only"),
            "{body}"
        );
    }
    let (status, _) = api
        .call(
            "POST",
            "/api/v1/sql",
            Some(VIEWER),
            Some(json!({"sql": "SELEC nothing"})),
        )
        .await;
    assert_eq!(status, 400);

    // Findings of the demo's attacks, with their evidence chain, and the posture. The
    // controls run beside the pipeline: give them a moment to catch up.
    for _ in 0..120 {
        let (_, body) = api
            .call(
                "GET",
                "/api/v1/findings?status=fail&service=shop/api",
                Some(VIEWER),
                None,
            )
            .await;
        if body["findings"].as_array().is_some_and(|f| !f.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, body) = api
        .call(
            "GET",
            "/api/v1/findings?status=fail&service=shop/api",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let findings = body["findings"].as_array().unwrap();
    assert!(
        !findings.is_empty(),
        "the shell in shop/api fails a control"
    );
    assert!(
        findings
            .iter()
            .all(|f| f["status"] == "fail" && f["service"] == "shop/api")
    );
    assert!(
        findings
            .iter()
            .any(|f| f["alert"].is_string() && !f["evidence"].as_array().unwrap().is_empty())
    );
    let (status, body) = api
        .call(
            "GET",
            "/api/v1/findings?framework=pci-dss",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(body["findings"].as_array().unwrap().iter().all(|f| {
        f["references"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("pci-dss:"))
    }));
    let (status, body) = api
        .call("GET", "/api/v1/posture?status=fail", Some(VIEWER), None)
        .await;
    assert_eq!(status, 200);
    assert!(
        body["posture"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["service"] == "shop/api")
    );

    // Log search.
    let (status, body) = api
        .call(
            "GET",
            "/api/v1/search?service=shop/api&since=1d",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let hits = body["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h["service"] == "shop/api"));

    // Config without secrets; the audit log names who did what.
    let (status, body) = api.call("GET", "/api/v1/config", Some(ADMIN), None).await;
    assert_eq!(status, 200);
    let text = body.to_string();
    let admin_hash = driftwatch::api::token_hash(ADMIN);
    for secret in [ADMIN, admin_hash.as_str(), "password", "sha256"] {
        assert!(!text.contains(secret), "config leaks {secret}: {text}");
    }
    let (status, body) = api.call("GET", "/api/v1/audit", Some(VIEWER), None).await;
    assert_eq!(status, 200);
    let actions: Vec<(String, String, String)> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (actor, action) in [
        ("demo-analyst", "alert.acknowledge"),
        ("demo-analyst", "alert.resolve"),
        ("demo-analyst", "alert.accept"),
        ("demo-admin", "baseline.import"),
        ("demo-admin", "baseline.lock"),
        ("demo-admin", "baseline.relearn"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, b, o)| a == actor && b == action && o == "ok"),
            "{actor} {action} not audited: {actions:?}"
        );
    }
    // Refusals are audited too: who (or nobody), what was asked, and why not.
    for (actor, action, outcome) in [
        ("unauthenticated", "GET /api/v1/config", "unauthorized"),
        (
            "demo-viewer",
            "POST /api/v1/alerts/x/acknowledge",
            "forbidden",
        ),
        ("demo-analyst", "POST /api/v1/baselines/import", "forbidden"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, b, o)| a == actor && b == action && o == outcome),
            "{actor} {action} {outcome} not audited: {actions:?}"
        );
    }
    // And the audit table answers SQL.
    let (status, body) = api
        .call(
            "POST",
            "/api/v1/sql",
            Some(VIEWER),
            Some(json!({"sql": "SELECT count(*) AS n FROM audit WHERE action = 'baseline.lock'"})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(body["rows"][0]["n"].as_i64().unwrap() >= 2);

    // Compliance reports: the demo writes one every quarter hour of event time, and
    // says so; the API lists them and serves their files.
    eventually(
        Duration::from_secs(60),
        "a demo report with its attacks",
        || {
            demo.lines.lock().unwrap().iter().any(|l| {
                l.starts_with("REPORT ") && l.contains(".html") && !l.contains("(0 failing")
            })
        },
    )
    .await;
    assert_eq!(api.call("GET", "/api/v1/reports", None, None).await.0, 401);
    let (status, body) = api.call("GET", "/api/v1/reports", Some(VIEWER), None).await;
    assert_eq!(status, 200);
    let entry = body["reports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "demo" && e["fail"].as_u64().unwrap_or(0) > 0)
        .unwrap_or_else(|| panic!("{body:#}"))
        .clone();
    let html = entry["files"]["html"].as_str().unwrap();
    assert!(demo.reports.path().join(html).exists());
    let (status, page) = api
        .call(
            "GET",
            &format!("/api/v1/reports/{html}"),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("id=\"framework-chart\""));
    let json_file = entry["files"]["json"].as_str().unwrap();
    let (status, report) = api
        .call(
            "GET",
            &format!("/api/v1/reports/{json_file}"),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(
        (status, &report["schema"]),
        (200, &json!("driftwatch/compliance-report/v1"))
    );
    // Only files the index names are served.
    for bad in ["index.json", "..%2Fsecret.json", "nothing.html"] {
        let (status, _) = api
            .call("GET", &format!("/api/v1/reports/{bad}"), Some(VIEWER), None)
            .await;
        assert_eq!(status, 404, "{bad}");
    }
    // On demand, through the API and through `driftwatch report`.
    let (status, report) = api
        .call(
            "GET",
            "/api/v1/report?framework=pci-dss&since=7d",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(report["frameworks"], json!(["pci-dss"]));
    assert!(
        report["summary"]["fail"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    let (status, _) = api
        .call("GET", "/api/v1/report?framework=sox", Some(VIEWER), None)
        .await;
    assert_eq!(status, 400);
    // Parameters an endpoint does not take, or cannot parse, are refused in JSON like
    // every other error.
    for path in [
        "/api/v1/alerts?limt=5",
        "/api/v1/alerts?limit=many",
        "/api/v1/findings?colour=red",
        "/api/v1/search?q=error&template=x",
    ] {
        let (status, body) = api.call("GET", path, Some(VIEWER), None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {body}"
        );
    }
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("pci.html");
    let cli = driftwatch()
        .args([
            "report",
            "--framework",
            "pci-dss",
            "--since",
            "7d",
            "--format",
            "html",
        ])
        .arg("--url")
        .arg(format!("http://{}", demo.http))
        .arg("--output")
        .arg(&out)
        .env("DRIFTWATCH_TOKEN", VIEWER)
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(page.contains("driftwatch compliance report: on-demand") && page.contains("pci-dss"));
    let denied = driftwatch()
        .args(["report", "--url"])
        .arg(format!("http://{}", demo.http))
        .env("DRIFTWATCH_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));
}
