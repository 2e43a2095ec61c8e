//! Authenticated, subscribed connections to one tor, opened again after
//! tor restarts.

use std::time::Duration;

use crate::auth::Credentials;
use crate::backoff::Backoff;
use crate::client::{ControlAddr, ControlClient, Options};
use crate::command::Command;
use crate::error::Error;

/// Everything needed to open a ready-to-use control connection: where,
/// how to authenticate, which events to subscribe to.
///
/// A connection ends when tor restarts or closes it; the holder notices
/// (its event receiver closes, commands fail with [`Error::Closed`]) and
/// calls [`Connector::reconnect`] for a fresh one with the same
/// subscriptions. Credentials are read again on every attempt, since a
/// restarted tor writes a new cookie.
#[derive(Debug)]
pub struct Connector {
    addr: ControlAddr,
    credentials: Credentials,
    events: Vec<String>,
    backoff: Backoff,
    options: Options,
}

impl Connector {
    /// A connector for `addr`, subscribing to nothing.
    pub fn new(addr: ControlAddr, credentials: Credentials) -> Self {
        Connector {
            addr,
            credentials,
            events: Vec::new(),
            backoff: Backoff::default(),
            options: Options::default(),
        }
    }

    /// Gives every connection `options` (deadlines and bounds) instead of
    /// the default.
    #[must_use]
    pub fn with_options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Subscribes every connection to `events` (`SETEVENTS`).
    #[must_use]
    pub fn subscribe<I, S>(mut self, events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.events = events.into_iter().map(Into::into).collect();
        self
    }

    /// Uses `backoff` between reconnection attempts instead of the default.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Gives later connections `options`.
    pub fn set_options(&mut self, options: Options) {
        self.options = options;
    }

    /// Where it connects.
    pub fn addr(&self) -> &ControlAddr {
        &self.addr
    }

    /// One attempt: connect, authenticate, subscribe.
    pub async fn connect(&self) -> Result<ControlClient, Error> {
        let client =
            ControlClient::connect_authenticated_with(&self.addr, &self.credentials, self.options)
                .await?;
        if !self.events.is_empty() {
            client
                .request(&Command::setevents(self.events.iter().map(String::as_str)))
                .await?;
        }
        Ok(client)
    }

    /// Attempts until one succeeds, waiting longer after each failure (see
    /// [`Backoff`]). `on_failure` hears each failure and the wait before
    /// the next attempt, so the caller can say what is going on. Never
    /// gives up: wrap it in a timeout or `select!` to bound it.
    pub async fn reconnect<F>(&mut self, mut on_failure: F) -> ControlClient
    where
        F: FnMut(&Error, Duration),
    {
        loop {
            match self.connect().await {
                Ok(client) => {
                    self.backoff.reset();
                    return client;
                }
                Err(error) => {
                    let delay = self.backoff.next_delay(&mut rand::rng());
                    on_failure(&error, delay);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    use tokio::net::TcpListener;

    /// Serves one control connection on `listener` like a tor with
    /// `AUTHENTICATE` open to all: answers PROTOCOLINFO, AUTHENTICATE and
    /// SETEVENTS, records the SETEVENTS line, sends one event, then closes.
    async fn serve_once(listener: &TcpListener) -> String {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut setevents = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let answer = if line.starts_with("PROTOCOLINFO") {
                "250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250-VERSION Tor=\"0.4.9.0\"\r\n250 OK\r\n"
            } else if line.starts_with("SETEVENTS") {
                setevents = line.clone();
                "250 OK\r\n650 STATUS_CLIENT NOTICE CONSENSUS_ARRIVED\r\n"
            } else {
                "250 OK\r\n"
            };
            write.write_all(answer.as_bytes()).await.unwrap();
            if line.starts_with("SETEVENTS") {
                break;
            }
        }
        setevents
    }

    #[tokio::test]
    async fn reconnects_after_tor_comes_back_and_subscribes_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = ControlAddr::Tcp(listener.local_addr().unwrap());
        let mut connector = Connector::new(addr, Credentials::Auto)
            .subscribe(["HS_DESC", "STATUS_CLIENT"])
            .with_backoff(Backoff::new(
                Duration::from_millis(20),
                Duration::from_millis(40),
            ));

        let server = tokio::spawn(async move {
            let first = serve_once(&listener).await;
            let port = listener.local_addr().unwrap();
            // tor restarts: nothing listens for a while.
            drop(listener);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let listener = TcpListener::bind(port).await.unwrap();
            let second = serve_once(&listener).await;
            (first, second)
        });

        let client = connector.connect().await.unwrap();
        let mut events = client.take_events().unwrap();
        assert!(events.recv().await.is_some(), "the subscribed event");
        assert!(events.recv().await.is_none(), "the connection ended");
        assert!(matches!(
            client.getinfo("version").await,
            Err(Error::Closed | Error::Io { .. })
        ));

        let mut failures = 0;
        let client = tokio::time::timeout(
            Duration::from_secs(10),
            connector.reconnect(|_, delay| {
                assert!(delay <= Duration::from_millis(40));
                failures += 1;
            }),
        )
        .await
        .expect("reconnected within 10 s");
        assert!(failures > 0, "tor was down for a while");
        let mut events = client.take_events().unwrap();
        assert!(events.recv().await.is_some(), "events flow again");

        let (first, second) = server.await.unwrap();
        assert_eq!(first, "SETEVENTS HS_DESC STATUS_CLIENT");
        assert_eq!(second, first);
    }
}
