//! Extended ORPort commands (ext-orport-spec 3.1): a 2-byte command code, a
//! 2-byte body length, both big-endian, then the body.

use crate::Error;

/// Command codes.
pub mod code {
    /// Transport to tor: no more information; what follows is the OR
    /// connection (after tor's `OKAY`).
    pub const DONE: u16 = 0x0000;
    /// Transport to tor: the client's address, `ip:port`.
    pub const USERADDR: u16 = 0x0001;
    /// Transport to tor: the transport's name.
    pub const TRANSPORT: u16 = 0x0002;
    /// Tor to transport: send the user's traffic.
    pub const OKAY: u16 = 0x1000;
    /// Tor to transport: refuse this client for a while.
    pub const DENY: u16 = 0x1001;
    /// Tor to transport: reserved, not used.
    pub const CONTROL: u16 = 0x1002;
}

/// The longest command body accepted. The spec allows 65535; the commands
/// that exist carry an address or a transport name, under 64 bytes.
pub const MAX_BODY: usize = 1024;

/// The most commands a transport may send before `DONE`, and the most
/// replies tor may send before `OKAY` or `DENY`.
pub const MAX_COMMANDS: usize = 32;

/// The length of a command's header.
const HEADER_LEN: usize = 4;

/// One command, as read or to be sent; its body is at most [`MAX_BODY`]
/// bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    command: u16,
    body: Vec<u8>,
}

impl Frame {
    /// A command, refused if its body is longer than [`MAX_BODY`].
    pub fn new(command: u16, body: Vec<u8>) -> Result<Self, Error> {
        if body.len() > MAX_BODY {
            let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
            return Err(Error::BodyTooLong { command, len });
        }
        Ok(Frame { command, body })
    }

    /// A command with an empty body (`DONE`, `OKAY`, `DENY`).
    pub fn empty(command: u16) -> Self {
        Frame {
            command,
            body: Vec::new(),
        }
    }

    /// Its command code (see [`code`]).
    pub fn command(&self) -> u16 {
        self.command
    }

    /// Its body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Appends the command's wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // At most MAX_BODY, so the length fits in two bytes.
        let len = self.body.len() as u16;
        out.extend_from_slice(&self.command.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.body);
    }

    /// Takes one whole command off the front of `input`: `Ok(None)` when
    /// `input` holds only part of one (nothing is taken), an error when its
    /// header announces a body over [`MAX_BODY`].
    pub(crate) fn take(input: &mut &[u8]) -> Result<Option<Frame>, Error> {
        let Some(header) = input.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let command = u16::from_be_bytes([header[0], header[1]]);
        let len = u16::from_be_bytes([header[2], header[3]]);
        if usize::from(len) > MAX_BODY {
            return Err(Error::BodyTooLong { command, len });
        }
        let end = HEADER_LEN + usize::from(len);
        let Some(body) = input.get(HEADER_LEN..end) else {
            return Ok(None);
        };
        let frame = Frame {
            command,
            body: body.to_vec(),
        };
        *input = &input[end..];
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_their_end() {
        let frame = Frame::new(code::TRANSPORT, b"obfs4".to_vec()).expect("short");
        let mut wire = Vec::new();
        frame.encode(&mut wire);
        assert_eq!(wire, b"\x00\x02\x00\x05obfs4");
        for cut in 0..wire.len() {
            let mut part = &wire[..cut];
            assert_eq!(Frame::take(&mut part), Ok(None));
            assert_eq!(part.len(), cut, "nothing taken from a partial command");
        }
        wire.extend_from_slice(b"rest");
        let mut input = wire.as_slice();
        assert_eq!(Frame::take(&mut input), Ok(Some(frame)));
        assert_eq!(input, b"rest");
    }

    #[test]
    fn an_overlong_body_is_refused_when_built() {
        assert_eq!(
            Frame::new(0x0042, vec![0; MAX_BODY + 1]),
            Err(Error::BodyTooLong {
                command: 0x0042,
                len: 1025
            })
        );
    }

    #[test]
    fn an_overlong_body_is_refused_from_its_header() {
        let mut input: &[u8] = b"\x00\x01\x04\x01";
        assert_eq!(
            Frame::take(&mut input),
            Err(Error::BodyTooLong {
                command: code::USERADDR,
                len: 1025
            })
        );
    }
}
