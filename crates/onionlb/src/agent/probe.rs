//! Checking the instance's application: a TCP connect, or an HTTP GET that
//! must answer 2xx or 3xx.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How to check the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It accepts TCP connections here.
    Tcp(SocketAddr),
    /// It answers a GET for `path` on `addr` with 2xx or 3xx.
    Http {
        /// Where it listens.
        addr: SocketAddr,
        /// The Host header.
        host: String,
        /// The path to ask for.
        path: String,
    },
}

impl std::str::FromStr for Probe {
    type Err = String;

    /// `tcp:127.0.0.1:8080` or `http://127.0.0.1:8080/health`.
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(addr) = text.strip_prefix("tcp:") {
            return addr
                .parse()
                .map(Probe::Tcp)
                .map_err(|_| format!("{addr:?} is not an IP address and port"));
        }
        if let Some(rest) = text.strip_prefix("http://") {
            let (authority, path) = match rest.find('/') {
                Some(at) => rest.split_at(at),
                None => (rest, "/"),
            };
            let addr = authority.parse().map_err(|_| {
                format!("{authority:?} is not an IP address and port (the probe connects to it directly)")
            })?;
            return Ok(Probe::Http {
                addr,
                host: authority.to_owned(),
                path: path.to_owned(),
            });
        }
        Err(format!(
            "{text:?} is not a probe: use tcp:HOST:PORT or http://HOST:PORT/PATH"
        ))
    }
}

impl Probe {
    /// Checks once, within `timeout`; `Err` says what failed.
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.check_unbounded()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    async fn check_unbounded(&self) -> Result<(), String> {
        match self {
            Probe::Tcp(addr) => TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| format!("TCP {addr}: {e}")),
            Probe::Http { addr, host, path } => {
                let mut stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("HTTP {addr}: {e}"))?;
                let request = format!(
                    "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: onionlb-agent\r\n\r\n"
                );
                stream
                    .write_all(request.as_bytes())
                    .await
                    .map_err(|e| format!("HTTP {addr}: {e}"))?;
                let mut head = [0u8; 64];
                let n = stream
                    .read(&mut head)
                    .await
                    .map_err(|e| format!("HTTP {addr}: {e}"))?;
                let status = status_code(&head[..n])
                    .ok_or_else(|| format!("HTTP {addr}: not an HTTP answer"))?;
                if (200..400).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("HTTP {addr}{path}: status {status}"))
                }
            }
        }
    }
}

/// The status code of an HTTP response's first line.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut words = line.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn probes_parse() {
        assert_eq!(
            "tcp:127.0.0.1:80".parse::<Probe>(),
            Ok(Probe::Tcp("127.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            "http://127.0.0.1:8080/health".parse::<Probe>(),
            Ok(Probe::Http {
                addr: "127.0.0.1:8080".parse().unwrap(),
                host: "127.0.0.1:8080".into(),
                path: "/health".into()
            })
        );
        assert!("http://example.com/".parse::<Probe>().is_err());
        assert!("udp:1.2.3.4:5".parse::<Probe>().is_err());
        assert_eq!(status_code(b"HTTP/1.1 503 Busy\r\n"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH"), None);
    }

    #[tokio::test]
    async fn http_status_and_closed_ports_decide() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Unavailable"] {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buffer = [0u8; 512];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let probe: Probe = format!("http://{addr}/").parse().unwrap();
        let second = Duration::from_secs(1);
        assert_eq!(probe.check(second).await, Ok(()));
        let failed = probe.check(second).await.unwrap_err();
        assert!(failed.contains("status 503"), "{failed}");
        // Nobody listens any more.
        server.await.unwrap();
        let refused = Probe::Tcp(addr).check(second).await.unwrap_err();
        assert!(refused.contains("TCP"), "{refused}");
    }
}
