//! What the manager keeps per service and per instance between events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use onionlb_core::agent::TorProcess;
use onionlb_core::coalesce::Coalescer;
use onionlb_core::consensus::RsaId;
use onionlb_core::descriptor::IntroPointDesc;
use onionlb_core::health::{self, Health, Verdict};
use onionlb_core::instance::InstanceState;
use onionlb_core::period::PeriodRules;
use onionlb_core::publish::{Layout, PublishReason};
use onionlb_core::upload::Uploads;
use onionlb_core::{MasterKey, OnionAddress};
use tor_hscrypto::pk::{HsBlindId, HsIdKey};

use crate::config::InstanceConfig;

/// One balanced service and what has been published for it.
pub(super) struct Service {
    pub(super) key: MasterKey,
    pub(super) address: OnionAddress,
    pub(super) instances: Vec<Instance>,
    /// What was last published for each slot (first, second).
    pub(super) published: [Option<Published>; 2],
    /// Last revision published per blinded key.
    pub(super) revisions: HashMap<HsBlindId, u64>,
    /// Set once "no live instance" has been said, until one is back.
    pub(super) warned_empty: bool,
    /// Instance changes not yet published.
    pub(super) changes: Coalescer,
}

/// One backend instance and its last good descriptor.
pub(super) struct Instance {
    pub(super) config: InstanceConfig,
    pub(super) state: InstanceState,
    /// Why it is unusable, as last reported (so it is said once).
    pub(super) problem: Option<String>,
    /// When a descriptor of it was last accepted.
    pub(super) received: Option<SystemTime>,
    /// When its intro points last changed.
    pub(super) intro_set_modified: Option<SystemTime>,
    /// What is known of its health.
    pub(super) health: Health,
    /// Whether its intro points are published, as last judged.
    pub(super) verdict: Verdict,
    /// Its agent's connection, if one is connected: where from.
    pub(super) agent: Option<String>,
    /// The tor process its agent last said it follows (kept while the
    /// agent is away, so a restart in between is noticed).
    pub(super) tor: Option<TorProcess>,
}

/// A master descriptor that was sent to HSDirs.
pub(super) struct Published {
    pub(super) layout: Layout,
    pub(super) at: SystemTime,
    pub(super) revision: u64,
    pub(super) reason: PublishReason,
    /// The descriptor each HSDir was sent (one text shared by the HSDirs
    /// that got the same).
    pub(super) texts: BTreeMap<RsaId, Arc<str>>,
    pub(super) uploads: Uploads,
}

impl Service {
    /// A service with nothing fetched or published yet.
    pub(super) fn new(
        key: MasterKey,
        instances: &[InstanceConfig],
        policy: health::Policy,
        now: Instant,
    ) -> Self {
        Service {
            address: key.address(),
            key,
            instances: instances
                .iter()
                .filter_map(|config| Instance::new(config, policy, now))
                .collect(),
            published: [None, None],
            revisions: HashMap::new(),
            warned_empty: false,
            changes: Coalescer::default(),
        }
    }

    /// Takes a reloaded instance list: instances it already had keep
    /// their descriptors and history (under their new names); others start
    /// afresh. Returns whether the set of instances changed.
    pub(super) fn set_instances(
        &mut self,
        configs: &[InstanceConfig],
        policy: health::Policy,
        now: Instant,
    ) -> bool {
        let mut old = std::mem::take(&mut self.instances);
        let before: Vec<_> = old.iter().map(|i| i.config.address).collect();
        self.instances = configs
            .iter()
            .filter_map(|config| {
                match old.iter().position(|i| i.config.address == config.address) {
                    Some(at) => {
                        let mut kept = old.swap_remove(at);
                        kept.config = config.clone();
                        kept.health.set_policy(policy);
                        Some(kept)
                    }
                    None => Instance::new(config, policy, now),
                }
            })
            .collect();
        let after: Vec<_> = self.instances.iter().map(|i| i.config.address).collect();
        before != after
    }
}

impl Instance {
    /// An instance with nothing known yet; `None` for an address that is
    /// not a valid ed25519 key (the config loader already refuses those).
    pub(super) fn new(
        config: &InstanceConfig,
        policy: health::Policy,
        now: Instant,
    ) -> Option<Self> {
        Some(Instance {
            state: InstanceState::new(HsIdKey::try_from(config.address.hs_id()).ok()?),
            config: config.clone(),
            problem: None,
            received: None,
            intro_set_modified: None,
            health: Health::new(policy, now),
            verdict: Verdict::Up,
            agent: None,
            tor: None,
        })
    }

    /// Judges its health again; whether the verdict changed (said in the
    /// log).
    pub(super) fn judge(&mut self, now: Instant) -> bool {
        let verdict = self.health.verdict(now);
        let same_side = matches!(
            (&verdict, &self.verdict),
            (Verdict::Up, Verdict::Up) | (Verdict::Down(_), Verdict::Down(_))
        );
        if same_side {
            // Still down, perhaps for a new reason: keep the newest for the
            // status, but it changes nothing to publish.
            self.verdict = verdict;
            return false;
        }
        match &verdict {
            Verdict::Down(why) => tracing::warn!(
                "{}: leaving the master descriptors: {why}",
                self.config.label()
            ),
            Verdict::Up => tracing::info!("{}: healthy again", self.config.label()),
        }
        self.verdict = verdict;
        true
    }

    /// Its intro points, if it is healthy and has a descriptor still
    /// valid and not rotated out by its tor (under `rules`); says once why
    /// the last descriptor went.
    pub(super) fn live_intro_points(
        &mut self,
        now: SystemTime,
        rules: &PeriodRules,
    ) -> Option<Vec<IntroPointDesc>> {
        if self.verdict != Verdict::Up {
            return None;
        }
        match self.state.live_intro_points(now, rules) {
            Ok(points) => points,
            Err(expired) => {
                self.report(expired.to_string());
                None
            }
        }
    }

    /// Its agent says which tor process it follows. A new run of tor
    /// has new intro points for both of its descriptors, so every
    /// descriptor of the old run is dropped (said in the log); whether
    /// that took intro points away.
    pub(super) fn follow_tor(&mut self, process: TorProcess) -> bool {
        let Some(before) = self.tor.replace(process) else {
            return false;
        };
        if !before.differs_from(&process) {
            return false;
        }
        tracing::warn!(
            "{}: its tor restarted ({before} before, {process} now): dropping the old run's intro points",
            self.config.label()
        );
        let had = self.state.intro_point_count() > 0;
        self.state.forget_descriptors();
        if had {
            self.intro_set_modified = Some(SystemTime::now());
        }
        had
    }

    /// Logs why it is unusable, once per distinct reason.
    pub(super) fn report(&mut self, problem: String) {
        if self.problem.as_deref() != Some(problem.as_str()) {
            tracing::warn!("{}: {problem}", self.config.label());
            self.problem = Some(problem);
        }
    }
}
