//! The simulator's listener on loopback: reads commands, hands them to a
//! [`Session`], writes the answers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::session::{Command, Session};
use super::{Stats, World};

/// Longest command line or data line taken, as a guard against a runaway
/// client.
const MAX_LINE: usize = 1 << 20;

/// A running simulator. Stops listening on drop.
pub struct Server {
    port: u16,
    world: Arc<Mutex<World>>,
    finished: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Server {
    /// Listens on a free loopback port.
    pub async fn start(world: World) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the simulator's control port")?;
        let port = listener.local_addr().context("reading its port")?.port();
        let world = Arc::new(Mutex::new(world));
        let (done, finished) = watch::channel(false);
        let done = Arc::new(done);
        let shared = Arc::clone(&world);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let world = Arc::clone(&shared);
                let done = Arc::clone(&done);
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, &world, &done).await {
                        eprintln!("simulator: a control connection ended: {e:#}");
                    }
                });
            }
        });
        Ok(Server {
            port,
            world,
            finished,
            task,
        })
    }

    /// Its control port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits at most `bound` for the balancer to finish its cycle.
    pub async fn finished_within(&mut self, bound: Duration) -> bool {
        tokio::time::timeout(bound, self.finished.wait_for(|done| *done))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// `(complete, expected)` HSDir slots, and the counts.
    pub fn progress(&self) -> ((usize, usize), Stats) {
        let world = self.world.lock().unwrap_or_else(|e| e.into_inner());
        (world.progress(), world.stats().clone())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    stream: TcpStream,
    world: &Mutex<World>,
    done: &watch::Sender<bool>,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut session = Session::default();
    while let Some(command) = read_command(&mut read).await? {
        let answer = {
            let mut world = world.lock().unwrap_or_else(|e| e.into_inner());
            let answer = session.answer(&mut world, &command, SystemTime::now());
            if world.finished() {
                done.send_replace(true);
            }
            answer
        };
        // One write, as tor flushes a reply and the events it caused
        // together; small writes apart would wait on delayed ACKs.
        let mut out = answer.reply.into_bytes();
        for event in &answer.events {
            out.extend_from_slice(event.as_bytes());
        }
        write.write_all(&out).await?;
        if answer.close {
            break;
        }
    }
    Ok(())
}

/// Reads one command: a line, and for `+` commands the data up to the `.`
/// line. `None` at the end of the stream.
async fn read_command<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
) -> anyhow::Result<Option<Command>> {
    let Some(line) = read_line(read).await? else {
        return Ok(None);
    };
    let Some(line) = line.strip_prefix('+') else {
        return Ok(Some(Command { line, data: None }));
    };
    let mut data = String::new();
    loop {
        let Some(data_line) = read_line(read).await? else {
            anyhow::bail!("the connection ended inside a data block");
        };
        if data_line == "." {
            break;
        }
        data.push_str(data_line.strip_prefix('.').unwrap_or(&data_line));
        data.push('\n');
    }
    Ok(Some(Command {
        line: line.to_owned(),
        data: Some(data),
    }))
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
) -> anyhow::Result<Option<String>> {
    let mut buffer = Vec::new();
    let n = (&mut *read)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buffer)
        .await
        .context("reading a command")?;
    if n == 0 {
        return Ok(None);
    }
    anyhow::ensure!(
        buffer.ends_with(b"\n"),
        "a line longer than {MAX_LINE} bytes"
    );
    while matches!(buffer.last(), Some(b'\n' | b'\r')) {
        buffer.pop();
    }
    String::from_utf8(buffer)
        .map(Some)
        .context("a command that is not UTF-8")
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn data_commands_are_read_whole_and_unescaped() {
        let bytes: &[u8] =
            b"+HSPOST HSADDRESS=x\r\nhs-descriptor 3\r\n..dot\r\n.\r\nGETINFO version\r\n";
        let mut read = BufReader::new(bytes);
        let first = read_command(&mut read).await.unwrap().unwrap();
        assert_eq!(first.line, "HSPOST HSADDRESS=x");
        assert_eq!(first.data.as_deref(), Some("hs-descriptor 3\n.dot\n"));
        let second = read_command(&mut read).await.unwrap().unwrap();
        assert_eq!(second.line, "GETINFO version");
        assert_eq!(second.data, None);
        assert!(read_command(&mut read).await.unwrap().is_none());
    }
}
