//! Opening a stream through tor's SOCKS port (SOCKS5 with a username, RFC
//! 1928 and RFC 1929), and what tor's extended SOCKS errors mean.
//!
//! tor isolates streams by SOCKS credentials, so each distinct username
//! gets its own circuit.

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The SOCKS5 handshake (RFC 1928, RFC 1929) for a CONNECT to a host name.
pub async fn connect(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
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
        return Err(reply_meaning(head[1]));
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
pub fn reply_meaning(code: u8) -> String {
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
