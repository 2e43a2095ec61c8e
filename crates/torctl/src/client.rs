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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use rand::Rng as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Mutex};
use zeroize::Zeroizing;

use crate::auth::{Challenge, Credentials, Method, ProtocolInfo, COOKIE_LEN};
use crate::command::Command;
use crate::error::Error;
use crate::reply::{Limits, Reply, ReplyParser};

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

/// The bounds of one control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How long a command may take, from the start of its write to the
    /// end of its reply, and how long connecting may take. When it passes,
    /// the connection is closed with [`Error::Timeout`]: a tor that stops
    /// answering one command answers none after it.
    pub command_timeout: Duration,
    /// What the parser accepts.
    pub limits: Limits,
    /// Cost (see [`Reply::cost`]) of the events received and not yet read
    /// past which the connection is closed with [`Error::EventQueueFull`].
    pub max_queued_events: usize,
}

impl Default for Options {
    /// 30 s commands, the parser's default limits, 64 MiB of unread
    /// events: over a thousand descriptors at tor's default size limit
    /// (50 000 bytes), and more than onionlb's largest fetch round can
    /// bring (128 instances from up to 6 HSDirs each, 38 MB at that limit).
    fn default() -> Self {
        Options {
            command_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            max_queued_events: 64 * 1024 * 1024,
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
    /// Cost of the events sent to the queue and not yet read.
    queued: Arc<AtomicUsize>,
    /// Stops the reader task when the connection is closed from our side.
    reader: StdMutex<Option<tokio::task::AbortHandle>>,
}

impl Shared {
    /// Ends the connection: every waiting and later command fails with
    /// `error`, and the reader stops, which closes the event queue. Only
    /// the first reason is kept.
    fn close(&self, error: Error) {
        if let Ok(mut waiters) = self.waiters.lock() {
            if waiters.closed.is_none() {
                tracing::debug!("control connection ended: {error}");
                waiters.closed = Some(error.clone());
            }
            for waiter in waiters.queue.drain(..) {
                let _ = waiter.send(Err(error.clone()));
            }
        }
        if let Some(reader) = self.reader.lock().ok().and_then(|mut r| r.take()) {
            reader.abort();
        }
    }
}

/// The asynchronous events of one connection, oldest first.
///
/// Bounded by [`Options::max_queued_events`]: a reader that falls that far
/// behind loses the connection, never single events.
#[derive(Debug)]
pub struct Events {
    receiver: mpsc::UnboundedReceiver<Reply>,
    queued: Arc<AtomicUsize>,
}

impl Events {
    /// The next event, or `None` once the connection has ended and every
    /// event received before was read.
    pub async fn recv(&mut self) -> Option<Reply> {
        let event = self.receiver.recv().await?;
        self.queued.fetch_sub(event.cost(), Ordering::Relaxed);
        Some(event)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Reply> {
        let event = self.receiver.try_recv().ok()?;
        self.queued.fetch_sub(event.cost(), Ordering::Relaxed);
        Some(event)
    }
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
    options: Options,
    shared: Arc<Shared>,
    events: StdMutex<Option<Events>>,
}

impl ControlClient {
    /// Connects to `addr` with the default [`Options`]. The connection is
    /// not yet authenticated.
    pub async fn connect(addr: &ControlAddr) -> Result<Self, Error> {
        Self::connect_with(addr, Options::default()).await
    }

    /// Connects to `addr`, within `options.command_timeout`.
    pub async fn connect_with(addr: &ControlAddr, options: Options) -> Result<Self, Error> {
        let connect_error = |source| Error::Connect {
            addr: addr.clone(),
            source: Arc::new(source),
        };
        let connect = async {
            match addr {
                ControlAddr::Tcp(socket) => {
                    let stream = tokio::net::TcpStream::connect(socket)
                        .await
                        .map_err(connect_error)?;
                    let (read, write) = stream.into_split();
                    Ok(Self::start(addr.clone(), options, read, Box::new(write)))
                }
                ControlAddr::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(connect_error)?;
                    let (read, write) = stream.into_split();
                    Ok(Self::start(addr.clone(), options, read, Box::new(write)))
                }
            }
        };
        tokio::time::timeout(options.command_timeout, connect)
            .await
            .map_err(|_| Error::Timeout {
                doing: "connecting".into(),
                after: options.command_timeout,
            })?
    }

    /// Connects and authenticates in one step, with the default
    /// [`Options`].
    pub async fn connect_authenticated(
        addr: &ControlAddr,
        credentials: &Credentials,
    ) -> Result<Self, Error> {
        Self::connect_authenticated_with(addr, credentials, Options::default()).await
    }

    /// Connects and authenticates in one step.
    pub async fn connect_authenticated_with(
        addr: &ControlAddr,
        credentials: &Credentials,
        options: Options,
    ) -> Result<Self, Error> {
        let client = Self::connect_with(addr, options).await?;
        client.authenticate(credentials).await?;
        Ok(client)
    }

    fn start<R>(addr: ControlAddr, options: Options, reader: R, writer: Writer) -> Self
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let queued = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            writer: Mutex::new(writer),
            waiters: StdMutex::new(Waiters::default()),
            queued: Arc::clone(&queued),
            reader: StdMutex::new(None),
        });
        // The channel itself is unbounded, so that the reader never waits
        // for the events' reader (replies behind a burst of events would
        // otherwise never reach a caller who awaits one before reading
        // events), and no event is ever dropped (a fetched descriptor or
        // an upload's result is state). The cost of what waits in it is
        // bounded instead, by closing the connection.
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(read_loop(reader, Arc::clone(&shared), event_tx, options));
        if let Ok(mut slot) = shared.reader.lock() {
            *slot = Some(task.abort_handle());
        }
        ControlClient {
            addr,
            options,
            shared,
            events: StdMutex::new(Some(Events {
                receiver: event_rx,
                queued,
            })),
        }
    }

    /// Why the connection ended, once it has.
    pub fn closed(&self) -> Option<Error> {
        self.shared.waiters.lock().ok()?.closed.clone()
    }

    /// Where this client is connected.
    pub fn addr(&self) -> &ControlAddr {
        &self.addr
    }

    /// Takes the receiver of asynchronous events (`650` replies). Events
    /// arrive only for what [`Command::setevents`] subscribed to, and are
    /// kept until read (never dropped), so a subscriber must read them.
    /// Returns `None` after the first call.
    pub fn take_events(&self) -> Option<Events> {
        self.events.lock().ok()?.take()
    }

    /// Sends `command` and waits for its reply, whatever its status.
    ///
    /// If the reply has not arrived within [`Options::command_timeout`],
    /// the connection is closed and this and every other command on it
    /// fail with [`Error::Timeout`].
    pub async fn send(&self, command: &Command) -> Result<Reply, Error> {
        let mut bytes = command.encode().map_err(Error::InvalidCommand)?;
        let secret = command.is_secret();
        let exchange = async {
            let (tx, rx) = oneshot::channel();
            {
                let mut writer = self.shared.writer.lock().await;
                self.enqueue(tx)?;
                let written = async {
                    writer.write_all(&bytes).await?;
                    writer.flush().await
                };
                if let Err(source) = written.await {
                    let error = Error::Io {
                        source: Arc::new(source),
                    };
                    self.shared.close(error.clone());
                    return Err(error);
                }
            }
            rx.await.map_err(|_| Error::Closed)?
        };
        let after = self.options.command_timeout;
        let result = tokio::time::timeout(after, exchange).await;
        if secret {
            // Only these: zeroing every descriptor posted costs real time.
            zeroize::Zeroize::zeroize(&mut bytes);
        }
        match result {
            Ok(result) => result,
            Err(_) => {
                let error = Error::Timeout {
                    doing: command.keyword().to_owned(),
                    after,
                };
                self.shared.close(error.clone());
                Err(error)
            }
        }
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
            Method::Cookie(path) => Some(Zeroizing::new(hex::encode(&*read_cookie(&path)?))),
            Method::Password(password) => Some(Zeroizing::new(hex::encode(&*password))),
            Method::SafeCookie(path) => {
                let cookie = read_cookie(&path)?;
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
                Some(Zeroizing::new(hex::encode(proof)))
            }
        };
        let command = match &token {
            Some(token) => Command::new("AUTHENTICATE").arg(token.as_str()),
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

impl Drop for ControlClient {
    /// Closes the connection: the reader task would otherwise keep it open
    /// until tor closes it.
    fn drop(&mut self) {
        self.shared.close(Error::Closed);
    }
}

impl fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Reads the cookie tor named, which must be a regular file of exactly
/// [`COOKIE_LEN`] bytes: a control port is not trusted to name a file
/// worth sending (it could name the master key).
fn read_cookie(path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    crate::file::read_exact_size(path, COOKIE_LEN as u64)
        .map(Zeroizing::new)
        .map_err(Error::CookieFile)
}

/// Reads replies until the connection ends, then fails every waiter.
async fn read_loop<R>(
    mut reader: R,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Reply>,
    options: Options,
) where
    R: AsyncRead + Unpin,
{
    let mut parser = ReplyParser::new(options.limits);
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
        if let Err(error) = deliver(&mut parser, &shared, &events, options.max_queued_events) {
            break error;
        }
    };
    // Aborting this very task from inside is harmless: it is returning.
    shared.close(end);
}

/// Hands every complete reply in `parser` to its waiter or the event queue.
fn deliver(
    parser: &mut ReplyParser,
    shared: &Shared,
    events: &mpsc::UnboundedSender<Reply>,
    max_queued: usize,
) -> Result<(), Error> {
    while let Some(reply) = parser.next_reply().map_err(Error::Protocol)? {
        if reply.is_event() {
            let cost = reply.cost();
            let queued = shared.queued.fetch_add(cost, Ordering::Relaxed) + cost;
            if queued > max_queued {
                return Err(Error::EventQueueFull { limit: max_queued });
            }
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

    /// A fake tor that offers cookie authentication with the cookie file
    /// it is given, and reports every line it receives.
    async fn cookie_tor(
        cookie: PathBuf,
        method: &'static str,
    ) -> (ControlAddr, mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = if line.starts_with("PROTOCOLINFO") {
                    format!(
                        "250-PROTOCOLINFO 1\r\n250-AUTH METHODS={method} COOKIEFILE=\"{}\"\r\n250 OK\r\n",
                        cookie.display()
                    )
                } else {
                    "515 Authentication failed\r\n".to_owned()
                };
                let _ = seen_tx.send(line);
                write.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        (ControlAddr::Tcp(addr), seen)
    }

    #[tokio::test]
    async fn a_cookie_file_that_is_not_32_bytes_is_never_sent() {
        let dir = std::env::temp_dir().join(format!("torctl-cookie-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("master.key");
        let mut key = b"== ed25519v1-secret: type0 ==\0\0\0".to_vec();
        key.extend(0xA0..0xA0 + 64u8);
        std::fs::write(&secret, &key).unwrap();
        for method in ["COOKIE", "SAFECOOKIE"] {
            for target in [secret.clone(), PathBuf::from("/dev/zero")] {
                let (addr, mut seen) = cookie_tor(target.clone(), method).await;
                let client = ControlClient::connect(&addr).await.unwrap();
                let error = client.authenticate(&Credentials::Auto).await.unwrap_err();
                assert!(
                    matches!(error, Error::CookieFile(_)),
                    "{method} {target:?}: {error:?}"
                );
                let mut shown = error.to_string();
                let mut cause = std::error::Error::source(&error);
                while let Some(e) = cause {
                    shown.push_str(&format!(": {e}"));
                    cause = e.source();
                }
                assert!(shown.contains(&target.display().to_string()), "{shown}");
                drop(client);
                let mut lines = Vec::new();
                let all = async {
                    while let Some(line) = seen.recv().await {
                        lines.push(line);
                    }
                };
                tokio::time::timeout(Duration::from_secs(10), all)
                    .await
                    .expect("the fake tor saw the connection close");
                assert_eq!(lines, ["PROTOCOLINFO 1"], "{method} {target:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_tor_that_stops_answering_fails_every_command_and_ends_the_events() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = ControlAddr::Tcp(listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            lines.next_line().await.unwrap().unwrap();
            write.write_all(b"250 OK\r\n").await.unwrap();
            // Then silence, with the connection open.
            while let Ok(Some(_)) = lines.next_line().await {}
        });
        let options = Options {
            command_timeout: Duration::from_millis(300),
            ..Options::default()
        };
        let client = ControlClient::connect_with(&addr, options).await.unwrap();
        let mut events = client.take_events().unwrap();
        client
            .request(&Command::new("SIGNAL").arg("X"))
            .await
            .unwrap();
        assert!(client.closed().is_none());
        let error = client.getinfo("version").await.unwrap_err();
        assert!(
            matches!(&error, Error::Timeout { doing, .. } if doing == "GETINFO"),
            "{error:?}"
        );
        assert!(matches!(client.closed(), Some(Error::Timeout { .. })));
        assert!(matches!(
            client.getinfo("x").await,
            Err(Error::Timeout { .. })
        ));
        let ended = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
        assert!(matches!(ended, Ok(None)), "the event queue closes");
    }

    #[tokio::test]
    async fn events_nobody_reads_close_the_connection_at_the_bound() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = ControlAddr::Tcp(listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (_read, mut write) = stream.into_split();
            let event = "650 STATUS_CLIENT NOTICE CONSENSUS_ARRIVED\r\n".repeat(1000);
            // An endless flood.
            while write.write_all(event.as_bytes()).await.is_ok() {}
        });
        let options = Options {
            max_queued_events: 1024 * 1024,
            ..Options::default()
        };
        let client = ControlClient::connect_with(&addr, options).await.unwrap();
        let mut events = client.take_events().unwrap();
        // The fake tor never answers: the command ends with the connection.
        let closed = tokio::time::timeout(Duration::from_secs(10), client.getinfo("x"))
            .await
            .expect("closed within 10 s");
        assert!(
            matches!(closed, Err(Error::EventQueueFull { limit }) if limit == 1024 * 1024),
            "{closed:?}"
        );
        let mut read = 0;
        let drained = async {
            while events.recv().await.is_some() {
                read += 1;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), drained)
            .await
            .expect("the event queue ended");
        // What was queued up to the bound is still delivered.
        assert!(read > 1000, "{read}");
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
        assert!(events.try_recv().is_none());
    }
}
