//! The side the transport normally plays, here played towards one tor
//! with that tor's cookie: choose SAFE_COOKIE, check tor's server hash,
//! replay the transport's request, wait for `OKAY` or `DENY`.

use crate::auth::{client_hash, server_hash_matches, NONCE_LEN, SAFE_COOKIE};
use crate::frame::{code, Frame, MAX_COMMANDS};
use crate::server::take_array;
use crate::{Cookie, Error, Request};

/// How tor answered the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Tor sent `OKAY`: relay both ways from here, starting with
    /// `leftover` (bytes tor sent after its `OKAY`, for the transport).
    Okay {
        /// Bytes after `OKAY` in the same read.
        leftover: Vec<u8>,
    },
    /// Tor sent `DENY`: it wants no traffic from this client for a while.
    Denied,
}

#[derive(Debug)]
enum State {
    AuthTypes { offered: Vec<u8> },
    ServerHash,
    Status,
    Replies { ignored: usize },
    Ended,
}

/// The client side of one connection's handshake with a tor.
///
/// Construct it, feed what tor sends to [`ClientHandshake::handle`], and
/// send what [`ClientHandshake::take_outgoing`] gives after each call,
/// until it returns an [`Outcome`].
#[derive(Debug)]
pub struct ClientHandshake {
    cookie: Cookie,
    client_nonce: [u8; NONCE_LEN],
    /// The commands and `DONE`, in wire form, sent once tor accepts us.
    request: Vec<u8>,
    state: State,
    pending: Vec<u8>,
    outgoing: Vec<u8>,
}

impl ClientHandshake {
    /// Starts a handshake that will replay `request` (its early data is the
    /// caller's to forward after `OKAY`). `client_nonce` must be fresh
    /// random bytes. Tor speaks first, so nothing is queued yet.
    pub fn new(cookie: Cookie, client_nonce: [u8; NONCE_LEN], request: &Request) -> Self {
        let mut wire = Vec::new();
        request.encode(&mut wire);
        ClientHandshake {
            cookie,
            client_nonce,
            request: wire,
            state: State::AuthTypes {
                offered: Vec::new(),
            },
            pending: Vec::new(),
            outgoing: Vec::new(),
        }
    }

    /// Takes the bytes queued for tor.
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.outgoing)
    }

    /// Consumes bytes from tor, queueing answers; returns tor's answer to
    /// the request once it arrives, after which the handshake has ended.
    pub fn handle(&mut self, input: &[u8]) -> Result<Option<Outcome>, Error> {
        if matches!(self.state, State::Ended) {
            return Err(Error::Ended);
        }
        self.pending.extend_from_slice(input);
        let pending = std::mem::take(&mut self.pending);
        let mut rest = pending.as_slice();
        let result = self.advance(&mut rest);
        self.pending = rest.to_vec();
        if !matches!(result, Ok(None)) {
            self.state = State::Ended;
        }
        result
    }

    /// Runs the state machine over `input` as far as it goes.
    fn advance(&mut self, input: &mut &[u8]) -> Result<Option<Outcome>, Error> {
        loop {
            match &mut self.state {
                State::AuthTypes { offered } => {
                    let Some((&auth_type, rest)) = input.split_first() else {
                        return Ok(None);
                    };
                    *input = rest;
                    if auth_type != 0 {
                        if offered.len() == usize::from(u8::MAX) {
                            return Err(Error::TooManyAuthTypes);
                        }
                        offered.push(auth_type);
                        continue;
                    }
                    if !offered.contains(&SAFE_COOKIE) {
                        let offered = std::mem::take(offered);
                        return Err(Error::NoSafeCookie { offered });
                    }
                    self.outgoing.push(SAFE_COOKIE);
                    self.outgoing.extend_from_slice(&self.client_nonce);
                    self.state = State::ServerHash;
                }
                State::ServerHash => {
                    let Some(reply) = take_array::<64>(input) else {
                        return Ok(None);
                    };
                    let (hash, nonce) = reply.split_at(32);
                    let mut server_nonce = [0u8; NONCE_LEN];
                    server_nonce.copy_from_slice(nonce);
                    if !server_hash_matches(&self.cookie, &self.client_nonce, &server_nonce, hash) {
                        return Err(Error::ServerHashMismatch);
                    }
                    let answer = client_hash(&self.cookie, &self.client_nonce, &server_nonce);
                    self.outgoing.extend_from_slice(&answer);
                    self.state = State::Status;
                }
                State::Status => {
                    let Some((&status, rest)) = input.split_first() else {
                        return Ok(None);
                    };
                    *input = rest;
                    match status {
                        1 => {}
                        0 => return Err(Error::Refused),
                        other => return Err(Error::BadStatus(other)),
                    }
                    self.outgoing.extend_from_slice(&self.request);
                    self.state = State::Replies { ignored: 0 };
                }
                State::Replies { ignored } => {
                    let Some(frame) = Frame::take(input)? else {
                        return Ok(None);
                    };
                    match frame.command() {
                        code::OKAY => {
                            let leftover = std::mem::take(input).to_vec();
                            return Ok(Some(Outcome::Okay { leftover }));
                        }
                        code::DENY => return Ok(Some(Outcome::Denied)),
                        // CONTROL is unused and unknown replies are ignored
                        // (ext-orport-spec 3.1), up to a bound.
                        _ if *ignored == MAX_COMMANDS => return Err(Error::TooManyCommands),
                        _ => *ignored += 1,
                    }
                }
                State::Ended => return Err(Error::Ended),
            }
        }
    }
}
