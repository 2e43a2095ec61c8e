//! The side tor normally plays, here played towards the transport with a
//! static cookie: offer SAFE_COOKIE, check the transport's client hash,
//! collect its commands up to `DONE`.

use std::net::SocketAddr;

use crate::auth::{client_hash_matches, server_hash, NONCE_LEN, SAFE_COOKIE};
use crate::frame::{code, Frame, MAX_COMMANDS};
use crate::{Cookie, Error};

/// What the transport asked for, up to its `DONE`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    frames: Vec<Frame>,
    user_addr: Option<SocketAddr>,
    transport: Option<String>,
    /// Bytes the transport sent after `DONE` in the same read, before any
    /// `OKAY`: the start of its OR connection, to forward once tor has
    /// answered `OKAY` (tor closes a connection that sends them earlier).
    pub early_data: Vec<u8>,
}

impl Request {
    /// A request made here rather than read from a transport: `USERADDR`
    /// then `TRANSPORT`, each when given, checked as a transport's would be.
    pub fn new(user_addr: Option<SocketAddr>, transport: Option<&str>) -> Result<Self, Error> {
        let mut request = Request::default();
        if let Some(addr) = user_addr {
            let body = addr.to_string().into_bytes();
            request.push(Frame::new(code::USERADDR, body)?)?;
        }
        if let Some(name) = transport {
            request.push(Frame::new(code::TRANSPORT, name.as_bytes().to_vec())?)?;
        }
        Ok(request)
    }

    /// Records one command, checking the bodies of those it knows.
    ///
    /// Unknown commands are kept, to be replayed to tor as they came: the
    /// spec says to ignore them, and tor, not the middle tier, should be
    /// the one to ignore a command newer than this code.
    fn push(&mut self, frame: Frame) -> Result<(), Error> {
        if self.frames.len() == MAX_COMMANDS {
            return Err(Error::TooManyCommands);
        }
        match frame.command() {
            code::USERADDR => self.user_addr = Some(parse_user_addr(frame.body())?),
            code::TRANSPORT => self.transport = Some(parse_transport(frame.body())?),
            _ => {}
        }
        self.frames.push(frame);
        Ok(())
    }

    /// The client's address from the last `USERADDR`, if any.
    pub fn user_addr(&self) -> Option<SocketAddr> {
        self.user_addr
    }

    /// The transport's name from the last `TRANSPORT`, if any.
    pub fn transport(&self) -> Option<&str> {
        self.transport.as_deref()
    }

    /// The commands as received, `DONE` excluded.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Appends the commands and `DONE` in wire form to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        for frame in &self.frames {
            frame.encode(out);
        }
        Frame::empty(code::DONE).encode(out);
    }
}

/// `a.b.c.d:port` or `[v6]:port`, as ext-orport-spec 3.2.1 allows; no
/// zone index, no NUL, no other form.
fn parse_user_addr(body: &[u8]) -> Result<SocketAddr, Error> {
    let text = std::str::from_utf8(body).map_err(|_| Error::BadUserAddr)?;
    if text.contains('%') {
        return Err(Error::BadUserAddr);
    }
    text.parse().map_err(|_| Error::BadUserAddr)
}

/// A C identifier: a letter or `_`, then letters, digits and `_`.
fn parse_transport(body: &[u8]) -> Result<String, Error> {
    let Some((first, rest)) = body.split_first() else {
        return Err(Error::BadTransport);
    };
    let valid = (first.is_ascii_alphabetic() || *first == b'_')
        && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    if !valid {
        return Err(Error::BadTransport);
    }
    // All ASCII, checked above.
    Ok(body.iter().map(|&b| char::from(b)).collect())
}

#[derive(Debug)]
enum State {
    AuthType,
    ClientNonce,
    ClientHash { client_nonce: [u8; NONCE_LEN] },
    Commands(Request),
    Ended,
}

/// The server side of one connection's handshake.
///
/// Construct it, send [`ServerHandshake::take_outgoing`], then feed what the
/// transport sends to [`ServerHandshake::handle`] (sending what it queues)
/// until it returns the [`Request`]; then send [`ServerHandshake::okay`] or
/// [`ServerHandshake::deny`] when tor has answered.
#[derive(Debug)]
pub struct ServerHandshake {
    cookie: Cookie,
    server_nonce: [u8; NONCE_LEN],
    state: State,
    /// Input not yet consumed: less than one step's worth.
    pending: Vec<u8>,
    outgoing: Vec<u8>,
}

impl ServerHandshake {
    /// Starts a handshake and queues the list of authentication types
    /// (SAFE_COOKIE only). `server_nonce` must be fresh random bytes.
    pub fn new(cookie: Cookie, server_nonce: [u8; NONCE_LEN]) -> Self {
        ServerHandshake {
            cookie,
            server_nonce,
            state: State::AuthType,
            pending: Vec::new(),
            outgoing: vec![SAFE_COOKIE, 0],
        }
    }

    /// Takes the bytes queued for the transport.
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outgoing)
    }

    /// Consumes bytes from the transport, queueing answers; returns the
    /// request once `DONE` arrives, after which the handshake has ended.
    ///
    /// On a wrong client hash it queues status 0 (send it, then close).
    pub fn handle(&mut self, input: &[u8]) -> Result<Option<Request>, Error> {
        if matches!(self.state, State::Ended) {
            return Err(Error::Ended);
        }
        self.pending.extend_from_slice(input);
        let pending = std::mem::take(&mut self.pending);
        let mut rest = pending.as_slice();
        let result = self.advance(&mut rest);
        self.pending = rest.to_vec();
        if result.is_err() {
            self.state = State::Ended;
        }
        result
    }

    /// Runs the state machine over `input` as far as it goes.
    fn advance(&mut self, input: &mut &[u8]) -> Result<Option<Request>, Error> {
        loop {
            match &mut self.state {
                State::AuthType => {
                    let Some((&auth_type, rest)) = input.split_first() else {
                        return Ok(None);
                    };
                    *input = rest;
                    if auth_type != SAFE_COOKIE {
                        return Err(Error::UnsupportedAuthType(auth_type));
                    }
                    self.state = State::ClientNonce;
                }
                State::ClientNonce => {
                    let Some(client_nonce) = take_array::<NONCE_LEN>(input) else {
                        return Ok(None);
                    };
                    let hash = server_hash(&self.cookie, &client_nonce, &self.server_nonce);
                    self.outgoing.extend_from_slice(&hash);
                    self.outgoing.extend_from_slice(&self.server_nonce);
                    self.state = State::ClientHash { client_nonce };
                }
                State::ClientHash { client_nonce } => {
                    let Some(hash) = take_array::<32>(input) else {
                        return Ok(None);
                    };
                    if !client_hash_matches(&self.cookie, client_nonce, &self.server_nonce, &hash) {
                        self.outgoing.push(0);
                        return Err(Error::ClientHashMismatch);
                    }
                    self.outgoing.push(1);
                    self.state = State::Commands(Request::default());
                }
                State::Commands(request) => {
                    let Some(frame) = Frame::take(input)? else {
                        return Ok(None);
                    };
                    if frame.command() != code::DONE {
                        request.push(frame)?;
                        continue;
                    }
                    let mut request = std::mem::take(request);
                    request.early_data = std::mem::take(input).to_vec();
                    self.state = State::Ended;
                    return Ok(Some(request));
                }
                State::Ended => return Err(Error::Ended),
            }
        }
    }

    /// The `OKAY` to send the transport once tor has accepted the request.
    pub fn okay() -> Vec<u8> {
        let mut out = Vec::new();
        Frame::empty(code::OKAY).encode(&mut out);
        out
    }

    /// The `DENY` to send the transport when tor denied the request.
    pub fn deny() -> Vec<u8> {
        let mut out = Vec::new();
        Frame::empty(code::DENY).encode(&mut out);
        out
    }
}

/// Takes `N` bytes off the front of `input`, or nothing if it is shorter.
pub(crate) fn take_array<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = input.split_first_chunk::<N>()?;
    *input = rest;
    Some(*head)
}
