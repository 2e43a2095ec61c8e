//! Serving the status report on a Unix socket.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixListener;
use tokio::sync::watch;

use super::report::StatusReport;

/// Mode of the socket: the report names every instance's address, which
/// the operator may want to keep from other local users; the group lets
/// an admin group read it.
const SOCKET_MODE: u32 = 0o660;

/// A running status socket; removed when dropped.
#[derive(Debug)]
pub struct StatusServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl StatusServer {
    /// Listens at `path`, answering each connection with the latest report
    /// from `reports` as JSON. A stale socket file is replaced; a live one
    /// (another manager) is not.
    pub async fn start(
        path: &Path,
        reports: watch::Receiver<Arc<StatusReport>>,
    ) -> anyhow::Result<Self> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                bail!(
                    "{} exists and is not a socket; not replacing it",
                    path.display()
                );
            }
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                bail!(
                    "{} is in use: is another onionlb running with this status socket?",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("creating the status socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        tracing::info!("status socket at {}", path.display());
        let task = tokio::spawn(serve(listener, reports));
        Ok(StatusServer {
            path: path.to_owned(),
            task,
        })
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(listener: UnixListener, reports: watch::Receiver<Arc<StatusReport>>) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("status socket: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let report = Arc::clone(&reports.borrow());
        tokio::spawn(async move {
            let Ok(mut json) = serde_json::to_vec(&*report) else {
                return;
            };
            json.push(b'\n');
            // A reader that goes away early is no concern of ours.
            let _ = stream.write_all(&json).await;
            let _ = stream.shutdown().await;
        });
    }
}
