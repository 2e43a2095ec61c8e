//! HTTP GET through tor's SOCKS port.
//!
//! SOCKS5 with a username and password: tor isolates streams by SOCKS
//! credentials, so a fresh username gets a fresh circuit, which is how a
//! test makes many independent client connections without NEWNYM's rate
//! limit.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response body we keep.
const MAX_RESPONSE: usize = 1024 * 1024;

/// A response to a GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// Splits `http://host[:port]/path` into its parts.
pub fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url} is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse().map_err(|_| format!("bad port in {url}"))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(format!("no host in {url}"));
    }
    Ok((host.to_owned(), port, path.to_owned()))
}

/// GETs `url` through the SOCKS5 proxy at `socks`, isolated by
/// `isolation` (used as the SOCKS username), within `timeout`.
pub async fn get(
    socks: SocketAddr,
    url: &str,
    isolation: &str,
    timeout: Duration,
) -> Result<Response, String> {
    let (host, port, path) = parse_url(url)?;
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(socks)
            .await
            .map_err(|e| format!("cannot reach SOCKS port {socks}: {e}"))?;
        torctl::socks::connect(&mut stream, &host, port, isolation)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("sending request: {e}"))?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE as u64)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("reading response: {e}"))?;
        parse_response(&raw)
    })
    .await
    .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// Reads an HTTP/1.x response.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("incomplete HTTP response ({} bytes)", raw.len()))?;
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad HTTP status line in {head:?}"))?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://abc.onion/x/y").unwrap(),
            ("abc.onion".into(), 80, "/x/y".into())
        );
        assert_eq!(
            parse_url("http://abc.onion:8080").unwrap(),
            ("abc.onion".into(), 8080, "/".into())
        );
        assert!(parse_url("https://abc.onion/").is_err());
        assert!(parse_url("http:///").is_err());
        assert!(parse_url("http://a:99999/").is_err());
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.0 200 OK\r\nX: y\r\n\r\nhello\n").unwrap();
        assert_eq!(
            r,
            Response {
                status: 200,
                body: "hello\n".into()
            }
        );
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn tor_socks_errors_are_named() {
        assert!(torctl::socks::reply_meaning(0xF0).contains("descriptor not found"));
        assert!(torctl::socks::reply_meaning(0x42).contains("unknown"));
    }

    /// A one-shot SOCKS5 server that checks the handshake and plays an
    /// HTTP server behind it.
    #[tokio::test]
    async fn get_through_socks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socks = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut greet = [0u8; 3];
            s.read_exact(&mut greet).await.unwrap();
            assert_eq!(greet, [5, 1, 2]);
            s.write_all(&[5, 2]).await.unwrap();
            let mut auth = [0u8; 2];
            s.read_exact(&mut auth).await.unwrap();
            let mut user = vec![0u8; usize::from(auth[1])];
            s.read_exact(&mut user).await.unwrap();
            assert_eq!(user, b"iso-1");
            let mut pass = [0u8; 2];
            s.read_exact(&mut pass).await.unwrap();
            s.write_all(&[1, 0]).await.unwrap();
            let mut req = [0u8; 5];
            s.read_exact(&mut req).await.unwrap();
            let mut host = vec![0u8; usize::from(req[4]) + 2];
            s.read_exact(&mut host).await.unwrap();
            assert_eq!(&host[..host.len() - 2], b"abc.onion");
            s.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 80])
                .await
                .unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\nserved by instance0\n")
                .await
                .unwrap();
        });
        let r = get(socks, "http://abc.onion/", "iso-1", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(crate::app::served_by(&r.body), Some("instance0"));
    }
}
