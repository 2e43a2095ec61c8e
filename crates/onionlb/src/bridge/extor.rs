//! `onionlb bridge extor`: the Extended ORPort balancer.
//!
//! For each transport connection: the SAFE_COOKIE handshake with the
//! static cookie and the transport's commands up to `DONE`
//! ([`extorport::ServerHandshake`]); an instance from the pool; a dial of
//! its ExtORPort with its cookie file read again, the handshake with it
//! and the commands replayed ([`extorport::ClientHandshake`]); on tor's
//! `OKAY`, `OKAY` to the transport and the bytes relayed both ways. A
//! dial that fails before `OKAY` (nothing listening, a stale or broken
//! cookie, tor closing) counts against that instance's health and the
//! next instance is tried, so the transport never sees it. Tor's `DENY`
//! is passed on.
//!
//! Health: every [`CHECK_INTERVAL`] each instance's cookie file must read
//! as a cookie and its ExtORPort must answer with its authentication
//! types; the pool takes an instance down after two failures in a row.
//!
//! Bounds: at most `--max-connections` transport connections at once (more
//! are closed at once); everything before the relay starts ends within
//! [`HANDSHAKE_TIMEOUT`]; every dial within [`DIAL_TIMEOUT`]; files read are
//! capped at one byte past a cookie's size. A client's address (from
//! `USERADDR`) is never logged.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use extorport::{
    ClientHandshake, Cookie, CookieError, Outcome, Request, ServerHandshake, COOKIE_FILE_LEN,
};
use onionlb_core::bridge::{Pool, Strategy, Transition};
use rand::Rng as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};

use super::metrics::Metrics;
use super::relay::relay;
use crate::cli::{ExtorArgs, InstanceArg, StrategyArg};

/// Time from a transport's connection to the start of the relay.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time to hand a connection to one instance, from connecting to its
/// `OKAY`; past it the next instance is tried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often each instance is checked.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Time one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes read from a peer at once during a handshake.
const READ_CHUNK: usize = 2048;

/// What the balancer's tasks share.
struct Shared {
    cookie: Cookie,
    relay: super::relay::Mode,
    instances: Vec<InstanceArg>,
    pool: Mutex<Pool>,
    metrics: Metrics,
}

impl Shared {
    fn pool(&self) -> MutexGuard<'_, Pool> {
        // A panic ends the process (main's hook), so the lock is never
        // poisoned in a running balancer.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a check or dial of instance `index` and logs a change.
    fn checked(&self, index: usize, ok: bool) {
        let transition = self.pool().checked(index, ok);
        let name = &self.instances[index].name;
        match transition {
            Some(Transition::Down) => tracing::warn!("instance {name} is down"),
            Some(Transition::Up) => tracing::info!("instance {name} is up"),
            None => {}
        }
    }
}

/// What one balancer serves.
pub struct Balance {
    /// The static cookie the transport authenticates with.
    pub cookie: Cookie,
    /// The tors.
    pub instances: Vec<InstanceArg>,
    /// How a tor is chosen.
    pub strategy: Strategy,
    /// Where the transport connects.
    pub listener: TcpListener,
    /// Where metrics are served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The admin socket, if any.
    pub admin_socket: Option<std::path::PathBuf>,
    /// The most transport connections at once.
    pub max_connections: usize,
    /// Each tor's MetricsPort, to serve with the balancer's metrics.
    pub tor_metrics: Vec<(String, SocketAddr)>,
    /// How bytes are relayed.
    pub relay: super::relay::Mode,
}

/// Serves the balancer's metrics on `addr`, with the tors' own when
/// `tor_metrics` names their MetricsPorts (then in Prometheus's text
/// format, which is what tor writes).
async fn serve_metrics(
    addr: SocketAddr,
    shared: Arc<Shared>,
    tor_metrics: Vec<(String, SocketAddr)>,
) -> anyhow::Result<crate::metrics::MetricsServer> {
    if tor_metrics.is_empty() {
        return crate::metrics::serve_with(addr, crate::metrics::OPENMETRICS, move || {
            let text = shared.metrics.render(&shared.pool());
            async move { text }
        })
        .await;
    }
    let tors = Arc::new(tor_metrics);
    crate::metrics::serve_with(addr, crate::metrics::PROMETHEUS_TEXT, move || {
        let ours = shared.metrics.render(&shared.pool());
        let tors = Arc::clone(&tors);
        async move {
            let mut text = ours.trim_end().trim_end_matches("# EOF").to_owned();
            text.push_str(&super::tor_metrics::scrape(&tors).await);
            text
        }
    })
    .await
}

/// Runs the balancer the command line describes until SIGTERM or SIGINT.
pub async fn run(args: ExtorArgs) -> anyhow::Result<()> {
    if args.compat_shim {
        return super::shim::run(&args).await;
    }
    let cookie = read_static_cookie(&args.static_cookie).await?;
    for (i, instance) in args.instances.iter().enumerate() {
        if args.instances[..i].iter().any(|o| o.name == instance.name) {
            anyhow::bail!("--instance {}: the name is given twice", instance.name);
        }
    }
    let Some(listen) = args.listen else {
        anyhow::bail!("--listen is needed unless --compat-shim is given");
    };
    let listener = listen_for_transport(listen)?;
    let strategy = match args.strategy {
        StrategyArg::LeastConnections => Strategy::LeastConnections,
        StrategyArg::UserAddress => Strategy::UserAddress,
    };
    let balance = Balance {
        cookie,
        instances: args.instances,
        strategy,
        listener,
        metrics_listen: args.metrics_listen,
        admin_socket: args.admin_socket,
        max_connections: args.max_connections as usize,
        tor_metrics: args.tor_metrics,
        relay: relay_mode(args.relay),
    };
    balance.run(std::future::pending()).await
}

/// Connections the kernel queues for the transport's listener before
/// they are accepted: a transport opens many at once when clients arrive
/// in a burst, and the usual 128 makes the rest wait for SYN
/// retransmissions (1, 3, 7, ... seconds).
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `addr` for the transport, with [`LISTEN_BACKLOG`].
pub fn listen_for_transport(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    let listen = || -> std::io::Result<TcpListener> {
        let socket = socket?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().with_context(|| format!("listening for the transport on {addr}"))
}

/// The relay `--relay` asks for.
pub fn relay_mode(arg: crate::cli::RelayArg) -> super::relay::Mode {
    match arg {
        crate::cli::RelayArg::Splice => super::relay::Mode::Splice,
        crate::cli::RelayArg::Copy => super::relay::Mode::Copy,
    }
}

/// Reads the static cookie `--static-cookie` names.
pub async fn read_static_cookie(path: &Path) -> anyhow::Result<Cookie> {
    read_cookie(path).with_context(|| format!("--static-cookie {}", path.display()))
}

impl Balance {
    /// Serves until SIGTERM, SIGINT or `stop` completes.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let pool = Pool::new(self.instances.iter().map(|i| i.name.clone()), self.strategy);
        let shared = Arc::new(Shared {
            cookie: self.cookie,
            relay: self.relay,
            instances: self.instances,
            pool: Mutex::new(pool),
            metrics: Metrics::default(),
        });
        let _metrics = match self.metrics_listen {
            Some(addr) => Some(serve_metrics(addr, Arc::clone(&shared), self.tor_metrics).await?),
            None => None,
        };
        let _admin = match &self.admin_socket {
            Some(path) => {
                let shared = Arc::clone(&shared);
                Some(super::admin::serve(path, move |request| request(&mut shared.pool())).await?)
            }
            None => None,
        };
        let listen = self
            .listener
            .local_addr()
            .context("the transport's listening address")?;
        tracing::info!(
            "bridge balancer on {listen} for {} instance(s)",
            shared.instances.len()
        );
        let checks = tokio::spawn(check_forever(Arc::clone(&shared)));
        let accepting = accept_forever(self.listener, shared, self.max_connections);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("handling SIGTERM")?;
        tokio::select! {
            () = accepting => {}
            () = stop => tracing::info!("stopping"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        }
        checks.abort();
        Ok(())
    }
}

async fn accept_forever(listener: TcpListener, shared: Arc<Shared>, max: usize) {
    let places = Arc::new(Semaphore::new(max));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait, do not spin.
                tracing::warn!("accepting a transport connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
            shared.metrics.refused();
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _place = place;
            serve(shared, stream).await;
        });
    }
}

/// Carries one transport connection from its handshake to its end.
async fn serve(shared: Arc<Shared>, mut transport: TcpStream) {
    let _ = transport.set_nodelay(true);
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let request = match timeout_at(deadline, accept_transport(&shared.cookie, &mut transport)).await
    {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            tracing::debug!("transport connection: {e}");
            shared.metrics.transport_failed(e.reason());
            return;
        }
        Err(_) => {
            shared.metrics.transport_failed("timeout");
            return;
        }
    };
    let user = request.user_addr().map(|a| a.ip());
    let mut tried = Vec::new();
    let (index, tor, leftover) = loop {
        let Some(index) = shared.pool().pick(user, &tried) else {
            tracing::warn!("no instance could take a connection");
            shared.metrics.refused();
            return;
        };
        tried.push(index);
        let instance = &shared.instances[index];
        let dial_deadline = deadline.min(Instant::now() + DIAL_TIMEOUT);
        match timeout_at(dial_deadline, dial(instance, &request)).await {
            Ok(Ok(Dialed::Okay { tor, leftover })) => {
                shared.checked(index, true);
                break (index, tor, leftover);
            }
            Ok(Ok(Dialed::Denied)) => {
                shared.metrics.denied(&instance.name);
                let _ = transport.write_all(&ServerHandshake::deny()).await;
                return;
            }
            Ok(Err(e)) => {
                tracing::info!("instance {}: {e}; trying another", instance.name);
                shared.metrics.dial_failed(&instance.name, e.reason());
                shared.checked(index, false);
            }
            Err(_) => {
                shared.metrics.dial_failed(&instance.name, "timeout");
                shared.checked(index, false);
                if Instant::now() >= deadline {
                    shared.metrics.refused();
                    return;
                }
            }
        }
    };
    let name = shared.instances[index].name.clone();
    let mut tor = tor;
    let mut started = transport.write_all(&ServerHandshake::okay()).await.is_ok();
    started = started && tor.write_all(&request.early_data).await.is_ok();
    started = started && transport.write_all(&leftover).await.is_ok();
    if !started {
        return;
    }
    shared.pool().opened(index);
    shared.metrics.connected(&name);
    let (to_tor, from_tor) = shared.metrics.byte_counters(&name);
    relay(transport, tor, to_tor, from_tor, shared.relay).await;
    shared.pool().closed(index);
}

/// Why a transport's handshake ended without a request.
#[derive(Debug, thiserror::Error)]
enum TransportError {
    #[error("the transport closed the connection")]
    Closed,
    #[error("reading from the transport: {0}")]
    Io(#[source] std::io::Error),
    #[error("the transport's handshake: {0}")]
    Protocol(#[source] extorport::Error),
}

impl TransportError {
    fn reason(&self) -> &'static str {
        match self {
            TransportError::Closed => "closed",
            TransportError::Io(_) => "io",
            TransportError::Protocol(extorport::Error::ClientHashMismatch) => "wrong_cookie",
            TransportError::Protocol(_) => "protocol",
        }
    }
}

/// The server half of the handshake, up to the transport's `DONE`.
async fn accept_transport(
    cookie: &Cookie,
    transport: &mut TcpStream,
) -> Result<Request, TransportError> {
    let mut handshake = ServerHandshake::new(cookie.clone(), nonce());
    let mut buf = [0u8; READ_CHUNK];
    loop {
        let out = handshake.take_outgoing();
        transport
            .write_all(&out)
            .await
            .map_err(TransportError::Io)?;
        let n = transport.read(&mut buf).await.map_err(TransportError::Io)?;
        if n == 0 {
            return Err(TransportError::Closed);
        }
        match handshake.handle(&buf[..n]) {
            Ok(Some(request)) => return Ok(request),
            Ok(None) => {}
            Err(e) => {
                // A wrong client hash queued status 0 for the transport.
                let _ = transport.write_all(&handshake.take_outgoing()).await;
                return Err(TransportError::Protocol(e));
            }
        }
    }
}

/// An instance's answer to a replayed request.
enum Dialed {
    Okay { tor: TcpStream, leftover: Vec<u8> },
    Denied,
}

/// Why handing a connection to an instance failed.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("its cookie file: {0:#}")]
    Cookie(#[source] anyhow::Error),
    #[error("connecting to its ExtORPort: {0}")]
    Connect(#[source] std::io::Error),
    #[error("its tor closed the connection")]
    Closed,
    #[error("talking to its tor: {0}")]
    Io(#[source] std::io::Error),
    #[error("its handshake: {0}")]
    Protocol(#[source] extorport::Error),
}

impl DialError {
    fn reason(&self) -> &'static str {
        match self {
            DialError::Cookie(_) => "cookie",
            DialError::Connect(_) => "connect",
            DialError::Closed | DialError::Io(_) => "closed",
            DialError::Protocol(extorport::Error::ServerHashMismatch) => "stale_cookie",
            DialError::Protocol(_) => "protocol",
        }
    }
}

/// Connects to `instance`, authenticates with its cookie as it is now, and
/// replays `request`.
async fn dial(instance: &InstanceArg, request: &Request) -> Result<Dialed, DialError> {
    let cookie = read_cookie(&instance.cookie).map_err(DialError::Cookie)?;
    let mut tor = connect(instance.addr).await?;
    let mut handshake = ClientHandshake::new(cookie, nonce(), request);
    let mut buf = [0u8; READ_CHUNK];
    loop {
        let n = tor.read(&mut buf).await.map_err(DialError::Io)?;
        if n == 0 {
            return Err(DialError::Closed);
        }
        let outcome = handshake.handle(&buf[..n]).map_err(DialError::Protocol)?;
        let out = handshake.take_outgoing();
        tor.write_all(&out).await.map_err(DialError::Io)?;
        match outcome {
            Some(Outcome::Okay { leftover }) => return Ok(Dialed::Okay { tor, leftover }),
            Some(Outcome::Denied) => return Ok(Dialed::Denied),
            None => {}
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, DialError> {
    let stream = TcpStream::connect(addr).await.map_err(DialError::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Checks every instance each [`CHECK_INTERVAL`], forever.
async fn check_forever(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let checks = shared.instances.iter().map(|instance| async move {
            tokio::time::timeout(CHECK_TIMEOUT, check(instance))
                .await
                .unwrap_or(false)
        });
        let results = futures::future::join_all(checks).await;
        for (index, ok) in results.into_iter().enumerate() {
            shared.checked(index, ok);
        }
    }
}

/// Whether `instance`'s cookie file holds a cookie and its ExtORPort
/// offers SAFE_COOKIE (tor speaks first; nothing is sent).
async fn check(instance: &InstanceArg) -> bool {
    if read_cookie(&instance.cookie).is_err() {
        return false;
    }
    let Ok(mut tor) = TcpStream::connect(instance.addr).await else {
        return false;
    };
    let mut types = [0u8; 2];
    tor.read_exact(&mut types).await.is_ok() && types == [extorport::SAFE_COOKIE, 0]
}

/// Reads a cookie file (tor's, or the static one): a regular file of at
/// most a cookie's size. Read in place rather than on tokio's blocking
/// pool: it is 64 bytes on a local disk, and a thousand connections at
/// once would otherwise queue behind the pool's threads.
pub fn read_cookie(path: &Path) -> anyhow::Result<Cookie> {
    let bytes = zeroize::Zeroizing::new(torctl::file::read_capped(path, COOKIE_FILE_LEN as u64)?);
    Cookie::parse_file(&bytes).map_err(|e: CookieError| {
        anyhow::Error::new(e).context(format!(
            "{} is not an Extended ORPort cookie",
            path.display()
        ))
    })
}

/// Fresh random bytes for a handshake.
fn nonce() -> [u8; 32] {
    let mut nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}
