//! Answering local clients (status socket, metrics scrapes) without letting
//! them hold the manager's memory: a bound on clients served at once, and a
//! deadline on each answer, so a client that connects and never reads
//! costs one slot for at most that long.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::status::report::StatusReport;

/// Clients answered at once; more are turned away until one is done.
pub const MAX_CLIENTS: usize = 16;
/// Time a client has to take its answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The places for clients being answered.
#[derive(Debug, Clone)]
pub struct Places(Arc<Semaphore>);

impl Default for Places {
    fn default() -> Self {
        Places(Arc::new(Semaphore::new(MAX_CLIENTS)))
    }
}

impl Places {
    /// A place for one more client, or `None` when all are taken.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.0).try_acquire_owned().ok()
    }
}

/// Writes `parts` to `stream` and closes it, giving up after
/// [`ANSWER_TIMEOUT`]. A client that goes away early is no concern.
pub async fn send_and_close<S: AsyncWrite + Unpin>(mut stream: S, parts: &[&[u8]]) {
    let write = async {
        for part in parts {
            stream.write_all(part).await?;
        }
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, write).await;
}

/// What a status or metrics client asks the daemon, which answers from
/// its state when asked instead of rebuilding reports every second.
#[derive(Debug)]
pub enum Question {
    /// The status report.
    Status(oneshot::Sender<Arc<StatusReport>>),
    /// Set the metrics' gauges from the current state.
    Gauges(oneshot::Sender<()>),
    /// An admin socket's request (drain).
    Admin(crate::admin::Request, oneshot::Sender<crate::admin::Answer>),
}

/// Questions the daemon takes at once; more wait (each client holds a
/// [`Places`] place, so at most [`MAX_CLIENTS`] per server wait).
pub const MAX_QUESTIONS: usize = 2 * MAX_CLIENTS;

/// Asks the daemon.
#[derive(Debug, Clone)]
pub struct Asker(mpsc::Sender<Question>);

impl Asker {
    /// An asker, and the daemon's end.
    pub fn new() -> (Self, mpsc::Receiver<Question>) {
        let (tx, rx) = mpsc::channel(MAX_QUESTIONS);
        (Asker(tx), rx)
    }

    /// The status report; `None` if the daemon did not answer within
    /// [`ANSWER_TIMEOUT`] (or is gone).
    pub async fn status(&self) -> Option<Arc<StatusReport>> {
        self.ask(Question::Status).await
    }

    /// Has the daemon set the gauges; whether it did within
    /// [`ANSWER_TIMEOUT`].
    pub async fn refresh_gauges(&self) -> bool {
        self.ask(Question::Gauges).await.is_some()
    }

    /// The daemon's answer to an admin request; `None` if it did not
    /// answer within [`ANSWER_TIMEOUT`].
    pub async fn admin(&self, request: crate::admin::Request) -> Option<crate::admin::Answer> {
        self.ask(|reply| Question::Admin(request, reply)).await
    }

    async fn ask<T>(&self, question: impl FnOnce(oneshot::Sender<T>) -> Question) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let exchange = async {
            self.0.send(question(tx)).await.ok()?;
            rx.await.ok()
        };
        tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .ok()
            .flatten()
    }
}
