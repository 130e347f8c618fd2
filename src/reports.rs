//! `driftwatch report` (a report from a running daemon's API), and the wiring that
//! posts scheduled reports to their webhooks through `notify`.

use anyhow::Context;
use compliance::ReportFormat;

/// Where scheduled reports with a webhook go: posted by `notify`, retried there.
pub fn poster() -> anyhow::Result<compliance::PostReport> {
    let http = reqwest::Client::builder()
        .timeout(notify::report_hook::REPORT_TIMEOUT)
        .build()
        .context("cannot build the webhook client")?;
    Ok(std::sync::Arc::new(move |name, url, body| {
        let http = http.clone();
        Box::pin(async move { notify::report_hook::post_report(&http, &url, &name, body).await })
    }))
}

/// `driftwatch report`: asks a running daemon's API for a report made now.
pub async fn fetch(
    url: &str,
    token: Option<&str>,
    frameworks: Option<&str>,
    services: Option<&str>,
    since: &str,
    format: ReportFormat,
) -> anyhow::Result<String> {
    let endpoint = format!("{}/api/v1/report", url.trim_end_matches('/'));
    let mut query = vec![("since", since), ("format", format.extension())];
    query.extend(frameworks.map(|f| ("framework", f)));
    query.extend(services.map(|s| ("service", s)));
    let mut request = reqwest::Client::new().get(&endpoint).query(&query);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach driftwatch at {endpoint}"))?;
    let status = response.status();
    let body = response.text().await.context("cannot read the report")?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(body);
        anyhow::bail!("{endpoint} answered {status}: {message}");
    }
    Ok(body)
}
