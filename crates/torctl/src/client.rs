//! The async client: a thin tokio shell around [`ReplyParser`] and
//! [`Command`].
//!
//! One task reads from tor and hands each reply to the oldest waiting
//! command (tor answers in order), and each event to the event channel.
//! Writing a command and queueing its waiter happen under one lock, so any
//! number of tasks may pipeline commands on one connection.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

use rand::Rng as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::auth::{Challenge, Credentials, Method, ProtocolInfo};
use crate::command::Command;
use crate::error::Error;
use crate::reply::{Reply, ReplyParser};

/// Where tor's control port listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ControlAddr {
    /// A TCP `ControlPort`.
    Tcp(SocketAddr),
    /// A `ControlSocket`.
    Unix(PathBuf),
}

impl fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlAddr::Tcp(addr) => write!(f, "{addr}"),
            ControlAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

type Waiter = oneshot::Sender<Result<Reply, Error>>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// State shared by the handle and the reader task.
struct Shared {
    writer: Mutex<Writer>,
    /// Waiters in the order their commands were written.
    waiters: StdMutex<Waiters>,
}

#[derive(Default)]
struct Waiters {
    queue: VecDeque<Waiter>,
    /// Set when the connection ended; later commands fail at once.
    closed: Option<Error>,
}

/// A connection to one tor's control port.
///
/// Cheap to share behind an `Arc`: every method takes `&self`.
pub struct ControlClient {
    addr: ControlAddr,
    shared: Arc<Shared>,
    events: StdMutex<Option<mpsc::UnboundedReceiver<Reply>>>,
}

impl ControlClient {
    /// Connects to `addr`. The connection is not yet authenticated.
    pub async fn connect(addr: &ControlAddr) -> Result<Self, Error> {
        let connect_error = |source| Error::Connect {
            addr: addr.clone(),
            source: Arc::new(source),
        };
        match addr {
            ControlAddr::Tcp(socket) => {
                let stream = tokio::net::TcpStream::connect(socket)
                    .await
                    .map_err(connect_error)?;
                let (read, write) = stream.into_split();
                Ok(Self::start(addr.clone(), read, Box::new(write)))
            }
            ControlAddr::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_error)?;
                let (read, write) = stream.into_split();
                Ok(Self::start(addr.clone(), read, Box::new(write)))
            }
        }
    }

    /// Connects and authenticates in one step.
    pub async fn connect_authenticated(
        addr: &ControlAddr,
        credentials: &Credentials,
    ) -> Result<Self, Error> {
        let client = Self::connect(addr).await?;
        client.authenticate(credentials).await?;
        Ok(client)
    }

    fn start<R>(addr: ControlAddr, reader: R, writer: Writer) -> Self
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let shared = Arc::new(Shared {
            writer: Mutex::new(writer),
            waiters: StdMutex::new(Waiters::default()),
        });
        // Unbounded: the reader must never wait for the events' reader,
        // or replies behind a burst of events would never reach a caller
        // who awaits one before reading events; and a dropped event (a
        // fetched descriptor, an upload's result) is lost state. tor sends
        // only what the commands sent and the subscription ask for.
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        tokio::spawn(read_loop(reader, Arc::clone(&shared), event_tx));
        ControlClient {
            addr,
            shared,
            events: StdMutex::new(Some(event_rx)),
        }
    }

    /// Where this client is connected.
    pub fn addr(&self) -> &ControlAddr {
        &self.addr
    }

    /// Takes the receiver of asynchronous events (`650` replies). Events
    /// arrive only for what [`Command::setevents`] subscribed to, and are
    /// kept until read (never dropped), so a subscriber must read them.
    /// Returns `None` after the first call.
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<Reply>> {
        self.events.lock().ok()?.take()
    }

    /// Sends `command` and waits for its reply, whatever its status.
    pub async fn send(&self, command: &Command) -> Result<Reply, Error> {
        let bytes = command.encode().map_err(Error::InvalidCommand)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut writer = self.shared.writer.lock().await;
            self.enqueue(tx)?;
            writer.write_all(&bytes).await.map_err(|source| Error::Io {
                source: Arc::new(source),
            })?;
            writer.flush().await.map_err(|source| Error::Io {
                source: Arc::new(source),
            })?;
        }
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Sends `command` and fails unless tor answers with a 2xx status.
    pub async fn request(&self, command: &Command) -> Result<Reply, Error> {
        let reply = self.send(command).await?;
        if !reply.is_success() {
            return Err(Error::Refused {
                command: command.keyword().to_owned(),
                status: reply.status(),
                message: reply.message().to_owned(),
            });
        }
        Ok(reply)
    }

    /// `GETINFO key` and returns its value.
    pub async fn getinfo(&self, key: &str) -> Result<String, Error> {
        let reply = self.request(&Command::getinfo([key])).await?;
        reply
            .value(key)
            .map(str::to_owned)
            .ok_or_else(|| Error::MissingValue {
                key: key.to_owned(),
            })
    }

    /// `SIGNAL name`.
    pub async fn signal(&self, name: &str) -> Result<(), Error> {
        self.request(&Command::signal(name)).await.map(drop)
    }

    /// Authenticates with the strongest method tor offers that
    /// `credentials` allow.
    pub async fn authenticate(&self, credentials: &Credentials) -> Result<(), Error> {
        let info_reply = self.request(&Command::new("PROTOCOLINFO").arg("1")).await?;
        let info = ProtocolInfo::parse(&info_reply).map_err(Error::Auth)?;
        let token = match info.choose(credentials).map_err(Error::Auth)? {
            Method::Null => None,
            Method::Cookie(path) => Some(hex::encode(read_cookie(&path).await?)),
            Method::Password(password) => Some(hex::encode(password)),
            Method::SafeCookie(path) => {
                let cookie = read_cookie(&path).await?;
                let mut nonce = [0u8; 32];
                rand::rng().fill_bytes(&mut nonce);
                let reply = self
                    .request(
                        &Command::new("AUTHCHALLENGE")
                            .arg("SAFECOOKIE")
                            .arg(hex::encode(nonce)),
                    )
                    .await?;
                let challenge = Challenge::parse(&reply).map_err(Error::Auth)?;
                let proof = challenge.respond(&cookie, &nonce).map_err(Error::Auth)?;
                Some(hex::encode(proof))
            }
        };
        let command = match token {
            Some(token) => Command::new("AUTHENTICATE").arg(token),
            None => Command::new("AUTHENTICATE"),
        };
        self.request(&command).await.map(drop)
    }

    fn enqueue(&self, waiter: Waiter) -> Result<(), Error> {
        let mut waiters = self.shared.waiters.lock().map_err(|_| Error::Closed)?;
        if let Some(error) = &waiters.closed {
            return Err(error.clone());
        }
        waiters.queue.push_back(waiter);
        Ok(())
    }
}

impl fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

async fn read_cookie(path: &Path) -> Result<Vec<u8>, Error> {
    tokio::fs::read(path)
        .await
        .map_err(|source| Error::CookieFile {
            path: path.to_owned(),
            source: Arc::new(source),
        })
}

/// Reads replies until the connection ends, then fails every waiter.
async fn read_loop<R>(mut reader: R, shared: Arc<Shared>, events: mpsc::UnboundedSender<Reply>)
where
    R: AsyncRead + Unpin,
{
    let mut parser = ReplyParser::default();
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break Error::Closed,
            Ok(n) => n,
            Err(source) => {
                break Error::Io {
                    source: Arc::new(source),
                }
            }
        };
        parser.feed(&buf[..n]);
        if let Err(error) = deliver(&mut parser, &shared, &events) {
            break error;
        }
    };
    tracing::debug!("control connection ended: {end}");
    if let Ok(mut waiters) = shared.waiters.lock() {
        for waiter in waiters.queue.drain(..) {
            let _ = waiter.send(Err(end.clone()));
        }
        waiters.closed = Some(end);
    }
}

/// Hands every complete reply in `parser` to its waiter or the event queue.
fn deliver(
    parser: &mut ReplyParser,
    shared: &Shared,
    events: &mpsc::UnboundedSender<Reply>,
) -> Result<(), Error> {
    while let Some(reply) = parser.next_reply().map_err(Error::Protocol)? {
        if reply.is_event() {
            // Fails only once nobody will read events any more.
            let _ = events.send(reply);
            continue;
        }
        let waiter = shared
            .waiters
            .lock()
            .map_err(|_| Error::Closed)?
            .queue
            .pop_front();
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(Ok(reply));
            }
            None => return Err(Error::UnexpectedReply(reply.message().to_owned())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;

    /// A fake tor that answers each line it reads with the next canned
    /// answer, after sending an unsolicited event.
    async fn fake_tor(answers: Vec<&'static str>) -> ControlAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            for answer in answers {
                lines.next_line().await.unwrap().unwrap();
                write
                    .write_all(b"650 STATUS_CLIENT NOTICE CONSENSUS_ARRIVED\r\n")
                    .await
                    .unwrap();
                write.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        ControlAddr::Tcp(addr)
    }

    #[tokio::test]
    async fn pipelined_commands_are_answered_in_order() {
        let addr = fake_tor(vec!["250-a=1\r\n250 OK\r\n", "250-b=2\r\n250 OK\r\n"]).await;
        let client = ControlClient::connect(&addr).await.unwrap();
        let mut events = client.take_events().unwrap();
        assert!(client.take_events().is_none());
        let (a, b) = tokio::join!(client.getinfo("a"), client.getinfo("b"));
        assert_eq!(a.unwrap(), "1");
        assert_eq!(b.unwrap(), "2");
        let event = events.recv().await.unwrap();
        assert_eq!(event.event_keyword(), Some("STATUS_CLIENT"));
    }

    #[tokio::test]
    async fn refusal_and_close_are_errors() {
        let addr = fake_tor(vec!["552 Unrecognized key \"x\"\r\n"]).await;
        let client = ControlClient::connect(&addr).await.unwrap();
        match client.getinfo("x").await {
            Err(Error::Refused { status, .. }) => assert_eq!(status, 552),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // The fake tor hangs up after its answers.
        assert!(client.getinfo("y").await.is_err());
    }

    #[tokio::test]
    async fn no_event_is_lost_however_many_come_before_a_reply() {
        // 20 000 events ahead of the reply its caller waits for, while
        // nobody reads events: the reply arrives, and then every event.
        const BURST: usize = 20_000;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            lines.next_line().await.unwrap().unwrap();
            let burst = "650 HS_DESC RECEIVED x NO_AUTH $AA descid\r\n".repeat(BURST);
            write.write_all(burst.as_bytes()).await.unwrap();
            write.write_all(b"250-a=1\r\n250 OK\r\n").await.unwrap();
            // Stay open until the client is done.
            let _ = lines.next_line().await;
        });
        let client = ControlClient::connect(&ControlAddr::Tcp(addr))
            .await
            .unwrap();
        let mut events = client.take_events().unwrap();
        assert_eq!(client.getinfo("a").await.unwrap(), "1");
        let all = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            for _ in 0..BURST {
                let event = events.recv().await.unwrap();
                assert_eq!(event.event_keyword(), Some("HS_DESC"));
            }
        });
        assert!(all.await.is_ok(), "events were lost");
        assert!(events.try_recv().is_err());
    }
}
