//! Reading small local files that a peer may have named or an operator may
//! have mistyped: cookies, passwords, keys, configuration.
//!
//! Each read has a size cap and is refused unless the path is a regular
//! file, so `/dev/zero`, a FIFO nobody writes to, or a master key named as a
//! cookie cannot exhaust memory, block forever or leak. The file is opened
//! without blocking and checked through the opened handle, so it cannot be
//! swapped between the check and the read.

use std::fs::OpenOptions;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

/// Why a capped read failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum FileError {
    /// Opening or reading failed.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The path is a directory, device, FIFO or socket.
    #[error("{} is not a regular file", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than the cap.
    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        limit: u64,
        /// Its size, as far as it was looked at (past the cap).
        len: u64,
    },
    /// The file does not have the one size it must have.
    #[error("{} has {len} bytes, expected exactly {expected}", path.display())]
    WrongSize {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The size it must have.
        expected: u64,
    },
}

impl FileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Io { path, .. }
            | FileError::NotRegular { path }
            | FileError::TooLarge { path, .. }
            | FileError::WrongSize { path, .. } => path,
        }
    }
}

/// Reads the regular file at `path`, failing if it holds more than `limit`
/// bytes.
pub fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let io = |source| FileError::Io {
        path: path.to_owned(),
        source: Arc::new(source),
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
    // writer. Regular files ignore it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.file_type().is_file() {
        return Err(FileError::NotRegular {
            path: path.to_owned(),
        });
    }
    let too_large = |len| FileError::TooLarge {
        path: path.to_owned(),
        limit,
        len,
    };
    if metadata.len() > limit {
        return Err(too_large(metadata.len()));
    }
    let mut bytes = Vec::new();
    // The file may grow after the check: read one byte past the cap to
    // tell.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads the regular file at `path`, which must hold exactly `len` bytes.
pub fn read_exact_size(path: &Path, len: u64) -> Result<Vec<u8>, FileError> {
    let wrong = |actual| FileError::WrongSize {
        path: path.to_owned(),
        len: actual,
        expected: len,
    };
    let bytes = read_capped(path, len).map_err(|e| match e {
        FileError::TooLarge { len, .. } => wrong(len),
        other => other,
    })?;
    if bytes.len() as u64 != len {
        return Err(wrong(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod test {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("torctl-file-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_within_the_cap_is_read() {
        let path = dir("ok").join("f");
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(read_capped(&path, 5).unwrap(), b"hello");
        assert_eq!(read_exact_size(&path, 5).unwrap(), b"hello");
    }

    #[test]
    fn a_file_past_the_cap_or_of_another_size_is_refused() {
        let path = dir("big").join("f");
        std::fs::write(&path, [0u8; 96]).unwrap();
        assert!(matches!(
            read_capped(&path, 32),
            Err(FileError::TooLarge { limit: 32, .. })
        ));
        assert!(matches!(
            read_exact_size(&path, 32),
            Err(FileError::WrongSize {
                len: 96,
                expected: 32,
                ..
            })
        ));
        std::fs::write(&path, [0u8; 5]).unwrap();
        let error = read_exact_size(&path, 32).unwrap_err();
        assert!(matches!(error, FileError::WrongSize { len: 5, .. }));
        assert!(error.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn devices_directories_and_fifos_are_refused_without_blocking() {
        for path in ["/dev/zero", "/dev/null", "/"] {
            assert!(
                matches!(
                    read_capped(Path::new(path), 1 << 20),
                    Err(FileError::NotRegular { .. })
                ),
                "{path}"
            );
        }
        let fifo = dir("fifo").join("pipe");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(matches!(
            read_capped(&fifo, 32),
            Err(FileError::NotRegular { .. })
        ));
    }
}
