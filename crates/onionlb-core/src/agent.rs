//! The channel between an instance's agent and the manager: its keys, its
//! handshake and its messages, as bytes in and bytes out.
//!
//! An agent runs beside one backend instance and tells the manager two
//! things: whether the instance is healthy, and what its newest descriptor
//! is. The channel is a byte stream (a Unix socket, or a TCP connection
//! reached through an onion service with client authorization); this
//! module does no I/O.
//!
//! ```text
//! manager: CHALLENGE <64 hex digits>
//! agent:   HELLO <instance address> <agent key, base64> <signature, base64>
//! manager: WELCOME                       or  REFUSED <why>, then closes
//! agent:   TOR <pid> <start, seconds since 1970> (before its first push,
//!          and again whenever it connects to a tor)
//! agent:   HEALTH UP | HEALTH DOWN <why> (a heartbeat too: send it often)
//! agent:   DESCRIPTOR <length>           then exactly <length> bytes
//! manager: ACCEPTED <what changed>       or  REJECTED <why>
//! ```
//!
//! The signature covers a fixed label, the challenge and the instance
//! address, so it proves the agent holds the key the operator configured
//! for that instance on this connection, and cannot be replayed on
//! another. It does not vouch for descriptors: a pushed descriptor gets
//! exactly the checks of a fetched one (the instance's blinded key signs
//! it, its revision never goes back), so an agent, or whoever took over
//! its channel, can delay intro points but never inject any.

use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE32_NOPAD, BASE64, HEXLOWER_PERMISSIVE};
use ed25519_dalek::Signer as _;
use sha2::{Digest as _, Sha256};
use thiserror::Error;
use tor_llcrypto::pk::curve25519;

use crate::OnionAddress;

/// Longest line either side accepts (a `HELLO` is about 220 bytes).
pub const MAX_LINE: usize = 1024;
/// Largest descriptor an agent may push: tor's own ceiling for
/// `HSV3MaxDescriptorSize` is far below it.
pub const MAX_DESCRIPTOR: usize = 100_000;

const HELLO_LABEL: &[u8] = b"onionlb agent hello v1\0";
const CLIENT_AUTH_LABEL: &[u8] = b"onionlb agent onion client auth v1\0";
const KEY_FILE_HEADER: &str = "onionlb-agent-key-v1";

/// An agent's secret: a 32-byte seed from which both of its keys come, so
/// an operator handles one file per instance.
///
/// * An ed25519 key proves to the manager which instance the agent speaks
///   for (the manager's configuration holds its public half).
/// * An x25519 key is the agent's client authorization for the manager's
///   onion service, when the channel is remote.
#[derive(Clone)]
pub struct AgentKey {
    seed: [u8; 32],
}

/// The public half of an [`AgentKey`]'s ed25519 key, as it appears in the
/// manager's configuration (base64).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AgentPublicKey([u8; 32]);

/// Why a key, a key file or a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AgentError {
    /// A key file or key text is malformed.
    #[error("not an onionlb agent key: {0}")]
    Key(KeyProblem),
    /// A line longer than [`MAX_LINE`], or a descriptor longer than
    /// [`MAX_DESCRIPTOR`].
    #[error("message too long: {0} bytes")]
    TooLong(usize),
    /// A line that is not one of the channel's messages.
    #[error("not a message of the agent channel: {0:?}")]
    Malformed(String),
}

/// What is wrong with an agent key file or an agent's public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// A key file without its first line.
    #[error("the file does not start with onionlb-agent-key-v1")]
    NoHeader,
    /// A key file whose seed is not 32 bytes in base64.
    #[error("the seed is not 32 bytes of base64")]
    BadSeed,
    /// A key file with more than the seed.
    #[error("text after the seed")]
    TextAfterSeed,
    /// A public key that is not 32 bytes in base64.
    #[error("the public key is not 32 bytes of base64")]
    BadPublicKey,
    /// 32 bytes that are not an ed25519 public key.
    #[error("the public key is not an ed25519 point")]
    NotAPoint,
}

impl AgentKey {
    /// A key from its seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        AgentKey { seed }
    }

    /// A new random key.
    pub fn generate<R: rand::Rng + rand::CryptoRng>(rng: &mut R) -> Self {
        let mut seed = [0; 32];
        rng.fill_bytes(&mut seed);
        AgentKey { seed }
    }

    /// Reads the contents of a key file written by [`AgentKey::to_file_text`].
    pub fn from_file_text(text: &str) -> Result<Self, AgentError> {
        let mut words = text.split_whitespace();
        if words.next() != Some(KEY_FILE_HEADER) {
            return Err(AgentError::Key(KeyProblem::NoHeader));
        }
        let seed = words
            .next()
            .and_then(|b64| BASE64.decode(b64.as_bytes()).ok())
            .map(zeroize::Zeroizing::new)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
            .ok_or(AgentError::Key(KeyProblem::BadSeed))?;
        if words.next().is_some() {
            return Err(AgentError::Key(KeyProblem::TextAfterSeed));
        }
        Ok(AgentKey { seed })
    }

    /// The key file's contents: a header and the seed in base64.
    pub fn to_file_text(&self) -> String {
        format!("{KEY_FILE_HEADER} {}\n", BASE64.encode(&self.seed))
    }

    fn signing_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.seed)
    }

    /// The public key the manager's configuration names.
    pub fn public(&self) -> AgentPublicKey {
        AgentPublicKey(self.signing_key().verifying_key().to_bytes())
    }

    /// The `HELLO` that answers `challenge` for `instance`.
    pub fn hello(&self, challenge: &[u8; 32], instance: OnionAddress) -> ToManager {
        let signature = self
            .signing_key()
            .sign(&hello_transcript(challenge, instance));
        ToManager::Hello {
            instance,
            key: self.public(),
            signature: signature.to_bytes(),
        }
    }

    /// The x25519 secret for client authorization to the manager's onion
    /// service, in the form tor's `ONION_CLIENT_AUTH_ADD` takes
    /// (`x25519:<base64>`).
    pub fn client_auth_secret(&self) -> String {
        format!("x25519:{}", BASE64.encode(&self.client_auth().to_bytes()))
    }

    /// The x25519 public key the manager authorizes, in the form tor's
    /// `ADD_ONION ... ClientAuthV3=` takes (base32).
    pub fn client_auth_public(&self) -> String {
        let public = curve25519::PublicKey::from(&self.client_auth());
        BASE32_NOPAD.encode(public.as_bytes())
    }

    fn client_auth(&self) -> curve25519::StaticSecret {
        let mut hash = Sha256::new();
        hash.update(CLIENT_AUTH_LABEL);
        hash.update(self.seed);
        curve25519::StaticSecret::from(<[u8; 32]>::from(hash.finalize()))
    }
}

impl Drop for AgentKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.seed);
    }
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentKey({})", self.public())
    }
}

impl AgentPublicKey {
    /// Whether `signature` answers `challenge` for `instance` with this key.
    pub fn verify_hello(
        &self,
        challenge: &[u8; 32],
        instance: OnionAddress,
        signature: &[u8; 64],
    ) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        key.verify_strict(&hello_transcript(challenge, instance), &signature)
            .is_ok()
    }
}

impl fmt::Display for AgentPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(&self.0))
    }
}

impl fmt::Debug for AgentPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentPublicKey({self})")
    }
}

impl FromStr for AgentPublicKey {
    type Err = AgentError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = BASE64
            .decode(text.trim().as_bytes())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or(AgentError::Key(KeyProblem::BadPublicKey))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(|_| AgentPublicKey(bytes))
            .map_err(|_| AgentError::Key(KeyProblem::NotAPoint))
    }
}

fn hello_transcript(challenge: &[u8; 32], instance: OnionAddress) -> Vec<u8> {
    let mut transcript = HELLO_LABEL.to_vec();
    transcript.extend_from_slice(challenge);
    transcript.extend_from_slice(instance.without_suffix().as_bytes());
    transcript
}

/// What an agent sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToManager {
    /// The answer to the challenge.
    Hello {
        /// The instance the agent speaks for.
        instance: OnionAddress,
        /// The agent's public key.
        key: AgentPublicKey,
        /// Its signature over the challenge and the instance address.
        signature: [u8; 64],
    },
    /// Which tor process the agent follows.
    Tor(TorProcess),
    /// Whether the instance is healthy; also the heartbeat.
    Health(Health),
    /// The instance's newest descriptor, as tor encoded it.
    Descriptor(String),
    /// Take the instance out of the master descriptors (`true`, planned
    /// maintenance) or let it back in; the manager answers with how far
    /// the drain has come (`ACCEPTED serving|draining|drained ...`) or why
    /// not (`REJECTED ...`). Sent again until drained: it is idempotent.
    Drain(bool),
}

/// One run of an instance's tor, as its agent sees it.
///
/// Intro points live and die with the tor process that made them: after a
/// restart, tor has new ones for both of its descriptors, and the manager
/// must stop offering every old one, including those of the descriptor
/// the new tor has not uploaded yet. The process id alone does not tell
/// runs apart (a tor that is PID 1 in a container keeps it), so the start
/// time comes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TorProcess {
    /// Its process id.
    pub pid: u32,
    /// When it started, in seconds since 1970, worked out from its uptime
    /// (so a second or two off between readings).
    pub started: u64,
}

impl TorProcess {
    /// Start times read this far apart are the same start.
    const SLACK: u64 = 3;

    /// Whether `other` is another run of tor than this one.
    pub fn differs_from(&self, other: &TorProcess) -> bool {
        self.pid != other.pid || self.started.abs_diff(other.started) > Self::SLACK
    }
}

impl fmt::Display for TorProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}, started at {}", self.pid, self.started)
    }
}

/// What an agent says of its instance's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Tor and the application answer.
    Up,
    /// Something failed; the text says what.
    Down(String),
}

/// What the manager sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToAgent {
    /// Sign this to say who you are.
    Challenge([u8; 32]),
    /// The agent is known: go on.
    Welcome,
    /// The agent is not: the connection closes.
    Refused(String),
    /// The pushed descriptor was used; the text says what changed.
    Accepted(String),
    /// The pushed descriptor was not used, and why.
    Rejected(String),
}

impl ToManager {
    /// The message's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToManager::Hello {
                instance,
                key,
                signature,
            } => format!(
                "HELLO {} {key} {}\n",
                instance.without_suffix(),
                BASE64.encode(signature)
            )
            .into_bytes(),
            ToManager::Tor(tor) => format!("TOR {} {}\n", tor.pid, tor.started).into_bytes(),
            ToManager::Health(Health::Up) => b"HEALTH UP\n".to_vec(),
            ToManager::Health(Health::Down(why)) => line("HEALTH DOWN", why),
            ToManager::Descriptor(text) => {
                let mut bytes = format!("DESCRIPTOR {}\n", text.len()).into_bytes();
                bytes.extend_from_slice(text.as_bytes());
                bytes
            }
            ToManager::Drain(true) => b"DRAIN\n".to_vec(),
            ToManager::Drain(false) => b"UNDRAIN\n".to_vec(),
        }
    }

    fn parse(frame: Frame) -> Result<Self, AgentError> {
        let malformed = || AgentError::Malformed(frame.line.clone());
        if let Some(body) = frame.body {
            return String::from_utf8(body)
                .map(ToManager::Descriptor)
                .map_err(|_| AgentError::Malformed("a descriptor that is not UTF-8".into()));
        }
        let mut words = frame.line.splitn(4, ' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("HELLO"), Some(address), Some(key), Some(signature)) => {
                let instance = address.parse().map_err(|_| malformed())?;
                let key = key.parse().map_err(|_| malformed())?;
                let signature = BASE64
                    .decode(signature.as_bytes())
                    .ok()
                    .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
                    .ok_or_else(malformed)?;
                Ok(ToManager::Hello {
                    instance,
                    key,
                    signature,
                })
            }
            (Some("TOR"), Some(pid), Some(started), None) => Ok(ToManager::Tor(TorProcess {
                pid: pid.parse().map_err(|_| malformed())?,
                started: started.parse().map_err(|_| malformed())?,
            })),
            (Some("HEALTH"), Some("UP"), None, None) => Ok(ToManager::Health(Health::Up)),
            (Some("DRAIN"), None, None, None) => Ok(ToManager::Drain(true)),
            (Some("UNDRAIN"), None, None, None) => Ok(ToManager::Drain(false)),
            (Some("HEALTH"), Some("DOWN"), ..) => {
                let why = frame.line.splitn(3, ' ').nth(2).unwrap_or("").to_owned();
                Ok(ToManager::Health(Health::Down(why)))
            }
            _ => Err(malformed()),
        }
    }
}

impl ToAgent {
    /// The message's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ToAgent::Challenge(challenge) => {
                format!("CHALLENGE {}\n", data_encoding::HEXLOWER.encode(challenge)).into_bytes()
            }
            ToAgent::Welcome => b"WELCOME\n".to_vec(),
            ToAgent::Refused(why) => line("REFUSED", why),
            ToAgent::Accepted(what) => line("ACCEPTED", what),
            ToAgent::Rejected(why) => line("REJECTED", why),
        }
    }

    fn parse(frame: Frame) -> Result<Self, AgentError> {
        let malformed = || AgentError::Malformed(frame.line.clone());
        if frame.body.is_some() {
            return Err(malformed());
        }
        let (word, rest) = frame
            .line
            .split_once(' ')
            .unwrap_or((frame.line.as_str(), ""));
        match word {
            "CHALLENGE" => HEXLOWER_PERMISSIVE
                .decode(rest.as_bytes())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .map(ToAgent::Challenge)
                .ok_or_else(malformed),
            "WELCOME" => Ok(ToAgent::Welcome),
            "REFUSED" => Ok(ToAgent::Refused(rest.to_owned())),
            "ACCEPTED" => Ok(ToAgent::Accepted(rest.to_owned())),
            "REJECTED" => Ok(ToAgent::Rejected(rest.to_owned())),
            _ => Err(malformed()),
        }
    }
}

/// `word`, a space and `text` on one line, `text` cut (at a character)
/// so that the line fits [`MAX_LINE`]: every reason a peer can read, it
/// can send back unchanged.
fn line(word: &str, text: &str) -> Vec<u8> {
    let mut end = text.len().min(MAX_LINE - word.len() - 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{word} {}\n", text[..end].replace(['\r', '\n'], " ")).into_bytes()
}

mod sealed {
    /// One line, and the bytes that follow it if it announced some.
    #[derive(Debug)]
    pub struct Frame {
        pub(super) line: String,
        pub(super) body: Option<Vec<u8>>,
    }

    /// Builds a message from a frame; only this module's messages can.
    pub trait FromFrame: Sized {
        fn from_frame(frame: Frame) -> Result<Self, super::AgentError>;
    }
}

use sealed::{Frame, FromFrame};

/// The messages a [`Decoder`] can produce: [`ToManager`] and [`ToAgent`].
pub trait Message: FromFrame {}

impl FromFrame for ToManager {
    fn from_frame(frame: Frame) -> Result<Self, AgentError> {
        ToManager::parse(frame)
    }
}
impl Message for ToManager {}

impl FromFrame for ToAgent {
    fn from_frame(frame: Frame) -> Result<Self, AgentError> {
        ToAgent::parse(frame)
    }
}
impl Message for ToAgent {}

/// Cuts a byte stream into messages of type `M` ([`ToManager`] on the
/// manager's side, [`ToAgent`] on the agent's), holding partial input
/// until the rest arrives.
#[derive(Debug)]
pub struct Decoder<M> {
    buffer: Vec<u8>,
    _message: std::marker::PhantomData<M>,
}

impl<M: Message> Default for Decoder<M> {
    fn default() -> Self {
        Decoder {
            buffer: Vec::new(),
            _message: std::marker::PhantomData,
        }
    }
}

impl<M: Message> Decoder<M> {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` if more bytes are needed. An
    /// error means the peer does not speak the protocol (or tries to make
    /// us buffer without end): close the connection.
    pub fn next_message(&mut self) -> Result<Option<M>, AgentError> {
        let Some(end) = self.buffer.iter().position(|&b| b == b'\n') else {
            if self.buffer.len() > MAX_LINE {
                return Err(AgentError::TooLong(self.buffer.len()));
            }
            return Ok(None);
        };
        if end > MAX_LINE {
            return Err(AgentError::TooLong(end));
        }
        // The encoder writes text: a line that is not UTF-8 is not ours.
        // A carriage return inside one is read as the space the encoder
        // writes for it, so what is decoded encodes back to the same line.
        let line = std::str::from_utf8(&self.buffer[..end])
            .map_err(|_| {
                AgentError::Malformed(String::from_utf8_lossy(&self.buffer[..end]).into_owned())
            })?
            .trim_end_matches('\r')
            .replace('\r', " ");
        let body_length = match line.strip_prefix("DESCRIPTOR ") {
            Some(length) => {
                let length: usize = length
                    .parse()
                    .map_err(|_| AgentError::Malformed(line.clone()))?;
                if length > MAX_DESCRIPTOR {
                    return Err(AgentError::TooLong(length));
                }
                Some(length)
            }
            None => None,
        };
        let consumed = end + 1 + body_length.unwrap_or(0);
        if self.buffer.len() < consumed {
            return Ok(None);
        }
        let body = body_length.map(|_| self.buffer[end + 1..consumed].to_vec());
        self.buffer.drain(..consumed);
        M::from_frame(Frame { line, body }).map(Some)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn address() -> OnionAddress {
        "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion"
            .parse()
            .expect("valid")
    }

    fn decode_all<M: Message>(bytes: &[u8]) -> Vec<M> {
        let mut decoder = Decoder::<M>::default();
        let mut out = Vec::new();
        // One byte at a time: partial input must wait for the rest.
        for byte in bytes {
            decoder.push(std::slice::from_ref(byte));
            while let Some(message) = decoder.next_message().expect("well formed") {
                out.push(message);
            }
        }
        out
    }

    #[test]
    fn messages_survive_the_wire_byte_by_byte() {
        let key = AgentKey::from_seed([7; 32]);
        let to_manager = vec![
            key.hello(&[1; 32], address()),
            ToManager::Tor(TorProcess {
                pid: 4321,
                started: 1_700_000_000,
            }),
            ToManager::Health(Health::Up),
            ToManager::Health(Health::Down("HTTP probe: connection refused".into())),
            ToManager::Descriptor("hs-descriptor 3\nDESCRIPTOR 5\n".into()),
            ToManager::Drain(true),
            ToManager::Health(Health::Up),
            ToManager::Drain(false),
        ];
        let bytes: Vec<u8> = to_manager.iter().flat_map(ToManager::encode).collect();
        assert_eq!(decode_all::<ToManager>(&bytes), to_manager);

        let to_agent = vec![
            ToAgent::Challenge([9; 32]),
            ToAgent::Welcome,
            ToAgent::Accepted("new intro points".into()),
            ToAgent::Rejected("a replay".into()),
            ToAgent::Refused("unknown key".into()),
        ];
        let bytes: Vec<u8> = to_agent.iter().flat_map(ToAgent::encode).collect();
        assert_eq!(decode_all::<ToAgent>(&bytes), to_agent);
    }

    #[test]
    fn a_carriage_return_inside_a_line_reads_as_the_space_it_is_written_as() {
        // Found by the agent_channel fuzz target: decoded with the \r,
        // the reason encoded back with a space in its place.
        let decoded = decode_all::<ToAgent>(b"REJECTED a\rb\r\n");
        assert_eq!(decoded, [ToAgent::Rejected("a b".into())]);
        assert_eq!(decoded[0].encode(), b"REJECTED a b\n");
        let decoded = decode_all::<ToManager>(b"HEALTH DOWN x\ry\n");
        assert_eq!(decoded, [ToManager::Health(Health::Down("x y".into()))]);
    }

    #[test]
    fn a_line_that_is_not_text_is_refused_and_a_long_reason_is_cut_to_fit() {
        // Found by the agent_channel fuzz target: read lossily, each bad
        // byte became three, and the line no longer fit when encoded back.
        let mut decoder = Decoder::<ToAgent>::default();
        decoder.push(b"REJECTED \xff\xff\n");
        assert!(matches!(
            decoder.next_message(),
            Err(AgentError::Malformed(_))
        ));
        let long = "é".repeat(MAX_LINE);
        for message in [
            ToAgent::Rejected(long.clone()),
            ToAgent::Accepted(long.clone()),
            ToAgent::Refused(long.clone()),
        ] {
            let decoded = decode_all::<ToAgent>(&message.encode());
            let (ToAgent::Rejected(text) | ToAgent::Accepted(text) | ToAgent::Refused(text)) =
                &decoded[0]
            else {
                unreachable!("the same kind comes back");
            };
            assert!(long.starts_with(text.as_str()) && text.len() >= MAX_LINE - 10);
        }
        let health = ToManager::Health(Health::Down(long.clone()));
        assert_eq!(decode_all::<ToManager>(&health.encode()).len(), 1);
    }

    #[test]
    fn a_tor_run_is_told_apart_by_pid_or_by_a_start_more_than_seconds_off() {
        let run = TorProcess {
            pid: 1,
            started: 1_700_000_000,
        };
        let read_again = TorProcess {
            started: run.started + 1,
            ..run
        };
        assert!(!run.differs_from(&read_again));
        // PID 1 in a container, restarted a minute later.
        let restarted = TorProcess {
            started: run.started + 60,
            ..run
        };
        assert!(run.differs_from(&restarted));
        let other_pid = TorProcess { pid: 2, ..run };
        assert!(run.differs_from(&other_pid));
    }

    #[test]
    fn a_hello_proves_the_key_for_that_challenge_and_instance_only() {
        let key = AgentKey::from_seed([7; 32]);
        let challenge = [3; 32];
        let ToManager::Hello {
            instance,
            key: public,
            signature,
        } = key.hello(&challenge, address())
        else {
            unreachable!("hello makes a Hello");
        };
        assert_eq!(public, key.public());
        assert!(public.verify_hello(&challenge, instance, &signature));
        assert!(!public.verify_hello(&[4; 32], instance, &signature));
        let other: OnionAddress = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion"
            .parse()
            .expect("valid");
        assert!(!public.verify_hello(&challenge, other, &signature));
        let stranger = AgentKey::from_seed([8; 32]).public();
        assert!(!stranger.verify_hello(&challenge, instance, &signature));
    }

    #[test]
    fn keys_round_trip_through_files_and_config_text() {
        let key = AgentKey::from_seed([5; 32]);
        let again = AgentKey::from_file_text(&key.to_file_text()).expect("reads back");
        assert_eq!(again.public(), key.public());
        let public: AgentPublicKey = key.public().to_string().parse().expect("parses");
        assert_eq!(public, key.public());
        let problem = |text: &str| match AgentKey::from_file_text(text) {
            Err(AgentError::Key(problem)) => problem,
            other => panic!("{text:?}: {:?}", other.map(|k| k.public())),
        };
        assert_eq!(
            problem("onionlb-agent-key-v1 c2hvcnQ="),
            KeyProblem::BadSeed
        );
        assert_eq!(problem("something else"), KeyProblem::NoHeader);
        let extra = format!("{} more", key.to_file_text().trim());
        assert_eq!(problem(&extra), KeyProblem::TextAfterSeed);
        let public = |text: &str| text.parse::<AgentPublicKey>().unwrap_err();
        assert_eq!(
            public("not base64!"),
            AgentError::Key(KeyProblem::BadPublicKey)
        );
        // y = 2 is on no ed25519 point.
        let mut two = [0; 32];
        two[0] = 2;
        assert_eq!(
            public(&BASE64.encode(&two)),
            AgentError::Key(KeyProblem::NotAPoint)
        );
        // Client authorization keys in tor's forms, and stable.
        assert!(key.client_auth_secret().starts_with("x25519:"));
        assert_eq!(key.client_auth_public().len(), 52);
        assert_eq!(key.client_auth_public(), again.client_auth_public());
        assert_ne!(
            key.client_auth_public(),
            AgentKey::from_seed([6; 32]).client_auth_public()
        );
    }

    #[test]
    fn oversized_or_foreign_input_is_an_error() {
        let mut decoder = Decoder::<ToManager>::default();
        decoder.push(&vec![b'a'; MAX_LINE + 1]);
        assert!(matches!(
            decoder.next_message(),
            Err(AgentError::TooLong(_))
        ));

        let mut decoder = Decoder::<ToManager>::default();
        decoder.push(format!("DESCRIPTOR {}\n", MAX_DESCRIPTOR + 1).as_bytes());
        assert!(matches!(
            decoder.next_message(),
            Err(AgentError::TooLong(_))
        ));

        let mut decoder = Decoder::<ToManager>::default();
        decoder.push(b"GET / HTTP/1.1\r\n");
        assert!(matches!(
            decoder.next_message(),
            Err(AgentError::Malformed(_))
        ));

        let mut decoder = Decoder::<ToManager>::default();
        decoder.push(b"HELLO abc def ghi\n");
        assert!(matches!(
            decoder.next_message(),
            Err(AgentError::Malformed(_))
        ));
    }
}
