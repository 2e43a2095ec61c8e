//! The manager's admin socket, and `onionlb drain` / `onionlb undrain`.
//!
//! The status socket stays as Python Onionbalance has it (connect, read a
//! report); what changes the manager's behaviour goes through a second
//! Unix socket: `admin-socket-location`, or the status socket's path with
//! `.admin` after it. A client sends one line and reads one JSON line:
//!
//! ```text
//! DRAIN web1            take web1 out of new master descriptors
//! UNDRAIN web1          let it back in
//! DRAIN-STATE web1      how far its drain has come
//! ```
//!
//! An instance is named by its `name:` or its onion address. The answer
//! says `serving`, `draining` (out of the descriptors being made, not yet
//! acknowledged by every HSDir) or `drained` (every HSDir of every service
//! listing it has a descriptor without it), with, once drained, how long
//! clients holding an older descriptor may still try it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

use crate::answer::Asker;
use crate::cli::DrainArgs;
use crate::config::Config;
use crate::unix_socket::Server;

/// Mode of the socket: only the manager's user and group may drain.
const SOCKET_MODE: u32 = 0o660;
/// Bound on a request line.
const MAX_REQUEST_BYTES: u64 = 512;
/// Bound on an answer.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// Time a client has to send its request, and to read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often `onionlb drain` asks how far the drain has come.
const POLL: Duration = Duration::from_secs(1);

/// What an admin client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Take the instance out (`true`) or let it back in.
    Drain {
        /// Its name or address.
        instance: String,
        /// Out, or back in.
        drain: bool,
    },
    /// How far its drain has come.
    State {
        /// Its name or address.
        instance: String,
    },
}

impl Request {
    /// Reads a request line; `Err` says what is wrong with it.
    pub fn parse(line: &str) -> Result<Self, String> {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let instance = words.next().map(str::to_owned);
        if words.next().is_some() {
            return Err("one instance per request".into());
        }
        let Some(instance) = instance else {
            return Err(format!("{verb:?} needs an instance name or address"));
        };
        match verb {
            "DRAIN" => Ok(Request::Drain {
                instance,
                drain: true,
            }),
            "UNDRAIN" => Ok(Request::Drain {
                instance,
                drain: false,
            }),
            "DRAIN-STATE" => Ok(Request::State { instance }),
            other => Err(format!(
                "unknown request {other:?}: DRAIN, UNDRAIN or DRAIN-STATE"
            )),
        }
    }
}

/// The manager's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// The instance's name (its address if it has none).
    pub instance: String,
    /// `serving`, `draining` or `drained`.
    pub state: String,
    /// Once drained: until when clients holding an older master
    /// descriptor may still try it (UTC).
    pub clients_may_try_until: Option<String>,
    /// Why the request was refused, if it was.
    pub error: Option<String>,
}

/// Where the admin socket is: `admin-socket-location`, else next to the
/// status socket.
pub fn socket_location(config: &Config) -> Option<PathBuf> {
    if let Some(path) = &config.admin_socket {
        return Some(path.clone());
    }
    let mut path = crate::status::socket_location(config)?.into_os_string();
    path.push(".admin");
    Some(path.into())
}

/// Listens at `path`, handing each request to the daemon.
pub async fn serve(path: &Path, daemon: Asker) -> anyhow::Result<Server> {
    let server = Server::start(path, SOCKET_MODE, "admin socket", move |stream| {
        let daemon = daemon.clone();
        async move {
            let (read, write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES));
            let read = tokio::time::timeout(CLIENT_TIMEOUT, reader.read_line(&mut line)).await;
            if !matches!(read, Ok(Ok(_))) {
                return;
            }
            let answer = match Request::parse(&line) {
                Ok(request) => daemon.admin(request).await.unwrap_or_else(|| Answer {
                    error: Some("the manager did not answer in time".into()),
                    ..Answer::default()
                }),
                Err(e) => Answer {
                    error: Some(e),
                    ..Answer::default()
                },
            };
            let Ok(json) = serde_json::to_vec(&answer) else {
                return;
            };
            crate::answer::send_and_close(write, &[&json, b"\n"]).await;
        }
    })
    .await?;
    tracing::info!("admin socket (drain, undrain) at {}", path.display());
    Ok(server)
}

/// `onionlb drain` (`drain`) and `onionlb undrain`.
pub async fn run(args: DrainArgs, drain: bool) -> anyhow::Result<()> {
    let path = match &args.socket {
        Some(path) => path.clone(),
        None => {
            let config = Config::load(&args.config)?;
            match socket_location(&config) {
                Some(path) => path,
                None => bail!(
                    "{} sets neither admin-socket-location nor status-socket-location: the manager serves no admin socket; set one, or give --admin-socket",
                    config.path.display()
                ),
            }
        }
    };
    let verb = if drain { "DRAIN" } else { "UNDRAIN" };
    let answer = ask(&path, &format!("{verb} {}", args.instance)).await?;
    if let Some(error) = answer.error {
        bail!("{}: not {}ed: {error}", args.instance, verb.to_lowercase());
    }
    if !drain {
        println!("{}: back in the master descriptors", answer.instance);
        return Ok(());
    }
    if args.no_wait {
        println!("{}: {}", answer.instance, answer.state);
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let mut answer = answer;
    while answer.state != "drained" {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{}: still {} after {} s: not every HSDir has acknowledged a master descriptor without it (see onionlb status)",
                answer.instance,
                answer.state,
                args.timeout
            );
        }
        tokio::time::sleep(POLL).await;
        answer = ask(&path, &format!("DRAIN-STATE {}", args.instance)).await?;
        if let Some(error) = answer.error {
            bail!("{}: {error}", args.instance);
        }
    }
    println!(
        "{}: drained: every HSDir has a master descriptor without it; safe to stop. Clients that fetched the master descriptor earlier may still try it until {} UTC, and move on to other instances when it does not answer.",
        answer.instance,
        answer.clients_may_try_until.as_deref().unwrap_or("?")
    );
    Ok(())
}

/// Sends `line` to the admin socket at `path` and reads the answer.
async fn ask(path: &Path, line: &str) -> anyhow::Result<Answer> {
    let work = async {
        let mut stream = tokio::net::UnixStream::connect(path)
            .await
            .with_context(|| format!("connecting to the admin socket {}", path.display()))?;
        stream.write_all(format!("{line}\n").as_bytes()).await?;
        let mut json = String::new();
        (&mut stream)
            .take(MAX_ANSWER_BYTES)
            .read_to_string(&mut json)
            .await?;
        serde_json::from_str::<Answer>(&json)
            .with_context(|| format!("reading the answer from {}", path.display()))
    };
    tokio::time::timeout(CLIENT_TIMEOUT, work)
        .await
        .with_context(|| format!("no answer from the admin socket {}", path.display()))?
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        assert_eq!(
            Request::parse("DRAIN web1\n"),
            Ok(Request::Drain {
                instance: "web1".into(),
                drain: true
            })
        );
        assert_eq!(
            Request::parse("UNDRAIN web1"),
            Ok(Request::Drain {
                instance: "web1".into(),
                drain: false
            })
        );
        assert_eq!(
            Request::parse("DRAIN-STATE x.onion"),
            Ok(Request::State {
                instance: "x.onion".into()
            })
        );
        assert!(Request::parse("DRAIN")
            .unwrap_err()
            .contains("needs an instance"));
        assert!(Request::parse("DRAIN a b").is_err());
        assert!(Request::parse("STOP a")
            .unwrap_err()
            .contains("unknown request"));
        assert!(Request::parse("").is_err());
    }
}
