//! The manager's daemon: the tokio shell around the [`Balancer`].
//!
//! It owns the sockets and the clock, and decides nothing. Each thing
//! that happens (a tor event, a command's result, an agent's message, a
//! tick, a signal, a status or metrics client's question) is read, the
//! clock is read once, and it goes to the balancer as an input; then the
//! balancer's actions are carried out: fetches and posts become control
//! commands, pipelined up to [`MAX_IN_FLIGHT`] at once while events keep
//! being read; answers go to agents; notices go to the log and the
//! counters. Status reports and gauges are made from the balancer's state
//! when a client asks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use onionlb_core::agent::ToAgent;
use onionlb_core::balancer::{
    Action, AgentReport, Balancer, Configuration, DrainState, HsDirAnswer, Input, InstanceSpec,
    Level, Notice, Now, Request, ServiceSpec,
};
use onionlb_core::consensus::RsaId;
use onionlb_core::network::NetworkView;
use onionlb_core::{error_chain, health, MasterKey, OnionAddress};
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use torctl::{Command, Connector, ControlClient, Event, Events, HsDescAction, Reply};

use crate::answer::{Asker, Question};
use crate::config::Config;
use crate::manager::agent_onion::AgentOnion;
use crate::manager::agents::{AgentEvent, AgentKeys, AgentServer};
use crate::manager::network::{load_view, ViewError};
use crate::manager::probe::{self, SocksListener};
use crate::manager::snapshot::{self, ControlHealth, Reloads};
use crate::manager::ConfigSource;
use crate::metrics::Metrics;

/// The events the manager follows: fetched descriptors, upload results,
/// new consensuses, and circuits (a probe's rendezvous circuit torn down
/// by the instance's end).
pub const EVENTS: [&str; 4] = ["HS_DESC", "HS_DESC_CONTENT", "STATUS_CLIENT", "CIRC"];
/// How often the balancer hears that time passed.
const TICK: Duration = Duration::from_secs(1);
/// How long to wait for a consensus before asking again.
const CONSENSUS_POLL: Duration = Duration::from_secs(5);
/// How long the first connection may stay silent before the operator is
/// told (it fails at the control timeout).
const SLOW_START_NOTICE: Duration = Duration::from_secs(10);
/// Control commands in flight at once. More wait in the backlog, which
/// holds at most what the balancer asks in one tick (its fetches are
/// capped per tick) and its publications.
const MAX_IN_FLIGHT: usize = 64;

/// The running manager.
pub struct Daemon {
    source: ConfigSource,
    /// Held by the reconnecting task while the link is down.
    connector: Option<Connector>,
    config: Config,
    testing_network: bool,
    balancer: Balancer<StdRng>,
    link: Link,
    /// Counts connections, so results of an old one are told apart.
    epoch: u64,
    control: ControlHealth,
    reloads: Reloads,
    metrics: Arc<Metrics>,
    asker: Asker,
    questions: mpsc::Receiver<Question>,
    /// The agent keys the configuration names, for the agent listeners.
    agent_keys: watch::Sender<AgentKeys>,
    agent_events: mpsc::Receiver<AgentEvent>,
    /// The agent listeners (they stop when dropped).
    _agents: AgentServer,
    /// The agents' onion service, if remote agents are configured.
    agent_onion: Option<Arc<AgentOnion>>,
    /// Commands in flight and other work on the connection.
    work: JoinSet<Done>,
    in_flight: usize,
    backlog: VecDeque<Request>,
    /// A consensus is being read; `true` inside if another arrived since.
    loading_view: Option<bool>,
    /// The agent push being answered.
    push_reply: Option<(OnionAddress, oneshot::Sender<ToAgent>)>,
    /// Where probes go: the management tor's SOCKS port, as it said at
    /// the last connection.
    socks: Option<Arc<SocksListener>>,
}

/// The control connection.
enum Link {
    Up {
        control: Arc<ControlClient>,
        events: Events,
    },
    /// Lost; a task reconnects and reads the consensus.
    Down(JoinHandle<Box<Reconnected>>),
}

/// What the reconnecting task hands back.
struct Reconnected {
    connector: Connector,
    control: ControlClient,
    view: NetworkView,
    socks: Option<SocksListener>,
}

/// Work on a connection that finished.
enum Done {
    Command {
        epoch: u64,
        request: Request,
        result: Result<Reply, torctl::Error>,
    },
    View {
        epoch: u64,
        result: Result<NetworkView, ViewError>,
    },
    AgentOnion(anyhow::Result<()>),
    Probe {
        instance: OnionAddress,
        outcome: Result<(), onionlb_core::probe::Failure>,
    },
}

/// What woke the loop.
enum Wake {
    Signal(Signal),
    Tor(Reply),
    Lost,
    Back(Result<Box<Reconnected>, tokio::task::JoinError>),
    Done(Result<Done, tokio::task::JoinError>),
    Agent(AgentEvent),
    Question(Question),
    Tick,
}

impl Daemon {
    /// Connects to the management tor (once: a manager that cannot reach
    /// its tor at start-up is misconfigured, and says so), waits for a
    /// consensus (saying so), and is ready to run.
    pub async fn start(
        connector: Connector,
        source: ConfigSource,
        config: Config,
        keys: Vec<MasterKey>,
    ) -> anyhow::Result<Self> {
        let connected = {
            let connect = connector.connect();
            tokio::pin!(connect);
            tokio::select! {
                connected = &mut connect => connected,
                () = tokio::time::sleep(SLOW_START_NOTICE) => {
                    tracing::warn!(
                        "no answer from the management tor at {} after {SLOW_START_NOTICE:?} (is it tor? is it overloaded?); waiting up to control-timeout ({:?}) per command",
                        connector.addr(),
                        config.control_timeout
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
        match (&socks, config.probes.policy.is_some()) {
            (Some(socks), true) => tracing::info!(
                "probing instances without an agent through the management tor's SOCKS port {socks}"
            ),
            (None, true) => tracing::warn!(
                "the management tor has no SOCKS port on loopback or a Unix socket: instances without an agent cannot be probed, and a dead one stays in the master descriptors until its descriptor expires; add `SocksPort 127.0.0.1:9050` (or set probes.interval: 0 to say this is meant)"
            ),
            (_, false) => {}
        }
        let now = clock();
        let mut balancer = Balancer::new(
            configuration(&config, keys),
            rand::make_rng::<StdRng>(),
            now,
        );
        balancer.handle(now, Input::Network(view));
        balancer.handle(now, Input::CanProbe(socks.is_some()));
        balancer.handle(now, Input::ControlUp);
        let (agent_keys, keys_seen) = watch::channel(agent_keys(&config));
        let (events_in, agent_events) = mpsc::channel(256);
        let agents = AgentServer::start(
            config.agents.socket.as_deref(),
            config.agents.listen,
            keys_seen,
            events_in,
        )
        .await?;
        let agent_onion = match (&config.agents.onion_key, config.agents.listen) {
            (Some(path), Some(listen)) => {
                let onion = AgentOnion::load_or_create(path, listen)?;
                onion.publish(&control, &agent_clients(&config)).await?;
                Some(Arc::new(onion))
            }
            _ => None,
        };
        let events = control
            .take_events()
            .context("the control connection's events were already taken")?;
        let (asker, questions) = Asker::new();
        Ok(Daemon {
            source,
            connector: Some(connector),
            config,
            testing_network,
            balancer,
            link: Link::Up {
                control: Arc::new(control),
                events,
            },
            epoch: 0,
            control: ControlHealth {
                connected: true,
                reconnects: 0,
                down_because: None,
            },
            reloads: Reloads::default(),
            metrics: Arc::new(Metrics::default()),
            asker,
            questions,
            agent_keys,
            agent_events,
            _agents: agents,
            agent_onion,
            work: JoinSet::new(),
            in_flight: 0,
            backlog: VecDeque::new(),
            loading_view: None,
            push_reply: None,
            socks: socks.map(Arc::new),
        })
    }

    /// Where status and metrics clients ask.
    pub fn asker(&self) -> Asker {
        self.asker.clone()
    }

    /// The metrics, for the endpoint to serve.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs until SIGINT or SIGTERM, which it honours wherever it is
    /// waiting; SIGHUP reloads the configuration. When the management tor
    /// goes away (restart, crash) or stops answering within the control
    /// timeout, keeps its state, reconnects with backoff and goes on where
    /// it was.
    pub async fn run(mut self, mut stop: StopSignals) -> anyhow::Result<()> {
        for service in self.balancer.services() {
            tracing::info!(
                "balancing {} over {} instance(s)",
                service.address(),
                service.members().len()
            );
        }
        self.carry_out();
        let mut tick = tokio::time::interval(TICK);
        // A tick that overran is not made up for with a burst of ticks.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // In this order: a signal first; then what tor sent, so that
            // events never wait behind other work; then results, agents,
            // questions and the tick.
            let wake = tokio::select! {
                biased;
                signal = stop.next() => Wake::Signal(signal),
                wake = self.link.next() => wake,
                Some(done) = self.work.join_next() => Wake::Done(done),
                Some(event) = self.agent_events.recv() => Wake::Agent(event),
                Some(question) = self.questions.recv() => Wake::Question(question),
                _ = tick.tick() => Wake::Tick,
            };
            let now = clock();
            match wake {
                Wake::Signal(Signal::Stop) => break,
                Wake::Signal(Signal::Reload) => self.reload(now),
                Wake::Tor(reply) => self.on_tor_event(&reply, now),
                Wake::Lost => self.connection_lost(now),
                Wake::Back(Ok(back)) => self.reconnected(back, now),
                Wake::Back(Err(e)) => {
                    return Err(anyhow::Error::new(e).context("the reconnecting task failed"))
                }
                Wake::Done(Ok(done)) => self.on_done(done, now),
                Wake::Done(Err(e)) => {
                    return Err(anyhow::Error::new(e).context("a control command's task failed"))
                }
                Wake::Agent(event) => self.on_agent(event, now),
                Wake::Question(question) => self.answer(question, now),
                Wake::Tick => self.balancer.handle(now, Input::Tick),
            }
            self.carry_out();
        }
        if let Link::Down(task) = &self.link {
            task.abort();
        }
        self.work.abort_all();
        tracing::info!("stopping");
        Ok(())
    }

    /// Hands the balancer what tor said.
    fn on_tor_event(&mut self, reply: &Reply, now: Now) {
        match Event::parse(reply) {
            Event::HsDescContent(content) => {
                if let Ok(instance) = content.address.parse::<OnionAddress>() {
                    let text = &content.descriptor;
                    self.balancer.handle(now, Input::Fetched { instance, text });
                }
            }
            Event::HsDesc(event) => {
                let answer = match event.action {
                    HsDescAction::Uploaded => HsDirAnswer::Uploaded,
                    HsDescAction::Failed => HsDirAnswer::Failed(event.reason.as_deref()),
                    _ => return,
                };
                // Compared as keys: rendering an address hashes, and there
                // are thousands of events per round at a thousand services.
                let (Ok(address), Some(Ok(hsdir))) = (
                    event.address.parse::<OnionAddress>(),
                    event.hsdir.as_deref().map(str::parse::<RsaId>),
                ) else {
                    return;
                };
                self.balancer.handle(
                    now,
                    Input::HsDirAnswer {
                        address,
                        hsdir,
                        answer,
                    },
                );
            }
            Event::Circ(circ) => {
                if let Some(Ok(instance)) = circ.rendezvous_torn_down().map(str::parse) {
                    self.balancer
                        .handle(now, Input::RendezvousLost { instance });
                }
            }
            Event::StatusClient { action } if action == "CONSENSUS_ARRIVED" => self.load_view(),
            _ => {}
        }
    }

    /// Reads the consensus again, in a task; one at a time.
    fn load_view(&mut self) {
        if let Some(again) = &mut self.loading_view {
            *again = true;
            return;
        }
        let Link::Up { control, .. } = &self.link else {
            return;
        };
        let control = Arc::clone(control);
        let (epoch, testing) = (self.epoch, self.testing_network);
        self.work.spawn(async move {
            Done::View {
                epoch,
                result: load_view(&control, testing).await,
            }
        });
        self.loading_view = Some(false);
    }

    /// The control connection ended: says why, once, and reconnects in a
    /// task.
    fn connection_lost(&mut self, now: Now) {
        let Link::Up { control, .. } = &self.link else {
            return;
        };
        let closed = control.closed();
        let reason = closed
            .as_ref()
            .map_or_else(|| "the event stream ended".to_owned(), |e| error_chain(e));
        tracing::warn!(
            "lost the control connection to the management tor at {}: {reason}; reconnecting",
            control.addr()
        );
        self.metrics
            .disconnected(closed.as_ref().map_or("closed", disconnect_kind));
        self.metrics.set_control_connected(false);
        self.control.connected = false;
        self.control.down_because = Some(reason);
        self.balancer.handle(now, Input::ControlDown);
        self.backlog.clear();
        self.loading_view = None;
        let Some(connector) = self.connector.take() else {
            return;
        };
        let testing = self.testing_network;
        self.link = Link::Down(tokio::spawn(reconnect(connector, testing)));
    }

    /// A new connection, with a fresh consensus: the balancer fetches
    /// everything and resends what was in flight.
    fn reconnected(&mut self, back: Box<Reconnected>, now: Now) {
        let Reconnected {
            mut connector,
            control,
            view,
            socks,
        } = *back;
        connector.set_options(torctl::Options {
            command_timeout: self.config.control_timeout,
            ..torctl::Options::default()
        });
        let Some(events) = control.take_events() else {
            // A fresh connection always has its events; should it not,
            // try another rather than wait on a finished task.
            let testing = self.testing_network;
            self.link = Link::Down(tokio::spawn(reconnect(connector, testing)));
            return;
        };
        self.connector = Some(connector);
        self.epoch += 1;
        self.link = Link::Up {
            control: Arc::new(control),
            events,
        };
        self.control.connected = true;
        self.control.down_because = None;
        self.control.reconnects += 1;
        self.metrics.reconnected();
        self.metrics.set_control_connected(true);
        tracing::info!("reconnected to the management tor; fetching instance descriptors");
        self.balancer.handle(now, Input::Network(view));
        self.balancer.handle(now, Input::CanProbe(socks.is_some()));
        self.socks = socks.map(Arc::new);
        self.balancer.handle(now, Input::ControlUp);
        self.publish_agent_onion();
    }

    /// A command or other work finished.
    fn on_done(&mut self, done: Done, now: Now) {
        match done {
            Done::Command {
                epoch,
                request,
                result,
            } => {
                self.in_flight -= 1;
                self.send_backlog();
                let Err(error) = result else {
                    return;
                };
                let current = epoch == self.epoch
                    && matches!(&self.link, Link::Up { control, .. } if control.closed().is_none());
                // A lost connection is said once, where it is noticed.
                if !current {
                    return;
                }
                let reason = error_chain(&error);
                match request {
                    Request::Fetch { instance, .. } => {
                        tracing::warn!("{instance}: HSFETCH failed: {reason}");
                    }
                    Request::Post {
                        service,
                        slot,
                        hsdirs,
                        ..
                    } => {
                        tracing::error!("{service}: HSPOST failed: {reason}");
                        self.balancer.handle(
                            now,
                            Input::PostRefused {
                                service,
                                slot,
                                hsdirs,
                                reason,
                            },
                        );
                    }
                    _ => {}
                }
            }
            Done::View { epoch, result } => {
                let again = self.loading_view.take() == Some(true);
                if epoch == self.epoch {
                    match result {
                        Ok(view) => self.balancer.handle(now, Input::Network(view)),
                        Err(e) => {
                            tracing::warn!("keeping the previous consensus: {}", error_chain(&e));
                        }
                    }
                }
                if again {
                    self.load_view();
                }
            }
            Done::AgentOnion(Err(e)) => tracing::error!("{e:#}"),
            Done::AgentOnion(Ok(())) => {}
            Done::Probe { instance, outcome } => {
                self.metrics.probed(match &outcome {
                    Ok(()) => "passed",
                    Err(failure) => failure.kind(),
                });
                self.balancer
                    .handle(now, Input::Probed { instance, outcome });
            }
        }
    }

    /// Hands the balancer what an agent said.
    fn on_agent(&mut self, event: AgentEvent, now: Now) {
        let (instance, report) = match event {
            AgentEvent::Connected { instance, peer } => (instance, AgentReport::Connected { peer }),
            AgentEvent::Disconnected { instance } => (instance, AgentReport::Disconnected),
            AgentEvent::Tor { instance, process } => (instance, AgentReport::Tor(process)),
            AgentEvent::Health { instance, health } => (instance, AgentReport::Health(health)),
            AgentEvent::Drain {
                instance,
                drain,
                reply,
            } => {
                let answer = match self.balancer.drain(instance, drain, now) {
                    Ok(()) => ToAgent::Accepted(self.drain_word(instance, now)),
                    Err(refused) => ToAgent::Rejected(refused.to_string()),
                };
                let _ = reply.send(answer);
                return;
            }
            AgentEvent::Descriptor {
                instance,
                text,
                reply,
            } => {
                self.push_reply = Some((instance, reply));
                let report = AgentReport::Pushed { text: &text };
                self.balancer.handle(now, Input::Agent { instance, report });
                return;
            }
        };
        self.balancer.handle(now, Input::Agent { instance, report });
    }

    /// Carries out an admin request (drain, undrain, how far a drain has
    /// come) and says how the instance stands.
    fn admin(&mut self, request: crate::admin::Request, now: Now) -> crate::admin::Answer {
        use crate::admin::{Answer, Request};
        let name = match &request {
            Request::Drain { instance, .. } | Request::State { instance } => instance.clone(),
        };
        let Some((address, label)) = self.resolve(&name) else {
            return Answer {
                instance: name.clone(),
                error: Some(format!("no instance named {name} is configured")),
                ..Answer::default()
            };
        };
        let mut answer = Answer {
            instance: label,
            ..Answer::default()
        };
        if let Request::Drain { drain, .. } = request {
            if let Err(refused) = self.balancer.drain(address, drain, now) {
                answer.error = Some(refused.to_string());
            }
        }
        let (state, until) = self.drain_stand(address, now);
        answer.state = state.into();
        answer.clients_may_try_until = until;
        answer
    }

    /// How `instance`'s drain stands: `serving`, `draining` or `drained`,
    /// and once drained until when older client copies may try it (UTC;
    /// see [`DrainState::Drained`]).
    fn drain_stand(&self, instance: OnionAddress, now: Now) -> (&'static str, Option<String>) {
        match self.balancer.drain_state(&instance, now.wall) {
            None => ("serving", None),
            Some(DrainState::Draining) => ("draining", None),
            Some(DrainState::Drained { until }) => {
                ("drained", Some(crate::status::report::timestamp(until)))
            }
        }
    }

    /// [`Daemon::drain_stand`] in words, for an agent: `serving`,
    /// `draining`, or `drained until TIME`.
    fn drain_word(&self, instance: OnionAddress, now: Now) -> String {
        match self.drain_stand(instance, now) {
            (state, Some(until)) => format!("{state} until {until}"),
            (state, None) => state.into(),
        }
    }

    /// The address and name of the instance configured as `name` (its
    /// `name:` or its address).
    fn resolve(&self, name: &str) -> Option<(OnionAddress, String)> {
        let by_address = name.parse::<OnionAddress>().ok();
        self.config
            .services
            .iter()
            .flat_map(|s| &s.instances)
            .find(|i| i.name.as_deref() == Some(name) || Some(i.address) == by_address)
            .map(|i| (i.address, i.label()))
    }

    /// Answers a status, metrics or admin client from the balancer's
    /// state (an admin request may change it).
    fn answer(&mut self, question: Question, now: Now) {
        match question {
            Question::Status(reply) => {
                let report = snapshot::report(
                    &self.balancer,
                    &self.agent_keys.borrow(),
                    self.control.clone(),
                    &self.reloads,
                    now.wall,
                    now.mono,
                );
                let _ = reply.send(Arc::new(report));
            }
            Question::Gauges(reply) => {
                self.metrics
                    .set_gauges(&snapshot::gauges(&self.balancer, now.wall));
                self.metrics.set_control_connected(self.control.connected);
                let _ = reply.send(());
            }
            Question::Admin(request, reply) => {
                let _ = reply.send(self.admin(request, now));
            }
        }
    }

    /// Does what the balancer asked.
    fn carry_out(&mut self) {
        for action in self.balancer.take_actions() {
            match action {
                Action::Send(request) => {
                    if let Request::Post {
                        service, hsdirs, ..
                    } = &request
                    {
                        let name = service.to_string();
                        for dir in hsdirs {
                            self.metrics.upload(&name, &dir.to_string(), "attempted");
                        }
                    }
                    self.backlog.push_back(request);
                }
                Action::Answer { instance, answer } => match self.push_reply.take() {
                    Some((pushed, reply)) if pushed == instance => {
                        let _ = reply.send(answer);
                    }
                    other => self.push_reply = other,
                },
                Action::Probe {
                    instance,
                    port,
                    timeout,
                } => self.probe(instance, port, timeout),
                Action::Notice(notice) => self.tell(&notice),
                _ => {}
            }
        }
        self.send_backlog();
    }

    /// Probes `instance`'s `port` in a task (the balancer bounds how many
    /// are in flight); without a SOCKS port, the probe fails at once.
    fn probe(&mut self, instance: OnionAddress, port: u16, timeout: Duration) {
        let socks = self.socks.clone();
        self.work.spawn(async move {
            let outcome = match socks {
                Some(socks) => probe::probe(&socks, instance, port, timeout).await,
                None => Err(onionlb_core::probe::Failure::Unreachable),
            };
            Done::Probe { instance, outcome }
        });
    }

    /// Sends commands from the backlog while there is room in flight.
    fn send_backlog(&mut self) {
        let Link::Up { control, .. } = &self.link else {
            return;
        };
        while self.in_flight < MAX_IN_FLIGHT {
            let Some(request) = self.backlog.pop_front() else {
                return;
            };
            let command = match &request {
                Request::Fetch { instance, hsdirs } => Command::new("HSFETCH")
                    .arg(instance.without_suffix())
                    .args(hsdirs.iter().map(|fp| format!("SERVER=${fp}"))),
                // tor 0.4.x answers an HSPOST without HSADDRESS= never.
                Request::Post {
                    service,
                    hsdirs,
                    text,
                    ..
                } => Command::new("HSPOST")
                    .args(hsdirs.iter().map(|fp| format!("SERVER=${fp}")))
                    .arg(format!("HSADDRESS={}", service.without_suffix()))
                    .data(&**text),
                _ => continue,
            };
            let control = Arc::clone(control);
            let epoch = self.epoch;
            self.in_flight += 1;
            self.work.spawn(async move {
                let result = control.request(&command).await;
                Done::Command {
                    epoch,
                    request,
                    result,
                }
            });
        }
    }

    /// Logs a notice at its level, and counts what metrics count.
    fn tell(&self, notice: &Notice) {
        match notice {
            Notice::FetchFailed { instance } => self.metrics.fetch_failed(instance),
            Notice::DescriptorRefused { instance, rejected } => {
                self.metrics.refused(instance, rejected.kind());
            }
            Notice::Publishing {
                service,
                slot,
                reason,
                ..
            } => {
                self.metrics
                    .published(&service.to_string(), slot.label(), reason.label());
            }
            Notice::UploadAccepted { service, hsdir } => {
                self.metrics
                    .upload(&service.to_string(), &hsdir.to_string(), "accepted");
            }
            Notice::UploadFailed { service, hsdir, .. } => {
                self.metrics
                    .upload(&service.to_string(), &hsdir.to_string(), "failed");
            }
            _ => {}
        }
        match notice.level() {
            Level::Debug => tracing::debug!("{notice}"),
            Level::Info => tracing::info!("{notice}"),
            Level::Warn => tracing::warn!("{notice}"),
            _ => tracing::error!("{notice}"),
        }
    }

    /// Reads the configuration again (SIGHUP). Services and instances that
    /// stay keep what was fetched and published for them; an invalid
    /// configuration changes nothing and says why.
    fn reload(&mut self, now: Now) {
        let (config, keys) = match self.source.load() {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!("not reloading, keeping the running configuration: {e}");
                self.reloads.refused += 1;
                self.reloads.refused_because = Some(format!("{e:#}"));
                self.metrics.reloaded("refused");
                return;
            }
        };
        self.reloads.applied += 1;
        self.reloads.refused_because = None;
        self.metrics.reloaded("applied");
        if crate::status::socket_location(&config) != crate::status::socket_location(&self.config) {
            tracing::warn!("a new status-socket-location takes effect at the next start");
        }
        let (old_agents, new_agents) = (&self.config.agents, &config.agents);
        if (&old_agents.socket, old_agents.listen, &old_agents.onion_key)
            != (&new_agents.socket, new_agents.listen, &new_agents.onion_key)
        {
            tracing::warn!(
                "a new agents socket, listen or onion-key takes effect at the next start"
            );
        }
        if config.control_timeout != self.config.control_timeout {
            tracing::info!(
                "a new control-timeout takes effect at the next connection to the management tor"
            );
            if let Some(connector) = &mut self.connector {
                connector.set_options(torctl::Options {
                    command_timeout: config.control_timeout,
                    ..torctl::Options::default()
                });
            }
        }
        let clients_changed = agent_clients(&config) != agent_clients(&self.config);
        self.agent_keys.send_replace(agent_keys(&config));
        self.balancer
            .handle(now, Input::Configure(configuration(&config, keys)));
        self.config = config;
        if clients_changed {
            self.publish_agent_onion();
        }
        tracing::info!(
            "reloaded configuration {}: {} service(s)",
            self.config.path.display(),
            self.balancer.services().len()
        );
    }

    /// Adds the agents' onion service to the management tor, if there is
    /// one, in a task; a failure is said, and agents keep their local
    /// socket.
    fn publish_agent_onion(&mut self) {
        let (Some(onion), Link::Up { control, .. }) = (&self.agent_onion, &self.link) else {
            return;
        };
        let (onion, control) = (Arc::clone(onion), Arc::clone(control));
        let clients = agent_clients(&self.config);
        self.work
            .spawn(async move { Done::AgentOnion(onion.publish(&control, &clients).await) });
    }
}

impl Link {
    /// The next thing the link has to say: an event, the end of the
    /// connection, or (while down) the new connection.
    async fn next(&mut self) -> Wake {
        match self {
            Link::Up { events, .. } => match events.recv().await {
                Some(reply) => Wake::Tor(reply),
                None => Wake::Lost,
            },
            Link::Down(task) => Wake::Back(task.await),
        }
    }
}

/// Both clocks, read once.
fn clock() -> Now {
    Now {
        wall: SystemTime::now(),
        mono: Instant::now(),
    }
}

/// Reconnects with backoff and reads the consensus, as often as it takes.
async fn reconnect(mut connector: Connector, testing_network: bool) -> Box<Reconnected> {
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

/// The balancer's configuration from the operator's.
fn configuration(config: &Config, keys: Vec<MasterKey>) -> Configuration {
    Configuration {
        services: config
            .services
            .iter()
            .zip(keys)
            .map(|(service, key)| ServiceSpec {
                key,
                instances: service
                    .instances
                    .iter()
                    .map(|i| InstanceSpec {
                        address: i.address,
                        name: i.name.clone(),
                        probe_port: i.probe_port.unwrap_or(config.probes.port),
                    })
                    .collect(),
                max_intro_points: service.intro_point_limit(config),
            })
            .collect(),
        fetch_interval: config.fetch_interval,
        health: health::Policy {
            heartbeat_timeout: config.agents.heartbeat_timeout,
            ..health::Policy::default()
        },
        probe: config.probes.policy,
    }
}

/// The agent key of every instance that has one.
fn agent_keys(config: &Config) -> AgentKeys {
    Arc::new(
        config
            .services
            .iter()
            .flat_map(|s| &s.instances)
            .filter_map(|i| Some((i.address, i.agent_key?)))
            .collect(),
    )
}

/// The client keys of the agents that use the onion channel, sorted and
/// without repeats.
fn agent_clients(config: &Config) -> Vec<String> {
    let mut clients: Vec<String> = config
        .services
        .iter()
        .flat_map(|s| &s.instances)
        .filter_map(|i| i.agent_client_auth.clone())
        .collect();
    clients.sort();
    clients.dedup();
    clients
}

/// Loads the network view, waiting (and saying so once) while tor has no
/// consensus.
async fn wait_for_view(
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

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Stop,
    Reload,
}

/// The signals the manager acts on: SIGINT and SIGTERM stop it wherever
/// it is waiting; SIGHUP reloads the configuration.
pub struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Takes over SIGINT, SIGTERM and SIGHUP from their default actions.
    pub fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hangup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Resolves when SIGINT or SIGTERM arrives.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }

    /// The next signal of the three. A SIGHUP that arrives while only
    /// [`StopSignals::recv`] waits is kept until this is called.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.terminate.recv() => Signal::Stop,
            _ = self.interrupt.recv() => Signal::Stop,
            _ = self.hangup.recv() => Signal::Reload,
        }
    }

    /// `work`'s result, or `None` if a stop signal came first.
    pub async fn unless_stopped<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            result = work => Some(result),
            () = self.recv() => None,
        }
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
