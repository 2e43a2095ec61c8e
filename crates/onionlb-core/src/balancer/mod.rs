//! The manager as one state machine: every decision about what to fetch,
//! what to trust and what to publish, with no I/O.
//!
//! The shell (the daemon) reads the clock once per event and hands the
//! [`Balancer`] an [`Input`] with that [`Now`]; the balancer updates its
//! state and queues [`Action`]s: fetch an instance's descriptor from these
//! HSDirs, post this descriptor text to those, answer an agent, and
//! [`Notice`]s for the operator. The shell carries them out and reports
//! what came of them as further inputs. Randomness (descriptor signing
//! keys and encryption) comes from the generator it is given.
//!
//! # What it keeps, and when it works
//!
//! * One record per instance address ([`Instance`]), whatever number of
//!   services list it: its descriptor is fetched and checked once. The
//!   identity's blinded keys and subcredentials are derived once per time
//!   period, and the HSDirs to fetch from once per network view.
//! * Per service ([`Service`]): what was published for each slot, the
//!   revisions used, where each slot's descriptor goes under the current
//!   view (its blinded key derived once per period).
//! * A [`Input::Tick`] does work only where something calls for it: due
//!   fetches, instances whose health or descriptor validity is at stake,
//!   services with a settled change, a new view, a descriptor due for
//!   republication by age, or uploads due for a retry. With nothing
//!   changing, a tick is a scan of plain fields.
//!
//! # Time
//!
//! [`Now`] carries both clocks: the monotonic one times retries, backoff,
//! health and batching; the wall clock dates descriptors (validity,
//! revision counters, time periods). Nothing here reads either.

mod instances;
mod notice;
mod services;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use crate::upload::{HsDescReason, UploadFailure};
pub use instances::Instance;
pub use notice::{Level, Notice, Problem};
pub use services::{Published, Service};

use crate::agent::{self, ToAgent, TorProcess};
use crate::consensus::RsaId;
use crate::fetch::pick_due;
use crate::health;
use crate::instance::{Accepted, Rejected};
use crate::network::NetworkView;
use crate::period::DescriptorSlot;
use crate::probe;
use crate::ratelimit::TokenBucket;
use crate::{MasterKey, OnionAddress};

/// The most fetches started in one tick. tor answers each with the
/// descriptor of every HSDir asked (up to six), and those wait in the
/// control connection's event queue until read: 5000 instances asked at
/// once left a gigabyte of descriptors queued. The longest overdue go
/// first; 5000 instances are all asked within 40 s.
pub const MAX_FETCHES_PER_TICK: usize = 128;

/// The most probes in flight at once: each holds a SOCKS connection to
/// the management tor and, until it ends, circuits.
pub const MAX_PROBES_IN_FLIGHT: usize = 256;

/// The time of an event, on both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// The wall clock.
    pub wall: SystemTime,
    /// The monotonic clock.
    pub mono: Instant,
}

impl Now {
    /// `self`, `by` later on both clocks.
    #[must_use]
    pub fn after(self, by: Duration) -> Self {
        Now {
            wall: self.wall + by,
            mono: self.mono + by,
        }
    }
}

/// What the operator configured.
#[derive(Debug)]
pub struct Configuration {
    /// The services, in configuration order.
    pub services: Vec<ServiceSpec>,
    /// How often each instance's descriptor is fetched.
    pub fetch_interval: Duration,
    /// The health knobs.
    pub health: health::Policy,
    /// How instances without an agent are probed through Tor; `None` if
    /// they are not.
    pub probe: Option<probe::Policy>,
}

/// One configured service.
pub struct ServiceSpec {
    /// Its master key.
    pub key: MasterKey,
    /// Its instances, in configuration order.
    pub instances: Vec<InstanceSpec>,
    /// The most intro points in each of its master descriptors, 1 to
    /// [`MAX_INTRO_POINTS`](crate::descriptor::MAX_INTRO_POINTS). Fewer
    /// keep a descriptor smaller (its encrypted part is padded in steps:
    /// about 14 kB up to 8, 28 kB up to 18, 41 kB beyond), and let
    /// clients reach at most six times as many instances.
    pub max_intro_points: usize,
}

/// One configured instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// Its onion address.
    pub address: OnionAddress,
    /// The operator's name for it.
    pub name: Option<String>,
    /// The virtual port its probes connect to.
    pub probe_port: u16,
}

impl std::fmt::Debug for ServiceSpec {
    /// The address only: the key is secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSpec")
            .field("address", &self.key.address())
            .field("instances", &self.instances)
            .field("max_intro_points", &self.max_intro_points)
            .finish_non_exhaustive()
    }
}

impl InstanceSpec {
    /// The name to show: the configured one, or the address.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.address.to_string())
    }
}

/// Something that happened, for the balancer to take in.
#[derive(Debug)]
#[non_exhaustive]
pub enum Input<'a> {
    /// A new or reloaded configuration. Services and instances that stay
    /// keep what is known of them.
    Configure(Configuration),
    /// The management tor's directory information, new or changed.
    Network(NetworkView),
    /// The control connection is up (again): fetch everything.
    ControlUp,
    /// The control connection was lost: uploads in flight are retried
    /// once it is back; nothing is fetched or posted until then.
    ControlDown,
    /// Time passed: do what is due.
    Tick,
    /// Whether probes can be made: the management tor has a SOCKS port
    /// (asked at each connection).
    CanProbe(bool),
    /// The management tor's rendezvous circuit to an instance (left open
    /// by a passed probe) was torn down from the instance's end.
    RendezvousLost {
        /// The instance.
        instance: OnionAddress,
    },
    /// A probe of an instance ended.
    Probed {
        /// The instance.
        instance: OnionAddress,
        /// Whether it reached the instance's application.
        outcome: Result<(), probe::Failure>,
    },
    /// An HSDir delivered an instance's descriptor that was fetched.
    Fetched {
        /// The instance.
        instance: OnionAddress,
        /// The descriptor text.
        text: &'a str,
    },
    /// An HSDir answered a fetch or an upload for `address` (an instance
    /// or a service).
    HsDirAnswer {
        /// The onion address the answer is about.
        address: OnionAddress,
        /// The HSDir.
        hsdir: RsaId,
        /// What it said.
        answer: HsDirAnswer,
    },
    /// tor refused to post a descriptor (the command failed; the
    /// connection stays).
    PostRefused {
        /// The service.
        service: OnionAddress,
        /// The slot of the descriptor.
        slot: DescriptorSlot,
        /// The HSDirs it was for.
        hsdirs: Vec<RsaId>,
    },
    /// An instance's agent said something.
    Agent {
        /// The instance it speaks for (its key was checked).
        instance: OnionAddress,
        /// What it said.
        report: AgentReport<'a>,
    },
}

/// An HSDir's answer, from tor's `HS_DESC` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsDirAnswer {
    /// It took an upload.
    Uploaded,
    /// A fetch or an upload failed, for the reason tor gave.
    Failed(HsDescReason),
}

/// What an agent says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentReport<'a> {
    /// It connected and proved its key, from `peer`.
    Connected {
        /// Where it connected from.
        peer: String,
    },
    /// Its connection ended.
    Disconnected,
    /// The tor process it follows.
    Tor(TorProcess),
    /// Its instance's health (also a heartbeat).
    Health(agent::Health),
    /// It pushed its tor's descriptor; the balancer answers with an
    /// [`Action::Answer`].
    Pushed {
        /// The descriptor text.
        text: &'a str,
    },
}

/// What the balancer wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Send this to the management tor.
    Send(Request),
    /// Answer an agent's push.
    Answer {
        /// The instance whose agent pushed.
        instance: OnionAddress,
        /// The answer.
        answer: ToAgent,
    },
    /// Probe an instance: open a stream to `instance`'s `port` through
    /// the management tor's SOCKS port, within `timeout`, and report the
    /// outcome as [`Input::Probed`].
    Probe {
        /// The instance.
        instance: OnionAddress,
        /// The virtual port.
        port: u16,
        /// Time it may take.
        timeout: Duration,
    },
    /// Tell the operator.
    Notice(Notice),
}

/// A control command the balancer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Fetch an instance's descriptor from these HSDirs (`HSFETCH`).
    Fetch {
        /// The instance.
        instance: OnionAddress,
        /// The HSDirs to ask.
        hsdirs: Vec<RsaId>,
    },
    /// Post this descriptor to these HSDirs (`HSPOST`).
    Post {
        /// The service.
        service: OnionAddress,
        /// Which of its descriptors.
        slot: DescriptorSlot,
        /// The HSDirs.
        hsdirs: Vec<RsaId>,
        /// The descriptor.
        text: Arc<str>,
    },
}

/// How far taking an instance out on purpose ([`Balancer::drain`]) has
/// come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainState {
    /// Out of the master descriptors being made; not every HSDir has
    /// acknowledged one without it yet.
    Draining,
    /// Every HSDir of every service that lists it acknowledged master
    /// descriptors without it: new clients will not be sent to it. Clients
    /// that fetched a master descriptor before may still try its intro
    /// points until `until` (their cache keeps a descriptor until the next
    /// time period, within its lifetime); they try others when it is gone.
    Drained {
        /// When the last client copy with its intro points lapses.
        until: SystemTime,
    },
}

/// Why an instance was not drained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DrainRefused {
    /// No configured service lists it.
    #[error("no configured service lists this instance")]
    NotConfigured,
    /// It is the last live instance of a service, which draining it would
    /// leave with none (the master descriptors would keep it).
    #[error("it is the last live instance of {service}")]
    LastInstance {
        /// The service.
        service: OnionAddress,
    },
}

/// Where a descriptor came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Fetched,
    Pushed,
}

/// The manager's state and decisions.
pub struct Balancer<R> {
    rng: R,
    fetch_interval: Duration,
    policy: health::Policy,
    probe: Option<probe::Policy>,
    /// Whether the shell can probe (the management tor has a SOCKS port).
    can_probe: bool,
    /// Spreads probes: [`probe::Policy::per_second`] at most.
    probe_budget: TokenBucket,
    /// Whether the last probe found the SOCKS port unusable (said once).
    socks_unusable: bool,
    view: Option<NetworkView>,
    /// Bumped at each new view; cached placements carry the epoch they
    /// were made under.
    epoch: u64,
    control_up: bool,
    services: Vec<Service>,
    by_address: HashMap<OnionAddress, usize>,
    instances: HashMap<OnionAddress, Instance>,
    /// Instance addresses in configuration order, each once.
    order: Vec<OnionAddress>,
    actions: Vec<Action>,
    notices: Vec<Notice>,
}

impl<R> Balancer<R> {
    /// The services, in configuration order.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The record of the instance at `address`.
    pub fn instance(&self, address: &OnionAddress) -> Option<&Instance> {
        self.instances.get(address)
    }

    /// The network view in use, once there is one.
    pub fn view(&self) -> Option<&NetworkView> {
        self.view.as_ref()
    }

    /// Whether it believes the control connection up.
    pub fn control_up(&self) -> bool {
        self.control_up
    }

    /// How far the drain of the instance at `address` has come at `now`,
    /// if it is drained: drained once every service that lists it has
    /// both its descriptors published since, without its intro points,
    /// and acknowledged by every HSDir.
    pub fn drain_state(&self, address: &OnionAddress, now: SystemTime) -> Option<DrainState> {
        let instance = self.instances.get(address)?;
        let since = instance.drained()?;
        let keys = instance.state().intro_keys();
        let done = instance.services.iter().all(|&index| {
            let service = &self.services[index];
            !service.has_pending_change()
                && service.published().iter().all(|slot| {
                    slot.as_ref().is_some_and(|p| {
                        p.at >= since
                            && p.layout.descriptors.iter().all(|d| {
                                d.intro_keys.iter().all(|k| keys.binary_search(k).is_err())
                            })
                            && p.uploads.iter().all(|(_, s)| {
                                matches!(s, crate::upload::UploadState::Accepted { .. })
                            })
                    })
                })
        });
        if !done {
            return Some(DrainState::Draining);
        }
        let view = self.view.as_ref()?;
        let next_period = view
            .rules
            .period_at(now)
            .and_then(|p| p.next())
            .and_then(|p| p.range().ok())
            .map(|r| r.start);
        let lifetime =
            now + Duration::from_secs(u64::from(crate::descriptor::MASTER_LIFETIME_MINUTES) * 60);
        Some(DrainState::Drained {
            until: next_period.map_or(lifetime, |start| start.min(lifetime)),
        })
    }
}

impl<R: rand::Rng + rand::CryptoRng> Balancer<R> {
    /// Takes the instance at `address` out of new master descriptors
    /// (`drain`) or lets it back in, at `now`: every service that lists it
    /// publishes anew. Refused for an instance no service lists, or the
    /// last live instance of a service.
    pub fn drain(
        &mut self,
        address: OnionAddress,
        drain: bool,
        now: Now,
    ) -> Result<(), DrainRefused> {
        let Some(instance) = self.instances.get(&address) else {
            return Err(DrainRefused::NotConfigured);
        };
        if drain == instance.drained().is_some() {
            return Ok(());
        }
        if drain {
            for &index in &instance.services {
                let service = &self.services[index];
                let others_live = service.members().iter().any(|m| {
                    m.address != address
                        && self
                            .instances
                            .get(&m.address)
                            .is_some_and(|i| i.is_live(now.wall))
                });
                if !others_live {
                    return Err(DrainRefused::LastInstance {
                        service: service.address(),
                    });
                }
            }
        }
        let Some(instance) = self.instances.get_mut(&address) else {
            return Err(DrainRefused::NotConfigured);
        };
        instance.set_drained(drain.then_some(now.wall));
        self.notices.push(Notice::Drain {
            instance: instance.label().to_owned(),
            drained: drain,
        });
        for &index in &instance.services {
            self.services[index].changed(now.mono);
        }
        let notices = std::mem::take(&mut self.notices);
        self.actions.extend(notices.into_iter().map(Action::Notice));
        Ok(())
    }

    /// A balancer for `config`, with no network view yet and the control
    /// connection down; `rng` makes descriptor keys.
    pub fn new(config: Configuration, rng: R, now: Now) -> Self {
        let mut balancer = Balancer {
            rng,
            fetch_interval: config.fetch_interval,
            policy: config.health,
            probe: None,
            can_probe: false,
            probe_budget: TokenBucket::new(1, Duration::from_secs(1), now.mono),
            socks_unusable: false,
            view: None,
            epoch: 0,
            control_up: false,
            services: Vec::new(),
            by_address: HashMap::new(),
            instances: HashMap::new(),
            order: Vec::new(),
            actions: Vec::new(),
            notices: Vec::new(),
        };
        balancer.configure(config, now, false);
        balancer.notices.clear();
        balancer
    }

    /// Takes in `input`, which happened at `now`. What it calls for is
    /// queued for [`Balancer::take_actions`].
    pub fn handle(&mut self, now: Now, input: Input<'_>) {
        let first = self.actions.len();
        match input {
            Input::Configure(config) => self.configure(config, now, true),
            Input::Network(view) => self.network(view, now),
            Input::ControlUp => {
                self.control_up = true;
                self.fetch_all_now(now);
            }
            Input::ControlDown => {
                self.control_up = false;
                for service in &mut self.services {
                    service.connection_lost(now.mono);
                }
            }
            Input::Tick => self.tick(now),
            Input::CanProbe(can) => self.can_probe = can,
            Input::Probed { instance, outcome } => self.probed(instance, outcome, now),
            Input::RendezvousLost { instance } => self.rendezvous_lost(instance, now),
            Input::Fetched { instance, text } => {
                self.offer(instance, text, Source::Fetched, now);
            }
            Input::HsDirAnswer {
                address,
                hsdir,
                answer,
            } => self.hsdir_answer(address, hsdir, answer, now),
            Input::PostRefused {
                service,
                slot,
                hsdirs,
            } => {
                if let Some(&at) = self.by_address.get(&service) {
                    self.services[at].post_refused(slot, &hsdirs, now.mono);
                }
            }
            Input::Agent { instance, report } => self.agent(instance, report, now),
        }
        // What happened is told before what it calls for is done: an agent
        // hears its answer only once the log says why.
        let notices = std::mem::take(&mut self.notices);
        self.actions
            .splice(first..first, notices.into_iter().map(Action::Notice));
    }

    /// What the inputs so far call for, oldest first; the queue is left
    /// empty.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Takes a configuration. Services and instances already known keep
    /// their state under their new names; a changed instance list is a
    /// change to publish.
    fn configure(&mut self, config: Configuration, now: Now, announce: bool) {
        self.fetch_interval = config.fetch_interval;
        self.policy = config.health;
        if let Some(probe) = config.probe {
            self.policy.probe_failures = probe.failures;
            if self.probe.map(|p| p.per_second) != Some(probe.per_second) {
                let every = Duration::from_secs(1) / probe.per_second.max(1);
                self.probe_budget = TokenBucket::new(probe.per_second.max(1), every, now.mono);
            }
        }
        self.probe = config.probe;
        let mut old_services: HashMap<OnionAddress, Service> =
            self.services.drain(..).map(|s| (s.address(), s)).collect();
        let mut old_instances = std::mem::take(&mut self.instances);
        self.order.clear();
        self.by_address.clear();
        for spec in config.services {
            let address = spec.key.address();
            let index = self.services.len();
            let mut members = Vec::new();
            for member in spec.instances {
                if let Some(instance) = self.instances.get_mut(&member.address) {
                    instance.services.push(index);
                    members.push(member);
                    continue;
                }
                let label = member.label();
                let instance = match old_instances.remove(&member.address) {
                    Some(mut kept) => {
                        kept.reconfigure(
                            label,
                            member.probe_port,
                            self.fetch_interval,
                            self.policy,
                            now.mono,
                        );
                        kept
                    }
                    None => match Instance::new(
                        member.address,
                        label,
                        member.probe_port,
                        self.fetch_interval,
                        self.policy,
                        now.mono,
                    ) {
                        Some(new) => new,
                        // Not an ed25519 key: the config loader refuses it.
                        None => continue,
                    },
                };
                let mut instance = instance;
                instance.position = self.order.len();
                self.order.push(member.address);
                self.instances.insert(member.address, instance);
                if let Some(instance) = self.instances.get_mut(&member.address) {
                    instance.services.push(index);
                }
                members.push(member);
            }
            let service = match old_services.remove(&address) {
                Some(mut kept) => {
                    if kept.reconfigure(spec.key, members, spec.max_intro_points) {
                        kept.changed(now.mono);
                    }
                    kept
                }
                None => {
                    if announce {
                        self.notices.push(Notice::ServiceAdded { service: address });
                    }
                    Service::new(spec.key, members, spec.max_intro_points)
                }
            };
            self.by_address.insert(address, index);
            self.services.push(service);
        }
        let mut removed: Vec<OnionAddress> = old_services.into_keys().collect();
        removed.sort_by_key(ToString::to_string);
        for service in removed {
            self.notices.push(Notice::ServiceRemoved { service });
        }
    }

    /// Takes a new view: every placement is made again, and if clients
    /// now fetch another period's descriptors (with the instances' new
    /// intro points), every instance is fetched.
    fn network(&mut self, view: NetworkView, now: Now) {
        let new_period = self
            .view
            .as_ref()
            .is_some_and(|old| old.fetch_period() != view.fetch_period());
        self.view = Some(view);
        self.epoch += 1;
        for service in &mut self.services {
            service.mark_stale();
        }
        if new_period {
            self.fetch_all_now(now);
        }
    }

    fn fetch_all_now(&mut self, now: Now) {
        for instance in self.instances.values_mut() {
            instance.fetch_mut().due_now(now.mono);
        }
    }

    /// Does what is due at `now`: fetches, health verdicts, expiries,
    /// publications and retries.
    fn tick(&mut self, now: Now) {
        if self.control_up {
            self.start_probes(now);
        }
        let Some(view) = &self.view else {
            return;
        };
        if self.control_up {
            let candidates = self
                .instances
                .values()
                .map(|instance| (instance.position, instance.fetch()));
            let picked = pick_due(candidates, now.mono, MAX_FETCHES_PER_TICK);
            for position in picked {
                let Some(&address) = self.order.get(position) else {
                    continue;
                };
                if let Some(instance) = self.instances.get_mut(&address) {
                    let hsdirs = instance.start_fetch(view, self.epoch, now.mono);
                    self.actions.push(Action::Send(Request::Fetch {
                        instance: address,
                        hsdirs,
                    }));
                }
            }
        }
        for instance in self.instances.values_mut() {
            let notice = if instance.needs_judging() {
                instance.judge(now.mono)
            } else {
                None
            };
            let changed = notice.is_some();
            self.notices.extend(notice);
            let expired = instance.expires_at().is_some_and(|at| at <= now.wall);
            for &index in &instance.services {
                if changed {
                    self.services[index].changed(now.mono);
                }
                if expired {
                    self.services[index].mark_stale();
                }
            }
        }
        if !self.control_up {
            return;
        }
        let mut pass = services::Pass {
            view,
            epoch: self.epoch,
            now,
            rng: &mut self.rng,
            actions: &mut self.actions,
            notices: &mut self.notices,
        };
        for service in &mut self.services {
            if service.wants_look(now) {
                service.look(&mut self.instances, &mut pass);
            }
            service.retry_due(now.mono, pass.actions);
        }
    }

    /// Starts the probes due at `now`, longest due first, within the
    /// budget. Instances whose agent is connected are not probed: the
    /// agent's word decides.
    fn start_probes(&mut self, now: Now) {
        let Some(policy) = self.probe.filter(|_| self.can_probe) else {
            return;
        };
        // Counted each time, not kept: an instance can leave the
        // configuration with its probe in flight.
        let mut in_flight = 0;
        let mut due: Vec<(Instant, usize)> = Vec::new();
        for instance in self.instances.values() {
            let next = instance.probe().next(&policy);
            if instance.probe().in_flight() && next > now.mono {
                in_flight += 1;
            } else if instance.agent().is_none() && next <= now.mono {
                due.push((next, instance.position));
            }
        }
        due.sort_unstable();
        for (_, position) in due {
            if in_flight >= MAX_PROBES_IN_FLIGHT || !self.probe_budget.take(now.mono) {
                break;
            }
            let Some(instance) = self
                .order
                .get(position)
                .and_then(|address| self.instances.get_mut(address))
            else {
                continue;
            };
            instance.probe_mut().start(now.mono);
            in_flight += 1;
            self.actions.push(Action::Probe {
                instance: instance.address(),
                port: instance.probe_port(),
                timeout: policy.timeout,
            });
        }
    }

    /// A probe of `address` ended with `outcome`: evidence of its health,
    /// unless the control connection is down (the management tor is away,
    /// and with it the probes' way out) or it reports on itself (the SOCKS
    /// port failing, said once).
    fn probed(&mut self, address: OnionAddress, outcome: Result<(), probe::Failure>, now: Now) {
        let Some(policy) = self.probe else {
            return;
        };
        let Some(instance) = self.instances.get_mut(&address) else {
            return;
        };
        let unusable = outcome == Err(probe::Failure::Unreachable);
        if unusable && !self.socks_unusable {
            self.notices.push(Notice::CannotProbe);
        }
        self.socks_unusable = unusable;
        if self.control_up && !unusable && instance.agent().is_none() {
            self.weigh_probe(address, outcome, now);
        }
        if let Some(instance) = self.instances.get_mut(&address) {
            let down = instance.down_by_probes();
            instance
                .probe_mut()
                .finish(outcome, down, now.mono, &policy);
        }
    }

    /// The rendezvous circuit to `address` was torn down from its end: a
    /// failure, and a probe at once to confirm it.
    fn rendezvous_lost(&mut self, address: OnionAddress, now: Now) {
        let Some(instance) = self.instances.get_mut(&address) else {
            return;
        };
        if self.probe.is_none() || !self.control_up || instance.agent().is_some() {
            return;
        }
        instance.probe_mut().due_now(now.mono);
        self.weigh_probe(address, Err(probe::Failure::RendezvousLost), now);
    }

    /// Takes `outcome` as evidence of `address`'s health. The first
    /// failure, and every one while it is down, asks the HSDirs too: a tor
    /// that restarted has uploaded new intro points, or soon will, and
    /// the fetch also gives the management tor's client the new
    /// descriptor (its cached one's intro points failed, and it would not
    /// try them again for minutes). A change of verdict publishes, and
    /// fetches the instance's descriptor at once.
    fn weigh_probe(
        &mut self,
        address: OnionAddress,
        outcome: Result<(), probe::Failure>,
        now: Now,
    ) {
        let Some(instance) = self.instances.get_mut(&address) else {
            return;
        };
        match outcome {
            Ok(()) => instance.health_mut().probe_passed(),
            Err(failure) => {
                instance.health_mut().probe_failed(failure);
                if instance.health_mut().probe_failures() == 1 || instance.down_by_probes() {
                    instance.fetch_mut().due_now(now.mono);
                }
            }
        }
        let Some(notice) = instance.judge(now.mono) else {
            return;
        };
        self.notices.push(notice);
        instance.fetch_mut().due_now(now.mono);
        for &index in &instance.services {
            self.services[index].changed(now.mono);
        }
    }

    /// Checks a descriptor of `address` and uses it if it passes; `None`
    /// if no instance has that address, or there is no view to check it
    /// against yet.
    ///
    /// Fetched and pushed descriptors get the same checks. Fetches ask for
    /// the period clients fetch now: one blinded key at a time keeps the
    /// revision check meaningful. An agent pushes what its tor has, which
    /// may be either descriptor.
    fn offer(
        &mut self,
        address: OnionAddress,
        text: &str,
        source: Source,
        now: Now,
    ) -> Option<Result<Accepted, Rejected>> {
        let view = self.view.as_ref()?;
        let instance = self.instances.get_mut(&address)?;
        if text.trim().is_empty() {
            return None;
        }
        let text: Cow<'_, str> = if text.ends_with('\n') {
            Cow::Borrowed(text)
        } else {
            Cow::Owned(format!("{text}\n"))
        };
        let periods: Vec<_> = match source {
            Source::Fetched => vec![view.fetch_period()],
            Source::Pushed => view.rings.iter().map(|r| r.slot().period).collect(),
        };
        let outcome =
            instance
                .state_mut()
                .offer(&text, &periods, now.wall, view.max_descriptor_size);
        if outcome.is_ok() {
            instance.accepted(now.wall, source == Source::Fetched, &view.rules);
        }
        match &outcome {
            Ok(Accepted::Unchanged) => {}
            Ok(change) => {
                instance.intro_points_changed(now.wall);
                // Its new intro points may be what its probes lacked.
                if instance.down_by_probes() {
                    instance.probe_mut().due_now(now.mono);
                }
                let revision = instance.state().descriptor().map_or(0, |d| d.revision);
                self.notices.push(Notice::InstanceChanged {
                    instance: instance.label().to_owned(),
                    change: *change,
                    intro_points: instance.state().intro_point_count(),
                    revision,
                    pushed: source == Source::Pushed,
                });
                for &index in &instance.services {
                    self.services[index].changed(now.mono);
                }
            }
            Err(rejected) => {
                let label = instance.label().to_owned();
                self.notices.push(Notice::DescriptorRefused {
                    instance: label.clone(),
                    rejected: rejected.clone(),
                });
                match (rejected, source) {
                    // An HSDir that missed an upload, or lags behind an
                    // agent's push: the newer descriptor stays in use.
                    (Rejected::Replay { .. }, Source::Fetched) => {
                        self.notices.push(Notice::OlderDescriptorServed {
                            instance: label,
                            rejected: rejected.clone(),
                        });
                    }
                    (_, Source::Pushed) => self.notices.push(Notice::PushRefused {
                        instance: label,
                        rejected: rejected.clone(),
                    }),
                    _ => instance.report(Problem::Rejected(rejected.clone()), &mut self.notices),
                }
            }
        }
        Some(outcome)
    }

    /// An HSDir answered: a failed fetch of an instance's descriptor, or
    /// the result of an upload of a service's.
    fn hsdir_answer(&mut self, address: OnionAddress, hsdir: RsaId, answer: HsDirAnswer, now: Now) {
        if let (Some(instance), HsDirAnswer::Failed(_)) = (self.instances.get_mut(&address), answer)
        {
            self.notices.push(Notice::FetchFailed {
                instance: instance.label().to_owned(),
            });
            let has_descriptor = instance.state().descriptor().is_some();
            instance.fetch_mut().failed(now.mono, has_descriptor);
        }
        if let Some(&index) = self.by_address.get(&address) {
            let failed = match answer {
                HsDirAnswer::Uploaded => None,
                HsDirAnswer::Failed(reason) => Some(UploadFailure::Tor(reason)),
            };
            self.services[index].upload_answered(hsdir, failed, now.mono, &mut self.notices);
        }
    }

    /// What an agent said.
    fn agent(&mut self, address: OnionAddress, report: AgentReport<'_>, now: Now) {
        if let AgentReport::Pushed { text } = report {
            let answer = match self.offer(address, text, Source::Pushed, now) {
                Some(Ok(Accepted::NowUsable)) => ToAgent::Accepted("usable".into()),
                Some(Ok(Accepted::IntroPointsChanged)) => {
                    ToAgent::Accepted("new intro points".into())
                }
                Some(Ok(Accepted::Unchanged)) => ToAgent::Accepted("nothing new".into()),
                Some(Ok(Accepted::NewRun)) => ToAgent::Accepted("a new run of tor".into()),
                Some(Err(rejected)) => ToAgent::Rejected(rejected.to_string()),
                None if self.view.is_none() => {
                    ToAgent::Rejected("the manager has no consensus yet".into())
                }
                None => ToAgent::Rejected(format!("{address} is not configured")),
            };
            self.actions.push(Action::Answer {
                instance: address,
                answer,
            });
            return;
        }
        let Some(instance) = self.instances.get_mut(&address) else {
            return;
        };
        let changed = match report {
            AgentReport::Connected { peer } => {
                instance.set_agent(Some(peer));
                false
            }
            AgentReport::Disconnected => {
                instance.set_agent(None);
                false
            }
            AgentReport::Tor(process) => instance.follow_tor(process, now, &mut self.notices),
            AgentReport::Health(health) => {
                let (healthy, why) = match &health {
                    agent::Health::Up => (true, ""),
                    agent::Health::Down(why) => (false, why.as_str()),
                };
                instance.health_mut().agent_report(healthy, why, now.mono);
                match instance.judge(now.mono) {
                    Some(notice) => {
                        self.notices.push(notice);
                        true
                    }
                    None => false,
                }
            }
            AgentReport::Pushed { .. } => false,
        };
        if changed {
            for &index in &instance.services {
                self.services[index].changed(now.mono);
            }
        }
    }
}

#[cfg(test)]
mod test;
