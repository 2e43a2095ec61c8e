//! Relaying an accepted connection both ways, counting bytes as they
//! pass so a long-lived OR connection shows in the metrics while it runs.
//!
//! Two ways, the same behaviour: [`Mode::Copy`] reads into a buffer and
//! writes it out; [`Mode::Splice`] (Linux) moves bytes that come in bulk
//! from one socket into a pipe and from the pipe into the other socket
//! with `splice(2)`, so they never enter this process's memory, and
//! copies small writes (cells), for which splicing costs more.

use std::io::ErrorKind::WouldBlock;
use std::os::fd::OwnedFd;

use prometheus_client::metrics::counter::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes read at once in each direction.
const CHUNK: usize = 16 * 1024;

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

/// The bytes one direction moved, by the way they went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Read into this process's buffer and written out.
    pub copied: u64,
    /// Spliced through a pipe.
    pub spliced: u64,
}

/// Relays `transport` to `tor` and back until both directions have ended;
/// an end of input in one direction is passed on as a half-close, so
/// each side sees the other's end when it comes. Counts each direction's
/// bytes on its counter as they pass, and returns what each moved
/// (towards tor, then back).
pub async fn relay(
    transport: TcpStream,
    tor: TcpStream,
    to_tor: Counter,
    from_tor: Counter,
    mode: Mode,
) -> (Moved, Moved) {
    tokio::join!(
        one_way(&transport, &tor, &to_tor, mode),
        one_way(&tor, &transport, &from_tor, mode)
    )
}

/// Moves `from`'s bytes to `to` until end of input or an error on
/// either, then shuts `to`'s writing side down.
async fn one_way(from: &TcpStream, to: &TcpStream, counter: &Counter, mode: Mode) -> Moved {
    let mut moved = Moved::default();
    let _ = move_until_end(from, to, counter, mode, &mut moved).await;
    use std::os::fd::AsRawFd as _;
    let _ = nix::sys::socket::shutdown(to.as_raw_fd(), nix::sys::socket::Shutdown::Write);
    moved
}

/// Moves bytes until end of input, adding them to `counter` and `moved`
/// as they pass. In copy mode every step is a copy. In splice mode a copy
/// that fills the buffer turns to splicing, and [`SMALL_IN_A_ROW`]
/// splices that each move less than [`SMALL`] turn back. The buffer and
/// the pipe are made when first used, so an idle connection holds
/// neither; once made, each stays until the connection ends.
async fn move_until_end(
    from: &TcpStream,
    to: &TcpStream,
    counter: &Counter,
    mode: Mode,
    moved: &mut Moved,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut pipe = None;
    let mut splicing = false;
    let mut small = 0;
    loop {
        from.readable().await?;
        let n = if splicing {
            let ends = match &pipe {
                Some(ends) => ends,
                None => pipe.insert(new_pipe()?),
            };
            match splice_step(from, to, ends).await? {
                Step::End => return Ok(()),
                Step::Again => continue,
                Step::Moved(n) => {
                    moved.spliced += n as u64;
                    small = if n < SMALL { small + 1 } else { 0 };
                    splicing = small < SMALL_IN_A_ROW;
                    n
                }
            }
        } else {
            if buf.is_empty() {
                buf = vec![0u8; CHUNK];
            }
            match copy_step(from, to, &mut buf).await? {
                Step::End => return Ok(()),
                Step::Again => continue,
                Step::Moved(n) => {
                    moved.copied += n as u64;
                    splicing = mode == Mode::Splice && n == CHUNK;
                    small = 0;
                    n
                }
            }
        };
        counter.inc_by(n as u64);
    }
}

/// What one step of moving bytes came to.
enum Step {
    /// `from` had ended.
    End,
    /// `from` had nothing after all; wait for it again.
    Again,
    /// This many bytes went from `from` to `to`.
    Moved(usize),
}

/// Reads what `from` has into `buf` (up to its length) and writes all of
/// it to `to`.
async fn copy_step(from: &TcpStream, to: &TcpStream, buf: &mut [u8]) -> std::io::Result<Step> {
    let n = match from.try_read(buf) {
        Ok(0) => return Ok(Step::End),
        Ok(n) => n,
        Err(e) if e.kind() == WouldBlock => return Ok(Step::Again),
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
    Ok(Step::Moved(n))
}

/// Splices what `from` has (up to [`PIPE_CHUNK`]) into the pipe `ends`
/// and all of it on into `to`, leaving the pipe empty again.
async fn splice_step(
    from: &TcpStream,
    to: &TcpStream,
    (pipe_out, pipe_in): &(OwnedFd, OwnedFd),
) -> std::io::Result<Step> {
    use nix::fcntl::{splice, SpliceFFlags};
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    // The pipe is empty here, so a would-block is the socket's.
    let spliced = from.try_io(Interest::READABLE, || {
        splice(from, None, pipe_in, None, PIPE_CHUNK, flags).map_err(std::io::Error::from)
    });
    let n = match spliced {
        Ok(0) => return Ok(Step::End),
        Ok(n) => n,
        Err(e) if e.kind() == WouldBlock => return Ok(Step::Again),
        Err(e) => return Err(e),
    };
    let mut left = n;
    while left > 0 {
        to.writable().await?;
        let written = to.try_io(Interest::WRITABLE, || {
            splice(pipe_out, None, to, None, left, flags).map_err(std::io::Error::from)
        });
        match written {
            Ok(m) => left -= m,
            Err(e) if e.kind() == WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Step::Moved(n))
}

/// A non-blocking pipe: its read end, then its write end.
fn new_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    Ok(nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?)
}

#[cfg(test)]
mod test {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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
            let (moved_up, moved_down) =
                tokio::time::timeout(std::time::Duration::from_secs(10), relaying)
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(up.get(), 300_000, "{mode:?}");
            assert_eq!(down.get(), 6, "{mode:?}");
            assert_eq!(moved_up.copied + moved_up.spliced, 300_000, "{mode:?}");
            assert_eq!(moved_down.copied + moved_down.spliced, 6, "{mode:?}");
            if mode == Mode::Copy {
                assert_eq!(moved_up.spliced, 0);
            }
        }
    }

    /// Cells one at a time, a megabyte at once, then cells one at a time
    /// again, each read by the peer before the next is sent: splice mode
    /// copies the cells, splices the megabyte, turns back to copying
    /// after two small splices, and every byte arrives as it was sent.
    #[tokio::test]
    async fn splice_mode_splices_bulk_and_copies_cells() {
        let (mut client, transport) = pair().await;
        let (tor, mut server) = pair().await;
        let (up, down) = (Counter::default(), Counter::default());
        let relaying = tokio::spawn(relay(transport, tor, up.clone(), down, Mode::Splice));
        let mut total = 0;
        for round in 0..3u32 {
            let (size, count) = if round == 1 {
                (1_000_000, 1)
            } else {
                (514, 50)
            };
            for i in 0..count {
                let piece: Vec<u8> = (0..size)
                    .map(|j| ((i * 7 + j + round) % 253) as u8)
                    .collect();
                let mut got = vec![0; piece.len()];
                let (written, read) =
                    tokio::join!(client.write_all(&piece), server.read_exact(&mut got));
                written.unwrap();
                read.unwrap();
                assert!(got == piece, "round {round}, piece {i}: bytes differ");
                total += piece.len() as u64;
            }
        }
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        server.shutdown().await.unwrap();
        let (moved, _) = tokio::time::timeout(std::time::Duration::from_secs(10), relaying)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(up.get(), total);
        assert_eq!(moved.copied + moved.spliced, total);
        // Copied: the 50 cells before the megabyte, at most a buffer of
        // its start, and all but the first two cells after it.
        assert!(moved.copied >= 98 * 514, "{moved:?}");
        assert!(moved.spliced >= 900_000, "{moved:?}");
    }
}
