//! The agent's end of the channel to the manager: where it is, getting
//! there (directly, or through tor's SOCKS port to the manager's onion
//! service), and logging in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

use onionlb_core::agent::{AgentKey, ToAgent, ToManager};
use onionlb_core::OnionAddress;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::channel::Channel;

/// Where the manager listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagerAddr {
    /// Its agent socket, on this machine.
    Unix(PathBuf),
    /// A TCP port (loopback in any sane setup).
    Tcp(SocketAddr),
    /// Its agents' onion service, reached through tor.
    Onion(OnionAddress, u16),
}

impl std::str::FromStr for ManagerAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(ManagerAddr::Unix(path.into()));
        }
        if let Some(addr) = text.strip_prefix("tcp:") {
            return addr
                .parse()
                .map(ManagerAddr::Tcp)
                .map_err(|_| format!("{addr:?} is not an IP address and port"));
        }
        if let Some(rest) = text.strip_prefix("onion:") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{rest:?} needs a port: ADDRESS.onion:PORT"))?;
            let address = host.parse().map_err(|e| format!("{host:?}: {e}"))?;
            let port = port
                .parse()
                .map_err(|_| format!("{port:?} is not a port"))?;
            return Ok(ManagerAddr::Onion(address, port));
        }
        Err(format!(
            "{text:?}: use unix:PATH, tcp:HOST:PORT or onion:ADDRESS.onion:PORT"
        ))
    }
}

impl std::fmt::Display for ManagerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManagerAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            ManagerAddr::Tcp(addr) => write!(f, "tcp:{addr}"),
            ManagerAddr::Onion(address, port) => write!(f, "onion:{address}:{port}"),
        }
    }
}

/// Any byte stream to the manager.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A logged-in connection to the manager.
pub struct Link {
    channel: Channel<Pin<Box<dyn Stream>>, ToAgent>,
}

impl Link {
    /// Connects to `addr` (through the SOCKS port `socks` for an onion
    /// address) and proves `key` for `instance`.
    pub async fn open(
        addr: &ManagerAddr,
        socks: SocketAddr,
        key: &AgentKey,
        instance: OnionAddress,
    ) -> Result<Self, String> {
        let stream: Pin<Box<dyn Stream>> = match addr {
            ManagerAddr::Unix(path) => Box::pin(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("connecting to {}: {e}", path.display()))?,
            ),
            ManagerAddr::Tcp(addr) => Box::pin(
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connecting to {addr}: {e}"))?,
            ),
            ManagerAddr::Onion(address, port) => {
                let mut stream = tokio::net::TcpStream::connect(socks)
                    .await
                    .map_err(|e| format!("connecting to tor's SOCKS port {socks}: {e}"))?;
                torctl::socks::connect(&mut stream, &address.to_string(), *port, "onionlb-agent")
                    .await
                    .map_err(|e| format!("reaching {address}:{port} through tor: {e}"))?;
                Box::pin(stream)
            }
        };
        let mut link = Link {
            channel: Channel::new(stream),
        };
        let ToAgent::Challenge(challenge) = link.next().await? else {
            return Err("the manager sent no challenge".into());
        };
        link.send(&key.hello(&challenge, instance)).await?;
        match link.next().await? {
            ToAgent::Welcome => Ok(link),
            ToAgent::Refused(why) => Err(format!("the manager refused us: {why}")),
            other => Err(format!("unexpected answer to HELLO: {other:?}")),
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &ToManager) -> Result<(), String> {
        self.channel
            .send(&message.encode())
            .await
            .map_err(|e| format!("writing to the manager: {e}"))
    }

    /// The manager's next message; `Err` when the connection ends.
    pub async fn next(&mut self) -> Result<ToAgent, String> {
        self.channel
            .next()
            .await
            .map_err(|e| format!("from the manager: {e}"))
    }
}
