//! What the manager knows about one backend instance: its last good
//! descriptor for each of its tor's two time periods, and the revisions it
//! has seen.
//!
//! Every descriptor, however it arrived (fetched from an HSDir or pushed
//! by an agent), goes through [`InstanceState::offer`], so one rule
//! decides what is used: it must pass [`crate::descriptor::validate_blinded`],
//! and its revision must not go below one already seen for its blinded
//! key. An attacker who can delay or replay descriptors can therefore hold
//! back new intro points but never bring back old ones or inject foreign
//! ones.
//!
//! # Two descriptors, two sets of intro points
//!
//! A C tor service keeps a "current" and a "next" descriptor, for
//! consecutive time periods, and gives each its own intro points. Both
//! sets answer introductions until the service rotates its descriptors at
//! the start of a shared-random run: then the older descriptor goes, and
//! its intro points are closed ([`PeriodRules::retirement`]). Fetches
//! bring the descriptor of the period clients use and agents push tor's
//! "current" one, which is not always the newer. So the state keeps the
//! newest descriptor of each of the two latest periods and offers the
//! intro points of both, newest period first, dropping a period's at its
//! rotation: whichever arrives first, rotation alone never leaves the
//! master descriptor with only closed intro points, and a restarted tor's
//! new intro points are used as soon as either of its descriptors comes.
//!
//! A restarted tor has new intro points for both descriptors but uploads
//! them one at a time, so the old run's descriptor of the other period
//! would stay, with intro points that died with it, listed first when its
//! period is the newer. Whoever knows that tor restarted (its agent)
//! calls [`InstanceState::forget_descriptors`]; the revisions seen stay,
//! so an HSDir that still has the old run's descriptors cannot bring them
//! back. Without an agent, a new run shows in its descriptors: a running
//! tor replaces a descriptor's intro points one at a time, as each
//! expires or fails, while a new run's descriptor shares none with the
//! one it replaces. Such a descriptor ([`Accepted::NewRun`]) drops the
//! kept descriptor of the other period, which came from the old run.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::intro::IntroPoint;
use sha2::{Digest as _, Sha256};
use tor_hscrypto::pk::{HsBlindId, HsIdKey};
use tor_hscrypto::time::TimePeriod;

use crate::descriptor::{validate_blinded, Blinding, DescriptorError, InstanceDescriptor};
use crate::period::PeriodRules;

/// Descriptors kept per instance: its tor's current and next.
const KEPT: usize = 2;
/// Blindings kept per instance: the periods of both slots, and the one
/// before during a rollover.
const BLINDINGS: usize = 3;

/// One instance's descriptor state.
#[derive(Debug, Clone)]
pub struct InstanceState {
    identity: HsIdKey,
    /// Newest period first; at most [`KEPT`], of distinct periods.
    kept: Vec<Kept>,
    /// Highest revision seen per blinded key, for the periods that may
    /// still be offered (one before the oldest lately offered, and
    /// after).
    revisions: HashMap<HsBlindId, Seen>,
    /// The identity's blindings for the periods lately asked about,
    /// oldest first; at most [`BLINDINGS`].
    blindings: Vec<Blinding>,
}

/// A descriptor in use, and the digest of its text: the same text comes
/// from every HSDir asked, and needs no second check.
#[derive(Debug, Clone)]
struct Kept {
    descriptor: InstanceDescriptor,
    digest: [u8; 32],
}

/// The highest revision seen for one blinded key, and whether the run
/// that made it is over.
#[derive(Debug, Clone, Copy)]
struct Seen {
    revision: u64,
    /// The period of the blinded key.
    period: TimePeriod,
    /// Its tor stopped, or a new run of it replaced that run's
    /// descriptors: a copy of it is a replay. A descriptor dropped only
    /// because its period ended is not withdrawn.
    withdrawn: bool,
}

/// What a descriptor that passed [`InstanceState::offer`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The instance had no usable descriptor before.
    NowUsable,
    /// The intro points on offer changed.
    IntroPointsChanged,
    /// It shares no intro point with the descriptor of its period it
    /// replaces: a new run of the instance's tor, whose descriptor of the
    /// other period, if kept, was dropped.
    NewRun,
    /// Same intro points (the same descriptor from another HSDir, a new
    /// revision with nothing new for us, or a period already gone).
    Unchanged,
}

/// Why a descriptor was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// It failed validation.
    #[error("rejected a descriptor: {0}")]
    Invalid(#[from] DescriptorError),
    /// Its revision is below one already seen for its blinded key, or
    /// equal to one of a run of the instance's tor that is over.
    #[error(
        "rejected a descriptor with revision {revision}, not above {seen} already seen (a replay)"
    )]
    Replay {
        /// Its revision.
        revision: u64,
        /// The highest seen.
        seen: u64,
    },
}

impl Rejected {
    /// A short name for the kind of refusal, for counters: `replay`,
    /// `wrong_key`, `too_large`, `untimely` or `invalid`.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejected::Replay { .. } => "replay",
            Rejected::Invalid(DescriptorError::WrongKey) => "wrong_key",
            Rejected::Invalid(DescriptorError::TooLarge { .. }) => "too_large",
            Rejected::Invalid(DescriptorError::Untimely) => "untimely",
            Rejected::Invalid(_) => "invalid",
        }
    }
}

impl InstanceState {
    /// An instance with this identity key and nothing known yet.
    pub fn new(identity: HsIdKey) -> Self {
        InstanceState {
            identity,
            kept: Vec::new(),
            revisions: HashMap::new(),
            blindings: Vec::new(),
        }
    }

    /// Checks `text` as this instance's descriptor for one of `periods`
    /// at `now`, and uses it if it passes.
    pub fn offer(
        &mut self,
        text: &str,
        periods: &[TimePeriod],
        now: SystemTime,
        max_size: usize,
    ) -> Result<Accepted, Rejected> {
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if self.kept.iter().any(|k| k.digest == digest) {
            // Byte for byte one in use: validity in time is checked when
            // its intro points are taken.
            return Ok(Accepted::Unchanged);
        }
        let blindings: Vec<Blinding> = periods
            .iter()
            .filter_map(|period| self.blinding(*period).cloned())
            .collect();
        let descriptor = validate_blinded(text, &blindings, now, max_size)?;
        let seen = self.revisions.get(&descriptor.blinded).copied();
        let highest = seen.map_or(0, |s| s.revision);
        if descriptor.revision < highest {
            return Err(Rejected::Replay {
                revision: descriptor.revision,
                seen: highest,
            });
        }
        if let Some(seen) = seen.filter(|s| s.revision == descriptor.revision) {
            // The revision in use encoded anew, or one of a period that
            // ended: nothing changes. One of a run that is over is a
            // replay, as one below it would be.
            return if seen.withdrawn {
                Err(Rejected::Replay {
                    revision: descriptor.revision,
                    seen: highest,
                })
            } else {
                Ok(Accepted::Unchanged)
            };
        }
        let before = self.intro_keys();
        let replaced = self
            .kept
            .iter()
            .position(|k| k.descriptor.blinded == descriptor.blinded)
            .map(|at| self.kept.remove(at));
        let new_run = replaced.is_some_and(|old| {
            let old = &old.descriptor.intro_points;
            !old.is_empty()
                && !descriptor.intro_points.is_empty()
                && !descriptor
                    .intro_points
                    .iter()
                    .any(|new| old.iter().any(|o| *o.auth_key() == *new.auth_key()))
        });
        if new_run {
            self.end_run();
        }
        self.revisions.insert(
            descriptor.blinded,
            Seen {
                revision: descriptor.revision,
                period: descriptor.period,
                withdrawn: false,
            },
        );
        // A descriptor of a period older than those offered fails
        // validation before its revision is looked at: forget those.
        if let Some(oldest) = periods.iter().map(TimePeriod::interval_num).min() {
            self.revisions
                .retain(|_, seen| seen.period.interval_num() + 1 >= oldest);
        }
        self.kept.push(Kept { descriptor, digest });
        self.kept
            .sort_by_key(|k| std::cmp::Reverse(k.descriptor.period.interval_num()));
        self.kept.truncate(KEPT);
        Ok(if before.is_empty() {
            Accepted::NowUsable
        } else if new_run {
            Accepted::NewRun
        } else if before != self.intro_keys() {
            Accepted::IntroPointsChanged
        } else {
            Accepted::Unchanged
        })
    }

    /// The intro points to publish at `now`, newest period first: those
    /// of every kept descriptor still valid and not yet rotated out by the
    /// instance's tor (under `rules`). `Err` says once that the last one
    /// went.
    pub fn live_intro_points(
        &mut self,
        now: SystemTime,
        rules: &PeriodRules,
    ) -> Result<Option<Vec<IntroPoint>>, Expired> {
        let had = !self.kept.is_empty();
        self.kept.retain(|k| {
            let expired = k.descriptor.valid_until.is_some_and(|end| end <= now);
            let retired = rules
                .retirement(k.descriptor.period)
                .is_some_and(|at| at <= now);
            !expired && !retired
        });
        if self.kept.is_empty() {
            return if had { Err(Expired) } else { Ok(None) };
        }
        let mut keys = Vec::new();
        let mut points = Vec::new();
        for point in self.kept.iter().flat_map(|k| &k.descriptor.intro_points) {
            let key = *point.auth_key();
            if !keys.contains(&key) {
                keys.push(key);
                points.push(point.clone());
            }
        }
        Ok(Some(points))
    }

    /// Drops every descriptor in use: the tor that made them stopped, and
    /// their intro points with it. The revisions seen are kept, so none
    /// of them is accepted again; the new run's are higher (a C tor
    /// derives its revision from the time).
    pub fn forget_descriptors(&mut self) {
        self.end_run();
    }

    /// Drops every descriptor in use: the run that made them, and every
    /// revision seen so far, is over.
    fn end_run(&mut self) {
        self.kept.clear();
        for seen in self.revisions.values_mut() {
            seen.withdrawn = true;
        }
    }

    /// The instance's identity key.
    pub fn identity(&self) -> &HsIdKey {
        &self.identity
    }

    /// The identity's blinding for `period`, derived on first use and
    /// kept for the next descriptors of that period; `None` for a period
    /// that cannot be blinded for.
    pub fn blinding(&mut self, period: TimePeriod) -> Option<&Blinding> {
        let at = match self.blindings.iter().position(|b| b.period == period) {
            Some(at) => at,
            None => {
                let blinding = Blinding::derive(&self.identity, period)?;
                if self.blindings.len() == BLINDINGS {
                    self.blindings.remove(0);
                }
                self.blindings.push(blinding);
                self.blindings.len() - 1
            }
        };
        self.blindings.get(at)
    }

    /// When the next kept descriptor expires or is rotated out by the
    /// instance's tor (under `rules`), if any is kept: the intro points on
    /// offer change then.
    pub fn next_expiry(&self, rules: &PeriodRules) -> Option<SystemTime> {
        self.kept
            .iter()
            .flat_map(|k| {
                [
                    k.descriptor.valid_until,
                    rules.retirement(k.descriptor.period),
                ]
            })
            .flatten()
            .min()
    }

    /// The descriptor of its newest time period, whether or not still
    /// valid.
    pub fn descriptor(&self) -> Option<&InstanceDescriptor> {
        self.kept.first().map(|k| &k.descriptor)
    }

    /// How many intro points its kept descriptors carry.
    pub fn intro_point_count(&self) -> usize {
        self.kept
            .iter()
            .map(|k| k.descriptor.intro_points.len())
            .sum()
    }

    /// The service keys of the intro points on offer, sorted.
    pub fn intro_keys(&self) -> Vec<[u8; 32]> {
        let mut keys: Vec<[u8; 32]> = self
            .kept
            .iter()
            .flat_map(|k| &k.descriptor.intro_points)
            .map(|ip| *ip.auth_key())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// The instance's last descriptor expired or was rotated out by its tor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("its descriptors expired or were rotated out by its tor")]
pub struct Expired;

#[cfg(test)]
mod test {
    use super::*;
    use crate::test_support::{build, build_with, fixture, intro_point, Fixture};
    use std::time::Duration;

    #[test]
    fn first_descriptor_makes_the_instance_usable_then_changes_are_told_apart() {
        let f = fixture();
        let periods = [f.period];
        let mut state = InstanceState::new(f.identity.clone());
        assert!(state.descriptor().is_none());
        let v5 = build(&f, 5);
        assert_eq!(
            state.offer(&v5.text, &periods, f.now, 50_000),
            Ok(Accepted::NowUsable)
        );
        // The same descriptor again (from another HSDir).
        assert_eq!(
            state.offer(&v5.text, &periods, f.now, 50_000),
            Ok(Accepted::Unchanged)
        );
        // A new revision with the same intro points.
        let v6 = build(&f, 6);
        assert_eq!(
            state.offer(&v6.text, &periods, f.now, 50_000),
            Ok(Accepted::Unchanged)
        );
        // One intro point replaced, as a running tor does.
        let mut one_new = f.intro_points.clone();
        one_new[0] = intro_point(&mut rand::rng(), 1);
        let v7 = build_with(&f, 7, &one_new);
        assert_eq!(
            state.offer(&v7.text, &periods, f.now, 50_000),
            Ok(Accepted::IntroPointsChanged)
        );
        assert_eq!(state.descriptor().unwrap().revision, 7);
        // Every one replaced at once: a new run of its tor.
        let fresh = vec![intro_point(&mut rand::rng(), 2)];
        let v8 = build_with(&f, 8, &fresh);
        assert_eq!(
            state.offer(&v8.text, &periods, f.now, 50_000),
            Ok(Accepted::NewRun)
        );
    }

    #[test]
    fn replays_and_invalid_descriptors_leave_the_good_one_in_place() {
        let f = fixture();
        let periods = [f.period];
        let mut state = InstanceState::new(f.identity.clone());
        let old = build(&f, 5);
        let new = build(&f, 9);
        state.offer(&new.text, &periods, f.now, 50_000).unwrap();
        assert_eq!(
            state.offer(&old.text, &periods, f.now, 50_000),
            Err(Rejected::Replay {
                revision: 5,
                seen: 9
            })
        );
        let tampered = new
            .text
            .replace("revision-counter 9\n", "revision-counter 99\n");
        assert!(matches!(
            state.offer(&tampered, &periods, f.now, 50_000),
            Err(Rejected::Invalid(_))
        ));
        assert_eq!(state.descriptor().unwrap().revision, 9);
    }

    /// The fixture's key and clock, for another period and fresh intro
    /// points.
    fn for_period(period: TimePeriod) -> Fixture {
        Fixture {
            period,
            ..fixture()
        }
    }

    fn keys(points: &[IntroPoint]) -> Vec<[u8; 32]> {
        let mut keys: Vec<_> = points.iter().map(|ip| *ip.auth_key()).collect();
        keys.sort_unstable();
        keys
    }

    /// `points` as consecutive groups of intro points (the order within
    /// a descriptor is the builder's).
    fn grouped(points: &[IntroPoint], sizes: &[usize]) -> Vec<Vec<[u8; 32]>> {
        let mut rest = points;
        let mut groups = Vec::new();
        for &size in sizes {
            let (group, tail) = rest.split_at(size);
            groups.push(keys(group));
            rest = tail;
        }
        assert!(rest.is_empty());
        groups
    }

    fn public_rules() -> PeriodRules {
        PeriodRules {
            length: Duration::from_secs(86400),
            rotation_offset: Duration::from_secs(43200),
            run_length: Duration::from_secs(86400),
        }
    }

    #[test]
    fn both_periods_intro_points_are_offered_newest_first_whatever_the_order() {
        let f = fixture();
        let next = for_period(f.period.next().unwrap());
        let periods = [f.period, next.period];
        let mut state = InstanceState::new(f.identity.clone());
        assert_eq!(
            state.offer(&build(&next, 2).text, &periods, f.now, 50_000),
            Ok(Accepted::NowUsable)
        );
        // tor's "current" descriptor, pushed after the newer one was
        // fetched: its intro points join, after the newer period's.
        assert_eq!(
            state.offer(&build(&f, 5).text, &periods, f.now, 50_000),
            Ok(Accepted::IntroPointsChanged)
        );
        let points = state
            .live_intro_points(f.now, &public_rules())
            .unwrap()
            .unwrap();
        assert_eq!(
            grouped(&points, &[3, 3]),
            [keys(&next.intro_points), keys(&f.intro_points)]
        );
        assert_eq!(state.descriptor().unwrap().revision, 2);
        assert_eq!(state.intro_point_count(), 6);
        // The same descriptor again (another HSDir, a repeated push).
        assert_eq!(
            state.offer(&build(&f, 5).text, &periods, f.now, 50_000),
            Ok(Accepted::Unchanged)
        );
        // One new intro point for the older period replaces only that
        // period's.
        let mut one_new = f.intro_points.clone();
        one_new[2] = intro_point(&mut rand::rng(), 1);
        assert_eq!(
            state.offer(&build_with(&f, 6, &one_new).text, &periods, f.now, 50_000),
            Ok(Accepted::IntroPointsChanged)
        );
        let points = state
            .live_intro_points(f.now, &public_rules())
            .unwrap()
            .unwrap();
        assert_eq!(
            grouped(&points, &[3, 3]),
            [keys(&next.intro_points), keys(&one_new)]
        );
        // A restarted tor's descriptor for the older period, sharing no
        // intro point with the one it replaces: the newer period's, from
        // the old run, goes too (its new one comes later).
        let fresh = vec![intro_point(&mut rand::rng(), 2)];
        assert_eq!(
            state.offer(&build_with(&f, 7, &fresh).text, &periods, f.now, 50_000),
            Ok(Accepted::NewRun)
        );
        let points = state
            .live_intro_points(f.now, &public_rules())
            .unwrap()
            .unwrap();
        assert_eq!(keys(&points), keys(&fresh));
        // The old run's newer descriptor, from an HSDir or a replaying
        // agent, does not come back, though its revision is the highest
        // seen for its period.
        assert_eq!(
            state.offer(&build(&next, 2).text, &periods, f.now, 50_000),
            Err(Rejected::Replay {
                revision: 2,
                seen: 2
            })
        );
        assert_eq!(state.intro_point_count(), 1);
        // The new run's newer descriptor joins.
        let next_fresh = vec![intro_point(&mut rand::rng(), 3)];
        assert_eq!(
            state.offer(
                &build_with(&next, 3, &next_fresh).text,
                &periods,
                f.now,
                50_000
            ),
            Ok(Accepted::IntroPointsChanged)
        );
        assert_eq!(state.intro_point_count(), 2);
    }

    #[test]
    fn a_period_s_intro_points_leave_when_the_instance_rotates_it_out() {
        let f = fixture();
        let next = for_period(f.period.next().unwrap());
        let previous = for_period(f.period.prev().unwrap());
        let periods = [previous.period, f.period, next.period];
        let rules = public_rules();
        let mut state = InstanceState::new(f.identity.clone());
        // In the afternoon the instance's tor holds the descriptors of the
        // period that began yesterday noon and of today's.
        state
            .offer(&build(&previous, 3).text, &periods, f.now, 50_000)
            .unwrap();
        state
            .offer(&build(&f, 5).text, &periods, f.now, 50_000)
            .unwrap();
        let points = state.live_intro_points(f.now, &rules).unwrap().unwrap();
        assert_eq!(
            grouped(&points, &[3, 3]),
            [keys(&f.intro_points), keys(&previous.intro_points)]
        );
        // At midnight it rotates yesterday's out.
        let midnight = rules.retirement(previous.period).unwrap();
        let points = state.live_intro_points(midnight, &rules).unwrap().unwrap();
        assert_eq!(keys(&points), keys(&f.intro_points));
        // Its next descriptor comes; today's goes at the following
        // rotation, not before.
        state
            .offer(&build(&next, 2).text, &periods, f.now, 50_000)
            .unwrap();
        let rotation = rules.retirement(f.period).unwrap();
        let before = rotation - Duration::from_secs(1);
        assert_eq!(
            state
                .live_intro_points(before, &rules)
                .unwrap()
                .unwrap()
                .len(),
            6
        );
        let points = state.live_intro_points(rotation, &rules).unwrap().unwrap();
        assert_eq!(keys(&points), keys(&next.intro_points));
        // A copy of the rotated-out descriptor (its tor may rotate after
        // us: it waits for the consensus) does not bring it back, and is
        // no replay.
        assert_eq!(
            state.offer(&build(&f, 5).text, &periods, rotation, 50_000),
            Ok(Accepted::Unchanged)
        );
        assert_eq!(state.intro_point_count(), 3);
    }

    #[test]
    fn after_a_restart_only_the_new_run_s_intro_points_are_offered() {
        let f = fixture();
        let next = for_period(f.period.next().unwrap());
        let periods = [f.period, next.period];
        let rules = public_rules();
        let mut state = InstanceState::new(f.identity.clone());
        let old_next = build(&next, 2);
        state
            .offer(&old_next.text, &periods, f.now, 50_000)
            .unwrap();
        state
            .offer(&build(&f, 5).text, &periods, f.now, 50_000)
            .unwrap();
        state.forget_descriptors();
        assert!(state.live_intro_points(f.now, &rules).unwrap().is_none());
        // The new run's current descriptor, pushed by the agent.
        let fresh = vec![intro_point(&mut rand::rng(), 1)];
        assert_eq!(
            state.offer(&build_with(&f, 6, &fresh).text, &periods, f.now, 50_000),
            Ok(Accepted::NowUsable)
        );
        // An HSDir still serving the old run's next descriptor.
        assert_eq!(
            state.offer(&old_next.text, &periods, f.now, 50_000),
            Err(Rejected::Replay {
                revision: 2,
                seen: 2
            })
        );
        let points = state.live_intro_points(f.now, &rules).unwrap().unwrap();
        assert_eq!(keys(&points), keys(&fresh));
        // The new run's next descriptor.
        let fresh_next = vec![intro_point(&mut rand::rng(), 2)];
        assert_eq!(
            state.offer(
                &build_with(&next, 3, &fresh_next).text,
                &periods,
                f.now,
                50_000
            ),
            Ok(Accepted::IntroPointsChanged)
        );
        let points = state.live_intro_points(f.now, &rules).unwrap().unwrap();
        assert_eq!(grouped(&points, &[1, 1]), [keys(&fresh_next), keys(&fresh)]);
    }

    #[test]
    fn a_rotated_out_descriptor_of_a_stopped_run_is_a_replay() {
        let f = fixture();
        let next = for_period(f.period.next().unwrap());
        let periods = [f.period, next.period];
        let rules = public_rules();
        let mut state = InstanceState::new(f.identity.clone());
        let old_current = build(&f, 5);
        state
            .offer(&old_current.text, &periods, f.now, 50_000)
            .unwrap();
        state
            .offer(&build(&next, 2).text, &periods, f.now, 50_000)
            .unwrap();
        // Its period ends while the run goes on: a copy is nothing new.
        let rotation = rules.retirement(f.period).unwrap();
        state.live_intro_points(rotation, &rules).unwrap().unwrap();
        assert_eq!(
            state.offer(&old_current.text, &periods, rotation, 50_000),
            Ok(Accepted::Unchanged)
        );
        // Then the tor stops: the same copy is a replay of a run that is
        // over, though it was not in use when the run ended.
        state.forget_descriptors();
        assert_eq!(
            state.offer(&old_current.text, &periods, rotation, 50_000),
            Err(Rejected::Replay {
                revision: 5,
                seen: 5
            })
        );
        assert_eq!(state.intro_point_count(), 0);
    }

    #[test]
    fn revisions_are_remembered_only_for_periods_that_may_come_again() {
        let f = fixture();
        let mut state = InstanceState::new(f.identity.clone());
        let mut period = f.period;
        for _ in 0..5 {
            let each = for_period(period);
            state
                .offer(&build(&each, 1).text, &[period], f.now, 50_000)
                .unwrap();
            period = period.next().unwrap();
        }
        // The last period offered and the one before it.
        assert_eq!(state.revisions.len(), 2);
    }

    #[test]
    fn an_expired_descriptor_is_dropped_once() {
        let f = fixture();
        let rules = public_rules();
        let mut state = InstanceState::new(f.identity.clone());
        state
            .offer(&build(&f, 1).text, &[f.period], f.now, 50_000)
            .unwrap();
        assert!(state.live_intro_points(f.now, &rules).unwrap().is_some());
        let late = f.now + Duration::from_secs(3 * 86400);
        assert_eq!(state.live_intro_points(late, &rules).unwrap_err(), Expired);
        assert!(state.live_intro_points(late, &rules).unwrap().is_none());
    }
}
