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
