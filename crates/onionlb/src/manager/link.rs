//! The manager's connection to its management tor: the first one, made
//! once (a manager that cannot reach its tor at start-up is
//! misconfigured, and says so), and, while it is down, a task that
//! reconnects with backoff and waits until tor has a usable consensus,
//! then hands the connection back to the daemon.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use onionlb_core::error_chain;
use onionlb_core::network::NetworkView;
use tokio::task::{JoinError, JoinHandle};
use torctl::{Command, Connector, ControlClient, Events, Reply};

use crate::manager::network::{load_view, ViewError};
use crate::manager::probe::{self, SocksListener};

/// How long to wait for a consensus before asking again.
const CONSENSUS_POLL: Duration = Duration::from_secs(5);

/// The control connection: up, with its events, or down, with the task
/// that makes it again.
pub(super) struct Connection {
    state: State,
    /// Held by the reconnecting task while down.
    connector: Option<Connector>,
    testing_network: bool,
    /// Counts connections, so results of an old one are told apart.
    epoch: u64,
}

enum State {
    Up {
        control: Arc<ControlClient>,
        events: Events,
    },
    Down(JoinHandle<Box<Reconnected>>),
}

/// What the connection has to say.
pub(super) enum LinkEvent {
    /// An event from tor.
    Tor(Reply),
    /// The connection ended.
    Lost,
    /// While down: the reconnecting task ended.
    Back(Result<Box<Reconnected>, JoinError>),
}

/// Why a connection ended.
pub(super) struct Lost {
    /// In words, with its causes.
    pub reason: String,
    /// For the metrics ([`disconnect_kind`]).
    pub kind: &'static str,
}

impl Connection {
    /// The first connection, up (refused if its events were taken
    /// already).
    pub(super) fn new(
        connector: Connector,
        control: ControlClient,
        testing_network: bool,
    ) -> anyhow::Result<Self> {
        let events = control
            .take_events()
            .context("the control connection's events were already taken")?;
        Ok(Connection {
            state: State::Up {
                control: Arc::new(control),
                events,
            },
            connector: Some(connector),
            testing_network,
            epoch: 0,
        })
    }

    /// The connection, while it is up.
    pub(super) fn control(&self) -> Option<&Arc<ControlClient>> {
        match &self.state {
            State::Up { control, .. } => Some(control),
            State::Down(_) => None,
        }
    }

    /// Which connection this is: 0 for the first, one more for each
    /// made again.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether tor runs a testing network.
    pub(super) fn testing_network(&self) -> bool {
        self.testing_network
    }

    /// Whether `epoch`'s connection is this one, and still open: an
    /// error on it is news, on another was said when it ended.
    pub(super) fn is_current(&self, epoch: u64) -> bool {
        epoch == self.epoch && self.control().is_some_and(|c| c.closed().is_none())
    }

    /// The next thing the connection has to say.
    pub(super) async fn next(&mut self) -> LinkEvent {
        match &mut self.state {
            State::Up { events, .. } => match events.recv().await {
                Some(reply) => LinkEvent::Tor(reply),
                None => LinkEvent::Lost,
            },
            State::Down(task) => LinkEvent::Back(task.await),
        }
    }

    /// Goes down and starts reconnecting; says why the connection ended
    /// (`None` if it was down already).
    pub(super) fn lost(&mut self) -> Option<Lost> {
        let control = self.control()?;
        let closed = control.closed();
        let lost = Lost {
            reason: closed
                .as_ref()
                .map_or_else(|| "the event stream ended".to_owned(), |e| error_chain(e)),
            kind: closed.as_ref().map_or("closed", disconnect_kind),
        };
        tracing::warn!(
            "lost the control connection to the management tor at {}: {}; reconnecting",
            control.addr(),
            lost.reason
        );
        if let Some(connector) = self.connector.take() {
            self.reconnect(connector);
        }
        Some(lost)
    }

    /// Takes the connection the task made, with commands timing out after
    /// `control_timeout`: the network it saw and tor's SOCKS listener, or
    /// `None` if it cannot be used (and another is being made).
    pub(super) fn back(
        &mut self,
        back: Box<Reconnected>,
        control_timeout: Duration,
    ) -> Option<(NetworkView, Option<SocksListener>)> {
        let Reconnected {
            mut connector,
            control,
            view,
            socks,
        } = *back;
        set_timeout(&mut connector, control_timeout);
        let Some(events) = control.take_events() else {
            // A fresh connection always has its events; should it not,
            // try another rather than wait on a finished task.
            self.reconnect(connector);
            return None;
        };
        self.connector = Some(connector);
        self.epoch += 1;
        self.state = State::Up {
            control: Arc::new(control),
            events,
        };
        Some((view, socks))
    }

    /// Makes commands of the next connection time out after `timeout`.
    pub(super) fn set_control_timeout(&mut self, timeout: Duration) {
        if let Some(connector) = &mut self.connector {
            set_timeout(connector, timeout);
        }
    }

    /// Stops reconnecting, if it was.
    pub(super) fn stop(&self) {
        if let State::Down(task) = &self.state {
            task.abort();
        }
    }

    fn reconnect(&mut self, connector: Connector) {
        self.state = State::Down(tokio::spawn(reconnect(connector, self.testing_network)));
    }
}

/// Makes `connector`'s commands time out after `timeout`.
fn set_timeout(connector: &mut Connector, timeout: Duration) {
    connector.set_options(torctl::Options {
        command_timeout: timeout,
        ..torctl::Options::default()
    });
}

/// How long the first connection may stay silent before the operator is
/// told (it fails at the control timeout).
const SLOW_START_NOTICE: Duration = Duration::from_secs(10);

/// The first connection, ready for the balancer.
pub(super) struct Connected {
    /// The connection.
    pub control: ControlClient,
    /// Whether tor runs a testing network (a time period is one SRV run).
    pub testing_network: bool,
    /// The network as tor's consensus has it.
    pub view: NetworkView,
    /// tor's SOCKS port for probes, if it has one.
    pub socks: Option<SocksListener>,
}

/// Connects to the management tor, saying so if it is slow to answer
/// (within `control_timeout`, the connector's), asks whether it runs a
/// testing network, and waits for a usable consensus.
pub(super) async fn connect_first(
    connector: &Connector,
    control_timeout: Duration,
) -> anyhow::Result<Connected> {
    let connected = {
        let connect = connector.connect();
        tokio::pin!(connect);
        tokio::select! {
            connected = &mut connect => connected,
            () = tokio::time::sleep(SLOW_START_NOTICE) => {
                tracing::warn!(
                    "no answer from the management tor at {} after {SLOW_START_NOTICE:?} (is it tor? is it overloaded?); waiting up to control-timeout ({control_timeout:?}) per command",
                    connector.addr(),
                );
                connect.await
            }
        }
    };
    let control = connected
        .with_context(|| format!("connecting to the management tor at {}", connector.addr()))?;
    tracing::info!("connected to the management tor at {}", connector.addr());
    let testing = control
        .request(&Command::getconf(["TestingTorNetwork"]))
        .await
        .context("asking whether tor runs a testing network")?;
    let testing_network = testing.value("TestingTorNetwork") == Some("1");
    if testing_network {
        tracing::info!(
            "the management tor runs on a testing network: time periods are one SRV run long"
        );
    }
    let view = wait_for_view(&control, testing_network).await?;
    let socks = probe::socks_listener(&control).await;
    Ok(Connected {
        control,
        testing_network,
        view,
        socks,
    })
}

/// What the reconnecting task hands back.
pub(super) struct Reconnected {
    /// Kept for the next time the connection is lost.
    pub connector: Connector,
    /// The new connection.
    pub control: ControlClient,
    /// The network as tor's consensus had it then.
    pub view: NetworkView,
    /// tor's SOCKS port for probes, if it has one.
    pub socks: Option<SocksListener>,
}

/// Reconnects with backoff and reads the consensus, as often as it takes.
pub(super) async fn reconnect(mut connector: Connector, testing_network: bool) -> Box<Reconnected> {
    loop {
        let control = connector
            .reconnect(|error, delay| {
                tracing::warn!(
                    "cannot reach the management tor: {}; trying again in {delay:.1?}",
                    error_chain(error)
                );
            })
            .await;
        match wait_for_view(&control, testing_network).await {
            Ok(view) => {
                let socks = probe::socks_listener(&control).await;
                return Box::new(Reconnected {
                    connector,
                    control,
                    view,
                    socks,
                });
            }
            // Lost again: the next round reconnects.
            Err(e) => tracing::warn!("{e:#}"),
        }
    }
}

/// Loads the network view, waiting (and saying so once) while tor has no
/// consensus.
pub(super) async fn wait_for_view(
    control: &ControlClient,
    testing_network: bool,
) -> anyhow::Result<NetworkView> {
    let mut said = false;
    loop {
        match load_view(control, testing_network).await {
            Ok(view) => return Ok(view),
            Err(ViewError::NoConsensus) => {
                if !said {
                    tracing::warn!("the management tor has no consensus yet; waiting for one");
                    said = true;
                }
            }
            Err(ViewError::Unusable(reason)) => {
                if !said {
                    tracing::warn!(
                        "waiting for usable directory information: {}",
                        error_chain(&reason)
                    );
                    said = true;
                }
            }
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(CONSENSUS_POLL).await;
    }
}

/// A short name for why a control connection ended, for the metrics.
fn disconnect_kind(error: &torctl::Error) -> &'static str {
    match error {
        torctl::Error::Timeout { .. } => "timeout",
        torctl::Error::Protocol(_) | torctl::Error::UnexpectedReply(_) => "protocol",
        torctl::Error::EventQueueFull { .. } => "event_queue_full",
        torctl::Error::Io { .. } => "io",
        _ => "closed",
    }
}
