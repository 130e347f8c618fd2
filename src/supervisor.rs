//! One supervisor spawns every long-lived task and worker thread by name. A task that
//! fails, or a worker thread that panics or stops while the daemon runs, cancels the
//! shared token, which stops the others; SIGINT and SIGTERM cancel it too. `wait`
//! returns the first failure so `main` can exit non-zero.

use std::future::Future;
use std::time::Duration;

use anyhow::anyhow;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How long tasks get to finish after cancellation before they are abandoned.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

pub struct Supervisor {
    pub cancel: CancellationToken,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl Supervisor {
    pub fn new() -> Self {
        Supervisor {
            cancel: CancellationToken::new(),
            tasks: JoinSet::new(),
        }
    }

    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks.spawn(async move { (name, task.await) });
    }

    /// Runs `body` on a thread of its own (workers that block: indexing, compliance
    /// checks, delivery). The thread ends when its work does (its handles are gone);
    /// ending before the daemon is cancelled, or panicking, fails like a task.
    pub fn spawn_thread(
        &mut self,
        name: &'static str,
        body: impl FnOnce() + Send + 'static,
    ) -> anyhow::Result<()> {
        let (done, ended) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
                let _ = done.send(finished.is_ok());
            })
            .map_err(|e| anyhow!("cannot start the {name} thread: {e}"))?;
        let cancel = self.cancel.clone();
        self.spawn(name, async move {
            tokio::select! {
                // A thread that already failed is reported even once cancelled.
                biased;
                ended = ended => match ended {
                    Ok(true) if cancel.is_cancelled() => Ok(()),
                    Ok(true) => Err(anyhow!("the {name} thread stopped while the daemon runs")),
                    _ => Err(anyhow!("the {name} thread panicked")),
                },
                () = cancel.cancelled() => Ok(()),
            }
        });
        Ok(())
    }

    /// Cancels on SIGINT or SIGTERM.
    pub fn cancel_on_signals(&mut self) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let term = std::future::pending::<()>();
            tokio::select! {
                Ok(()) = ctrl_c => info!("Interrupted; shutting down."),
                () = term => info!("Terminated; shutting down."),
                () = cancel.cancelled() => {}
            }
            cancel.cancel();
            ("signals", Ok(()))
        });
    }

    /// Waits for every task. The first failure cancels the rest and is returned.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        let mut deadline = None;
        loop {
            let next = match deadline {
                None => tokio::select! {
                    r = self.tasks.join_next() => r,
                    () = self.cancel.cancelled() => {
                        deadline = Some(tokio::time::Instant::now() + SHUTDOWN_DEADLINE);
                        continue;
                    }
                },
                Some(d) => match tokio::time::timeout_at(d, self.tasks.join_next()).await {
                    Ok(r) => r,
                    Err(_) => {
                        warn!(
                            remaining = self.tasks.len(),
                            "Tasks did not stop in time; abandoning them."
                        );
                        self.tasks.abort_all();
                        first_error.get_or_insert_with(|| anyhow!("shutdown deadline passed"));
                        break;
                    }
                },
            };
            let Some(joined) = next else { break };
            let (name, result) = match joined {
                Ok(r) => r,
                Err(e) => ("task", Err(anyhow!("a task panicked or was aborted: {e}"))),
            };
            if let Err(e) = result {
                error!(
                    task = name,
                    error = format!("{e:#}"),
                    "Task failed; stopping the daemon."
                );
                first_error.get_or_insert(e.context(format!("task {name} failed")));
                self.cancel.cancel();
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
