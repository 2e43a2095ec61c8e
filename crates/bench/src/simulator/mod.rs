//! A stand-in for the management tor, for load no real network here can
//! carry: thousands of instances and services on thousands of HSDirs.
//!
//! It speaks the control protocol the way C tor does for the commands a
//! balancer sends ([`session`]), serves a generated consensus and
//! generated, valid instance descriptors, and checks every descriptor
//! posted to it ([`World`]): signed by the master's blinded key for a
//! period clients use, and carrying intro points of every instance. It
//! knows when each responsible HSDir holds a complete master descriptor of
//! each service for both time periods, which is when the balancer has done
//! one full fetch and publish cycle. [`server`] is its I/O.

pub mod server;
pub mod session;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use onionlb_core::consensus::{Consensus, RsaId};
use onionlb_core::descriptor::validate_instance_descriptor;
use onionlb_core::hsdir::{hsdirs, Ring, RingParams};
use onionlb_core::period::PeriodRules;
use onionlb_core::OnionAddress;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tor_hscrypto::pk::HsIdKey;
use tor_hscrypto::time::TimePeriod;

/// An intro point, named by its `auth-key`.
pub type IntroId = [u8; 32];

/// Descriptors larger than this are not what any balancer publishes.
const MAX_SIZE: usize = 100_000;

/// One instance as the simulated HSDirs serve it.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Its address.
    pub address: OnionAddress,
    /// The descriptor every HSDir serves for it.
    pub descriptor: Arc<str>,
    /// Its intro points.
    pub intro_points: Vec<IntroId>,
}

/// One service: its master address and instances.
#[derive(Debug, Clone)]
pub struct Service {
    /// The master address the balancer publishes.
    pub address: OnionAddress,
    /// Its instances.
    pub instances: Vec<Instance>,
}

/// What the management tor holds and what the balancer has published.
pub struct World {
    consensus: Arc<str>,
    microdescs: Arc<str>,
    /// The relays `SERVER=` may name.
    relays: HashSet<RsaId>,
    /// Instance descriptors, by address without `.onion`.
    served: HashMap<String, Instance>,
    /// Services, by master address without `.onion`.
    masters: HashMap<String, Master>,
    /// Which instance of which master each intro point belongs to.
    owners: HashMap<IntroId, usize>,
    /// Descriptors already decoded, by master address and digest of the
    /// text: posts often repeat one.
    decoded: HashMap<(String, [u8; 32]), Result<Decoded, String>>,
    stats: Stats,
}

/// A master address and what it still needs.
struct Master {
    identity: HsIdKey,
    periods: [TimePeriod; 2],
    /// Instance indexes (into `owners`' values) of this service.
    instances: HashSet<usize>,
    /// `(slot, HSDir)` pairs that must hold a complete descriptor.
    expected: HashSet<(usize, RsaId)>,
    /// Those that do.
    complete: HashSet<(usize, RsaId)>,
}

/// A posted master descriptor, decoded.
#[derive(Debug, Clone)]
struct Decoded {
    slot: usize,
    instances: HashSet<usize>,
}

/// What the balancer did, counted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// `HSFETCH` commands.
    pub fetches: u64,
    /// `HSPOST` commands.
    pub posts: u64,
    /// HSDirs named in them.
    pub post_targets: u64,
    /// Bytes of descriptor posted.
    pub posted_bytes: u64,
    /// Posts of descriptors that did not validate.
    pub rejected: u64,
    /// Posts to HSDirs not responsible for that descriptor.
    pub misplaced: u64,
    /// The first few reasons for those.
    pub rejections: Vec<String>,
    /// Commands the simulator does not know, by keyword.
    pub unknown_commands: BTreeMap<String, u64>,
}

/// What [`World::post`] made of an `HSPOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    /// Valid: tor takes it and reports each HSDir's upload.
    Accepted(Vec<RsaId>),
    /// A `SERVER=` tor does not know.
    UnknownServer(String),
    /// Not a descriptor of a known master for a current period.
    Invalid(String),
}

impl World {
    /// A world with a consensus and its microdescriptors, serving
    /// `services`' instances. Expectations are for the two descriptors of
    /// the time periods the consensus makes current.
    pub fn new(consensus: &str, microdescs: &str, services: &[Service]) -> anyhow::Result<Self> {
        let parsed = Consensus::parse(consensus).context("parsing the generated consensus")?;
        let rules = PeriodRules::new(&parsed, false);
        let slots = rules
            .slots_for(&parsed)
            .context("the generated consensus has no time periods")?;
        let params = RingParams::new(&parsed);
        let dirs = hsdirs(&parsed, microdescs);
        let rings = slots.map(|slot| Ring::new(&dirs, slot));
        let mut served = HashMap::new();
        let mut masters = HashMap::new();
        let mut owners = HashMap::new();
        for service in services {
            let identity = identity_of(service.address)?;
            let mut instances = HashSet::new();
            for instance in &service.instances {
                let index = served.len();
                served.insert(instance.address.without_suffix(), instance.clone());
                instances.insert(index);
                owners.extend(instance.intro_points.iter().map(|id| (*id, index)));
            }
            let mut expected = HashSet::new();
            for (slot, ring) in rings.iter().enumerate() {
                let (blinded, _) = identity
                    .compute_blinded_key(ring.slot().period)
                    .context("blinding a master key")?;
                for dir in ring.responsible(&blinded.id(), params.n_replicas, params.spread_store) {
                    expected.insert((slot, dir));
                }
            }
            masters.insert(
                service.address.without_suffix(),
                Master {
                    identity,
                    periods: slots.map(|slot| slot.period),
                    instances,
                    expected,
                    complete: HashSet::new(),
                },
            );
        }
        Ok(World {
            consensus: consensus.into(),
            microdescs: microdescs.into(),
            relays: parsed.relays.iter().map(|r| r.rsa_id).collect(),
            served,
            masters,
            owners,
            decoded: HashMap::new(),
            stats: Stats::default(),
        })
    }

    /// The consensus tor would answer `GETINFO` with.
    pub fn consensus(&self) -> &Arc<str> {
        &self.consensus
    }

    /// Its microdescriptors (`GETINFO md/all`).
    pub fn microdescs(&self) -> &Arc<str> {
        &self.microdescs
    }

    /// Whether tor knows a relay by this fingerprint.
    pub fn knows_relay(&self, id: &RsaId) -> bool {
        self.relays.contains(id)
    }

    /// Any one HSDir, to name in a fetch that named none.
    pub fn some_relay(&self) -> Option<RsaId> {
        self.relays.iter().next().copied()
    }

    /// A fetch of `bare_address`, counted: the descriptor an HSDir serves
    /// for it, if it is an instance.
    pub fn fetch(&mut self, bare_address: &str) -> Option<&Instance> {
        self.stats.fetches += 1;
        self.served.get(bare_address)
    }

    /// Checks a posted master descriptor and records which HSDirs now hold
    /// a complete one. `servers` empty means tor picks them: the
    /// responsible ones.
    pub fn post(
        &mut self,
        bare_address: &str,
        servers: &[String],
        text: &str,
        now: SystemTime,
    ) -> PostOutcome {
        self.stats.posts += 1;
        self.stats.posted_bytes += text.len() as u64;
        let mut targets = Vec::new();
        for server in servers {
            match server.trim_start_matches('$').parse::<RsaId>() {
                Ok(id) if self.relays.contains(&id) => targets.push(id),
                _ => return PostOutcome::UnknownServer(server.clone()),
            }
        }
        let decoded = match self.decode(bare_address, text, now) {
            Ok(decoded) => decoded,
            Err(reason) => {
                self.stats.rejected += 1;
                if self.stats.rejections.len() < 5 {
                    self.stats.rejections.push(reason.clone());
                }
                return PostOutcome::Invalid(reason);
            }
        };
        let Some(master) = self.masters.get_mut(bare_address) else {
            return PostOutcome::Invalid("not a master address".into());
        };
        if targets.is_empty() {
            targets = master
                .expected
                .iter()
                .filter(|(slot, _)| *slot == decoded.slot)
                .map(|(_, dir)| *dir)
                .collect();
        }
        self.stats.post_targets += targets.len() as u64;
        let whole = decoded.instances == master.instances;
        for dir in &targets {
            let key = (decoded.slot, *dir);
            if !master.expected.contains(&key) {
                self.stats.misplaced += 1;
            } else if whole {
                master.complete.insert(key);
            } else {
                // A later, partial descriptor replaces a complete one.
                master.complete.remove(&key);
            }
        }
        PostOutcome::Accepted(targets)
    }

    fn decode(
        &mut self,
        bare_address: &str,
        text: &str,
        now: SystemTime,
    ) -> Result<Decoded, String> {
        let key = (
            bare_address.to_owned(),
            Sha256::digest(text.as_bytes()).into(),
        );
        if let Some(known) = self.decoded.get(&key) {
            return known.clone();
        }
        let result = match self.masters.get(bare_address) {
            None => Err(format!("{bare_address} is not a master address")),
            Some(master) => {
                validate_instance_descriptor(text, &master.identity, &master.periods, now, MAX_SIZE)
                    .map_err(|e| e.to_string())
                    .and_then(|valid| {
                        let slot = master
                            .periods
                            .iter()
                            .position(|p| *p == valid.period)
                            .ok_or_else(|| "for neither current period".to_owned())?;
                        let instances = valid
                            .intro_points
                            .iter()
                            .filter_map(|ip| self.owners.get(ip.auth_key()).copied())
                            .collect();
                        Ok(Decoded { slot, instances })
                    })
            }
        };
        self.decoded.insert(key, result.clone());
        result
    }

    /// Counts a command the simulator does not know.
    pub fn unknown_command(&mut self, keyword: &str) {
        *self
            .stats
            .unknown_commands
            .entry(keyword.to_owned())
            .or_default() += 1;
    }

    /// Whether every responsible HSDir holds a complete descriptor of
    /// every service, for both periods.
    pub fn finished(&self) -> bool {
        self.masters.values().all(|m| m.complete == m.expected)
    }

    /// `(complete, expected)` HSDir slots over all services.
    pub fn progress(&self) -> (usize, usize) {
        self.masters.values().fold((0, 0), |(done, all), m| {
            (done + m.complete.len(), all + m.expected.len())
        })
    }

    /// The counts so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

fn identity_of(address: OnionAddress) -> anyhow::Result<HsIdKey> {
    HsIdKey::try_from(address.hs_id())
        .map_err(|e| anyhow::anyhow!("{address} is not a valid key: {e}"))
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::synthetic;
    use onionlb_core::descriptor::IntroPoint;
    use onionlb_core::descriptor::{
        build_master_descriptor, default_flow_control, MasterDescriptorPlan,
    };
    use onionlb_core::MasterKey;
    use std::time::Duration;

    /// 2026-11-22 00:00 UTC: a shared-random run starts, so the first
    /// descriptor is for the current period and the second for the next.
    const VALID_AFTER: u64 = 1_795_305_600;

    fn descriptor(
        key: &MasterKey,
        points: &[IntroPoint],
        period: TimePeriod,
        now: SystemTime,
    ) -> String {
        let plan = MasterDescriptorPlan {
            period,
            revision: 1,
            intro_points: points,
            flow_control: default_flow_control(31),
            now,
            max_size: MAX_SIZE,
        };
        build_master_descriptor(key, &plan, &mut rand::rng())
            .unwrap()
            .text
    }

    struct Setup {
        world: World,
        master: MasterKey,
        points: Vec<Vec<IntroPoint>>,
        now: SystemTime,
    }

    fn setup() -> Setup {
        let valid_after = SystemTime::UNIX_EPOCH + Duration::from_secs(VALID_AFTER);
        let now = valid_after + Duration::from_secs(1800);
        let (consensus, microdescs) = synthetic::network(40, valid_after);
        let (master, _) = MasterKey::generate(&mut rand::rng()).unwrap();
        let mut points = Vec::new();
        let mut instances = Vec::new();
        for i in 0..2 {
            let (key, _) = MasterKey::generate(&mut rand::rng()).unwrap();
            let ips = synthetic::intro_points(2, 2 * i).unwrap();
            instances.push(Instance {
                address: key.address(),
                descriptor: synthetic::instance_descriptor(&key, &ips, now, 1)
                    .unwrap()
                    .into(),
                intro_points: ips.iter().map(|ip| *ip.auth_key()).collect(),
            });
            points.push(ips);
        }
        let service = Service {
            address: master.address(),
            instances,
        };
        let world = World::new(&consensus, &microdescs, &[service]).unwrap();
        Setup {
            world,
            master,
            points,
            now,
        }
    }

    fn servers(world: &World, address: &str, slot: usize) -> Vec<String> {
        world.masters[address]
            .expected
            .iter()
            .filter(|(s, _)| *s == slot)
            .map(|(_, dir)| format!("${dir}"))
            .collect()
    }

    #[test]
    fn a_cycle_finishes_when_every_responsible_hsdir_has_every_instance() {
        let Setup {
            mut world,
            master,
            points,
            now,
        } = setup();
        let bare = master.address().without_suffix();
        let periods = world.masters[&bare].periods;
        let all: Vec<_> = points.concat();
        let (done, expected) = world.progress();
        assert_eq!((done, expected), (0, 16));

        // Only one instance's intro points: accepted, but not complete.
        let partial = descriptor(&master, &points[0], periods[0], now);
        let first = servers(&world, &bare, 0);
        assert!(
            matches!(world.post(&bare, &first, &partial, now), PostOutcome::Accepted(d) if d.len() == 8)
        );
        assert_eq!(world.progress().0, 0);

        let whole = descriptor(&master, &all, periods[0], now);
        world.post(&bare, &first, &whole, now);
        assert_eq!(world.progress().0, 8);
        assert!(!world.finished());

        // No SERVER=: tor's own choice, the responsible HSDirs.
        let second = descriptor(&master, &all, periods[1], now);
        assert!(
            matches!(world.post(&bare, &[], &second, now), PostOutcome::Accepted(d) if d.len() == 8)
        );
        assert!(world.finished());
        assert_eq!(world.stats().misplaced, 0);
    }

    #[test]
    fn posts_that_are_not_the_masters_are_refused_and_counted() {
        let Setup {
            mut world,
            master,
            points,
            now,
        } = setup();
        let bare = master.address().without_suffix();
        let periods = world.masters[&bare].periods;
        let (stranger, _) = MasterKey::generate(&mut rand::rng()).unwrap();
        let forged = descriptor(&stranger, &points[0], periods[0], now);
        let first = servers(&world, &bare, 0);
        assert!(matches!(
            world.post(&bare, &first, &forged, now),
            PostOutcome::Invalid(_)
        ));
        let stale = descriptor(&master, &points[0], periods[0].prev().unwrap(), now);
        assert!(matches!(
            world.post(&bare, &first, &stale, now),
            PostOutcome::Invalid(_)
        ));
        let unknown = world.post(
            &bare,
            &["$0000000000000000000000000000000000000000".into()],
            &forged,
            now,
        );
        assert!(matches!(unknown, PostOutcome::UnknownServer(_)));
        assert_eq!(world.stats().rejected, 2);
        assert_eq!(world.progress().0, 0);
    }
}
