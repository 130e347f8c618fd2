//! The daemon's HTTP endpoint: `/metrics` (Prometheus text format) and health.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(registry)
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Binds now (so a taken port fails at start), serves until cancelled.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// The runtime the API answers on: two threads of its own at the configured nice
/// value, so that readers never take the pipeline's threads, and yield the CPU to
/// them. Shut down (without waiting) when dropped.
pub struct ApiRuntime(Option<tokio::runtime::Runtime>);

/// Threads that answer the API: a dashboard's handful of panels at once, and never
/// more than the machine's cores.
const API_THREADS: usize = 2;

impl ApiRuntime {
    pub fn start(nice: i32) -> anyhow::Result<ApiRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(API_THREADS)
            .thread_name("api")
            .on_thread_start(move || queries::sql::lower_priority("api", nice))
            .enable_all()
            .build()
            .context("cannot start the API's threads")?;
        Ok(ApiRuntime(Some(runtime)))
    }

    /// Serves on this runtime's threads until cancelled (see [`serve`]); the listener
    /// moves over to them.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        router: Router,
        limits: HttpLimits,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let listener = listener
            .into_std()
            .context("cannot hand the HTTP listener over")?;
        let runtime = self.0.as_ref().expect("running until dropped");
        let served = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)
                .context("cannot take the HTTP listener over")?;
            serve(listener, router, limits, cancel).await
        });
        served.await.context("the HTTP server panicked")?
    }
}

impl Drop for ApiRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Answers 408 for a request that takes longer than its time.
async fn request_timeout(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            axum::Json(serde_json::json!({
                "error": format!("the request took longer than {timeout:?}")
            })),
        )
            .into_response(),
    }
}

/// What the HTTP server allows one client (`[http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
}

/// Serves `router` until cancelled, under `limits`: at most `max-connections` at once
/// (the rest wait in the kernel's backlog, taking no file descriptor of ours), headers
/// within `header-timeout` (also between kept-alive requests), each request within
/// `request-timeout`, bodies up to `max-body-bytes` on every route.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: HttpLimits,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let router = router
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            limits.request_timeout,
            request_timeout,
        ));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let slot = tokio::select! {
            () = cancel.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (socket, _) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, mostly: wait rather than spin.
                    tracing::warn!(error = %e, "Accepting an HTTP connection failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    // Open connections finish their request and close by themselves (they watch the
    // same token).
    Ok(())
}
