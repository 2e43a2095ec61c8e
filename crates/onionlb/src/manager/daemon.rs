//! The manager's event loop: fetch instance descriptors, check them,
//! publish master descriptors, follow the results.
//!
//! All protocol rules live in `onionlb-core`; this is the tokio shell that
//! feeds them tor's events and the clock, and sends what they decide.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use onionlb_core::agent::{Health as AgentHealth, ToAgent};
use onionlb_core::allocation::plan;
use onionlb_core::consensus::RsaId;
use onionlb_core::descriptor::{
    build_master_descriptor, default_flow_control, intro_point_relay, MasterDescriptorPlan,
    MAX_INTRO_POINTS,
};
use onionlb_core::fetch::{pick_due, FetchSchedule};
use onionlb_core::health;
use onionlb_core::instance::{Accepted, Rejected};
use onionlb_core::period::DescriptorSlot;
use onionlb_core::publish::{publish_reason, DescriptorLayout, Layout};
use onionlb_core::revision::next_revision;
use onionlb_core::upload::Uploads;
use onionlb_core::{error_chain, MasterKey, OnionAddress};
use tokio::sync::{mpsc, watch};
use tor_hscrypto::pk::HsIdKey;
use torctl::{Command, Connector, ControlClient, Event, HsDescAction, HsDescContent, HsDescEvent};

use crate::config::Config;
use crate::manager::agent_onion::AgentOnion;
use crate::manager::agents::{AgentEvent, AgentKeys, AgentServer};
use crate::manager::network::{NetworkView, ViewError};
use crate::manager::snapshot::{self, ControlHealth};
use crate::manager::state::{Published, Service};
use crate::manager::ConfigSource;
use crate::metrics::Metrics;
use crate::status::report::StatusReport;

/// The events the manager follows: fetched descriptors, upload results,
/// new consensuses.
pub const EVENTS: [&str; 3] = ["HS_DESC", "HS_DESC_CONTENT", "STATUS_CLIENT"];
/// How often the loop looks at what is due.
const TICK: Duration = Duration::from_secs(1);
/// The most HSFETCHes sent in one tick. tor answers each with the
/// descriptor of every HSDir asked (up to six), and those wait in the
/// event queue while the loop is still sending: 5000 instances asked in
/// one go left a gigabyte of descriptors queued. The longest overdue go
/// first; 5000 instances are all asked within 40 s.
const MAX_FETCHES_PER_TICK: usize = 128;
/// How long to wait for a consensus before asking again.
const CONSENSUS_POLL: Duration = Duration::from_secs(5);
/// How long the first connection may stay silent before the operator is
/// told (it fails at the control timeout).
const SLOW_START_NOTICE: Duration = Duration::from_secs(10);

/// The running manager.
pub struct Daemon {
    source: ConfigSource,
    connector: Connector,
    control: ControlClient,
    config: Config,
    services: Vec<Service>,
    testing_network: bool,
    view: NetworkView,
    /// When to fetch each instance's descriptor, by address (an instance
    /// may serve several services).
    fetches: HashMap<OnionAddress, FetchSchedule>,
    /// What the last fetch round of each instance came to.
    rounds: HashMap<OnionAddress, Round>,
    health: ControlHealth,
    status: watch::Sender<Arc<StatusReport>>,
    metrics: Arc<Metrics>,
    /// The agent keys the configuration names, for the agent listeners.
    agent_keys: watch::Sender<AgentKeys>,
    agent_events: mpsc::Receiver<AgentEvent>,
    /// The agent listeners (they stop when dropped).
    _agents: AgentServer,
    /// The agents' onion service, if remote agents are configured.
    agent_onion: Option<AgentOnion>,
}

/// Where an instance's current fetch round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Asked; nothing heard yet.
    Pending,
    /// An HSDir said it failed, and none has delivered.
    Failed,
    /// A descriptor arrived.
    Succeeded,
}

/// How a descriptor reached the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Fetched,
    Pushed,
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
        let policy = health_policy(&config);
        let services: Vec<Service> = config
            .services
            .iter()
            .zip(keys)
            .map(|(service, key)| Service::new(key, &service.instances, policy, Instant::now()))
            .collect();
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
                Some(onion)
            }
            _ => None,
        };
        let health = ControlHealth {
            connected: true,
            reconnects: 0,
            down_because: None,
        };
        let (status, _) = watch::channel(Arc::new(snapshot::report(
            &services,
            health.clone(),
            SystemTime::now(),
            Instant::now(),
        )));
        Ok(Daemon {
            source,
            connector,
            control,
            config,
            services,
            testing_network,
            view,
            fetches: HashMap::new(),
            rounds: HashMap::new(),
            health,
            status,
            metrics: Arc::new(Metrics::default()),
            agent_keys,
            agent_events,
            _agents: agents,
            agent_onion,
        })
    }

    /// The status reports, refreshed every second.
    pub fn status_reports(&self) -> watch::Receiver<Arc<StatusReport>> {
        self.status.subscribe()
    }

    /// The metrics, for the endpoint to serve.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Brings the status report and the metrics' gauges up to date.
    fn refresh_status(&self) {
        let now = SystemTime::now();
        let report = snapshot::report(&self.services, self.health.clone(), now, Instant::now());
        self.status.send_replace(Arc::new(report));
        self.metrics
            .set_gauges(&snapshot::gauges(&self.services, now));
        self.metrics.set_control_connected(self.health.connected);
    }

    /// Runs until SIGINT or SIGTERM, which it honours wherever it is
    /// waiting; SIGHUP reloads the configuration. When the management tor
    /// goes away (restart, crash) or stops answering within the control
    /// timeout, keeps its state, reconnects with backoff and goes on where
    /// it was.
    pub async fn run(mut self, mut stop: StopSignals) -> anyhow::Result<()> {
        for service in &self.services {
            tracing::info!(
                "balancing {} over {} instance(s)",
                service.address,
                service.instances.len()
            );
        }
        loop {
            if self.serve(&mut stop).await? == Ended::Stopped {
                break;
            }
            let closed = self.control.closed();
            let reason = closed
                .as_ref()
                .map_or_else(|| "the event stream ended".to_owned(), |e| error_chain(e));
            tracing::warn!(
                "lost the control connection to the management tor at {}: {reason}; reconnecting",
                self.connector.addr()
            );
            self.metrics
                .disconnected(closed.as_ref().map_or("closed", disconnect_kind));
            self.health.connected = false;
            self.health.down_because = Some(reason);
            self.refresh_status();
            let now = Instant::now();
            for published in self
                .services
                .iter_mut()
                .flat_map(|s| s.published.iter_mut().flatten())
            {
                published.uploads.connection_lost(now);
            }
            let reconnect = self.connector.reconnect(|error, delay| {
                tracing::warn!(
                    "cannot reach the management tor: {}; trying again in {delay:.1?}",
                    error_chain(error)
                );
            });
            let Some(control) = stop.unless_stopped(reconnect).await else {
                break;
            };
            self.control = control;
            self.health.connected = true;
            self.health.down_because = None;
            self.health.reconnects += 1;
            self.metrics.reconnected();
            self.refresh_status();
            match stop
                .unless_stopped(wait_for_view(&self.control, self.testing_network))
                .await
            {
                None => break,
                Some(Ok(view)) => self.view = view,
                // Lost again: the next round reconnects.
                Some(Err(e)) => tracing::warn!("{e:#}"),
            }
            tracing::info!("reconnected to the management tor; fetching instance descriptors");
            if stop
                .unless_stopped(self.publish_agent_onion())
                .await
                .is_none()
            {
                break;
            }
            self.fetch_all_now();
        }
        tracing::info!("stopping");
        Ok(())
    }

    /// Follows one control connection until it ends or a stop signal
    /// arrives. A stop signal also cuts short whatever the loop is
    /// awaiting (a command to a slow tor waits up to the control timeout).
    async fn serve(&mut self, stop: &mut StopSignals) -> anyhow::Result<Ended> {
        let mut events = self
            .control
            .take_events()
            .context("the control connection's events were already taken")?;
        let mut tick = tokio::time::interval(TICK);
        // A tick that overran is not made up for with a burst of ticks.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // In this order: a signal first; then what tor sent, so that
            // events never wait behind a tick's work (a tick that publishes
            // for a thousand services takes seconds, and the next tick's
            // fetches bring more); then agents; then the tick.
            let handled = tokio::select! {
                biased;
                signal = stop.next() => match signal {
                    Signal::Reload => stop.unless_stopped(self.reload()).await,
                    Signal::Stop => None,
                },
                event = events.recv() => {
                    let Some(event) = event else {
                        return Ok(Ended::ConnectionLost);
                    };
                    stop.unless_stopped(self.handle_event(Event::parse(&event))).await
                }
                Some(event) = self.agent_events.recv() => {
                    self.on_agent(event);
                    Some(())
                }
                _ = tick.tick() => stop.unless_stopped(self.on_tick()).await,
            };
            if handled.is_none() {
                return Ok(Ended::Stopped);
            }
        }
    }

    /// Reads the configuration again (SIGHUP). Services and instances that
    /// stay keep what was fetched and published for them; an invalid
    /// configuration changes nothing and says why.
    async fn reload(&mut self) {
        let (config, keys) = match self.source.load() {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!("not reloading, keeping the running configuration: {e}");
                return;
            }
        };
        if crate::status::socket_location(&config) != crate::status::socket_location(&self.config) {
            tracing::warn!("a new status-socket-location takes effect at the next start");
        }
        let mut old = std::mem::take(&mut self.services);
        let now = Instant::now();
        let policy = health_policy(&config);
        let mut fetch = false;
        for (service_config, key) in config.services.iter().zip(keys) {
            let address = key.address();
            let service = match old.iter().position(|s| s.address == address) {
                Some(at) => {
                    let mut service = old.swap_remove(at);
                    if service.set_instances(&service_config.instances, policy, now) {
                        service.changes.changed(now);
                        fetch = true;
                    }
                    service
                }
                None => {
                    tracing::info!("{address}: added");
                    fetch = true;
                    Service::new(key, &service_config.instances, policy, now)
                }
            };
            self.services.push(service);
        }
        for gone in &old {
            tracing::warn!(
                "{}: removed from the configuration; its published descriptors stay on the HSDirs until they expire",
                gone.address
            );
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
            self.connector.set_options(torctl::Options {
                command_timeout: config.control_timeout,
                ..torctl::Options::default()
            });
        }
        let clients_changed = agent_clients(&config) != agent_clients(&self.config);
        self.agent_keys.send_replace(agent_keys(&config));
        self.config = config;
        if clients_changed {
            self.publish_agent_onion().await;
        }
        if fetch {
            // New instances get schedules due now in the next tick.
            tracing::debug!("fetching the descriptors of new instances");
        }
        tracing::info!(
            "reloaded configuration {}: {} service(s)",
            self.config.path.display(),
            self.services.len()
        );
        self.refresh_status();
    }

    /// Adds the agents' onion service to the management tor, if there is
    /// one; a failure is said, and agents keep their local socket.
    async fn publish_agent_onion(&self) {
        if let Some(onion) = &self.agent_onion {
            if let Err(e) = onion
                .publish(&self.control, &agent_clients(&self.config))
                .await
            {
                tracing::error!("{e:#}");
            }
        }
    }

    /// Judges every instance's health; a changed verdict is a change to
    /// publish (after the usual settling).
    fn judge_health(&mut self) {
        let now = Instant::now();
        for service in &mut self.services {
            for instance in &mut service.instances {
                if instance.judge(now) {
                    service.changes.changed(now);
                }
            }
        }
    }

    /// What an agent said.
    fn on_agent(&mut self, event: AgentEvent) {
        let now = Instant::now();
        match event {
            AgentEvent::Connected { instance, peer } => {
                for found in self.instances_at(instance) {
                    found.agent = Some(peer.clone());
                }
            }
            AgentEvent::Disconnected { instance } => {
                for found in self.instances_at(instance) {
                    found.agent = None;
                }
            }
            AgentEvent::Tor { instance, process } => {
                for service in &mut self.services {
                    for found in &mut service.instances {
                        if found.config.address == instance && found.follow_tor(process) {
                            service.changes.changed(now);
                        }
                    }
                }
            }
            AgentEvent::Health { instance, health } => {
                let (healthy, why) = match &health {
                    AgentHealth::Up => (true, ""),
                    AgentHealth::Down(why) => (false, why.as_str()),
                };
                for found in self.instances_at(instance) {
                    found.health.agent_report(healthy, why, now);
                }
                self.judge_health();
            }
            AgentEvent::Descriptor {
                instance,
                text,
                reply,
            } => {
                let answer = match self.offer(instance, &text, Source::Pushed) {
                    Some(Ok(Accepted::NowUsable)) => ToAgent::Accepted("usable".into()),
                    Some(Ok(Accepted::IntroPointsChanged)) => {
                        ToAgent::Accepted("new intro points".into())
                    }
                    Some(Ok(Accepted::Unchanged)) => ToAgent::Accepted("nothing new".into()),
                    Some(Err(rejected)) => ToAgent::Rejected(rejected.to_string()),
                    None => ToAgent::Rejected(format!("{instance} is not configured")),
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// Every configured instance with this address (it may serve several
    /// services).
    fn instances_at(
        &mut self,
        address: OnionAddress,
    ) -> impl Iterator<Item = &mut crate::manager::state::Instance> {
        self.services
            .iter_mut()
            .flat_map(|s| &mut s.instances)
            .filter(move |i| i.config.address == address)
    }

    async fn on_tick(&mut self) {
        self.fetch_due().await;
        self.judge_health();
        let now = SystemTime::now();
        for index in 0..self.services.len() {
            // Let a burst of instance changes settle into one publication.
            let settling = self.services[index].changes.is_settling(Instant::now());
            for slot in 0..2 {
                if !settling {
                    self.publish_if_due(index, slot, now).await;
                }
                self.retry_failed(index, slot).await;
            }
            if !settling {
                self.services[index].changes.clear();
            }
        }
        self.refresh_status();
    }

    async fn handle_event(&mut self, event: Event) {
        match event {
            Event::HsDescContent(content) => self.on_descriptor(content),
            Event::HsDesc(event) => self.on_hs_desc(&event),
            Event::StatusClient { action } if action == "CONSENSUS_ARRIVED" => {
                match NetworkView::load(&self.control, self.testing_network).await {
                    Ok(view) => {
                        let period = |v: &NetworkView| v.rings[v.fetch_slot].slot().period;
                        if period(&view) != period(&self.view) {
                            // Clients now fetch another period's descriptors,
                            // with the instances' new intro points: fetch them.
                            self.fetch_all_now();
                        }
                        self.view = view;
                    }
                    Err(e) => tracing::warn!("keeping the previous consensus: {e}"),
                }
            }
            _ => {}
        }
    }

    /// Makes every instance's fetch due now.
    fn fetch_all_now(&mut self) {
        let now = Instant::now();
        for schedule in self.fetches.values_mut() {
            schedule.due_now(now);
        }
    }

    /// Asks the HSDirs clients use now for the descriptor of every
    /// instance whose fetch is due (each address once, whatever number of
    /// services it serves), at most [`MAX_FETCHES_PER_TICK`], the longest
    /// overdue first and otherwise in configuration order, so that a
    /// service's instances arrive together and make one publication.
    /// Instances new to the configuration are due at once; those of
    /// removed ones are forgotten.
    async fn fetch_due(&mut self) {
        let now = Instant::now();
        let interval = self.config.fetch_interval;
        let mut identities = Vec::new();
        let mut configured = HashSet::new();
        for instance in self.services.iter().flat_map(|s| &s.instances) {
            if configured.insert(instance.config.address) {
                identities.push((instance.config.address, instance.state.identity().clone()));
            }
        }
        self.fetches
            .retain(|address, _| configured.contains(address));
        self.rounds
            .retain(|address, _| configured.contains(address));
        let mut identity_of = HashMap::new();
        for (address, identity) in &identities {
            let schedule = self
                .fetches
                .entry(*address)
                .or_insert_with(|| FetchSchedule::new(interval, now));
            schedule.set_interval(interval, now);
            identity_of.insert(*address, identity);
        }
        let candidates = identities
            .iter()
            .filter_map(|(address, _)| Some((*address, self.fetches.get(address)?)));
        let picked = pick_due(candidates, now, MAX_FETCHES_PER_TICK);
        let ring = &self.view.rings[self.view.fetch_slot];
        let mut failed_rounds = Vec::new();
        for address in picked {
            let (Some(schedule), Some(identity)) =
                (self.fetches.get_mut(&address), identity_of.get(&address))
            else {
                continue;
            };
            schedule.sent(now);
            if self.rounds.insert(address, Round::Pending) == Some(Round::Failed) {
                failed_rounds.push(address);
            }
            let Ok((blinded, _)) = identity.compute_blinded_key(ring.slot().period) else {
                continue;
            };
            let servers = ring.responsible(
                &blinded.id(),
                self.view.params.n_replicas,
                self.view.params.spread_fetch,
            );
            let command = Command::new("HSFETCH")
                .arg(address.without_suffix())
                .args(servers.iter().map(|fp| format!("SERVER=${fp}")));
            if let Err(e) = self.control.request(&command).await {
                if self.control.closed().is_some() {
                    // The connection is gone: the loop says so, once.
                    break;
                }
                tracing::warn!("{address}: HSFETCH failed: {e}");
            }
        }
        for address in failed_rounds {
            for instance in self.instances_at(address) {
                instance.health.fetch_failed();
            }
        }
    }

    /// A descriptor fetched from an HSDir.
    fn on_descriptor(&mut self, content: HsDescContent) {
        if content.descriptor.trim().is_empty() {
            return;
        }
        let Ok(address) = content.address.parse::<OnionAddress>() else {
            return;
        };
        self.offer(address, &content.descriptor, Source::Fetched);
    }

    /// Checks a descriptor against every instance with `address`, and uses
    /// it where it passes; `None` if no instance has that address.
    ///
    /// Fetched and pushed descriptors get the same checks. A fetched one
    /// older than one already seen is routine (an HSDir behind an agent's
    /// push); a pushed one is not, and is said.
    fn offer(
        &mut self,
        address: OnionAddress,
        text: &str,
        source: Source,
    ) -> Option<Result<Accepted, Rejected>> {
        let mut text = text.to_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let now = SystemTime::now();
        // Fetches ask for the period clients fetch now: one blinded key at
        // a time keeps the revision check meaningful. An agent pushes
        // what its tor has, which may be either descriptor.
        let periods: Vec<_> = match source {
            Source::Fetched => vec![self.view.rings[self.view.fetch_slot].slot().period],
            Source::Pushed => self.view.rings.iter().map(|r| r.slot().period).collect(),
        };
        let max_size = self.view.max_descriptor_size;
        let arrived = Instant::now();
        let mut result = None;
        for service in &mut self.services {
            for instance in &mut service.instances {
                if instance.config.address != address {
                    continue;
                }
                let outcome = instance.state.offer(&text, &periods, now, max_size);
                if outcome.is_ok() {
                    instance.received = Some(now);
                    if source == Source::Fetched {
                        instance.health.fetch_succeeded();
                        self.rounds.insert(address, Round::Succeeded);
                        if let Some(schedule) = self.fetches.get_mut(&address) {
                            schedule.succeeded();
                        }
                    }
                }
                match &outcome {
                    Ok(Accepted::Unchanged) => {}
                    Ok(change) => {
                        instance.intro_set_modified = Some(now);
                        if let Some(descriptor) = instance.state.descriptor() {
                            tracing::info!(
                                "{}: {}, {} intro point(s), revision {}{}",
                                instance.config.label(),
                                if *change == Accepted::NowUsable {
                                    "usable"
                                } else {
                                    "new intro points"
                                },
                                instance.state.intro_point_count(),
                                descriptor.revision,
                                if source == Source::Pushed {
                                    " (pushed by its agent)"
                                } else {
                                    ""
                                }
                            );
                        }
                        instance.problem = None;
                        service.changes.changed(arrived);
                    }
                    Err(rejected @ Rejected::Replay { .. }) if source == Source::Fetched => {
                        // An HSDir that missed an upload, or lags behind an
                        // agent's push: the newer descriptor stays in use.
                        tracing::info!(
                            "{}: an HSDir served an older descriptor: {rejected}",
                            instance.config.label()
                        );
                    }
                    Err(rejected) if source == Source::Pushed => {
                        tracing::warn!(
                            "{}: its agent pushed a descriptor that was {rejected}",
                            instance.config.label()
                        );
                    }
                    Err(rejected) => instance.report(rejected.to_string()),
                }
                result = Some(outcome);
            }
        }
        result
    }

    /// Follows uploads of our master descriptors.
    fn on_hs_desc(&mut self, event: &HsDescEvent) {
        let Some(hsdir) = event.hsdir.as_deref() else {
            return;
        };
        // Compared as keys: rendering an address hashes, and there are
        // thousands of events per round at a thousand services.
        let Ok(address) = event.address.parse::<OnionAddress>() else {
            return;
        };
        if event.action == HsDescAction::Failed {
            let now = Instant::now();
            for instance in self.services.iter().flat_map(|s| &s.instances) {
                if instance.config.address != address {
                    continue;
                }
                self.metrics.fetch_failed(&instance.config.label());
                if let Some(schedule) = self.fetches.get_mut(&instance.config.address) {
                    schedule.failed(now, instance.state.descriptor().is_some());
                }
                if let Some(round) = self.rounds.get_mut(&instance.config.address) {
                    if *round == Round::Pending {
                        *round = Round::Failed;
                    }
                }
            }
        }
        let Some(service) = self.services.iter_mut().find(|s| s.address == address) else {
            return;
        };
        let Ok(dir) = hsdir.parse::<RsaId>() else {
            return;
        };
        // tor's upload events do not say which descriptor they are about;
        // an HSDir responsible for both slots hears from both.
        let now = Instant::now();
        let mut ours = false;
        for published in service.published.iter_mut().flatten() {
            match event.action {
                HsDescAction::Uploaded if published.uploads.accepted(&dir, now) => {
                    ours = true;
                    tracing::debug!("{}: descriptor accepted by HSDir {hsdir}", service.address);
                }
                HsDescAction::Failed => {
                    let reason = event.reason.as_deref().unwrap_or("no reason given");
                    if let Some(delay) = published.uploads.failed(&dir, reason, now) {
                        ours = true;
                        tracing::warn!(
                            "{}: upload to HSDir {hsdir} failed ({reason}); retrying in {delay:?}",
                            service.address,
                        );
                    }
                }
                _ => {}
            }
        }
        if ours {
            let result = if event.action == HsDescAction::Uploaded {
                "accepted"
            } else {
                "failed"
            };
            self.metrics
                .upload(&service.address.to_string(), hsdir, result);
        }
    }

    /// Builds and uploads the descriptor for `slot` if anything calls for
    /// it: none yet for this period, a changed intro point set or HSDir
    /// set, or age.
    async fn publish_if_due(&mut self, index: usize, slot: usize, now: SystemTime) {
        let ring = self.view.rings[slot].clone();
        let period = ring.slot().period;
        let params = self.view.params;
        let rules = self.view.rules;
        let service = &mut self.services[index];
        let live: Vec<Vec<_>> = service
            .instances
            .iter_mut()
            .filter_map(|instance| instance.live_intro_points(now, &rules))
            .collect();
        if live.iter().all(Vec::is_empty) {
            if !service.warned_empty && service.published.iter().any(Option::is_some) {
                tracing::error!(
                    "{}: no instance is usable; keeping the last published descriptors",
                    service.address
                );
                service.warned_empty = true;
            }
            return;
        }
        service.warned_empty = false;
        let Ok((blinded, _)) = HsIdKey::from(service.key.keypair()).compute_blinded_key(period)
        else {
            return;
        };
        let store = ring.responsible(&blinded.id(), params.n_replicas, params.spread_store);
        let fetchable = ring.responsible(&blinded.id(), params.n_replicas, params.spread_fetch);
        // The two slots start the round-robin at different instances, so
        // the spare slots do not always fall to the same ones.
        let planned = plan(
            &live,
            &fetchable,
            &store,
            MAX_INTRO_POINTS,
            slot,
            intro_point_relay,
        );
        let layout = Layout {
            period: period.interval_num(),
            descriptors: planned
                .iter()
                .map(|descriptor| {
                    DescriptorLayout::new(
                        descriptor
                            .intro_points
                            .iter()
                            .map(|ip| ip.ipt_sid_key().to_bytes())
                            .collect(),
                        descriptor.hsdirs.clone(),
                    )
                })
                .collect(),
        };
        let previous = service.published[slot].as_ref().map(|p| (&p.layout, p.at));
        let Some(reason) = publish_reason(previous, &layout, now) else {
            return;
        };
        let descriptor_slot = if slot == 0 {
            DescriptorSlot::First
        } else {
            DescriptorSlot::Second
        };
        let computed =
            service
                .key
                .revision_key()
                .counter(descriptor_slot, now, self.view.rules.run_length);
        let revision = next_revision(computed, service.revisions.get(&blinded.id()).copied());
        let mut texts = BTreeMap::new();
        for descriptor in &planned {
            let plan = MasterDescriptorPlan {
                period,
                revision,
                intro_points: &descriptor.intro_points,
                flow_control: default_flow_control(self.view.sendme_inc),
                now,
                max_size: self.view.max_descriptor_size,
            };
            match build_master_descriptor(&service.key, &plan, &mut rand::rng()) {
                Ok(built) => {
                    let text: Arc<str> = built.text.into();
                    for hsdir in &descriptor.hsdirs {
                        texts.insert(*hsdir, Arc::clone(&text));
                    }
                }
                Err(e) => {
                    tracing::error!("{}: cannot build a descriptor: {e}", service.address);
                    return;
                }
            }
        }
        service.revisions.insert(blinded.id(), revision);
        tracing::info!(
            "{}: publishing {} descriptor ({reason}): {} distinct, {} intro point slots from {} instance(s), revision {revision}, to {} HSDirs",
            service.address,
            if slot == 0 { "first" } else { "second" },
            planned.len(),
            planned.iter().map(|d| d.intro_points.len()).sum::<usize>(),
            live.iter().filter(|l| !l.is_empty()).count(),
            store.len()
        );
        let address = service.address;
        let mut failed = Vec::new();
        for descriptor in &planned {
            if let Some(text) = descriptor.hsdirs.first().and_then(|dir| texts.get(dir)) {
                if let Err(e) = upload(
                    &self.control,
                    &self.metrics,
                    address,
                    text,
                    &descriptor.hsdirs,
                )
                .await
                {
                    failed.push((descriptor.hsdirs.clone(), e));
                }
            }
        }
        let mut uploads = Uploads::sent(texts.keys().copied(), Instant::now());
        for (hsdirs, error) in failed {
            for dir in &hsdirs {
                uploads.failed(dir, &error, Instant::now());
            }
        }
        service.published[slot] = Some(Published {
            layout,
            at: now,
            revision,
            reason,
            texts,
            uploads,
        });
    }

    /// Uploads again to HSDirs whose upload failed or went unanswered,
    /// when their time comes.
    async fn retry_failed(&mut self, index: usize, slot: usize) {
        let service = &mut self.services[index];
        let address = service.address;
        let Some(published) = &mut service.published[slot] else {
            return;
        };
        for dir in published.uploads.take_due(Instant::now()) {
            let Some(text) = published.texts.get(&dir) else {
                continue;
            };
            if let Err(e) = upload(
                &self.control,
                &self.metrics,
                address,
                text,
                std::slice::from_ref(&dir),
            )
            .await
            {
                published.uploads.failed(&dir, &e, Instant::now());
            }
        }
    }
}

/// `+HSPOST SERVER=$fp... HSADDRESS=addr` with the descriptor. tor
/// reports the result per HSDir later, in `HS_DESC` events; an error here
/// means tor did not take the command (logged, and returned as the reason
/// for the retry).
async fn upload(
    control: &ControlClient,
    metrics: &Metrics,
    address: OnionAddress,
    text: &str,
    hsdirs: &[RsaId],
) -> Result<(), String> {
    let command = Command::new("HSPOST")
        .args(hsdirs.iter().map(|fp| format!("SERVER=${fp}")))
        .arg(format!("HSADDRESS={}", address.without_suffix()))
        .data(text);
    for dir in hsdirs {
        metrics.upload(&address.to_string(), &dir.to_string(), "attempted");
    }
    control.request(&command).await.map(drop).map_err(|e| {
        let reason = error_chain(&e);
        // A lost connection is said once, where it is noticed.
        if control.closed().is_none() {
            tracing::error!("{address}: HSPOST failed: {reason}");
        }
        reason
    })
}

/// The health knobs the configuration sets.
fn health_policy(config: &Config) -> health::Policy {
    health::Policy {
        heartbeat_timeout: config.agents.heartbeat_timeout,
        ..health::Policy::default()
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
        match NetworkView::load(control, testing_network).await {
            Ok(view) => return Ok(view),
            Err(ViewError::NoConsensus) => {
                if !said {
                    tracing::warn!("the management tor has no consensus yet; waiting for one");
                    said = true;
                }
            }
            Err(ViewError::Unusable(reason)) => {
                if !said {
                    tracing::warn!("waiting for usable directory information: {reason}");
                    said = true;
                }
            }
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(CONSENSUS_POLL).await;
    }
}

/// How a control connection's service ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// SIGINT or SIGTERM: exit.
    Stopped,
    /// tor closed the connection or it broke: reconnect.
    ConnectionLost,
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
