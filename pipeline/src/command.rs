//! The pipeline's command queue: changes to the detector (acknowledge, resolve, accept,
//! import, relearn, lock, health alerts) reach its owner here, and are answered once
//! applied and published.

use detect::{Command, Detector, Outcome, Views};
use tokio::sync::{mpsc, oneshot};

/// Commands waiting for the pipeline. A command is applied between two batches, so
/// one waits at most a batch's detection time; 64 covers a burst of analysts' clicks
/// and scripted imports, and a sender beyond it waits for room (its HTTP request
/// times out first if the pipeline is stuck).
const COMMAND_QUEUE: usize = 64;

/// A command and where its outcome goes.
pub(crate) struct Request {
    pub(crate) command: Command,
    pub(crate) reply: oneshot::Sender<Outcome>,
}

/// The sending side of the pipeline's command queue. Cloning shares the queue.
#[derive(Clone)]
pub struct Commands(mpsc::Sender<Request>);

/// The pipeline has stopped: no command will be applied any more.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline has stopped; the command was not applied")]
pub struct Stopped;

impl Commands {
    /// Queues a command and waits until the pipeline has applied it and published a
    /// view that shows it.
    pub async fn apply(&self, command: Command) -> Result<Outcome, Stopped> {
        let (reply, outcome) = oneshot::channel();
        self.0
            .send(Request { command, reply })
            .await
            .map_err(|_| Stopped)?;
        outcome.await.map_err(|_| Stopped)
    }

    /// Commands queued and not yet applied.
    pub fn depth(&self) -> usize {
        self.0.max_capacity() - self.0.capacity()
    }
}

/// What the pipeline owns while it runs: the detector, and the receiving end of its
/// command queue.
pub struct Owner {
    pub(crate) detector: Detector,
    pub(crate) inbox: mpsc::Receiver<Request>,
}

impl Owner {
    /// Gives `detector` an owner; returns it with the handles readers and writers use.
    pub fn new(mut detector: Detector) -> (Owner, Views, Commands) {
        let views = Views::default();
        views.store(detector.publish());
        let (tx, inbox) = mpsc::channel(COMMAND_QUEUE);
        (Owner { detector, inbox }, views, Commands(tx))
    }
}
