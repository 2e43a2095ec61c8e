//! Carrying out the balancer's probes: a SOCKS CONNECT to an instance's
//! onion address and virtual port through the management tor, closed as
//! soon as tor answers ([`onionlb_core::probe`] says why that is enough).
//!
//! Where tor's SOCKS port is, tor says (`GETINFO net/listeners/socks`,
//! asked at each connection), so the configuration names it nowhere. Only
//! loopback and Unix socket listeners are used: the probes name every
//! instance, and go nowhere but to the manager's own tor.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use onionlb_core::probe::Failure;
use onionlb_core::OnionAddress;
use torctl::socks::SocksError;
use torctl::ControlClient;

/// The SOCKS username of probes: tor keeps their circuits apart from any
/// other client's of the management tor.
const ISOLATION: &str = "onionlb-probe";

/// A SOCKS listener of the management tor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocksListener {
    /// A TCP port on loopback.
    Tcp(SocketAddr),
    /// A Unix socket.
    Unix(PathBuf),
}

impl std::fmt::Display for SocksListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocksListener::Tcp(addr) => addr.fmt(f),
            SocksListener::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Tells the operator, at start-up, where probes go when they are on
/// (`probing`): through `socks`, or nowhere, which leaves a dead instance
/// without an agent in the master descriptors until its descriptor
/// expires.
pub fn tell_where_probes_go(socks: Option<&SocksListener>, probing: bool) {
    match (socks, probing) {
        (Some(socks), true) => tracing::info!(
            "probing instances without an agent through the management tor's SOCKS port {socks}"
        ),
        (None, true) => tracing::warn!(
            "the management tor has no SOCKS port on loopback or a Unix socket: instances without an agent cannot be probed, and a dead one stays in the master descriptors until its descriptor expires; add `SocksPort 127.0.0.1:9050` (or set probes.interval: 0 to say this is meant)"
        ),
        (_, false) => {}
    }
}

/// Asks tor for its SOCKS listeners and picks one to probe through:
/// `None` if it has none usable, or does not say.
pub async fn socks_listener(control: &ControlClient) -> Option<SocksListener> {
    let value = control.getinfo("net/listeners/socks").await.ok()?;
    listeners(&value).into_iter().next()
}

/// The usable listeners in a `net/listeners/socks` value: a list of
/// quoted `address:port` or `unix:path` entries.
pub fn listeners(value: &str) -> Vec<SocksListener> {
    let mut found = Vec::new();
    let mut rest = value.trim_start();
    while !rest.is_empty() {
        let (entry, after) = match torctl::unquote(rest) {
            Some((entry, after)) => (entry, after),
            None => {
                let end = rest.find(' ').unwrap_or(rest.len());
                (rest[..end].to_owned(), &rest[end..])
            }
        };
        rest = after.trim_start();
        if let Some(path) = entry.strip_prefix("unix:") {
            found.push(SocksListener::Unix(PathBuf::from(path)));
        } else if let Ok(addr) = entry.parse::<SocketAddr>() {
            if addr.ip().is_loopback() {
                found.push(SocksListener::Tcp(addr));
            }
        }
    }
    found
}

/// Probes `instance`'s `port` through `socks` within `timeout`.
pub async fn probe(
    socks: &SocksListener,
    instance: OnionAddress,
    port: u16,
    timeout: Duration,
) -> Result<(), Failure> {
    let host = instance.to_string();
    let attempt = async {
        match socks {
            SocksListener::Tcp(addr) => {
                let mut stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|_| Failure::Unreachable)?;
                torctl::socks::connect(&mut stream, &host, port, ISOLATION).await
            }
            SocksListener::Unix(path) => {
                let mut stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|_| Failure::Unreachable)?;
                torctl::socks::connect(&mut stream, &host, port, ISOLATION).await
            }
        }
        .map_err(failure)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(Failure::TimedOut))
}

/// What a SOCKS error says of the instance.
fn failure(error: SocksError) -> Failure {
    match error {
        SocksError::Refused(code) => Failure::Refused {
            code,
            meaning: torctl::socks::meaning(code),
        },
        // tor closing the connection before it answers is its way of
        // giving up on the stream.
        SocksError::Io(std::io::ErrorKind::UnexpectedEof) => Failure::Refused {
            code: 1,
            meaning: "tor closed the connection",
        },
        _ => Failure::Unreachable,
    }
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn loopback_and_unix_listeners_are_taken_others_left() {
        assert_eq!(
            listeners(r#""127.0.0.1:9050" "unix:/run/tor/socks" "192.0.2.7:9050" "[::1]:9150""#),
            [
                SocksListener::Tcp("127.0.0.1:9050".parse().unwrap()),
                SocksListener::Unix("/run/tor/socks".into()),
                SocksListener::Tcp("[::1]:9150".parse().unwrap()),
            ]
        );
        assert_eq!(
            listeners("127.0.0.1:9050"),
            [SocksListener::Tcp("127.0.0.1:9050".parse().unwrap())]
        );
        assert!(listeners("").is_empty());
        assert!(listeners(r#""0.0.0.0:9050""#).is_empty());
    }

    #[tokio::test]
    async fn a_closed_port_is_the_manager_s_problem_and_silence_a_timeout() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let instance: OnionAddress = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid"
            .parse()
            .unwrap();
        let second = Duration::from_secs(1);
        assert_eq!(
            probe(&SocksListener::Tcp(addr), instance, 80, second).await,
            Err(Failure::Unreachable)
        );
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let held = tokio::spawn(async move { silent.accept().await });
        let short = Duration::from_millis(200);
        assert_eq!(
            probe(&SocksListener::Tcp(addr), instance, 80, short).await,
            Err(Failure::TimedOut)
        );
        held.abort();
    }
}
