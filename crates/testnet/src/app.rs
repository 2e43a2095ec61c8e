//! The tiny HTTP app behind each instance: it answers every request with
//! its own name, so a test can tell which instance served it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::Error;

/// Header naming the instance that answered.
pub const SERVED_BY_HEADER: &str = "X-Served-By";

/// Bound on reading a request, so a stuck client cannot pin a connection.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head we read.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves `name` on `addr` until the process is stopped.
pub async fn serve(name: &str, addr: SocketAddr) -> Result<(), Error> {
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
        action: "binding the instance app to",
        path: addr.to_string().into(),
        source,
    })?;
    tracing::info!("{name}: serving on {addr}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = name.to_owned();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &name).await {
                tracing::debug!("{name}: request failed: {e}");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, name: &str) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(READ_TIMEOUT, read_head)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream.write_all(response(name).as_bytes()).await?;
    stream.shutdown().await
}

/// The whole HTTP response the app sends.
pub fn response(name: &str) -> String {
    let body = format!("served by {name}\n");
    format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{SERVED_BY_HEADER}: {name}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Which instance served a body the app sent, if it came from one.
pub fn served_by(body: &str) -> Option<&str> {
    body.strip_prefix("served by ")
        .map(str::trim_end)
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn body_names_the_instance() {
        let response = response("instance2");
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        assert_eq!(served_by(body), Some("instance2"));
        assert!(response.contains("X-Served-By: instance2\r\n"));
        assert_eq!(served_by("hello"), None);
        assert_eq!(served_by("served by \n"), None);
    }

    #[tokio::test]
    async fn answers_over_tcp() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        tokio::spawn(async move { serve("instance7", addr).await });
        let mut stream = loop {
            if let Ok(s) = TcpStream::connect(addr).await {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(reply.ends_with("served by instance7\n"));
    }
}
