//! What the manager knows about one backend instance: its last good
//! descriptor and the revisions it has seen.
//!
//! Every descriptor, however it arrived (fetched from an HSDir or, later,
//! pushed by an agent), goes through [`InstanceState::offer`], so one rule
//! decides what is used: it must pass
//! [`validate_instance_descriptor`], and its revision must not go below
//! one already seen for its blinded key. An attacker who can delay or
//! replay descriptors can therefore hold back new intro points but never
//! bring back old ones or inject foreign ones.

use std::collections::HashMap;
use std::time::SystemTime;

use tor_hscrypto::pk::{HsBlindId, HsIdKey};
use tor_hscrypto::time::TimePeriod;

use crate::descriptor::{validate_instance_descriptor, DescriptorError, InstanceDescriptor};

/// One instance's descriptor state.
#[derive(Debug, Clone)]
pub struct InstanceState {
    identity: HsIdKey,
    descriptor: Option<InstanceDescriptor>,
    /// Highest revision seen per blinded key.
    revisions: HashMap<HsBlindId, u64>,
}

/// What a descriptor that passed [`InstanceState::offer`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The instance had no usable descriptor before.
    NowUsable,
    /// It carries other intro points than the one it replaces.
    IntroPointsChanged,
    /// Same intro points (the same descriptor from another HSDir, or a
    /// new revision with nothing new for us).
    Unchanged,
}

/// Why a descriptor was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// It failed validation.
    #[error("rejected a descriptor: {0}")]
    Invalid(#[from] DescriptorError),
    /// Its revision is below one already seen for its blinded key.
    #[error("rejected a descriptor with revision {revision} below {seen} already seen (a replay)")]
    Replay {
        /// Its revision.
        revision: u64,
        /// The highest seen.
        seen: u64,
    },
}

impl InstanceState {
    /// An instance with this identity key and nothing known yet.
    pub fn new(identity: HsIdKey) -> Self {
        InstanceState {
            identity,
            descriptor: None,
            revisions: HashMap::new(),
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
        let descriptor =
            validate_instance_descriptor(text, &self.identity, periods, now, max_size)?;
        let seen = self
            .revisions
            .get(&descriptor.blinded)
            .copied()
            .unwrap_or(0);
        if descriptor.revision < seen {
            return Err(Rejected::Replay {
                revision: descriptor.revision,
                seen,
            });
        }
        // A descriptor no newer than the last seen for its blinded key,
        // while one of another blinded key (the other time period) is in
        // use, is an old copy: keep the one in use. Fetches and pushes
        // deliver both periods' descriptors in any order.
        let other_period_in_use = self
            .descriptor
            .as_ref()
            .is_some_and(|current| current.blinded != descriptor.blinded);
        if descriptor.revision == seen && seen > 0 && other_period_in_use {
            return Ok(Accepted::Unchanged);
        }
        self.revisions
            .insert(descriptor.blinded, descriptor.revision);
        let outcome = match &self.descriptor {
            None => Accepted::NowUsable,
            Some(old) if intro_keys(old) != intro_keys(&descriptor) => Accepted::IntroPointsChanged,
            Some(_) => Accepted::Unchanged,
        };
        self.descriptor = Some(descriptor);
        Ok(outcome)
    }

    /// The descriptor in use, if it is still valid at `now`. An expired
    /// one is dropped, and `Err` says so once.
    pub fn live_descriptor(
        &mut self,
        now: SystemTime,
    ) -> Result<Option<&InstanceDescriptor>, Expired> {
        if self
            .descriptor
            .as_ref()
            .and_then(|d| d.valid_until)
            .is_some_and(|end| end <= now)
        {
            self.descriptor = None;
            return Err(Expired);
        }
        Ok(self.descriptor.as_ref())
    }

    /// The instance's identity key.
    pub fn identity(&self) -> &HsIdKey {
        &self.identity
    }

    /// The descriptor in use, whether or not still valid.
    pub fn descriptor(&self) -> Option<&InstanceDescriptor> {
        self.descriptor.as_ref()
    }
}

/// The instance's descriptor expired and was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("its descriptor expired")]
pub struct Expired;

/// The service keys of a descriptor's intro points, sorted.
fn intro_keys(descriptor: &InstanceDescriptor) -> Vec<[u8; 32]> {
    let mut keys: Vec<[u8; 32]> = descriptor
        .intro_points
        .iter()
        .map(|ip| ip.ipt_sid_key().to_bytes())
        .collect();
    keys.sort_unstable();
    keys
}

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
        let fresh = vec![intro_point(&mut rand::rng(), 1)];
        let v7 = build_with(&f, 7, &fresh);
        assert_eq!(
            state.offer(&v7.text, &periods, f.now, 50_000),
            Ok(Accepted::IntroPointsChanged)
        );
        assert_eq!(state.descriptor().unwrap().revision, 7);
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

    #[test]
    fn an_old_copy_of_the_other_period_s_descriptor_does_not_replace_a_newer_one() {
        let f = fixture();
        let next_period = f.period.next().unwrap();
        let periods = [f.period, next_period];
        let mut state = InstanceState::new(f.identity.clone());
        let this_period = build(&f, 5);
        state
            .offer(&this_period.text, &periods, f.now, 50_000)
            .unwrap();
        let next = Fixture {
            period: next_period,
            intro_points: vec![intro_point(&mut rand::rng(), 1)],
            ..fixture()
        };
        let next_text = build(&next, 2).text;
        assert_eq!(
            state.offer(&next_text, &periods, f.now, 50_000),
            Ok(Accepted::IntroPointsChanged)
        );
        // The first period's descriptor comes round again (another HSDir,
        // or a push of the same revision): the newer one stays.
        assert_eq!(
            state.offer(&this_period.text, &periods, f.now, 50_000),
            Ok(Accepted::Unchanged)
        );
        assert_eq!(state.descriptor().unwrap().revision, 2);
        // A new revision of the first period's is news again.
        assert_eq!(
            state.offer(&build(&f, 6).text, &periods, f.now, 50_000),
            Ok(Accepted::IntroPointsChanged)
        );
    }

    #[test]
    fn an_expired_descriptor_is_dropped_once() {
        let f = fixture();
        let mut state = InstanceState::new(f.identity.clone());
        state
            .offer(&build(&f, 1).text, &[f.period], f.now, 50_000)
            .unwrap();
        assert!(state.live_descriptor(f.now).unwrap().is_some());
        let late = f.now + Duration::from_secs(3 * 86400);
        assert_eq!(state.live_descriptor(late).unwrap_err(), Expired);
        assert!(state.live_descriptor(late).unwrap().is_none());
    }
}
