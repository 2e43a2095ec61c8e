//! Relaying an accepted connection both ways, counting bytes as they
//! pass so a long-lived OR connection shows in the metrics while it runs.

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Bytes read at once in each direction.
const CHUNK: usize = 16 * 1024;

/// Copies `transport` to `tor` and back until both directions have ended;
/// an end of input in one direction is passed on as a half-close, so
/// each side sees the other's end when it comes.
pub async fn relay(transport: TcpStream, tor: TcpStream, to_tor: Counter, from_tor: Counter) {
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
