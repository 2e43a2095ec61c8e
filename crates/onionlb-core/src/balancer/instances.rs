//! What the balancer keeps per backend instance: one record per address,
//! shared by every service that lists it, so its descriptor is fetched
//! and checked once however many masters it serves.

use std::time::{Duration, Instant, SystemTime};

use tor_hscrypto::pk::HsIdKey;

use super::notice::{Notice, Problem};
use crate::agent::TorProcess;
use crate::consensus::RsaId;
use crate::descriptor::IntroPoint;
use crate::fetch::FetchSchedule;
use crate::health::{self, Health, Verdict};
use crate::instance::InstanceState;
use crate::network::NetworkView;
use crate::period::PeriodRules;
use crate::probe;
use crate::OnionAddress;

/// One backend instance.
#[derive(Debug, Clone)]
pub struct Instance {
    address: OnionAddress,
    /// Its name in the first service that lists it.
    label: String,
    state: InstanceState,
    fetch: FetchSchedule,
    /// The HSDirs its descriptor is fetched from, for the view of this
    /// epoch.
    fetch_dirs: Option<(u64, Vec<RsaId>)>,
    health: Health,
    probe: probe::Schedule,
    /// The virtual port its probes connect to.
    probe_port: u16,
    verdict: Verdict,
    /// Why it is unusable, as last said (so it is said once).
    problem: Option<Problem>,
    received: Option<SystemTime>,
    intro_set_modified: Option<SystemTime>,
    /// Its agent's connection, if one is connected: where from.
    agent: Option<String>,
    /// The tor process its agent last said it follows (kept while the
    /// agent is away, so a restart in between is noticed).
    tor: Option<TorProcess>,
    /// When a kept descriptor next expires or is rotated out.
    expires_at: Option<SystemTime>,
    /// New evidence of its health came since it was last judged.
    unjudged: bool,
    /// Taken out on purpose (drained) at this time, until undrained.
    drained: Option<SystemTime>,
    /// Its place in configuration order (fetches go in that order).
    pub(super) position: usize,
    /// The services that list it (indexes into the balancer's list).
    pub(super) services: Vec<usize>,
}

impl Instance {
    /// An instance with nothing known yet, due for a fetch at once;
    /// `None` for an address that is not a valid ed25519 key.
    pub(super) fn new(
        address: OnionAddress,
        label: String,
        probe_port: u16,
        interval: Duration,
        policy: health::Policy,
        now: Instant,
    ) -> Option<Self> {
        Some(Instance {
            state: InstanceState::new(HsIdKey::try_from(address.hs_id()).ok()?),
            address,
            label,
            fetch: FetchSchedule::new(interval, now),
            fetch_dirs: None,
            health: Health::new(policy, now),
            probe: probe::Schedule::new(now),
            probe_port,
            verdict: Verdict::Up,
            problem: None,
            received: None,
            intro_set_modified: None,
            agent: None,
            tor: None,
            expires_at: None,
            unjudged: true,
            drained: None,
            position: 0,
            services: Vec::new(),
        })
    }

    /// Takes a reloaded configuration's name and knobs, keeping what is
    /// known.
    pub(super) fn reconfigure(
        &mut self,
        label: String,
        probe_port: u16,
        interval: Duration,
        policy: health::Policy,
        now: Instant,
    ) {
        self.label = label;
        self.probe_port = probe_port;
        self.fetch.set_interval(interval, now);
        self.health.set_policy(policy);
        self.unjudged = true;
        self.services.clear();
    }

    /// Its onion address.
    pub fn address(&self) -> OnionAddress {
        self.address
    }

    /// Its name in logs.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its descriptors.
    pub fn state(&self) -> &InstanceState {
        &self.state
    }

    /// Whether its intro points are published, as last judged.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Why it is unusable, as last said.
    pub fn problem(&self) -> Option<&Problem> {
        self.problem.as_ref()
    }

    /// When a descriptor of it was last accepted.
    pub fn received(&self) -> Option<SystemTime> {
        self.received
    }

    /// When its intro points last changed.
    pub fn intro_set_modified(&self) -> Option<SystemTime> {
        self.intro_set_modified
    }

    /// Where its agent is connected from, if it is.
    pub fn agent(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// Whether its intro points are published at `now`: it is healthy,
    /// not drained, and its newest descriptor still valid.
    pub fn is_live(&self, now: SystemTime) -> bool {
        self.verdict == Verdict::Up
            && self.drained.is_none()
            && self
                .state
                .descriptor()
                .is_some_and(|d| d.valid_until.is_none_or(|end| end > now))
    }

    /// When it is probed, and how the last probe went.
    pub fn probe(&self) -> &probe::Schedule {
        &self.probe
    }

    /// The virtual port its probes connect to.
    pub fn probe_port(&self) -> u16 {
        self.probe_port
    }

    pub(super) fn probe_mut(&mut self) -> &mut probe::Schedule {
        &mut self.probe
    }

    pub(super) fn fetch(&self) -> &FetchSchedule {
        &self.fetch
    }

    pub(super) fn fetch_mut(&mut self) -> &mut FetchSchedule {
        &mut self.fetch
    }

    pub(super) fn state_mut(&mut self) -> &mut InstanceState {
        &mut self.state
    }

    pub(super) fn health_mut(&mut self) -> &mut Health {
        &mut self.health
    }

    pub(super) fn set_agent(&mut self, peer: Option<String>) {
        self.agent = peer;
    }

    /// When a kept descriptor next expires or is rotated out.
    pub(super) fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// Starts a fetch round at `now` and returns the HSDirs to ask, for
    /// the view of `epoch`: of those clients fetch from now (`spread_fetch`
    /// per replica), one per replica, a different one each round. Asking
    /// every one would bring the same descriptor six times, at six times
    /// the cost here and on the network; an HSDir that lacks it fails, and
    /// the next round asks others. A round before that failed everywhere
    /// counts against its health.
    pub(super) fn start_fetch(
        &mut self,
        view: &NetworkView,
        epoch: u64,
        now: Instant,
    ) -> Vec<RsaId> {
        if self.fetch.sent(now) {
            self.health.fetch_failed();
            self.unjudged = true;
        }
        let spread = view.params.spread_fetch.max(1);
        let turn = usize::try_from(self.fetch.rounds() % spread as u64).unwrap_or(0);
        let all = match &self.fetch_dirs {
            Some((at, dirs)) if *at == epoch => dirs,
            _ => {
                let period = view.fetch_period();
                let dirs = match self.state.blinding(period) {
                    Some(blinding) => view.rings[view.fetch_slot].responsible(
                        &blinding.blinded,
                        view.params.n_replicas,
                        spread,
                    ),
                    None => Vec::new(),
                };
                &self.fetch_dirs.insert((epoch, dirs)).1
            }
        };
        let picked: Vec<RsaId> = all.iter().skip(turn).step_by(spread).copied().collect();
        if picked.is_empty() {
            // A ring smaller than one replica's spread.
            return all.clone();
        }
        picked
    }

    /// A descriptor of it was taken at `now`.
    pub(super) fn accepted(&mut self, now: SystemTime, fetched: bool, rules: &PeriodRules) {
        self.received = Some(now);
        if fetched {
            self.health.fetch_succeeded();
            self.fetch.succeeded();
            self.unjudged = true;
        }
        self.expires_at = self.state.next_expiry(rules);
    }

    /// Its intro points changed at `now`.
    pub(super) fn intro_points_changed(&mut self, now: SystemTime) {
        self.intro_set_modified = Some(now);
        self.problem = None;
    }

    /// Whether its verdict may have changed since it was last judged: new
    /// evidence came, or time alone can change it.
    pub(super) fn needs_judging(&self) -> bool {
        self.unjudged || self.health.changes_with_time()
    }

    /// Judges its health again at `now`; a notice if the verdict changed
    /// side (up to down or back).
    pub(super) fn judge(&mut self, now: Instant) -> Option<Notice> {
        self.unjudged = false;
        let verdict = self.health.verdict(now);
        let same_side = matches!(
            (&verdict, &self.verdict),
            (Verdict::Up, Verdict::Up) | (Verdict::Down(_), Verdict::Down(_))
        );
        // Still down, perhaps for a new reason: keep the newest for the
        // status, but it changes nothing to publish.
        let notice = match &verdict {
            _ if same_side => None,
            Verdict::Down(why) => Some(Notice::Leaving {
                instance: self.label.clone(),
                why: why.clone(),
            }),
            Verdict::Up => Some(Notice::HealthyAgain {
                instance: self.label.clone(),
            }),
        };
        self.verdict = verdict;
        notice
    }

    /// When it was drained, if it is.
    pub fn drained(&self) -> Option<SystemTime> {
        self.drained
    }

    pub(super) fn set_drained(&mut self, drained: Option<SystemTime>) {
        self.drained = drained;
    }

    /// Whether it is held out by failed probes alone.
    pub(super) fn down_by_probes(&self) -> bool {
        matches!(
            self.verdict,
            Verdict::Down(health::Down::ProbesFailing { .. })
        )
    }

    /// Its intro points, if it is healthy (or `despite_probes`, held out
    /// by failed probes alone) and has a descriptor still valid and not
    /// rotated out by its tor at `now`; says once why the last descriptor
    /// went, and fetches at once when it did (its tor has a newer one on
    /// the HSDirs the manager may not have asked yet).
    pub(super) fn live_intro_points(
        &mut self,
        now: super::Now,
        rules: &PeriodRules,
        despite_probes: bool,
        notices: &mut Vec<Notice>,
    ) -> Option<Vec<IntroPoint>> {
        if self.drained.is_some()
            || (self.verdict != Verdict::Up && !(despite_probes && self.down_by_probes()))
        {
            return None;
        }
        let live = self.state.live_intro_points(now.wall, rules);
        self.expires_at = self.state.next_expiry(rules);
        match live {
            Ok(points) => points,
            Err(expired) => {
                self.report(Problem::Expired(expired), notices);
                self.fetch.due_now(now.mono);
                None
            }
        }
    }

    /// Its agent says which tor process it follows. A new run of tor has
    /// new intro points for both of its descriptors, so every descriptor
    /// of the old run is dropped (said) and the new run's is fetched at
    /// once (the agent pushes only one of the two); whether that took
    /// intro points away.
    pub(super) fn follow_tor(
        &mut self,
        process: TorProcess,
        now: super::Now,
        notices: &mut Vec<Notice>,
    ) -> bool {
        let Some(before) = self.tor.replace(process) else {
            return false;
        };
        if !before.differs_from(&process) {
            return false;
        }
        notices.push(Notice::TorRestarted {
            instance: self.label.clone(),
            before,
            now: process,
        });
        let had = self.state.intro_point_count() > 0;
        self.state.forget_descriptors();
        self.expires_at = None;
        self.fetch.due_now(now.mono);
        if had {
            self.intro_set_modified = Some(now.wall);
        }
        had
    }

    /// Says why it is unusable, once per distinct reason.
    pub(super) fn report(&mut self, problem: Problem, notices: &mut Vec<Notice>) {
        if self.problem.as_ref() != Some(&problem) {
            notices.push(Notice::InstanceProblem {
                instance: self.label.clone(),
                problem: problem.clone(),
            });
            self.problem = Some(problem);
        }
    }
}
