//! A running `driftwatch demo` for the tests that drive the analyst's surfaces.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{driftwatch, eventually};

/// The demo's built-in API tokens, one per role.
pub const VIEWER: &str = "demo-viewer-token";
pub const ANALYST: &str = "demo-analyst-token";
pub const ADMIN: &str = "demo-admin-token";

pub const PG_USER: &str = "driftwatch";
pub const PG_PASSWORD: &str = "driftwatch";

/// A running `driftwatch demo`, killed when dropped.
pub struct Demo {
    child: Child,
    pub http: String,
    pub pg: String,
    /// The demo's compliance reports folder.
    pub reports: tempfile::TempDir,
    /// What the demo printed so far.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Demo {
    /// Starts the demo fast enough that services learn in seconds and attacks follow,
    /// and waits until it has raised alerts.
    pub async fn start() -> Demo {
        let reports = tempfile::tempdir().unwrap();
        let mut child = driftwatch()
            .args([
                "demo",
                "--speed",
                "600",
                "--http",
                "127.0.0.1:0",
                "--postgres",
                "127.0.0.1:0",
                "--report-every",
                "1h",
                "--reports",
            ])
            .arg(reports.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let find = |prefix: &str, end: char| {
            lines.lock().unwrap().iter().find_map(|l| {
                let rest = &l[l.find(prefix)? + prefix.len()..];
                Some(rest[..rest.find(end).unwrap_or(rest.len())].to_owned())
            })
        };
        eventually(
            Duration::from_secs(30),
            "the demo to print its addresses",
            || find("metrics: http://", '/').is_some() && find("@", '/').is_some(),
        )
        .await;
        let demo = Demo {
            http: find("metrics: http://", '/').unwrap(),
            pg: find("@", '/').unwrap(),
            child,
            reports,
            lines: lines.clone(),
        };
        eventually(Duration::from_secs(60), "the demo's attack alerts", || {
            lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.starts_with("ALERT "))
                .count()
                >= 3
        })
        .await;
        demo
    }

    pub fn pg_host_port(&self) -> (&str, &str) {
        self.pg.rsplit_once(':').unwrap()
    }

    pub fn conninfo(&self) -> String {
        let (host, port) = self.pg_host_port();
        format!("host={host} port={port} user={PG_USER} dbname=driftwatch sslmode=disable")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
