//! What can go wrong in a handshake.

use crate::frame::{MAX_BODY, MAX_COMMANDS};

/// Why a handshake failed. The connection should be closed (after sending
/// what the handshake queued, which may be a failure status).
///
/// No variant carries what the peer sent in a field: `USERADDR` is a
/// client's address, which a bridge must not write to its logs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport chose an authentication type other than SAFE_COOKIE
    /// (0 means it liked none of those offered).
    #[error("the transport chose authentication type {0}; only SAFE_COOKIE (1) is offered")]
    UnsupportedAuthType(u8),
    /// Tor's list of authentication types lacks SAFE_COOKIE.
    #[error("tor does not offer SAFE_COOKIE authentication (it offers {offered:?})")]
    NoSafeCookie {
        /// The types tor offered.
        offered: Vec<u8>,
    },
    /// Tor's list of authentication types did not end within 255 bytes.
    #[error("tor's list of authentication types does not end within 255 bytes")]
    TooManyAuthTypes,
    /// The transport's client hash is not the static cookie's: it was given
    /// another cookie file.
    #[error("the transport's client hash does not match the static cookie")]
    ClientHashMismatch,
    /// Tor's server hash is not the cookie's: the cookie file read is stale
    /// (tor restarted since) or is not this tor's.
    #[error("tor's server hash does not match the cookie (stale, or another tor's)")]
    ServerHashMismatch,
    /// Tor answered the client hash with status 0.
    #[error("tor refused the authentication")]
    Refused,
    /// Tor answered the client hash with a status other than 0 or 1.
    #[error("tor answered the authentication with status {0}, neither 0 nor 1")]
    BadStatus(u8),
    /// A command announced a body longer than [`MAX_BODY`].
    #[error("command {command:#06x} announces a {len}-byte body; at most {MAX_BODY} are accepted")]
    BodyTooLong {
        /// The command code.
        command: u16,
        /// The announced length.
        len: u16,
    },
    /// More than [`MAX_COMMANDS`] commands before `DONE`, or replies before
    /// `OKAY`.
    #[error("more than {MAX_COMMANDS} commands without an end")]
    TooManyCommands,
    /// A `USERADDR` body that is not `a.b.c.d:port` or `[v6]:port`.
    #[error("USERADDR is not an ip:port address")]
    BadUserAddr,
    /// A `TRANSPORT` body that is not a C identifier.
    #[error("TRANSPORT is not a C identifier")]
    BadTransport,
    /// Input after the handshake ended; the caller should relay it instead.
    #[error("input after the handshake ended")]
    Ended,
}
