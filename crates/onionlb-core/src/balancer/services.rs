//! What the balancer keeps per balanced service, and how it decides what
//! to publish for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tor_hscrypto::pk::HsBlindId;
use tor_hscrypto::time::TimePeriod;

use super::instances::Instance;
use super::notice::Notice;
use super::{Action, InstanceSpec, Now, Request};
use crate::allocation::plan;
use crate::coalesce::Coalescer;
use crate::consensus::RsaId;
use crate::descriptor::{
    default_flow_control, IntroPoint, MasterDescriptorPlan, PeriodSigner, MAX_INTRO_POINTS,
};
use crate::network::NetworkView;
use crate::period::DescriptorSlot;
use crate::publish::{publish_reason, DescriptorLayout, Layout, PublishReason, REPUBLISH_AFTER};
use crate::revision::next_revision;
use crate::upload::{UploadFailure, Uploads};
use crate::{MasterKey, OnionAddress};

/// What one look at a service works with: the view and its epoch, the
/// time, the random source, and where actions and notices go.
pub(super) struct Pass<'a, R> {
    pub(super) view: &'a NetworkView,
    pub(super) epoch: u64,
    pub(super) now: Now,
    pub(super) rng: &'a mut R,
    pub(super) actions: &'a mut Vec<Action>,
    pub(super) notices: &'a mut Vec<Notice>,
}

/// The two descriptor slots, in index order.
pub const SLOTS: [DescriptorSlot; 2] = [DescriptorSlot::First, DescriptorSlot::Second];

/// One balanced service.
pub struct Service {
    key: MasterKey,
    address: OnionAddress,
    /// Its instances in configuration order, with the names it gives them.
    members: Vec<InstanceSpec>,
    /// The most intro points in one of its descriptors.
    max_intro_points: usize,
    /// What was last published for each slot (first, second).
    published: [Option<Published>; 2],
    /// Last revision published per blinded key.
    revisions: HashMap<HsBlindId, u64>,
    /// Set once "no usable instance" has been said, until one is back.
    warned_empty: bool,
    /// Whether it was said that probes fail for every instance.
    warned_probes: bool,
    /// Instance changes not yet published.
    changes: Coalescer,
    /// Something other than an instance change may alter what to publish
    /// (a new view or configuration, an expiry): look at the next tick.
    stale: bool,
    /// Where each slot's descriptor goes, for the view of one epoch.
    placements: [Option<Placement>; 2],
    /// The signers of the periods the slots are for (at most one more
    /// while the slots move on).
    signers: Vec<PeriodSigner>,
}

/// A master descriptor that was sent to HSDirs.
#[derive(Debug, Clone)]
pub struct Published {
    /// Its intro points and HSDirs.
    pub layout: Layout,
    /// When it was made.
    pub at: SystemTime,
    /// Its revision counter.
    pub revision: u64,
    /// Why it was made.
    pub reason: PublishReason,
    /// How many instances had intro points to put in it.
    pub instances: usize,
    /// The descriptor each HSDir was sent (one text shared by the HSDirs
    /// that got the same), for sending again; let go once every HSDir
    /// accepted its copy.
    pub texts: BTreeMap<RsaId, Arc<str>>,
    /// What became of each upload.
    pub uploads: Uploads,
}

/// Where one slot's descriptor goes under one view.
#[derive(Debug, Clone)]
struct Placement {
    epoch: u64,
    period: TimePeriod,
    blinded: HsBlindId,
    /// The HSDirs that store it.
    store: Vec<RsaId>,
    /// The HSDirs clients fetch it from (first in each replica).
    fetchable: Vec<RsaId>,
}

impl Service {
    /// A service with nothing published yet.
    pub(super) fn new(key: MasterKey, members: Vec<InstanceSpec>, max_intro_points: usize) -> Self {
        Service {
            address: key.address(),
            key,
            members,
            max_intro_points: max_intro_points.clamp(1, MAX_INTRO_POINTS),
            published: [None, None],
            revisions: HashMap::new(),
            warned_empty: false,
            warned_probes: false,
            changes: Coalescer::default(),
            stale: true,
            placements: [None, None],
            signers: Vec::new(),
        }
    }

    /// Takes a reloaded configuration's key, instance list and intro
    /// point limit; whether the instances or the limit changed.
    pub(super) fn reconfigure(
        &mut self,
        key: MasterKey,
        members: Vec<InstanceSpec>,
        max_intro_points: usize,
    ) -> bool {
        let max_intro_points = max_intro_points.clamp(1, MAX_INTRO_POINTS);
        let changed = self
            .members
            .iter()
            .map(|m| m.address)
            .ne(members.iter().map(|m| m.address))
            || max_intro_points != self.max_intro_points;
        self.key = key;
        self.members = members;
        self.max_intro_points = max_intro_points;
        self.stale = true;
        changed
    }

    /// Its master address.
    pub fn address(&self) -> OnionAddress {
        self.address
    }

    /// Its instances, as configured.
    pub fn members(&self) -> &[InstanceSpec] {
        &self.members
    }

    /// What was last published per slot (first, second).
    pub fn published(&self) -> &[Option<Published>; 2] {
        &self.published
    }

    /// An instance of it changed at `now`: publish once changes settle.
    pub(super) fn changed(&mut self, now: Instant) {
        self.changes.changed(now);
    }

    /// Whether a change waits to be published.
    pub(super) fn has_pending_change(&self) -> bool {
        self.changes.is_pending()
    }

    /// Marks it for a look at the next tick.
    pub(super) fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// Whether anything calls for a look at what to publish at `now`: a
    /// settled change, a new view or configuration, or a descriptor due
    /// for republication by age.
    pub(super) fn wants_look(&self, now: Now) -> bool {
        if self.changes.is_settling(now.mono) {
            return false;
        }
        self.stale
            || self.changes.is_pending()
            || self.published.iter().flatten().any(|p| {
                now.wall
                    .duration_since(p.at)
                    .is_ok_and(|age| age >= REPUBLISH_AFTER)
            })
    }

    /// Looks at both slots and publishes where something calls for it.
    pub(super) fn look<R>(
        &mut self,
        instances: &mut HashMap<OnionAddress, Instance>,
        pass: &mut Pass<'_, R>,
    ) where
        R: rand::Rng + rand::CryptoRng,
    {
        self.stale = false;
        self.changes.clear();
        let mut live = self.live(instances, false, pass);
        // Probes failing for every instance at once are more likely the
        // management tor's trouble than all of theirs: publish as without
        // probes rather than take the service down.
        let probes_only = live.iter().all(Vec::is_empty)
            && self.members.iter().any(|m| {
                instances
                    .get(&m.address)
                    .is_some_and(Instance::down_by_probes)
            });
        if probes_only {
            live = self.live(instances, true, pass);
            if !self.warned_probes {
                pass.notices.push(Notice::ProbesFailEverywhere {
                    service: self.address,
                });
                self.warned_probes = true;
            }
        } else {
            self.warned_probes = false;
        }
        if live.iter().all(Vec::is_empty) {
            if !self.warned_empty && self.published.iter().any(Option::is_some) {
                pass.notices.push(Notice::NoUsableInstance {
                    service: self.address,
                });
                self.warned_empty = true;
            }
            return;
        }
        self.warned_empty = false;
        let periods = pass.view.rings.each_ref().map(|ring| ring.slot().period);
        self.signers
            .retain(|signer| periods.contains(&signer.period()));
        self.revisions
            .retain(|blinded, _| self.signers.iter().any(|s| s.blinded() == *blinded));
        for (index, slot) in SLOTS.into_iter().enumerate() {
            self.publish_if_due(index, slot, &live, pass);
        }
    }

    /// The intro points of each member on offer (see
    /// [`Instance::live_intro_points`]).
    fn live<R>(
        &self,
        instances: &mut HashMap<OnionAddress, Instance>,
        despite_probes: bool,
        pass: &mut Pass<'_, R>,
    ) -> Vec<Vec<IntroPoint>> {
        self.members
            .iter()
            .filter_map(|member| {
                instances.get_mut(&member.address)?.live_intro_points(
                    pass.now,
                    &pass.view.rules,
                    despite_probes,
                    pass.notices,
                )
            })
            .collect()
    }

    /// Builds and uploads the descriptor for `slot` if anything calls for
    /// it: none yet for this period, a changed intro point set or HSDir
    /// set, or age.
    fn publish_if_due<R>(
        &mut self,
        index: usize,
        slot: DescriptorSlot,
        live: &[Vec<IntroPoint>],
        pass: &mut Pass<'_, R>,
    ) where
        R: rand::Rng + rand::CryptoRng,
    {
        let (view, now) = (pass.view, pass.now);
        let Some(at) = self.signer(view.rings[index].slot().period, pass) else {
            return;
        };
        let placement = self.placement(index, view, pass.epoch, at);
        let (period, blinded) = (placement.period, placement.blinded);
        // The two slots start the round-robin at different instances, so
        // the spare slots do not always fall to the same ones.
        let planned = plan(
            live,
            &placement.fetchable,
            &placement.store,
            self.max_intro_points,
            index,
            IntroPoint::relay,
        );
        let hsdirs = placement.store.len();
        let layout = Layout {
            period: period.interval_num(),
            descriptors: planned
                .iter()
                .map(|descriptor| {
                    DescriptorLayout::new(
                        descriptor
                            .intro_points
                            .iter()
                            .map(|ip| *ip.auth_key())
                            .collect(),
                        descriptor.hsdirs.clone(),
                    )
                })
                .collect(),
        };
        let previous = self.published[index].as_ref().map(|p| (&p.layout, p.at));
        let Some(reason) = publish_reason(previous, &layout, now.wall) else {
            return;
        };
        let computed = self
            .key
            .revision_key()
            .counter(slot, now.wall, view.rules.run_length);
        let revision = next_revision(computed, self.revisions.get(&blinded).copied());
        let mut texts = BTreeMap::new();
        let mut posts = Vec::new();
        let signer = &mut self.signers[at];
        for descriptor in &planned {
            let plan = MasterDescriptorPlan {
                period,
                revision,
                intro_points: &descriptor.intro_points,
                flow_control: default_flow_control(view.sendme_inc),
                now: now.wall,
                max_size: view.max_descriptor_size,
            };
            match signer.build(&plan, pass.rng) {
                Ok(built) => {
                    let text: Arc<str> = built.text.into();
                    for hsdir in &descriptor.hsdirs {
                        texts.insert(*hsdir, Arc::clone(&text));
                    }
                    posts.push(Action::Send(Request::Post {
                        service: self.address,
                        slot,
                        hsdirs: descriptor.hsdirs.clone(),
                        text,
                    }));
                }
                Err(error) => {
                    pass.notices.push(Notice::BuildFailed {
                        service: self.address,
                        error,
                    });
                    return;
                }
            }
        }
        signer.forget_unused();
        self.revisions.insert(blinded, revision);
        let instances = live.iter().filter(|l| !l.is_empty()).count();
        pass.notices.push(Notice::Publishing {
            service: self.address,
            slot,
            reason,
            distinct: planned.len(),
            intro_points: planned.iter().map(|d| d.intro_points.len()).sum(),
            instances,
            revision,
            hsdirs,
        });
        pass.actions.extend(posts);
        self.published[index] = Some(Published {
            layout,
            at: now.wall,
            revision,
            reason,
            instances,
            uploads: Uploads::sent(texts.keys().copied(), now.mono),
            texts,
        });
    }

    /// The index of the signer for `period` at the pass's time, made (and
    /// any unfit one for the period replaced) if need be; `None`, with a
    /// notice, if none can be made.
    fn signer<R>(&mut self, period: TimePeriod, pass: &mut Pass<'_, R>) -> Option<usize>
    where
        R: rand::Rng + rand::CryptoRng,
    {
        let now = pass.now.wall;
        if let Some(at) = self.signers.iter().position(|s| s.fits(period, now)) {
            return Some(at);
        }
        self.signers.retain(|s| s.period() != period);
        match PeriodSigner::new(&self.key, period, now, pass.rng) {
            Ok(signer) => {
                self.signers.push(signer);
                Some(self.signers.len() - 1)
            }
            Err(error) => {
                pass.notices.push(Notice::BuildFailed {
                    service: self.address,
                    error,
                });
                None
            }
        }
    }

    /// Where `index`'s descriptor goes under `view` (of `epoch`), for the
    /// blinded key of signer `at`: derived again only for a new view or
    /// period.
    fn placement(&mut self, index: usize, view: &NetworkView, epoch: u64, at: usize) -> Placement {
        let ring = &view.rings[index];
        let period = ring.slot().period;
        let blinded = self.signers[at].blinded();
        match &self.placements[index] {
            Some(p) if p.epoch == epoch && p.period == period && p.blinded == blinded => {
                return p.clone();
            }
            _ => {}
        }
        let params = view.params;
        let placement = Placement {
            epoch,
            period,
            blinded,
            store: ring.responsible(&blinded, params.n_replicas, params.spread_store),
            fetchable: ring.responsible(&blinded, params.n_replicas, params.spread_fetch),
        };
        self.placements[index] = Some(placement.clone());
        placement
    }

    /// Sends again, at `now`, uploads that failed or went unanswered and
    /// whose time has come: one post per descriptor text.
    pub(super) fn retry_due(&mut self, now: Instant, out: &mut Vec<Action>) {
        for (index, slot) in SLOTS.into_iter().enumerate() {
            let Some(published) = &mut self.published[index] else {
                continue;
            };
            if published.uploads.next_due().is_none_or(|at| at > now) {
                continue;
            }
            let mut by_text: Vec<(Arc<str>, Vec<RsaId>)> = Vec::new();
            for dir in published.uploads.take_due(now) {
                let Some(text) = published.texts.get(&dir) else {
                    continue;
                };
                match by_text.iter_mut().find(|(t, _)| Arc::ptr_eq(t, text)) {
                    Some((_, dirs)) => dirs.push(dir),
                    None => by_text.push((Arc::clone(text), vec![dir])),
                }
            }
            out.extend(by_text.into_iter().map(|(text, hsdirs)| {
                Action::Send(Request::Post {
                    service: self.address,
                    slot,
                    hsdirs,
                    text,
                })
            }));
        }
    }

    /// An HSDir answered an upload of its descriptor at `now`
    /// (`failed` with tor's reason, or accepted). tor's upload events do
    /// not say which descriptor they are about; an HSDir responsible for
    /// both slots hears from both.
    pub(super) fn upload_answered(
        &mut self,
        hsdir: RsaId,
        failed: Option<UploadFailure>,
        now: Instant,
        notices: &mut Vec<Notice>,
    ) {
        let mut ours = false;
        let mut retry = None;
        for published in self.published.iter_mut().flatten() {
            match failed {
                None => {
                    let accepted = published.uploads.accepted(&hsdir, now);
                    if accepted && published.uploads.next_due().is_none() {
                        // Every HSDir has it: nothing is left to send
                        // again, and at 10,000 services the texts would be
                        // half the memory.
                        published.texts.clear();
                    }
                    ours |= accepted;
                }
                Some(reason) => {
                    if let Some(delay) = published.uploads.failed(&hsdir, reason, now) {
                        retry = Some(delay);
                        if published.texts.is_empty() {
                            // Its texts went when every HSDir had it: this
                            // report is about the other slot's upload to
                            // the same HSDir (tor's events do not say
                            // which). Publish it anew, as if it were old.
                            published.at = SystemTime::UNIX_EPOCH;
                        }
                    }
                }
            }
        }
        match (failed, retry) {
            (None, _) if ours => notices.push(Notice::UploadAccepted {
                service: self.address,
                hsdir,
            }),
            (Some(reason), Some(retry_in)) => notices.push(Notice::UploadFailed {
                service: self.address,
                hsdir,
                reason,
                retry_in,
            }),
            _ => {}
        }
    }

    /// tor refused the post of `slot`'s descriptor to `hsdirs` at `now`:
    /// each is retried like a failed upload.
    pub(super) fn post_refused(&mut self, slot: DescriptorSlot, hsdirs: &[RsaId], now: Instant) {
        let index = SLOTS.iter().position(|s| *s == slot).unwrap_or(0);
        if let Some(published) = &mut self.published[index] {
            for dir in hsdirs {
                published
                    .uploads
                    .failed(dir, UploadFailure::PostRefused, now);
            }
        }
    }

    /// The control connection was lost at `now`: uploads in flight are
    /// sent again once it is back.
    pub(super) fn connection_lost(&mut self, now: Instant) {
        for published in self.published.iter_mut().flatten() {
            published.uploads.connection_lost(now);
        }
    }
}
