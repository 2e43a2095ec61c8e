//! Answering local clients (status socket, metrics scrapes) without letting
//! them hold the manager's memory: a bound on clients served at once, and a
//! deadline on each answer, so a client that connects and never reads
//! costs one slot for at most that long.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
