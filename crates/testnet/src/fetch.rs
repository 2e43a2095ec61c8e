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
        socks5_connect(&mut stream, &host, port, isolation).await?;
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

/// The SOCKS5 handshake (RFC 1928, RFC 1929) for a CONNECT to a host name.
async fn socks5_connect(
    stream: &mut TcpStream,
    host: &str,
    port: u16,
    user: &str,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("SOCKS handshake: {e}");
    if host.len() > 255 || user.is_empty() || user.len() > 255 {
        return Err("host name or SOCKS username too long".into());
    }
    stream.write_all(&[5, 1, 2]).await.map_err(io)?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await.map_err(io)?;
    if choice != [5, 2] {
        return Err(format!(
            "SOCKS server refused username authentication: {choice:?}"
        ));
    }
    let mut auth = vec![1, user.len() as u8];
    auth.extend_from_slice(user.as_bytes());
    auth.extend_from_slice(&[1, b'x']);
    stream.write_all(&auth).await.map_err(io)?;
    let mut auth_reply = [0u8; 2];
    stream.read_exact(&mut auth_reply).await.map_err(io)?;
    if auth_reply[1] != 0 {
        return Err("SOCKS authentication refused".into());
    }

    let mut request = vec![5, 1, 0, 3, host.len() as u8];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await.map_err(io)?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await.map_err(io)?;
    if head[1] != 0 {
        return Err(socks_reply_meaning(head[1]));
    }
    let address_len = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await.map_err(io)?;
            usize::from(len[0])
        }
        other => return Err(format!("SOCKS reply with address type {other}")),
    };
    let mut rest = vec![0u8; address_len + 2];
    stream.read_exact(&mut rest).await.map_err(io)?;
    Ok(())
}

/// What tor means by a SOCKS5 reply code, with its onion service extensions
/// (sent when the SocksPort has the `ExtendedErrors` flag, as ours does).
pub fn socks_reply_meaning(code: u8) -> String {
    let meaning = match code {
        1 => "general failure",
        2 => "not allowed",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired (circuit timed out)",
        7 => "command not supported",
        8 => "address type not supported",
        0xF0 => "onion service descriptor not found",
        0xF1 => "onion service descriptor invalid",
        0xF2 => "onion service introduction failed",
        0xF3 => "onion service rendezvous failed",
        0xF4 => "onion service needs client authorization",
        0xF5 => "onion service client authorization wrong",
        0xF6 => "invalid onion address",
        0xF7 => "onion service introduction timed out",
        _ => "unknown error",
    };
    format!("SOCKS error {code:#04x}: {meaning}")
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
        assert!(socks_reply_meaning(0xF0).contains("descriptor not found"));
        assert!(socks_reply_meaning(0x42).contains("unknown"));
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
