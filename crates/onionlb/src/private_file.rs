//! Writing secrets (keys) to files only their owner can read, from the
//! moment the file exists.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Creates `path` with mode 0600 and writes `bytes`; fails if the file
/// exists, so an existing key is never overwritten.
pub fn create(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
}

/// Replaces `path` with `bytes` in one rename: a new file beside it made
/// with `mode` (set again, as the umask may have taken bits) and, if
/// given, the owner's user and group ids, then renamed over `path`. A
/// reader sees the old file or the new one, never a part.
pub fn replace(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut temp = path.as_os_str().to_owned();
    temp.push(".onionlb-new");
    let temp = std::path::PathBuf::from(temp);
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&temp, Some(uid), Some(gid))?;
    }
    std::fs::rename(&temp, path)
}
