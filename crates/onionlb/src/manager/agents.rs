//! Where agents connect: a Unix socket for agents on this machine, and a
//! loopback TCP port that remote agents reach through an onion service of
//! the management tor (see [`super::agent_onion`]).
//!
//! Each connection must first sign the manager's challenge with the key
//! configured for its instance; after that its health reports and
//! descriptors go to the daemon, which judges them. Per instance, a token
//! bucket limits what its agent can make the manager do.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onionlb_core::agent::{AgentPublicKey, Health, ToAgent, ToManager, TorProcess};
use onionlb_core::ratelimit::TokenBucket;
use onionlb_core::OnionAddress;
use rand::RngExt as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::channel::Channel;
use crate::unix_socket::SocketFile;

/// Mode of the agent socket: agents run as other users (often the
/// instance's tor group), which the operator adds to our group.
const SOCKET_MODE: u32 = 0o660;
/// Time an agent has to answer the challenge.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait for a free place.
const MAX_CONNECTIONS: usize = 64;
/// Messages an agent may send: bursts of 20, then one per 200 ms (a
/// heartbeat every 2 s needs one per 2 s).
const MESSAGE_BURST: u32 = 20;
const MESSAGE_EVERY: Duration = Duration::from_millis(200);
/// Descriptors an agent may push: bursts of 6, then one per 10 s (tor
/// uploads a new one when intro points change, not more often).
const DESCRIPTOR_BURST: u32 = 6;
const DESCRIPTOR_EVERY: Duration = Duration::from_secs(10);
/// Messages over the limit a connection may send before it is closed.
const MAX_DROPPED: u32 = 100;

/// The agent keys the configuration names, by instance address; replaced
/// on reload.
pub(super) type AgentKeys = Arc<HashMap<OnionAddress, AgentPublicKey>>;

/// What agents tell the daemon.
#[derive(Debug)]
pub(super) enum AgentEvent {
    /// An agent proved its key for `instance`.
    Connected {
        instance: OnionAddress,
        peer: String,
    },
    /// Which tor process it follows.
    Tor {
        instance: OnionAddress,
        process: TorProcess,
    },
    /// Its report (also a heartbeat).
    Health {
        instance: OnionAddress,
        health: Health,
    },
    /// It pushed a descriptor; the daemon answers on `reply`.
    Descriptor {
        instance: OnionAddress,
        text: String,
        reply: oneshot::Sender<ToAgent>,
    },
    /// It asks to drain its instance (or undrain it); the daemon answers
    /// on `reply`.
    Drain {
        instance: OnionAddress,
        drain: bool,
        reply: oneshot::Sender<ToAgent>,
    },
    /// Its connection ended.
    Disconnected { instance: OnionAddress },
}

/// The running listeners; they stop, and the socket file goes, when this
/// is dropped.
pub(super) struct AgentServer {
    tasks: Vec<JoinHandle<()>>,
    _socket: Option<SocketFile>,
}

impl Drop for AgentServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What every connection shares.
#[derive(Clone)]
struct Shared {
    keys: watch::Receiver<AgentKeys>,
    events: mpsc::Sender<AgentEvent>,
    limits: Arc<Mutex<HashMap<OnionAddress, Limits>>>,
    places: Arc<Semaphore>,
}

struct Limits {
    messages: TokenBucket,
    descriptors: TokenBucket,
}

impl AgentServer {
    /// Listens where the configuration says (nothing if it names no
    /// place).
    pub(super) async fn start(
        socket: Option<&Path>,
        listen: Option<std::net::SocketAddr>,
        keys: watch::Receiver<AgentKeys>,
        events: mpsc::Sender<AgentEvent>,
    ) -> anyhow::Result<Self> {
        let shared = Shared {
            keys,
            events,
            limits: Arc::default(),
            places: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        };
        let mut tasks = Vec::new();
        let mut socket_file = None;
        if let Some(path) = socket {
            let (listener, file) =
                crate::unix_socket::bind(path, SOCKET_MODE, "agent socket").await?;
            tracing::info!("agents may connect at {}", path.display());
            socket_file = Some(file);
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => shared.spawn(stream, "the agent socket".into()).await,
                        Err(e) => accept_failed(&e).await,
                    }
                }
            }));
        }
        if let Some(addr) = listen {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                anyhow::Error::new(e).context(format!("listening for agents on {addr}"))
            })?;
            tracing::info!("agents may connect on {addr}");
            tasks.push(tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, peer)) => shared.spawn(stream, peer.to_string()).await,
                        Err(e) => accept_failed(&e).await,
                    }
                }
            }));
        }
        Ok(AgentServer {
            tasks,
            _socket: socket_file,
        })
    }
}

async fn accept_failed(error: &std::io::Error) {
    tracing::warn!("accepting an agent connection: {error}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

impl Shared {
    /// Serves one connection in its own task, once a place is free.
    async fn spawn<S>(&self, stream: S, peer: String)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(place) = Arc::clone(&self.places).acquire_owned().await else {
            return;
        };
        let shared = self.clone();
        tokio::spawn(async move {
            let _place = place;
            shared.serve(stream, peer).await;
        });
    }

    async fn serve<S>(&self, stream: S, peer: String)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut connection = Connection::new(stream);
        let challenge: [u8; 32] = rand::rng().random();
        let Some(instance) = self.authenticate(&mut connection, &challenge, &peer).await else {
            return;
        };
        let _ = self
            .events
            .send(AgentEvent::Connected {
                instance,
                peer: peer.clone(),
            })
            .await;
        if let Err(why) = self.follow(&mut connection, instance).await {
            tracing::info!("agent of {instance} ({peer}): connection closed: {why}");
        }
        let _ = self
            .events
            .send(AgentEvent::Disconnected { instance })
            .await;
    }

    /// Sends the challenge and checks the answer; the instance the agent
    /// proved it speaks for.
    async fn authenticate<S>(
        &self,
        connection: &mut Connection<S>,
        challenge: &[u8; 32],
        peer: &str,
    ) -> Option<OnionAddress>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        send(connection, &ToAgent::Challenge(*challenge))
            .await
            .ok()?;
        let hello = tokio::time::timeout(HELLO_TIMEOUT, next(connection)).await;
        let refusal = match hello {
            Err(_) => "no HELLO within 10 s".to_owned(),
            Ok(Err(why)) => why,
            Ok(Ok(ToManager::Hello {
                instance,
                key,
                signature,
            })) => {
                let expected = self.keys.borrow().get(&instance).copied();
                match expected {
                    None => format!("no agent key is configured for {instance}"),
                    Some(expected) if expected != key => {
                        format!("agent key {key} is not the one configured for {instance}")
                    }
                    Some(_) if !key.verify_hello(challenge, instance, &signature) => {
                        format!("a bad signature from the agent of {instance}")
                    }
                    Some(_) => {
                        send(connection, &ToAgent::Welcome).await.ok()?;
                        tracing::info!("agent of {instance} connected ({peer})");
                        return Some(instance);
                    }
                }
            }
            Ok(Ok(_)) => "a message before HELLO".to_owned(),
        };
        tracing::warn!("refused an agent connection ({peer}): {refusal}");
        let _ = send(connection, &ToAgent::Refused(refusal)).await;
        None
    }

    /// Passes the agent's messages on until it goes away, breaks the
    /// protocol, or floods.
    async fn follow<S>(
        &self,
        connection: &mut Connection<S>,
        instance: OnionAddress,
    ) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut dropped = 0u32;
        loop {
            let message = next(connection).await?;
            if !self.keys.borrow().contains_key(&instance) {
                return Err("its key was removed from the configuration".into());
            }
            let (allowed, is_descriptor) = self.allow(instance, &message);
            if !allowed {
                dropped += 1;
                if dropped == 1 {
                    tracing::warn!(
                        "agent of {instance} sends too much; dropping messages over the limit"
                    );
                }
                if dropped > MAX_DROPPED {
                    return Err(format!("{MAX_DROPPED} messages over the limit"));
                }
                if is_descriptor {
                    let _ = send(
                        connection,
                        &ToAgent::Rejected("rate limited; try later".into()),
                    )
                    .await;
                }
                continue;
            }
            let event = match message {
                ToManager::Hello { .. } => return Err("a second HELLO".into()),
                ToManager::Tor(process) => AgentEvent::Tor { instance, process },
                ToManager::Health(health) => AgentEvent::Health { instance, health },
                ToManager::Descriptor(text) => {
                    let answer = self
                        .ask(|reply| AgentEvent::Descriptor {
                            instance,
                            text,
                            reply,
                        })
                        .await?;
                    send(connection, &answer).await?;
                    continue;
                }
                ToManager::Drain(drain) => {
                    let answer = self
                        .ask(|reply| AgentEvent::Drain {
                            instance,
                            drain,
                            reply,
                        })
                        .await?;
                    send(connection, &answer).await?;
                    continue;
                }
            };
            if self.events.send(event).await.is_err() {
                return Err("the manager is stopping".into());
            }
        }
    }

    /// Hands the daemon `event` with a place for its answer, and waits
    /// for the answer.
    async fn ask(
        &self,
        event: impl FnOnce(oneshot::Sender<ToAgent>) -> AgentEvent,
    ) -> Result<ToAgent, String> {
        let (reply, answer) = oneshot::channel();
        if self.events.send(event(reply)).await.is_err() {
            return Err("the manager is stopping".into());
        }
        Ok(answer
            .await
            .unwrap_or_else(|_| ToAgent::Rejected("the manager is stopping".into())))
    }

    /// Whether `instance`'s agent may send `message` now, and whether it
    /// is a descriptor.
    fn allow(&self, instance: OnionAddress, message: &ToManager) -> (bool, bool) {
        let now = Instant::now();
        let is_descriptor = matches!(message, ToManager::Descriptor(_));
        let Ok(mut limits) = self.limits.lock() else {
            return (false, is_descriptor);
        };
        let limits = limits.entry(instance).or_insert_with(|| Limits {
            messages: TokenBucket::new(MESSAGE_BURST, MESSAGE_EVERY, now),
            descriptors: TokenBucket::new(DESCRIPTOR_BURST, DESCRIPTOR_EVERY, now),
        });
        let allowed = limits.messages.take(now) && (!is_descriptor || limits.descriptors.take(now));
        (allowed, is_descriptor)
    }
}

/// One agent's connection.
type Connection<S> = Channel<S, ToManager>;

/// Sends `message`, as the reason to close the connection if it fails.
async fn send<S>(connection: &mut Connection<S>, message: &ToAgent) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    connection
        .send(&message.encode())
        .await
        .map_err(|e| format!("writing: {e}"))
}

/// The agent's next message, or the reason to close the connection.
async fn next<S>(connection: &mut Connection<S>) -> Result<ToManager, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    connection.next().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use onionlb_core::agent::AgentKey;

    const ADDRESS: &str = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";

    struct Agent(Channel<tokio::net::UnixStream, ToAgent>);

    impl Agent {
        async fn send(&mut self, message: &ToManager) {
            self.0.send(&message.encode()).await.unwrap();
        }

        async fn next(&mut self) -> Option<ToAgent> {
            self.0.next().await.ok()
        }
    }

    async fn setup(
        dir: &Path,
        key: &AgentKey,
    ) -> (AgentServer, mpsc::Receiver<AgentEvent>, std::path::PathBuf) {
        let address: OnionAddress = ADDRESS.parse().unwrap();
        let (_, keys) = watch::channel(Arc::new(HashMap::from([(address, key.public())])));
        let (events_tx, events) = mpsc::channel(16);
        let path = dir.join("agents.sock");
        let server = AgentServer::start(Some(&path), None, keys, events_tx)
            .await
            .unwrap();
        (server, events, path)
    }

    async fn connect(path: &Path) -> Agent {
        Agent(Channel::new(
            tokio::net::UnixStream::connect(path).await.unwrap(),
        ))
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("onionlb-agents-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn the_configured_key_gets_in_and_its_reports_reach_the_daemon() {
        let dir = temp_dir("good");
        let key = AgentKey::from_seed([1; 32]);
        let (_server, mut events, path) = setup(&dir, &key).await;
        let mut agent = connect(&path).await;
        let Some(ToAgent::Challenge(challenge)) = agent.next().await else {
            panic!("no challenge");
        };
        agent
            .send(&key.hello(&challenge, ADDRESS.parse().unwrap()))
            .await;
        assert_eq!(agent.next().await, Some(ToAgent::Welcome));
        assert!(matches!(
            events.recv().await,
            Some(AgentEvent::Connected { .. })
        ));
        agent
            .send(&ToManager::Health(Health::Down("probe failed".into())))
            .await;
        assert!(matches!(
            events.recv().await,
            Some(AgentEvent::Health { health: Health::Down(why), .. }) if why == "probe failed"
        ));
        agent.send(&ToManager::Descriptor("text".into())).await;
        let Some(AgentEvent::Descriptor { text, reply, .. }) = events.recv().await else {
            panic!("no descriptor");
        };
        assert_eq!(text, "text");
        reply.send(ToAgent::Rejected("bad".into())).unwrap();
        assert_eq!(agent.next().await, Some(ToAgent::Rejected("bad".into())));
        // A drain goes to the daemon for its instance, and its answer back.
        agent.send(&ToManager::Drain(true)).await;
        let Some(AgentEvent::Drain {
            instance,
            drain: true,
            reply,
        }) = events.recv().await
        else {
            panic!("no drain");
        };
        assert_eq!(instance, ADDRESS.parse().unwrap());
        reply.send(ToAgent::Accepted("draining".into())).unwrap();
        assert_eq!(
            agent.next().await,
            Some(ToAgent::Accepted("draining".into()))
        );
        // Flooding: over the burst, descriptors are refused without
        // reaching the daemon.
        let mut refused = 0;
        for _ in 0..DESCRIPTOR_BURST + 2 {
            agent.send(&ToManager::Descriptor("again".into())).await;
            tokio::select! {
                event = events.recv() => {
                    let Some(AgentEvent::Descriptor { reply, .. }) = event else { panic!() };
                    reply.send(ToAgent::Accepted("ok".into())).unwrap();
                    agent.next().await;
                }
                answer = agent.next() => {
                    assert_eq!(answer, Some(ToAgent::Rejected("rate limited; try later".into())));
                    refused += 1;
                }
            }
        }
        assert!(refused >= 2, "{refused} refused");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn another_key_or_a_replayed_signature_is_refused() {
        let dir = temp_dir("bad");
        let key = AgentKey::from_seed([1; 32]);
        let (_server, mut events, path) = setup(&dir, &key).await;
        let address: OnionAddress = ADDRESS.parse().unwrap();

        let mut stranger = connect(&path).await;
        let Some(ToAgent::Challenge(challenge)) = stranger.next().await else {
            panic!("no challenge");
        };
        stranger
            .send(&AgentKey::from_seed([2; 32]).hello(&challenge, address))
            .await;
        assert!(
            matches!(stranger.next().await, Some(ToAgent::Refused(why)) if why.contains("not the one configured"))
        );

        // A signature recorded on one connection fails on the next.
        let mut first = connect(&path).await;
        let Some(ToAgent::Challenge(challenge)) = first.next().await else {
            panic!("no challenge");
        };
        let recorded = key.hello(&challenge, address);
        let mut replayer = connect(&path).await;
        replayer.next().await;
        replayer.send(&recorded).await;
        assert!(
            matches!(replayer.next().await, Some(ToAgent::Refused(why)) if why.contains("bad signature"))
        );
        assert!(events.try_recv().is_err(), "nothing reached the daemon");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
