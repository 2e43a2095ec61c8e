//! The errors of this crate.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::auth::AuthError;
use crate::client::ControlAddr;
use crate::command::CommandError;
use crate::file::FileError;
use crate::reply::ProtocolError;

/// Something went wrong talking to tor's control port.
///
/// Cloneable, because one broken connection fails every command that was
/// waiting on it.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum Error {
    /// We could not reach the control port.
    #[error("cannot connect to tor's control port at {addr}")]
    Connect {
        /// Where we tried to connect.
        addr: ControlAddr,
        /// Why it failed.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Reading or writing the connection failed.
    #[error("control connection failed")]
    Io {
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Tor closed the connection.
    #[error("tor closed the control connection")]
    Closed,
    /// Tor sent something that is not the control protocol.
    #[error("tor sent an invalid reply")]
    Protocol(#[source] ProtocolError),
    /// Tor sent a reply when no command was waiting for one.
    #[error("tor sent a reply nobody asked for: {0:?}")]
    UnexpectedReply(String),
    /// The command could not be encoded.
    #[error("refusing to send command")]
    InvalidCommand(#[source] CommandError),
    /// Tor answered with an error status.
    #[error("tor refused {command}: {status} {message}")]
    Refused {
        /// The command keyword.
        command: String,
        /// Tor's status code.
        status: u16,
        /// Tor's explanation.
        message: String,
    },
    /// A `GETINFO` or `GETCONF` answer lacked the key that was asked for.
    #[error("tor's answer has no value for {key}")]
    MissingValue {
        /// The key that was asked for.
        key: String,
    },
    /// The cookie file could not be read, or is not a cookie: a regular
    /// file of exactly 32 bytes.
    #[error("refusing the control-port cookie")]
    CookieFile(#[source] FileError),
    /// tor did not answer in time; the connection was closed.
    #[error("no answer from tor to {doing} within {after:?}; closed the connection")]
    Timeout {
        /// The command keyword, or `connecting`.
        doing: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// Events arrived faster than they were read, past the bound; the
    /// connection was closed.
    #[error("more than {limit} bytes of unread events from tor; closed the connection")]
    EventQueueFull {
        /// The bound.
        limit: usize,
    },
    /// Authentication could not be done.
    #[error("control-port authentication failed")]
    Auth(#[source] AuthError),
}
