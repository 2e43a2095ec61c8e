//! The balancer in simulated time: a world of HSDirs, instances (each its
//! tor's two descriptors, republished every hour, new intro points for
//! each new period), agents, a control connection that can drop, and
//! clients that fetch the master descriptors from the HSDirs they would
//! ask and decrypt them. Every second is one tick; two simulated days
//! take seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use rand::SeedableRng as _;
use tor_checkable::Timebound as _;
use tor_hscrypto::pk::HsIdKey;
use tor_hscrypto::time::TimePeriod;
use tor_linkspec::LinkSpec;
use tor_llcrypto::pk::{curve25519, ed25519};
use tor_netdoc::doc::hsdesc::HsDesc;

use super::*;
use crate::descriptor::{
    build_master_descriptor, default_flow_control, IntroPoint, MasterDescriptorPlan,
};
use crate::hsdir::{HsDir, Ring, RingParams};
use crate::period::PeriodRules;
use crate::upload::UploadState;

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
/// A UTC midnight.
const MIDNIGHT: u64 = 1_795_305_600;

/// The public network's layout: one-day periods from noon to noon.
fn rules() -> PeriodRules {
    PeriodRules {
        length: Duration::from_secs(86_400),
        rotation_offset: Duration::from_secs(43_200),
        run_length: Duration::from_secs(86_400),
    }
}

fn secs(wall: SystemTime) -> u64 {
    wall.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fresh intro point on the relay `relay`.
fn intro_point(relay: [u8; 20]) -> IntroPoint {
    let mut rng = rand::rng();
    let curve = |rng: &mut rand::rngs::ThreadRng| {
        curve25519::PublicKey::from(&curve25519::EphemeralSecret::random_from_rng(rng))
    };
    let point = tor_netdoc::doc::hsdesc::IntroPointDesc::builder()
        .link_specifiers(vec![
            LinkSpec::OrPort(Ipv4Addr::LOCALHOST.into(), 9001)
                .encode()
                .unwrap(),
            LinkSpec::RsaId(relay.into()).encode().unwrap(),
            LinkSpec::Ed25519Id([relay[0]; 32].into()).encode().unwrap(),
        ])
        .ipt_kp_ntor(curve(&mut rng))
        .kp_hs_ipt_sid(ed25519::Keypair::generate(&mut rng).verifying_key().into())
        .kp_hss_ntor(curve(&mut rng).into())
        .build()
        .unwrap();
    IntroPoint::from_netdoc(&[point]).unwrap().remove(0)
}

fn key_of(point: &IntroPoint) -> [u8; 32] {
    *point.auth_key()
}

/// The revision in a descriptor's outer layer.
fn revision_of(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("revision-counter "))
        .unwrap()
        .parse()
        .unwrap()
}

/// One simulated instance: a tor with its own key and its two
/// descriptors.
struct Sim {
    key: MasterKey,
    address: OnionAddress,
    index: usize,
    alive: bool,
    /// Whether its application accepts streams (its tor may be up
    /// without it).
    app_up: bool,
    /// Which run of its tor this is; each has new intro points.
    run: u8,
    /// Its descriptors, by period.
    descriptors: HashMap<u64, (TimePeriod, Vec<IntroPoint>)>,
    /// Minute past the hour it republishes at.
    minute: u64,
}

impl Sim {
    fn new(index: usize) -> Self {
        let (key, _) = MasterKey::generate(&mut rand::rng()).unwrap();
        Sim {
            address: key.address(),
            key,
            index,
            alive: true,
            app_up: true,
            run: 0,
            descriptors: HashMap::new(),
            minute: (index as u64 * 7) % 60,
        }
    }

    /// Intro points for a new period or run, each on a relay of its own.
    fn fresh_intro_points(&self, period: TimePeriod) -> Vec<IntroPoint> {
        (0..3u8)
            .map(|i| {
                let mut relay = [0u8; 20];
                relay[..8].copy_from_slice(&(self.index as u64).to_be_bytes());
                relay[8] = self.run;
                relay[9] = i;
                relay[10..18].copy_from_slice(&period.interval_num().to_be_bytes());
                intro_point(relay)
            })
            .collect()
    }

    /// Makes sure it holds descriptors for exactly `periods` (as its tor
    /// does after each rotation).
    fn follow(&mut self, periods: [TimePeriod; 2]) -> bool {
        let wanted: Vec<u64> = periods.iter().map(TimePeriod::interval_num).collect();
        let before = self.descriptors.len();
        self.descriptors.retain(|num, _| wanted.contains(num));
        let mut changed = self.descriptors.len() != before;
        for period in periods {
            if !self.descriptors.contains_key(&period.interval_num()) {
                let points = self.fresh_intro_points(period);
                self.descriptors
                    .insert(period.interval_num(), (period, points));
                changed = true;
            }
        }
        changed
    }

    /// Its descriptor for `period` at `now`, signed and encrypted as its
    /// tor would upload it (the revision grows with time).
    fn descriptor(&self, period: u64, now: SystemTime) -> Option<Arc<str>> {
        let (period, points) = self.descriptors.get(&period)?;
        let plan = MasterDescriptorPlan {
            period: *period,
            revision: secs(now),
            intro_points: points,
            flow_control: default_flow_control(31),
            now,
            max_size: 50_000,
        };
        Some(
            build_master_descriptor(&self.key, &plan, &mut rand::rng())
                .unwrap()
                .text
                .into(),
        )
    }

    /// Restarts its tor: new intro points for both periods.
    fn restart(&mut self) {
        self.run += 1;
        let periods: Vec<TimePeriod> = self.descriptors.values().map(|(p, _)| *p).collect();
        self.descriptors.clear();
        for period in periods {
            let points = self.fresh_intro_points(period);
            self.descriptors
                .insert(period.interval_num(), (period, points));
        }
    }

    fn intro_keys(&self) -> HashSet<[u8; 32]> {
        self.descriptors
            .values()
            .flat_map(|(_, points)| points.iter().map(key_of))
            .collect()
    }
}

/// The configuration of `services` (each a list of indices into `sims`)
/// under `masters`' keys.
fn configuration(
    sims: &[Sim],
    masters: &[MasterKey],
    services: &[Vec<usize>],
    max_intro_points: usize,
    probe: Option<crate::probe::Policy>,
) -> Configuration {
    Configuration {
        services: services
            .iter()
            .zip(masters)
            .map(|(members, key)| ServiceSpec {
                key: MasterKey::from_bytes(&key.encode(crate::KeyFormat::Tor).unwrap()).unwrap(),
                instances: members
                    .iter()
                    .map(|&i| InstanceSpec {
                        address: sims[i].address,
                        name: Some(format!("i{i}")),
                        probe_port: 80,
                    })
                    .collect(),
                max_intro_points,
            })
            .collect(),
        fetch_interval: Duration::from_secs(300),
        health: health::Policy::default(),
        probe,
    }
}

/// What is waiting to reach the balancer.
enum Delivery {
    Fetched {
        instance: OnionAddress,
        text: Arc<str>,
    },
    Answer {
        address: OnionAddress,
        hsdir: RsaId,
        failed: Option<HsDescReason>,
    },
    Probed {
        instance: OnionAddress,
        outcome: Result<(), crate::probe::Failure>,
    },
}

/// How long a probe takes in the simulation: a passing one over the
/// rendezvous circuit kept from the last. One to a dead instance takes
/// the whole timeout (the worst case: an intro point acknowledged the
/// introduction, and the rendezvous never came).
const PROBE_PASSES_IN: Duration = Duration::from_secs(1);

/// The simulated world around one balancer.
struct World {
    now: Now,
    balancer: Balancer<rand::rngs::StdRng>,
    dirs: Vec<HsDir>,
    /// The consensus hour last given to the balancer.
    view_hour: u64,
    sims: Vec<Sim>,
    /// Service keys, in configuration order.
    masters: Vec<MasterKey>,
    /// What the HSDirs hold of instance descriptors, by (address, period).
    instance_store: HashMap<(OnionAddress, u64), Arc<str>>,
    /// What each HSDir holds of master descriptors, by (service, period,
    /// HSDir): HSDirs store by blinded key.
    master_store: HashMap<(OnionAddress, u64, RsaId), Arc<str>>,
    /// HSDirs that refuse uploads.
    failing: HashSet<RsaId>,
    /// How late HSDirs answer.
    delay: Duration,
    pending: Vec<(Instant, Delivery)>,
    control_up: bool,
    notices: Vec<Notice>,
    answers: Vec<(OnionAddress, ToAgent)>,
    /// Posts per (service, period, HSDir).
    posts: HashMap<(OnionAddress, u64, RsaId), usize>,
    /// Fetch rounds per instance.
    fetches: HashMap<OnionAddress, usize>,
    /// The HSDirs each instance's fetches asked, in order.
    asked: HashMap<OnionAddress, Vec<RsaId>>,
    /// When each probe started, per instance.
    probes: HashMap<OnionAddress, Vec<Instant>>,
    /// Which run of each instance's tor the descriptor in the management
    /// tor's client cache comes from: a probe reaches only that run's
    /// intro points, and (as C tor, whose failed intro points stay
    /// failed for minutes) does not fetch anew by itself; the balancer's
    /// fetches fill the cache.
    client_cache: HashMap<OnionAddress, u8>,
}

impl World {
    /// A world of 40 HSDirs with `sims` instances, and services listing
    /// the instances at the given indexes; control connection up and a
    /// first view given, at 01:00 UTC.
    fn new(instances: usize, services: &[Vec<usize>]) -> Self {
        Self::probing(instances, services, Some(crate::probe::Policy::default()))
    }

    /// [`World::new`], with instances probed under `probe` (or not).
    fn probing(
        instances: usize,
        services: &[Vec<usize>],
        probe: Option<crate::probe::Policy>,
    ) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let dirs = (0..40u8)
            .map(|i| {
                let mut ed = [0u8; 32];
                rand::Rng::fill_bytes(&mut rng, &mut ed);
                HsDir {
                    rsa_id: RsaId([i + 1; 20]),
                    ed25519_id: ed,
                }
            })
            .collect();
        let sims: Vec<Sim> = (0..instances).map(Sim::new).collect();
        let masters: Vec<MasterKey> = services
            .iter()
            .map(|_| MasterKey::generate(&mut rand::rng()).unwrap().0)
            .collect();
        let config = configuration(
            &sims,
            &masters,
            services,
            crate::descriptor::MAX_INTRO_POINTS,
            probe,
        );
        let now = Now {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(MIDNIGHT) + HOUR,
            mono: Instant::now(),
        };
        let balancer = Balancer::new(config, rand::rngs::StdRng::seed_from_u64(1), now);
        let mut world = World {
            now,
            balancer,
            dirs,
            view_hour: 0,
            sims,
            masters,
            instance_store: HashMap::new(),
            master_store: HashMap::new(),
            failing: HashSet::new(),
            delay: Duration::ZERO,
            pending: Vec::new(),
            control_up: true,
            notices: Vec::new(),
            answers: Vec::new(),
            posts: HashMap::new(),
            fetches: HashMap::new(),
            asked: HashMap::new(),
            probes: HashMap::new(),
            client_cache: HashMap::new(),
        };
        world.consensus();
        for index in 0..world.sims.len() {
            world.republish(index);
        }
        world.input(Input::CanProbe(true));
        world.input(Input::ControlUp);
        world
    }

    /// The view a consensus of this hour gives: a new SRV each day.
    fn view(&self) -> NetworkView {
        let hour = secs(self.now.wall) / 3600 * 3600;
        let valid_after = SystemTime::UNIX_EPOCH + Duration::from_secs(hour);
        let day = hour / 86_400;
        let srv = |d: u64| {
            let mut srv = [0u8; 32];
            srv[..8].copy_from_slice(&d.to_be_bytes());
            srv
        };
        let rules = rules();
        let slots = rules
            .slots(valid_after, Some(srv(day - 1)), Some(srv(day)))
            .unwrap();
        let current = rules.period_at(valid_after);
        NetworkView {
            rules,
            rings: slots.map(|slot| Ring::new(&self.dirs, slot)),
            params: RingParams {
                n_replicas: 2,
                spread_store: 4,
                spread_fetch: 3,
            },
            max_descriptor_size: 50_000,
            sendme_inc: 31,
            fetch_slot: slots
                .iter()
                .position(|s| Some(s.period) == current)
                .unwrap(),
        }
    }

    /// A new consensus: the balancer hears of it, and instances whose
    /// periods moved on make descriptors for the new ones.
    fn consensus(&mut self) {
        self.view_hour = secs(self.now.wall) / 3600;
        let view = self.view();
        let periods = view.rings.each_ref().map(|r| r.slot().period);
        self.input(Input::Network(view));
        for index in 0..self.sims.len() {
            if self.sims[index].alive && self.sims[index].follow(periods) {
                self.republish(index);
            }
        }
    }

    /// Instance `index` uploads both its descriptors.
    fn republish(&mut self, index: usize) {
        let sim = &self.sims[index];
        if !sim.alive {
            return;
        }
        for &period in sim.descriptors.keys() {
            let text = sim.descriptor(period, self.now.wall).unwrap();
            self.instance_store.insert((sim.address, period), text);
        }
    }

    /// Reloads the configuration with `services` as members and
    /// `max_intro_points` for every service.
    fn reconfigure(&mut self, services: &[Vec<usize>], max_intro_points: usize) {
        let config = configuration(&self.sims, &self.masters, services, max_intro_points, None);
        self.input(Input::Configure(config));
    }

    fn input(&mut self, input: Input<'_>) {
        self.balancer.handle(self.now, input);
        self.carry_out();
    }

    /// Does what the balancer asked.
    fn carry_out(&mut self) {
        for action in self.balancer.take_actions() {
            match action {
                Action::Send(Request::Fetch { instance, hsdirs }) => {
                    assert!(self.control_up, "fetch while the connection is down");
                    *self.fetches.entry(instance).or_default() += 1;
                    self.asked.entry(instance).or_default().extend(&hsdirs);
                    let period = self.balancer.view().unwrap().fetch_period().interval_num();
                    let text = self.instance_store.get(&(instance, period)).cloned();
                    if text.is_some() {
                        let sim = self.sims.iter().find(|s| s.address == instance).unwrap();
                        if sim.alive {
                            self.client_cache.insert(instance, sim.run);
                        }
                    }
                    for hsdir in hsdirs {
                        let delivery = match &text {
                            Some(text) => Delivery::Fetched {
                                instance,
                                text: Arc::clone(text),
                            },
                            None => Delivery::Answer {
                                address: instance,
                                hsdir,
                                failed: Some(HsDescReason::NotFound),
                            },
                        };
                        self.pending.push((self.now.mono + self.delay, delivery));
                    }
                }
                Action::Send(Request::Post {
                    service,
                    slot,
                    hsdirs,
                    text,
                }) => {
                    assert!(self.control_up, "post while the connection is down");
                    let index = services::SLOTS.iter().position(|s| *s == slot).unwrap();
                    let period = self.balancer.view().unwrap().rings[index]
                        .slot()
                        .period
                        .interval_num();
                    for hsdir in hsdirs {
                        let at = (service, period, hsdir);
                        *self.posts.entry(at).or_default() += 1;
                        let stored = self.master_store.get(&at);
                        let refused = self.failing.contains(&hsdir)
                            || stored.is_some_and(|s| revision_of(s) > revision_of(&text));
                        if !refused {
                            self.master_store.insert(at, Arc::clone(&text));
                        }
                        self.pending.push((
                            self.now.mono + self.delay,
                            Delivery::Answer {
                                address: service,
                                hsdir,
                                failed: refused.then_some(HsDescReason::UploadRejected),
                            },
                        ));
                    }
                }
                Action::Probe {
                    instance,
                    port,
                    timeout,
                } => {
                    assert_eq!(port, 80);
                    self.probes.entry(instance).or_default().push(self.now.mono);
                    let sim = self.sims.iter().find(|s| s.address == instance).unwrap();
                    let cached = self.client_cache.get(&instance).copied().unwrap_or(0);
                    let (outcome, took) = match (sim.alive, sim.app_up, cached == sim.run) {
                        (true, true, true) => (Ok(()), PROBE_PASSES_IN),
                        (true, false, true) => (
                            Err(crate::probe::Failure::Refused {
                                code: 5,
                                meaning: "connection refused",
                            }),
                            PROBE_PASSES_IN,
                        ),
                        // Its cached descriptor is of an earlier run: its
                        // intro points refuse the introduction.
                        (true, _, false) => (
                            Err(crate::probe::Failure::Refused {
                                code: 0xF2,
                                meaning: "onion service introduction failed",
                            }),
                            PROBE_PASSES_IN,
                        ),
                        (false, _, _) => (Err(crate::probe::Failure::TimedOut), timeout),
                    };
                    self.pending
                        .push((self.now.mono + took, Delivery::Probed { instance, outcome }));
                }
                Action::Answer { instance, answer } => self.answers.push((instance, answer)),
                Action::Notice(notice) => {
                    assert!(notice.level() < Level::Error, "{notice}");
                    self.notices.push(notice);
                }
            }
        }
    }

    /// One simulated second: consensus and instance uploads when due,
    /// answers whose time came, then a tick.
    fn step(&mut self) {
        self.now = self.now.after(SECOND);
        if secs(self.now.wall) / 3600 != self.view_hour {
            self.consensus();
        }
        let minute = secs(self.now.wall) / 60 % 60;
        if secs(self.now.wall) % 60 == 0 {
            for index in 0..self.sims.len() {
                if self.sims[index].minute == minute {
                    self.republish(index);
                }
            }
        }
        let due: Vec<Delivery> = {
            let now = self.now.mono;
            let (due, later) = std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            self.pending = later;
            due.into_iter().map(|(_, d)| d).collect()
        };
        for delivery in due {
            match delivery {
                Delivery::Fetched { instance, text } => {
                    self.input(Input::Fetched {
                        instance,
                        text: &text,
                    });
                }
                Delivery::Answer {
                    address,
                    hsdir,
                    failed,
                } => self.input(Input::HsDirAnswer {
                    address,
                    hsdir,
                    answer: match failed {
                        None => HsDirAnswer::Uploaded,
                        Some(reason) => HsDirAnswer::Failed(reason),
                    },
                }),
                Delivery::Probed { instance, outcome } => {
                    self.input(Input::Probed { instance, outcome });
                }
            }
        }
        self.input(Input::Tick);
    }

    fn run_for(&mut self, span: Duration) {
        for _ in 0..span.as_secs() {
            self.step();
        }
    }

    /// Steps until `done` holds, for at most `bound`; how long it took.
    fn run_until(&mut self, bound: Duration, mut done: impl FnMut(&Self) -> bool) -> Duration {
        let start = self.now.mono;
        while !done(self) {
            assert!(
                self.now.mono - start < bound,
                "not done within {bound:?}; notices: {:#?}",
                &self.notices[self.notices.len().saturating_sub(20)..]
            );
            self.step();
        }
        self.now.mono - start
    }

    /// The intro points a client gets for service `index` from each HSDir
    /// it may ask now; panics if one holds nothing valid for the period.
    fn client_sees(&self, index: usize) -> Vec<HashSet<[u8; 32]>> {
        let key = &self.masters[index];
        let view = self.view();
        let period = view.fetch_period();
        let (blinded, subcredential) = HsIdKey::from(key.keypair())
            .compute_blinded_key(period)
            .unwrap();
        let dirs = view.rings[view.fetch_slot].responsible(&blinded.id(), 2, 3);
        assert_eq!(dirs.len(), 6);
        dirs.iter()
            .map(|dir| {
                let text = self
                    .master_store
                    .get(&(key.address(), period.interval_num(), *dir))
                    .unwrap_or_else(|| panic!("HSDir {dir} has no descriptor of service {index}"));
                let desc =
                    HsDesc::parse_decrypt_validate(text, &blinded.id(), &subcredential, None)
                        .unwrap_or_else(|e| {
                            panic!("HSDir {dir} has a descriptor of another period: {e}")
                        })
                        .if_valid_at(&self.now.wall)
                        .unwrap();
                desc.intro_points()
                    .iter()
                    .map(|ip| ip.ipt_sid_key().to_bytes())
                    .collect()
            })
            .collect()
    }

    /// The intro points of the running instances.
    fn live_keys(&self) -> HashSet<[u8; 32]> {
        self.sims
            .iter()
            .filter(|s| s.alive)
            .flat_map(Sim::intro_keys)
            .collect()
    }

    /// Whether every client of service `index` gets only intro points
    /// of running instances, and those of every instance in `expected`.
    fn clients_reach(&self, index: usize, expected: &[usize]) -> bool {
        let live = self.live_keys();
        let seen = self.client_sees(index);
        let all: HashSet<[u8; 32]> = seen.iter().flatten().copied().collect();
        all.is_subset(&live)
            && expected
                .iter()
                .all(|&i| !self.sims[i].intro_keys().is_disjoint(&all))
    }

    /// Whether every upload of every service's descriptors was accepted.
    fn all_accepted(&self) -> bool {
        self.balancer.services().iter().all(|service| {
            service.published().iter().all(|p| {
                p.as_ref().is_some_and(|p| {
                    p.uploads
                        .iter()
                        .all(|(_, s)| matches!(s, UploadState::Accepted { .. }))
                })
            })
        })
    }

    fn count(&self, what: impl Fn(&Notice) -> bool) -> usize {
        self.notices.iter().filter(|n| what(n)).count()
    }

    /// An agent heartbeat for instance `index`.
    fn heartbeat(&mut self, index: usize, health: agent::Health) {
        let instance = self.sims[index].address;
        self.input(Input::Agent {
            instance,
            report: AgentReport::Health(health),
        });
    }
}

#[test]
fn two_days_of_period_and_srv_rollovers_keep_every_client_on_live_intro_points() {
    let mut world = World::new(4, &[vec![0, 1, 2], vec![1, 2, 3]]);
    world.run_until(MINUTE, World::all_accepted);
    let mut hourly_posts = Vec::new();
    let mut revisions: HashMap<(OnionAddress, u64, RsaId), u64> = HashMap::new();
    for _ in 0..48 {
        let posts_before: usize = world.posts.values().sum();
        // Half past: after the consensus and every instance's upload.
        world.run_for(30 * MINUTE);
        assert!(
            world.clients_reach(0, &[0, 1, 2]),
            "service 0 at {:?}",
            world.now.wall
        );
        assert!(
            world.clients_reach(1, &[1, 2, 3]),
            "service 1 at {:?}",
            world.now.wall
        );
        assert!(world.all_accepted());
        world.run_for(30 * MINUTE);
        hourly_posts.push(world.posts.values().sum::<usize>() - posts_before);
        // HSDirs refuse lower revisions: none was refused.
        for (at, text) in &world.master_store {
            let revision = revision_of(text);
            let last = revisions.insert(*at, revision).unwrap_or(0);
            assert!(revision >= last);
        }
    }
    // Two rotations a day (new intro points at midnight, age at every
    // hour): each hour posts each slot's descriptor to its 8 HSDirs once
    // per service, plus what the midnight rotation adds; never a storm.
    let most = *hourly_posts.iter().max().unwrap();
    assert!(most <= 2 * 2 * 8 * 3, "hourly posts {hourly_posts:?}");
    assert!(
        world.count(|n| matches!(
            n,
            Notice::Publishing {
                reason: PublishReason::NewPeriod,
                ..
            }
        )) >= 4,
        "the periods rolled over"
    );
    assert_eq!(
        world.count(|n| matches!(n, Notice::UploadFailed { .. })),
        0,
        "no HSDir refused a revision"
    );
}

use crate::publish::PublishReason;

#[test]
fn an_instance_whose_agent_falls_silent_leaves_and_its_restart_brings_only_new_intro_points() {
    let mut world = World::new(3, &[vec![0, 1, 2]]);
    let agent = world.sims[0].address;
    world.input(Input::Agent {
        instance: agent,
        report: AgentReport::Connected {
            peer: "the agent socket".into(),
        },
    });
    world.input(Input::Agent {
        instance: agent,
        report: AgentReport::Tor(TorProcess {
            pid: 10,
            started: 1,
        }),
    });
    let beat = |world: &mut World, span: Duration| {
        for second in 0..span.as_secs() {
            if second % 2 == 0 {
                world.heartbeat(0, agent::Health::Up);
            }
            world.step();
        }
    };
    beat(&mut world, MINUTE);
    assert!(world.all_accepted());
    assert!(world.clients_reach(0, &[0, 1, 2]));

    // Its tor dies; the agent's heartbeats stop. HSDirs still serve its
    // descriptors, but clients are moved off within the heartbeat
    // timeout, the batching delay and the uploads.
    world.sims[0].alive = false;
    let out = world.run_until(30 * SECOND, |w| {
        w.all_accepted() && w.clients_reach(0, &[1, 2])
    });
    assert!(out <= 15 * SECOND, "out after {out:?}");
    assert_eq!(
        world.count(|n| matches!(
            n,
            Notice::Leaving {
                why: health::Down::AgentSilent { .. },
                ..
            }
        )),
        1
    );

    // It restarts: new intro points for both periods. The agent says so
    // and pushes the new run's current descriptor.
    world.sims[0].alive = true;
    world.sims[0].restart();
    world.republish(0);
    let fetched = world.fetches[&agent];
    world.input(Input::Agent {
        instance: agent,
        report: AgentReport::Tor(TorProcess {
            pid: 11,
            started: 900,
        }),
    });
    // The new run's descriptor is fetched at once, whatever the agent
    // pushes (it can push only one of the two).
    world.step();
    assert_eq!(world.fetches[&agent], fetched + 1);
    let period = world.view().rings[0].slot().period.interval_num();
    let pushed = Arc::clone(&world.instance_store[&(agent, period)]);
    world.input(Input::Agent {
        instance: agent,
        report: AgentReport::Pushed { text: &pushed },
    });
    assert_eq!(
        world.answers.last(),
        Some(&(agent, ToAgent::Accepted("usable".into())))
    );
    world.heartbeat(0, agent::Health::Up);
    let back = world.run_until(MINUTE, |w| {
        w.all_accepted() && w.clients_reach(0, &[0, 1, 2])
    });
    assert!(back <= 10 * SECOND, "back after {back:?}");
    assert_eq!(world.count(|n| matches!(n, Notice::TorRestarted { .. })), 1);
    beat(&mut world, 10 * MINUTE);
    assert!(world.clients_reach(0, &[0, 1, 2]));

    // A replay of the old run's descriptor is refused.
    let old = world.notices.len();
    world.input(Input::Agent {
        instance: agent,
        report: AgentReport::Pushed { text: &pushed },
    });
    assert_eq!(
        world.answers.last(),
        Some(&(agent, ToAgent::Accepted("nothing new".into())))
    );
    assert_eq!(world.notices.len(), old);
}

#[test]
fn an_instance_s_tor_restarting_without_an_agent_is_followed_at_the_next_fetch() {
    let mut world = World::new(3, &[vec![0, 1, 2]]);
    world.run_until(MINUTE, World::all_accepted);
    let fetch_period = world.view().fetch_period().interval_num();
    let old: HashSet<[u8; 32]> = world.sims[1].descriptors[&fetch_period]
        .1
        .iter()
        .map(key_of)
        .collect();
    world.sims[1].restart();
    world.republish(1);
    let new: HashSet<[u8; 32]> = world.sims[1].descriptors[&fetch_period]
        .1
        .iter()
        .map(key_of)
        .collect();
    // Within a fetch interval and the batching delay, clients get its
    // new intro points for the period they fetch, and none of the old.
    let took = world.run_until(6 * MINUTE, |w| {
        let seen: HashSet<[u8; 32]> = w.client_sees(0).into_iter().flatten().collect();
        w.all_accepted() && seen.is_disjoint(&old) && !seen.is_disjoint(&new)
    });
    assert!(took <= 300 * SECOND + 10 * SECOND, "{took:?}");
}

#[test]
fn each_round_asks_one_hsdir_per_replica_and_three_rounds_ask_all_six() {
    let mut world = World::new(1, &[vec![0]]);
    world.run_until(20 * MINUTE, |w| {
        w.fetches.get(&w.sims[0].address) == Some(&3)
    });
    let view = world.view();
    let blinded = HsIdKey::try_from(world.sims[0].address.hs_id())
        .unwrap()
        .compute_blinded_key(view.fetch_period())
        .unwrap()
        .0
        .id();
    let mut fetchable = view.rings[view.fetch_slot].responsible(&blinded, 2, 3);
    let asked = &world.asked[&world.sims[0].address];
    assert_eq!(asked.len(), 6, "two a round");
    let (first, second) = fetchable.split_at(3);
    for round in asked.chunks(2) {
        assert!(
            first.contains(&round[0]) && second.contains(&round[1]),
            "{round:?}"
        );
    }
    let mut all = asked.clone();
    all.sort_unstable();
    fetchable.sort_unstable();
    assert_eq!(all, fetchable);
}

#[test]
fn refusing_and_late_hsdirs_are_retried_with_backoff_and_never_flooded() {
    let mut world = World::new(3, &[vec![0, 1, 2]]);
    // Every answer comes 30 s late, and two HSDirs of the service refuse
    // every upload.
    world.delay = 30 * SECOND;
    let view = world.view();
    let key = &world.masters[0];
    let blinded = HsIdKey::from(key.keypair())
        .compute_blinded_key(view.rings[0].slot().period)
        .unwrap()
        .0
        .id();
    let store = view.rings[0].responsible(&blinded, 2, 4);
    let refusing = [store[0], store[5]];
    world.failing.extend(refusing);
    let service = world.masters[0].address();
    let period = view.rings[0].slot().period.interval_num();
    world.run_for(10 * MINUTE);
    let published = world.balancer.services()[0].published()[0]
        .as_ref()
        .unwrap();
    for dir in &refusing {
        let state = published.uploads.iter().find(|(d, _)| *d == dir).unwrap().1;
        assert!(matches!(state, UploadState::Failed { .. }), "{state:?}");
        // Sent, then retried after 5, 10, 20, 40, 80, 160 s plus 30 s for
        // each answer: 6 or 7 posts in ten minutes, not one a second.
        let posts = world.posts[&(service, period, *dir)];
        assert!((5..=8).contains(&posts), "{posts} posts to {dir}");
    }
    // A late answer is waited for: HSDirs that accept got one post per
    // publication (the first one and the midnight-less hour has none).
    for dir in store.iter().filter(|d| !refusing.contains(d)) {
        assert_eq!(world.posts[&(service, period, *dir)], 1, "posts to {dir}");
    }
    // They come back: the next retry is accepted.
    world.failing.clear();
    world.run_until(10 * MINUTE, World::all_accepted);
}

#[test]
fn texts_go_once_every_hsdir_has_its_copy_and_a_late_failure_publishes_anew() {
    let mut world = World::new(3, &[vec![0, 1, 2]]);
    world.run_until(5 * MINUTE, World::all_accepted);
    let published = world.balancer.services()[0].published();
    for slot in published.iter().flatten() {
        assert!(slot.texts.is_empty(), "{:?}", slot.texts.keys());
    }
    let (hsdir, revision) = {
        let first = published[0].as_ref().unwrap();
        (*first.uploads.iter().next().unwrap().0, first.revision)
    };
    let service = world.masters[0].address();
    let before = world.posts.values().sum::<usize>();
    // tor reports a failed upload to an HSDir both slots had accepted
    // (its events do not say which descriptor): with no text left to
    // resend, the slot is built and sent anew.
    world.input(Input::HsDirAnswer {
        address: service,
        hsdir,
        answer: HsDirAnswer::Failed(HsDescReason::UploadRejected),
    });
    world.run_until(MINUTE, |w| w.posts.values().sum::<usize>() > before);
    let again = world.balancer.services()[0].published()[0]
        .as_ref()
        .unwrap();
    assert_eq!(again.reason, crate::publish::PublishReason::Age);
    assert!(again.revision > revision);
    world.run_until(MINUTE, World::all_accepted);
    assert!(world.clients_reach(0, &[0, 1, 2]));
}

#[test]
fn a_connection_lost_mid_upload_resends_what_was_in_flight_once_back() {
    let mut world = World::new(3, &[vec![0, 1, 2]]);
    world.delay = 5 * SECOND;
    // Until the first posts go out.
    world.run_until(MINUTE, |w| !w.posts.is_empty());
    let posted_once: HashSet<(OnionAddress, u64, RsaId)> = world.posts.keys().copied().collect();
    // The connection drops before any HSDir answers: tor's answers are
    // lost with it.
    world.control_up = false;
    world.pending.clear();
    world.input(Input::ControlDown);
    let fetches = world.fetches.clone();
    world.run_for(20 * SECOND);
    assert_eq!(world.fetches, fetches, "nothing is fetched while down");
    world.control_up = true;
    world.input(Input::ControlUp);
    world.step();
    // Every instance is fetched again at once, and every upload that was
    // in flight is sent again.
    for sim in &world.sims {
        assert_eq!(world.fetches[&sim.address], fetches[&sim.address] + 1);
    }
    for at in &posted_once {
        assert_eq!(world.posts[at], 2, "{at:?}");
    }
    world.run_until(MINUTE, World::all_accepted);
    assert!(world.clients_reach(0, &[0, 1, 2]));
}

#[test]
fn a_thousand_services_sharing_instances_fetch_and_check_each_instance_once() {
    // 1000 services, each over 5 of 20 shared instances.
    let services: Vec<Vec<usize>> = (0..1000)
        .map(|s| (0..5).map(|i| (s + i * 4) % 20).collect())
        .collect();
    let mut world = World::new(20, &services);
    world.run_until(5 * MINUTE, World::all_accepted);
    // One fetch round per instance, and one acceptance each, not one per
    // service that lists it.
    for sim in &world.sims {
        assert_eq!(world.fetches[&sim.address], 1);
    }
    assert_eq!(
        world.count(|n| matches!(n, Notice::InstanceChanged { .. })),
        20
    );
    assert_eq!(
        world.count(|n| matches!(n, Notice::Publishing { .. })),
        2000
    );
    for index in [0, 499, 999] {
        assert!(world.clients_reach(index, &services[index]));
    }
    // Nothing changes for ten minutes: instances are fetched again at
    // the interval, and nothing is published.
    let published = world.count(|n| matches!(n, Notice::Publishing { .. }));
    world.run_for(10 * MINUTE);
    assert_eq!(
        world.count(|n| matches!(n, Notice::Publishing { .. })),
        published
    );
    for sim in &world.sims {
        assert!((2..=4).contains(&world.fetches[&sim.address]));
    }
}

/// The intro points of instance `index`'s descriptors now, both periods.
fn run_keys(world: &World, index: usize) -> HashSet<[u8; 32]> {
    world.sims[index].intro_keys()
}

/// Whether every client of service 0 sees intro points of exactly the
/// instances in `expected`, and none of `gone`.
fn clients_see_only(world: &World, expected: &[usize], gone: &HashSet<[u8; 32]>) -> bool {
    let seen: HashSet<[u8; 32]> = world.client_sees(0).into_iter().flatten().collect();
    let of = |i: usize| !run_keys(world, i).is_disjoint(&seen);
    world.all_accepted()
        && seen.is_disjoint(gone)
        && (0..world.sims.len()).all(|i| of(i) == expected.contains(&i))
}

#[test]
fn without_an_agent_failed_probes_take_a_dead_instance_out_and_its_new_run_comes_back() {
    let mut world = World::new(3, &[vec![0, 1, 2]]);
    world.run_until(MINUTE, World::all_accepted);
    let dead = world.sims[0].address;
    let old = run_keys(&world, 0);

    // Its tor dies. HSDirs keep serving its descriptors; the rendezvous
    // circuit the last probe left is torn down, the probe made at once
    // fails, and clients are moved off within the probe timeout, the
    // batching delay and the uploads.
    world.sims[0].alive = false;
    world.input(Input::RendezvousLost { instance: dead });
    let out = world.run_until(MINUTE, |w| clients_see_only(w, &[1, 2], &old));
    assert!(out <= 15 * SECOND, "out after {out:?}");
    assert_eq!(
        world.count(|n| matches!(
            n,
            Notice::Leaving {
                why: health::Down::ProbesFailing {
                    failures: 2,
                    last: crate::probe::Failure::TimedOut
                },
                ..
            }
        )),
        1
    );
    // It is still probed, at the interval (down already, its failures
    // need no confirming), not dropped for good.
    let probed = world.probes[&dead].len();
    world.run_for(MINUTE);
    let more = world.probes[&dead].len() - probed;
    assert!((2..=4).contains(&more), "{more} probes in a minute");

    // It comes back as a new run of its tor: the first probe that passes
    // brings it back with the new run's intro points, and none of the
    // old run's (of either period).
    world.sims[0].restart();
    world.sims[0].alive = true;
    world.republish(0);
    let back = world.run_until(MINUTE, |w| clients_see_only(w, &[0, 1, 2], &old));
    assert!(back <= 20 * SECOND, "back after {back:?}");
    assert_eq!(world.count(|n| matches!(n, Notice::HealthyAgain { .. })), 1);
}

#[test]
fn without_an_agent_an_application_that_refuses_streams_takes_its_instance_out() {
    let mut world = World::new(3, &[vec![0, 1, 2]]);
    world.run_until(MINUTE, World::all_accepted);
    world.sims[1].app_up = false;
    let none = HashSet::new();
    let out = world.run_until(MINUTE, |w| clients_see_only(w, &[0, 2], &none));
    assert!(out <= 20 * SECOND, "out after {out:?}");
    world.sims[1].app_up = true;
    let back = world.run_until(MINUTE, |w| clients_see_only(w, &[0, 1, 2], &none));
    assert!(back <= 15 * SECOND, "back after {back:?}");
}

#[test]
fn probes_failing_for_every_instance_leave_the_service_as_without_probes() {
    let mut world = World::new(2, &[vec![0, 1]]);
    world.run_until(MINUTE, World::all_accepted);
    let revision = |w: &World| {
        w.balancer.services()[0].published()[0]
            .as_ref()
            .unwrap()
            .revision
    };
    for sim in &mut world.sims {
        sim.app_up = false;
    }
    world.run_until(MINUTE, |w| {
        w.count(|n| matches!(n, Notice::ProbesFailEverywhere { .. })) == 1
    });
    let none = HashSet::new();
    assert!(clients_see_only(&world, &[0, 1], &none));
    // One instance back: it alone is published, the other held out.
    world.sims[0].app_up = true;
    world.run_until(MINUTE, |w| clients_see_only(w, &[0], &none));
    let settled = revision(&world);
    world.run_for(MINUTE);
    assert_eq!(revision(&world), settled, "no republication while stable");
}

#[test]
fn probes_of_many_instances_are_spread_within_the_rate_and_skip_agents() {
    let policy = crate::probe::Policy {
        per_second: 5,
        ..crate::probe::Policy::default()
    };
    let members: Vec<usize> = (0..40).collect();
    let mut world = World::probing(40, &[members], Some(policy));
    let agent = world.sims[0].address;
    world.input(Input::Agent {
        instance: agent,
        report: AgentReport::Connected {
            peer: "the agent socket".into(),
        },
    });
    let start = world.now.mono;
    world.run_for(2 * MINUTE);
    let mut per_second: HashMap<u64, usize> = HashMap::new();
    for at in world.probes.values().flatten() {
        *per_second.entry((*at - start).as_secs()).or_default() += 1;
    }
    let busiest = per_second.values().max().copied().unwrap_or(0);
    assert!(busiest <= 5, "{busiest} probes in one second");
    assert!(
        !world.probes.contains_key(&agent),
        "an agent's instance was probed"
    );
    // 39 instances at 5 a second: every one is probed every ~10 s.
    for sim in &world.sims[1..] {
        let probes = world.probes[&sim.address].len();
        assert!((8..=13).contains(&probes), "{probes} probes in 2 minutes");
    }
}

#[test]
fn a_tor_restart_without_an_agent_drops_the_old_run_s_other_descriptor() {
    let mut world = World::new(3, &[vec![0, 1, 2]]);
    world.run_until(MINUTE, World::all_accepted);
    // Past noon: clients fetch the next period's descriptors, and the
    // balancer keeps the instances' descriptors of both periods.
    world.run_for(12 * HOUR);
    let kept = world
        .balancer
        .instance(&world.sims[1].address)
        .unwrap()
        .state()
        .intro_point_count();
    assert_eq!(kept, 6, "both periods' descriptors kept");
    let old = run_keys(&world, 1);
    // A quick restart: no probe fails, but the next one meets the new run
    // (its cached descriptor's intro points fail, and the management tor
    // fetches the new one).
    world.sims[1].restart();
    world.republish(1);
    let took = world.run_until(MINUTE, |w| clients_see_only(w, &[0, 1, 2], &old));
    assert!(took <= 20 * SECOND, "old run gone after {took:?}");
    assert_eq!(
        world.count(|n| matches!(
            n,
            Notice::InstanceChanged {
                change: Accepted::NewRun,
                ..
            }
        )),
        1
    );
}

#[test]
fn a_drained_instance_leaves_every_hsdir_s_descriptor_before_it_is_called_drained() {
    let mut world = World::new(3, &[vec![0, 1, 2], vec![0, 2]]);
    world.run_until(MINUTE, World::all_accepted);
    let first = world.sims[0].address;
    let none = HashSet::new();
    world.balancer.drain(first, true, world.now).unwrap();
    world.carry_out();
    assert_eq!(
        world.balancer.drain_state(&first, world.now.wall),
        Some(DrainState::Draining)
    );
    // Drained only once both services' HSDirs acknowledged descriptors
    // without it, and then clients see none of its intro points.
    let took = world.run_until(MINUTE, |w| {
        matches!(
            w.balancer.drain_state(&first, w.now.wall),
            Some(DrainState::Drained { .. })
        )
    });
    assert!(took <= 10 * SECOND, "drained after {took:?}");
    assert!(clients_see_only(&world, &[1, 2], &none));
    let Some(DrainState::Drained { until }) = world.balancer.drain_state(&first, world.now.wall)
    else {
        unreachable!()
    };
    assert!(until > world.now.wall && until <= world.now.wall + 3 * HOUR);
    assert!(!world
        .balancer
        .instance(&first)
        .unwrap()
        .is_live(world.now.wall));
    // Healthy and drained, it stays out.
    world.run_for(10 * MINUTE);
    assert!(clients_see_only(&world, &[1, 2], &none));

    // The second service's last live instance cannot be drained.
    let third = world.sims[2].address;
    let master = world.masters[1].address();
    assert_eq!(
        world.balancer.drain(third, true, world.now),
        Err(DrainRefused::LastInstance { service: master })
    );
    let unknown = MasterKey::generate(&mut rand::rng()).unwrap().0.address();
    assert_eq!(
        world.balancer.drain(unknown, true, world.now),
        Err(DrainRefused::NotConfigured)
    );

    world.balancer.drain(first, false, world.now).unwrap();
    world.carry_out();
    assert_eq!(world.balancer.drain_state(&first, world.now.wall), None);
    world.run_until(MINUTE, |w| clients_see_only(w, &[0, 1, 2], &none));
}

#[test]
fn a_lower_intro_point_limit_republishes_smaller_descriptors_still_shared_evenly() {
    let mut world = World::new(3, &[vec![0, 1, 2]]);
    world.run_until(MINUTE, World::all_accepted);
    assert!(world.client_sees(0).iter().all(|keys| keys.len() > 4));
    world.reconfigure(&[vec![0, 1, 2]], 4);
    world.run_until(MINUTE, |w| {
        w.all_accepted() && w.client_sees(0).iter().all(|keys| keys.len() <= 4)
    });
    let seen = world.client_sees(0);
    assert!(seen.iter().all(|keys| keys.len() == 4), "{seen:?}");
    // Over the six HSDirs clients fetch from, every instance has its
    // share of the 24 slots, give or take one.
    let shares: Vec<usize> = (0..3)
        .map(|i| {
            let own = world.sims[i].intro_keys();
            seen.iter()
                .map(|keys| keys.intersection(&own).count())
                .sum()
        })
        .collect();
    assert_eq!(shares.iter().sum::<usize>(), 24, "{shares:?}");
    assert!(shares.iter().all(|&n| (7..=9).contains(&n)), "{shares:?}");
    assert!(world.clients_reach(0, &[0, 1, 2]));
}
