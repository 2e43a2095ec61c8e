//! Opening a stream through tor's SOCKS port (SOCKS5 with a username, RFC
//! 1928 and RFC 1929), and what tor's extended SOCKS errors mean.
//!
//! tor isolates streams by SOCKS credentials, so each distinct username
//! gets its own circuit.

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Why a SOCKS CONNECT did not give a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SocksError {
    /// The host name or the username does not fit in a SOCKS5 request.
    #[error("host name or SOCKS username too long")]
    TooLong,
    /// Reading or writing the handshake failed.
    #[error("SOCKS handshake: {0}")]
    Io(std::io::ErrorKind),
    /// What answered is not a SOCKS5 server that takes a username: it
    /// sent these bytes where its method choice or status belonged.
    #[error("not a SOCKS5 server taking a username (it answered {0:02x?})")]
    NotSocks([u8; 2]),
    /// The proxy refused the username.
    #[error("SOCKS authentication refused")]
    AuthRefused,
    /// The proxy could not make the connection: tor's reply code, which
    /// [`reply_meaning`] explains.
    #[error("{}", reply_meaning(*.0))]
    Refused(u8),
    /// The reply named an address of an unknown type.
    #[error("SOCKS reply with address type {0}")]
    AddressType(u8),
}

impl From<std::io::Error> for SocksError {
    fn from(e: std::io::Error) -> Self {
        SocksError::Io(e.kind())
    }
}

/// The SOCKS5 handshake (RFC 1928, RFC 1929) for a CONNECT to a host name.
/// Reads at most the reply's 262 bytes.
pub async fn connect(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    host: &str,
    port: u16,
    user: &str,
) -> Result<(), SocksError> {
    let (Ok(host_len), Ok(user_len)) = (u8::try_from(host.len()), u8::try_from(user.len())) else {
        return Err(SocksError::TooLong);
    };
    if user_len == 0 {
        return Err(SocksError::TooLong);
    }
    stream.write_all(&[5, 1, 2]).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if choice != [5, 2] {
        return Err(SocksError::NotSocks(choice));
    }
    let mut auth = vec![1, user_len];
    auth.extend_from_slice(user.as_bytes());
    auth.extend_from_slice(&[1, b'x']);
    stream.write_all(&auth).await?;
    let mut auth_reply = [0u8; 2];
    stream.read_exact(&mut auth_reply).await?;
    if auth_reply[1] != 0 {
        return Err(SocksError::AuthRefused);
    }

    let mut request = vec![5, 1, 0, 3, host_len];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(SocksError::NotSocks([head[0], head[1]]));
    }
    if head[1] != 0 {
        return Err(SocksError::Refused(head[1]));
    }
    let address_len = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            usize::from(len[0])
        }
        other => return Err(SocksError::AddressType(other)),
    };
    let mut rest = vec![0u8; address_len + 2];
    stream.read_exact(&mut rest).await?;
    Ok(())
}

/// What tor means by a SOCKS5 reply code, with its onion service extensions
/// (sent when the SocksPort has the `ExtendedErrors` flag, as ours does).
pub fn reply_meaning(code: u8) -> String {
    format!("SOCKS error {code:#04x}: {}", meaning(code))
}

/// What tor means by a SOCKS5 reply code, in a few words.
pub fn meaning(code: u8) -> &'static str {
    match code {
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
    }
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Runs `connect` against a peer that answers each read with the next
    /// of `answers`, and returns what `connect` made of it.
    async fn against(answers: &[&[u8]]) -> Result<(), SocksError> {
        let (mut ours, mut theirs) = tokio::io::duplex(1024);
        let answers: Vec<Vec<u8>> = answers.iter().map(|a| a.to_vec()).collect();
        let peer = tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            for answer in answers {
                if theirs.read(&mut buffer).await.unwrap_or(0) == 0 {
                    return;
                }
                let _ = theirs.write_all(&answer).await;
            }
        });
        let result = connect(&mut ours, "example.onion", 80, "probe").await;
        drop(ours);
        peer.await.unwrap();
        result
    }

    #[tokio::test]
    async fn a_connect_succeeds_or_says_what_refused_it() {
        let ok: &[&[u8]] = &[&[5, 2], &[1, 0], &[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]];
        assert_eq!(against(ok).await, Ok(()));
        let refused: &[&[u8]] = &[&[5, 2], &[1, 0], &[5, 0xF2, 0, 1, 0, 0, 0, 0, 0, 0]];
        let error = against(refused).await.unwrap_err();
        assert_eq!(error, SocksError::Refused(0xF2));
        assert!(error.to_string().contains("introduction failed"));
        let http: &[&[u8]] = &[b"HTTP/1.0 400 Bad Request\r\n"];
        assert_eq!(against(http).await, Err(SocksError::NotSocks(*b"HT")));
        let no_user: &[&[u8]] = &[&[5, 2], &[1, 1]];
        assert_eq!(against(no_user).await, Err(SocksError::AuthRefused));
        let cut: &[&[u8]] = &[&[5, 2], &[1, 0], &[5, 0]];
        assert!(matches!(against(cut).await, Err(SocksError::Io(_))));
    }
}
