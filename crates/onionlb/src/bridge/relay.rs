//! Relaying an accepted connection both ways, counting bytes as they
//! pass so a long-lived OR connection shows in the metrics while it runs.
//!
//! Two ways, the same behaviour: [`Mode::Copy`] reads into a buffer and
//! writes it out; [`Mode::Splice`] (Linux) moves the bytes from one socket
//! into a pipe and from the pipe into the other socket with `splice(2)`,
//! so they never enter this process's memory.

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Bytes read at once in each direction.
const CHUNK: usize = 16 * 1024;

/// How bytes are moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Through a buffer of this process.
    #[default]
    Copy,
    /// Through a pipe with `splice(2)`.
    Splice,
}

/// Relays `transport` to `tor` and back until both directions have ended;
/// an end of input in one direction is passed on as a half-close, so
/// each side sees the other's end when it comes.
pub async fn relay(
    transport: TcpStream,
    tor: TcpStream,
    to_tor: Counter,
    from_tor: Counter,
    mode: Mode,
) {
    if mode == Mode::Splice {
        let transport = std::sync::Arc::new(transport);
        let tor = std::sync::Arc::new(tor);
        tokio::join!(
            splice_one_way(&transport, &tor, to_tor),
            splice_one_way(&tor, &transport, from_tor)
        );
        return;
    }
    let (transport_in, transport_out) = transport.into_split();
    let (tor_in, tor_out) = tor.into_split();
    tokio::join!(
        copy(transport_in, tor_out, to_tor),
        copy(tor_in, transport_out, from_tor)
    );
}

/// Copies until end of input or an error on either half, then shuts the
/// writing half down. The buffer is made when the first bytes are ready,
/// so an idle connection costs no buffer.
async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, counter: Counter) {
    if from.readable().await.is_err() {
        let _ = to.shutdown().await;
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        counter.inc_by(n as u64);
    }
    let _ = to.shutdown().await;
}

/// Bytes moved per `splice(2)`: a pipe's default capacity.
const PIPE_CHUNK: usize = 64 * 1024;

/// Moves `from`'s bytes to `to` through a pipe until end of input or an
/// error, then shuts `to`'s writing side down.
async fn splice_one_way(from: &TcpStream, to: &TcpStream, counter: Counter) {
    let _ = splice_until_end(from, to, &counter).await;
    use std::os::fd::AsRawFd as _;
    let _ = nix::sys::socket::shutdown(to.as_raw_fd(), nix::sys::socket::Shutdown::Write);
}

async fn splice_until_end(
    from: &TcpStream,
    to: &TcpStream,
    counter: &Counter,
) -> std::io::Result<()> {
    use nix::fcntl::{splice, OFlag, SpliceFFlags};
    use std::io::ErrorKind::WouldBlock;
    use tokio::io::Interest;
    // Made when the first bytes are ready: an idle connection holds no
    // pipe.
    from.readable().await?;
    let (pipe_out, pipe_in) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        from.readable().await?;
        // The pipe is empty here, so a would-block is the socket's.
        let moved = from.try_io(Interest::READABLE, || {
            splice(from, None, &pipe_in, None, PIPE_CHUNK, flags).map_err(std::io::Error::from)
        });
        let n = match moved {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            let written = to.try_io(Interest::WRITABLE, || {
                splice(&pipe_out, None, to, None, left, flags).map_err(std::io::Error::from)
            });
            match written {
                Ok(m) => left -= m,
                Err(e) if e.kind() == WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        counter.inc_by(n as u64);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn both_modes_carry_every_byte_both_ways_and_pass_the_end_on() {
        for mode in [Mode::Copy, Mode::Splice] {
            let (mut client, transport) = pair().await;
            let (tor, mut server) = pair().await;
            let (up, down) = (Counter::default(), Counter::default());
            let relaying = tokio::spawn(relay(transport, tor, up.clone(), down.clone(), mode));
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let expected = data.clone();
            let sending = tokio::spawn(async move {
                client.write_all(&data).await.unwrap();
                client.shutdown().await.unwrap();
                let mut back = Vec::new();
                client.read_to_end(&mut back).await.unwrap();
                back
            });
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, expected, "{mode:?}: to tor");
            server.write_all(b"answer").await.unwrap();
            server.shutdown().await.unwrap();
            assert_eq!(sending.await.unwrap(), b"answer", "{mode:?}: from tor");
            tokio::time::timeout(std::time::Duration::from_secs(10), relaying)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(up.get(), 300_000, "{mode:?}");
            assert_eq!(down.get(), 6, "{mode:?}");
        }
    }
}
