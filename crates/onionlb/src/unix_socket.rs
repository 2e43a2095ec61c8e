//! Unix sockets the manager serves (status, agents): replacing a stale
//! one, refusing to take over a live one, and removing it at exit.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use tokio::net::UnixListener;

/// A socket file this process created; removed when dropped.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens at `path` with file mode `mode`. A stale socket file (nobody
/// answers) is replaced; a live one (another manager) or any other file
/// is not. `purpose` names the socket in errors.
pub async fn bind(
    path: &Path,
    mode: u32,
    purpose: &str,
) -> anyhow::Result<(UnixListener, SocketFile)> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket; not replacing it",
                path.display()
            );
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!(
                "{} is in use: is another onionlb running with this {purpose}?",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("creating the {purpose} {}", path.display()))?;
    let file = SocketFile {
        path: path.to_owned(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok((listener, file))
}

/// A Unix socket being served: a task accepts clients and hands each to
/// its own task, at most [`crate::answer::MAX_CLIENTS`] at once (more are
/// closed unanswered). Stops, and removes the socket, when dropped.
#[derive(Debug)]
pub struct Server {
    _file: SocketFile,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Listens at `path` (see [`bind`]) and runs `handle` for each client.
    pub async fn start<F, Fut>(
        path: &Path,
        mode: u32,
        purpose: &'static str,
        handle: F,
    ) -> anyhow::Result<Self>
    where
        F: Fn(tokio::net::UnixStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (listener, file) = bind(path, mode, purpose).await?;
        let task = tokio::spawn(accept(listener, purpose, handle));
        Ok(Server { _file: file, task })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept<F, Fut>(listener: UnixListener, purpose: &'static str, handle: F)
where
    F: Fn(tokio::net::UnixStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let places = crate::answer::Places::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("{purpose}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(place) = places.take() else {
            continue;
        };
        let served = handle(stream);
        tokio::spawn(async move {
            let _place = place;
            served.await;
        });
    }
}
