//! Serving the status report on a Unix socket.

use std::path::Path;

use crate::answer::Asker;
use tokio::net::UnixListener;

/// Mode of the socket: the report names every instance's address, which
/// the operator may want to keep from other local users; the group lets
/// an admin group read it.
const SOCKET_MODE: u32 = 0o660;

/// A running status socket; removed when dropped.
#[derive(Debug)]
pub struct StatusServer {
    _file: crate::unix_socket::SocketFile,
    task: tokio::task::JoinHandle<()>,
}

impl StatusServer {
    /// Listens at `path`, answering each connection with the daemon's
    /// report, as JSON, made when asked. A stale socket file is replaced; a
    /// live one (another manager) is not.
    pub async fn start(path: &Path, reports: Asker) -> anyhow::Result<Self> {
        let (listener, file) = crate::unix_socket::bind(path, SOCKET_MODE, "status socket").await?;
        tracing::info!("status socket at {}", path.display());
        let task = tokio::spawn(serve(listener, reports));
        Ok(StatusServer { _file: file, task })
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: UnixListener, reports: Asker) {
    let places = crate::answer::Places::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("status socket: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(place) = places.take() else {
            // Too many clients at once: this one is closed unanswered.
            continue;
        };
        let reports = reports.clone();
        tokio::spawn(async move {
            let _place = place;
            // A daemon too busy to answer in time: closed unanswered.
            let Some(report) = reports.status().await else {
                return;
            };
            let Ok(json) = serde_json::to_vec(&*report) else {
                return;
            };
            crate::answer::send_and_close(stream, &[&json, b"\n"]).await;
        });
    }
}
