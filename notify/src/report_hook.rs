//! Scheduled reports posted to their schedule's webhook: one POST of the report's JSON,
//! retried with backoff. Reports are not alerts: they do not go through the outbox or
//! the routes, and one lost to a long outage is in the reports folder all the same.

use std::time::Duration;

use tracing::{info, warn};

/// Attempts at posting a report to its webhook: with the backoff below, about 8 s of
/// trying, which rides out a receiver's restart; the report stays in the folder.
const WEBHOOK_ATTEMPTS: u32 = 5;

/// How long one POST may take.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Posts a report, retrying failures with backoff; a 4xx other than 408 and 429 is final.
pub async fn post_report(http: &reqwest::Client, url: &str, name: &str, body: Vec<u8>) {
    // The URL may hold a credential: logs name the endpoint only.
    let endpoint = crate::redact::url(url);
    let endpoint = endpoint.as_str();
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        let sent = http
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                info!(
                    schedule = name,
                    url = endpoint,
                    attempt,
                    "Compliance report delivered."
                );
                return;
            }
            Ok(r) if r.status().is_client_error() && ![408, 429].contains(&r.status().as_u16()) => {
                warn!(
                    schedule = name,
                    url = endpoint,
                    status = r.status().as_u16(),
                    "The report webhook refused the report; not retrying."
                );
                return;
            }
            Ok(r) => {
                warn!(
                    schedule = name,
                    url = endpoint,
                    attempt,
                    status = r.status().as_u16(),
                    "The report webhook failed."
                )
            }
            Err(e) => {
                warn!(schedule = name, url = endpoint, attempt, error = %crate::redact::request_error(e), "The report webhook failed.")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
    warn!(
        schedule = name,
        url = endpoint,
        "Giving up on delivering the report to its webhook."
    );
}
