//! Relaying an accepted connection both ways, counting bytes as they
//! pass so a long-lived OR connection shows in the metrics while it runs.
//!
//! Two ways, the same behaviour: [`Mode::Copy`] reads into a buffer and
//! writes it out; [`Mode::Splice`] (Linux) moves bytes that come in bulk
//! from one socket into a pipe and from the pipe into the other socket
//! with `splice(2)`, so they never enter this process's memory, and
//! copies small writes (cells), for which splicing costs more.

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
    /// Through a pipe with `splice(2)` while bytes come in bulk, through a
    /// buffer while they come in small writes.
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

/// A splice that moved less than this was a small write (a cell or a
/// few); after [`SMALL_IN_A_ROW`] of them the next bytes are read and
/// written through a buffer instead. For a few hundred bytes, two
/// splices through a pipe cost more CPU than a read and a write
/// (`onionlb-bench bridge`, 514-byte writes); splicing pays once the
/// bytes come in bulk.
const SMALL: usize = 4 * 1024;
/// Small splices in a row that turn a direction to copying: one alone is
/// most often the end of a burst.
const SMALL_IN_A_ROW: u32 = 2;

/// Moves `from`'s bytes to `to` until end of input or an error, then
/// shuts `to`'s writing side down.
async fn splice_one_way(from: &TcpStream, to: &TcpStream, counter: Counter) {
    let _ = splice_until_end(from, to, &counter).await;
    use std::os::fd::AsRawFd as _;
    let _ = nix::sys::socket::shutdown(to.as_raw_fd(), nix::sys::socket::Shutdown::Write);
}

/// Moves bytes through a pipe with `splice(2)` while they come in bulk,
/// and through a buffer while they come in small writes: a read that
/// fills the buffer turns to splicing, [`SMALL_IN_A_ROW`] splices that
/// each move less than [`SMALL`] turn back. The buffer and the pipe are
/// made when first used, so an idle connection holds neither; once
/// made, each stays until the connection ends.
async fn splice_until_end(
    from: &TcpStream,
    to: &TcpStream,
    counter: &Counter,
) -> std::io::Result<()> {
    use nix::fcntl::{splice, OFlag, SpliceFFlags};
    use std::io::ErrorKind::WouldBlock;
    use tokio::io::Interest;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut pipe = None;
    let mut buf = Vec::new();
    let mut splicing = false;
    let mut small = 0;
    loop {
        from.readable().await?;
        if !splicing {
            if buf.is_empty() {
                buf = vec![0u8; CHUNK];
            }
            let n = match from.try_read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == WouldBlock => continue,
                Err(e) => return Err(e),
            };
            let mut done = 0;
            while done < n {
                to.writable().await?;
                match to.try_write(&buf[done..n]) {
                    Ok(m) => done += m,
                    Err(e) if e.kind() == WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            counter.inc_by(n as u64);
            splicing = n == CHUNK;
            small = 0;
            continue;
        }
        let (pipe_out, pipe_in) = match &pipe {
            Some(ends) => ends,
            None => pipe.insert(nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?),
        };
        // The pipe is empty here, so a would-block is the socket's.
        let moved = from.try_io(Interest::READABLE, || {
            splice(from, None, &*pipe_in, None, PIPE_CHUNK, flags).map_err(std::io::Error::from)
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
                splice(&*pipe_out, None, to, None, left, flags).map_err(std::io::Error::from)
            });
            match written {
                Ok(m) => left -= m,
                Err(e) if e.kind() == WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        counter.inc_by(n as u64);
        small = if n < SMALL { small + 1 } else { 0 };
        splicing = small < SMALL_IN_A_ROW;
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

    /// Cells, then bulk, then cells again, with the peer reading as it
    /// goes: splice mode turns from copying to splicing and back, and
    /// every byte arrives in order.
    #[tokio::test]
    async fn splice_mode_keeps_order_across_small_and_bulk_writes() {
        let (mut client, transport) = pair().await;
        let (tor, mut server) = pair().await;
        let (up, down) = (Counter::default(), Counter::default());
        let relaying = tokio::spawn(relay(transport, tor, up.clone(), down, Mode::Splice));
        let mut sent = Vec::new();
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        for round in 0..3u32 {
            let size = if round == 1 { 1_000_000 } else { 514 };
            let count = if round == 1 { 1 } else { 50 };
            for i in 0..count {
                let piece: Vec<u8> = (0..size)
                    .map(|j| ((i * 7 + j + round) % 253) as u8)
                    .collect();
                sent.extend_from_slice(&piece);
                pieces.push(piece);
            }
        }
        let total = sent.len();
        let sending = tokio::spawn(async move {
            for piece in pieces {
                client.write_all(&piece).await.unwrap();
                client.flush().await.unwrap();
                if piece.len() < 1000 {
                    tokio::task::yield_now().await;
                }
            }
            client.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        sending.await.unwrap();
        assert!(got == sent, "bytes differ or are out of order");
        server.shutdown().await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), relaying)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(up.get(), total as u64);
    }
}
