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
