//! The manager's daemon: the tokio shell around the [`Balancer`].
//!
//! It owns the sockets and the clock, and decides nothing. Each thing
//! that happens (a tor event, a command's result, an agent's message, a
//! tick, a signal, a status or metrics client's question) is read, the
//! clock is read once, and it goes to the balancer as an input; then the
//! balancer's actions are carried out: fetches and posts become control
//! commands, pipelined (the `commands` module) while events keep being read;
//! answers go to agents; notices go to the log and the counters. Status reports and gauges are made from the balancer's state
//! when a client asks.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use onionlb_core::agent::ToAgent;
use onionlb_core::balancer::{Action, AgentReport, Balancer, Input, Now, Request};
use onionlb_core::network::NetworkView;
use onionlb_core::{error_chain, MasterKey, OnionAddress};
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use torctl::{Connector, Event, Reply};

use crate::answer::{Asker, Question};
use crate::config::Config;
use crate::manager::agent_onion::AgentOnion;
use crate::manager::agents::{AgentEvent, AgentKeys, AgentServer};
use crate::manager::commands::Pipeline;
use crate::manager::drain;
use crate::manager::link::{connect_first, Connected, Connection, LinkEvent, Reconnected};
use crate::manager::network::{load_view, ViewError};
use crate::manager::notices;
use crate::manager::probe::{self, SocksListener};
use crate::manager::settings::{agent_clients, agent_keys, applied_later, configuration};
use crate::manager::signals::{Signal, StopSignals};
use crate::manager::snapshot::{self, ControlHealth, Reloads};
use crate::manager::tor_events::{heard, Heard};
use crate::manager::ConfigSource;
use crate::metrics::Metrics;

/// How often the balancer hears that time passed.
const TICK: Duration = Duration::from_secs(1);

/// The running manager.
pub struct Daemon {
    source: ConfigSource,
    config: Config,
    balancer: Balancer<StdRng>,
    link: Connection,
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
    commands: Pipeline,
    /// A consensus is being read; `true` inside if another arrived since.
    loading_view: Option<bool>,
    /// The agent push being answered.
    push_reply: Option<(OnionAddress, oneshot::Sender<ToAgent>)>,
    /// Where probes go: the management tor's SOCKS port, as it said at
    /// the last connection.
    socks: Option<Arc<SocksListener>>,
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
    Link(LinkEvent),
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
        let Connected {
            control,
            testing_network,
            view,
            socks,
        } = connect_first(&connector, config.control_timeout).await?;
        probe::tell_where_probes_go(socks.as_ref(), config.probes.policy.is_some());
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
        let link = Connection::new(connector, control, testing_network)?;
        let (asker, questions) = Asker::new();
        Ok(Daemon {
            source,
            config,
            balancer,
            link,
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
            commands: Pipeline::default(),
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
                event = self.link.next() => Wake::Link(event),
                Some(done) = self.work.join_next() => Wake::Done(done),
                Some(event) = self.agent_events.recv() => Wake::Agent(event),
                Some(question) = self.questions.recv() => Wake::Question(question),
                _ = tick.tick() => Wake::Tick,
            };
            let now = clock();
            match wake {
                Wake::Signal(Signal::Stop) => break,
                Wake::Signal(Signal::Reload) => self.reload(now),
                Wake::Link(LinkEvent::Tor(reply)) => self.on_tor_event(&reply, now),
                Wake::Link(LinkEvent::Lost) => self.connection_lost(now),
                Wake::Link(LinkEvent::Back(Ok(back))) => self.reconnected(back, now),
                Wake::Link(LinkEvent::Back(Err(e))) => {
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
        self.link.stop();
        self.work.abort_all();
        tracing::info!("stopping");
        Ok(())
    }

    /// Hands the balancer what tor said.
    fn on_tor_event(&mut self, reply: &Reply, now: Now) {
        let event = Event::parse(reply);
        match heard(&event) {
            Heard::Input(input) => self.balancer.handle(now, input),
            Heard::ConsensusArrived => self.load_view(),
            Heard::Nothing => {}
        }
    }

    /// Reads the consensus again, in a task; one at a time.
    fn load_view(&mut self) {
        if let Some(again) = &mut self.loading_view {
            *again = true;
            return;
        }
        let Some(control) = self.link.control() else {
            return;
        };
        let control = Arc::clone(control);
        let (epoch, testing) = (self.link.epoch(), self.link.testing_network());
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
        let Some(lost) = self.link.lost() else {
            return;
        };
        self.metrics.disconnected(lost.kind);
        self.metrics.set_control_connected(false);
        self.control.connected = false;
        self.control.down_because = Some(lost.reason);
        self.balancer.handle(now, Input::ControlDown);
        self.commands.clear();
        self.loading_view = None;
    }

    /// A new connection, with a fresh consensus: the balancer fetches
    /// everything and resends what was in flight.
    fn reconnected(&mut self, back: Box<Reconnected>, now: Now) {
        let Some((view, socks)) = self.link.back(back, self.config.control_timeout) else {
            return;
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
                self.commands.finished();
                self.send_commands();
                let Err(error) = result else {
                    return;
                };
                // A lost connection is said once, where it is noticed.
                if !self.link.is_current(epoch) {
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
                            },
                        );
                    }
                    _ => {}
                }
            }
            Done::View { epoch, result } => {
                let again = self.loading_view.take() == Some(true);
                if epoch == self.link.epoch() {
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
                let _ = reply.send(drain::for_agent(&mut self.balancer, instance, drain, now));
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
                let answer = drain::admin(&mut self.balancer, &self.config, request, now);
                let _ = reply.send(answer);
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
                    self.commands.push(request);
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
                Action::Notice(notice) => notices::tell(&self.metrics, &notice),
                _ => {}
            }
        }
        self.send_commands();
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

    /// Sends what waits while there is room in flight, each command in a
    /// task that reports its answer.
    fn send_commands(&mut self) {
        let Some(control) = self.link.control() else {
            return;
        };
        let epoch = self.link.epoch();
        while let Some((request, command)) = self.commands.next() {
            let control = Arc::clone(control);
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
        for later in applied_later(&self.config, &config) {
            tracing::warn!("{later}");
        }
        if config.control_timeout != self.config.control_timeout {
            self.link.set_control_timeout(config.control_timeout);
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
        let (Some(onion), Some(control)) = (&self.agent_onion, self.link.control()) else {
            return;
        };
        let (onion, control) = (Arc::clone(onion), Arc::clone(control));
        let clients = agent_clients(&self.config);
        self.work
            .spawn(async move { Done::AgentOnion(onion.publish(&control, &clients).await) });
    }
}

/// Both clocks, read once.
fn clock() -> Now {
    Now {
        wall: SystemTime::now(),
        mono: Instant::now(),
    }
}
