//! The errors of this crate. Each says which tor or file it concerns, and
//! where a tor failed, ends with the tail of its log.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// Why the network could not be started, used or stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A program we need is not installed.
    #[error("cannot run {program}: is the Debian package `tor` installed? (scripts/ensure-tor installs it)")]
    MissingProgram {
        /// The program.
        program: String,
        /// Why it could not be run.
        #[source]
        source: std::io::Error,
    },
    /// A port plan does not fit.
    #[error("{needed} ports from base port {base} do not fit between 1024 and 65535")]
    PortRange {
        /// The base port.
        base: u16,
        /// How many ports the network needs.
        needed: usize,
    },
    /// Something already listens on a port the network needs.
    #[error("port 127.0.0.1:{port} is already in use; pick another --base-port")]
    PortInUse {
        /// The port.
        port: u16,
    },
    /// A file or directory operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What we were doing.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A tor tool ran but did not give us what we needed.
    #[error("{node}: {what} failed: {detail}")]
    Setup {
        /// The tor concerned.
        node: String,
        /// The step.
        what: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// A process we started exited while it should be running.
    #[error("{node} exited ({status}) while {doing}\n{log_tail}")]
    Exited {
        /// The process.
        node: String,
        /// How it exited.
        status: String,
        /// What we were waiting for.
        doing: String,
        /// The end of its log.
        log_tail: String,
    },
    /// A bounded wait ran out.
    #[error("timed out after {waited:?} waiting for {what}\n{log_tail}")]
    Timeout {
        /// What we waited for, naming the tors that were not ready.
        what: String,
        /// How long we waited.
        waited: Duration,
        /// The end of the first laggard's log.
        log_tail: String,
    },
    /// Talking to a tor's control port failed.
    #[error("{node}: control port")]
    Control {
        /// The tor.
        node: String,
        /// The failure.
        #[source]
        source: torctl::Error,
    },
    /// A fetch through the client's SOCKS port failed.
    #[error("fetching {url} through the client tor: {detail}")]
    Fetch {
        /// What we fetched.
        url: String,
        /// Why it failed.
        detail: String,
    },
    /// The state file of a network is missing or unreadable.
    #[error("no usable testnet state in {}: {detail}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A network is already running in that directory.
    #[error("a testnet is already running in {}: run `onionlb testnet down --dir {}` first", dir.display(), dir.display())]
    AlreadyRunning {
        /// Its directory.
        dir: PathBuf,
    },
    /// The caller asked for something the network does not have.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// Wraps an I/O error with what we were doing and on which path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
