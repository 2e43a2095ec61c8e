//! Which time periods and shared random values a service's two
//! descriptors belong to (rend-spec-v3 [TIME-PERIODS], [HASHRING],
//! [CLIENTFETCH]), given a consensus.
//!
//! A service always publishes two descriptors. Where the consensus'
//! valid-after falls between the start of a shared-random run and the next
//! time-period boundary (the first half of the run; 00:00-12:00 UTC on the
//! public network), they are for the current and the next time period;
//! in the second half, for the previous and the current one. The first
//! uses the previous SRV, the second the current SRV. This is what tor's
//! `node_set_hsdir_index` and its service code do; getting it wrong puts
//! descriptors on HSDirs where no client looks.
//!
//! Lengths differ between networks: the public network takes the period
//! length from the `hsdir_interval` consensus parameter (24 hours), while
//! a tor with `TestingTorNetwork 1` ignores it and uses one shared-random
//! run (24 voting intervals). Both offset periods by 12 voting intervals.

use std::time::{Duration, SystemTime};

use sha3::{Digest as _, Sha3_256};
use tor_hscrypto::time::TimePeriod;

use crate::consensus::{Consensus, Srv};

/// Voting intervals in one shared-random protocol run.
const ROUNDS_PER_RUN: u32 = 24;

/// Default, minimum and maximum of `hsdir_interval`, in minutes.
const HSDIR_INTERVAL: (i32, i32, i32) = (1440, 30, 14400);

/// How time periods are laid out on a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodRules {
    /// Length of a time period (a whole number of minutes).
    pub length: Duration,
    /// Time periods start this long after multiples of `length`.
    pub rotation_offset: Duration,
    /// Length of one shared-random protocol run.
    pub run_length: Duration,
}

/// One of the two descriptors a service publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescriptorSlot {
    /// tor's "current" descriptor, stored with the previous SRV.
    First,
    /// tor's "next" descriptor, stored with the current SRV.
    Second,
}

impl DescriptorSlot {
    /// `first` or `second`, for metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            DescriptorSlot::First => "first",
            DescriptorSlot::Second => "second",
        }
    }
}

/// The time period and SRV that place one descriptor on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPeriod {
    /// Which descriptor this is.
    pub slot: DescriptorSlot,
    /// Its time period (blinds the key, and positions it on the ring).
    pub period: TimePeriod,
    /// The SRV that positions the HSDirs for it.
    pub srv: Srv,
}

impl PeriodRules {
    /// The rules of the network `consensus` comes from. `testing_network`
    /// is the management tor's `TestingTorNetwork` setting.
    pub fn new(consensus: &Consensus, testing_network: bool) -> Self {
        let voting_interval = consensus.voting_interval();
        let run_length = voting_interval * ROUNDS_PER_RUN;
        let length = if testing_network {
            // Whole minutes, as tor divides the seconds by 60.
            Duration::from_secs(run_length.as_secs() / 60 * 60)
        } else {
            let (default, min, max) = HSDIR_INTERVAL;
            let minutes = consensus.param("hsdir_interval", default, min, max);
            Duration::from_secs(u64::try_from(minutes).unwrap_or(1440) * 60)
        };
        PeriodRules {
            length,
            rotation_offset: voting_interval * (ROUNDS_PER_RUN / 2),
            run_length,
        }
    }

    /// The time period containing `when`; `None` if the rules give no
    /// usable period (a zero length, from a consensus whose voting interval
    /// is under a minute / 24 on a testing network, or zero).
    pub fn period_at(&self, when: SystemTime) -> Option<TimePeriod> {
        // tor-hscrypto 0.47 divides by the length unchecked.
        if self.length.is_zero() {
            return None;
        }
        TimePeriod::new(self.length, when, self.rotation_offset).ok()
    }

    /// The two descriptors' periods and SRVs for a consensus valid after
    /// `valid_after` with the given SRVs. `None` only for times before the
    /// epoch or lengths tor would not accept either.
    pub fn slots(
        &self,
        valid_after: SystemTime,
        srv_previous: Option<Srv>,
        srv_current: Option<Srv>,
    ) -> Option<[SlotPeriod; 2]> {
        let current = self.period_at(valid_after)?;
        let since_epoch = valid_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs();
        let run = self.run_length.as_secs().max(1);
        let run_start =
            SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch - since_epoch % run);
        let next_period_start = self.period_at(run_start)?.next()?.range().ok()?.start;
        let first_half = valid_after >= run_start && valid_after < next_period_start;
        let (first, second) = if first_half {
            (current, current.next()?)
        } else {
            (current.prev()?, current)
        };
        Some([
            SlotPeriod {
                slot: DescriptorSlot::First,
                period: first,
                srv: srv_previous.unwrap_or_else(|| disaster_srv(first)),
            },
            SlotPeriod {
                slot: DescriptorSlot::Second,
                period: second,
                srv: srv_current.unwrap_or_else(|| disaster_srv(second)),
            },
        ])
    }

    /// When a service drops its descriptor for `period`, and closes that
    /// descriptor's intro points: at its first descriptor rotation after
    /// `period` has ended, which is the first shared-random run start at
    /// or after the start of the following period. Until then the service
    /// keeps it as its "current" descriptor, beside the "next" one, and
    /// each has intro points of its own. `None` for periods tor would not
    /// accept.
    pub fn retirement(&self, period: TimePeriod) -> Option<SystemTime> {
        let ended = period.next()?.range().ok()?.start;
        let since_epoch = ended.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        let run = self.run_length.as_secs().max(1);
        let runs = since_epoch.div_ceil(run);
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(runs * run))
    }

    /// [`PeriodRules::slots`] for `consensus`.
    pub fn slots_for(&self, consensus: &Consensus) -> Option<[SlotPeriod; 2]> {
        self.slots(
            consensus.valid_after,
            consensus.srv_previous,
            consensus.srv_current,
        )
    }
}

/// The SRV everyone uses for `period` when the authorities agreed on none:
/// `H("shared-random-disaster" | INT_8(length in minutes) | INT_8(period))`.
pub fn disaster_srv(period: TimePeriod) -> Srv {
    let mut hash = Sha3_256::new();
    hash.update(b"shared-random-disaster");
    hash.update(u64::from(period.length().as_minutes()).to_be_bytes());
    hash.update(period.interval_num().to_be_bytes());
    hash.finalize().into()
}

#[cfg(test)]
mod test {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    const DAY: u64 = 86400;

    fn public_rules() -> PeriodRules {
        PeriodRules {
            length: Duration::from_secs(DAY),
            rotation_offset: Duration::from_secs(12 * 3600),
            run_length: Duration::from_secs(DAY),
        }
    }

    /// Found by the `consensus` fuzz target: a consensus whose
    /// fresh-until equals its valid-after gives a zero voting interval, so
    /// a zero period length on a testing network, on which tor-hscrypto's
    /// `TimePeriod::new` divides by zero.
    #[test]
    fn a_zero_period_length_gives_no_period_instead_of_a_panic() {
        let rules = PeriodRules {
            length: Duration::ZERO,
            rotation_offset: Duration::ZERO,
            run_length: Duration::ZERO,
        };
        assert_eq!(rules.period_at(at(1_795_244_400)), None);
        assert_eq!(rules.slots(at(1_795_244_400), None, None), None);
    }

    #[test]
    fn public_network_first_half_of_run_uses_current_and_next() {
        // 2026-11-21 07:00 UTC: after the 00:00 SRV, before the 12:00 period.
        let t = 1_795_244_400 - 1_795_244_400 % DAY + 7 * 3600;
        let [first, second] = public_rules()
            .slots(at(t), Some([1; 32]), Some([2; 32]))
            .unwrap();
        let current = public_rules().period_at(at(t)).unwrap();
        assert_eq!(first.period, current);
        assert_eq!(second.period, current.next().unwrap());
        assert_eq!((first.srv, second.srv), ([1; 32], [2; 32]));
        assert_eq!(
            (first.slot, second.slot),
            (DescriptorSlot::First, DescriptorSlot::Second)
        );
    }

    #[test]
    fn public_network_second_half_of_run_uses_previous_and_current() {
        // 15:00 UTC: after the 12:00 period boundary, before the next SRV.
        let t = 1_795_244_400 - 1_795_244_400 % DAY + 15 * 3600;
        let [first, second] = public_rules()
            .slots(at(t), Some([1; 32]), Some([2; 32]))
            .unwrap();
        let current = public_rules().period_at(at(t)).unwrap();
        assert_eq!(first.period, current.prev().unwrap());
        assert_eq!(second.period, current);
        // The period that started at 12:00 is numbered from the epoch offset.
        assert_eq!(current.interval_num(), (t - 12 * 3600) / DAY);
    }

    #[test]
    fn testing_network_periods_are_one_run() {
        let consensus =
            Consensus::parse(include_str!("../testdata/consensus-microdesc.txt")).unwrap();
        let rules = PeriodRules::new(&consensus, true);
        assert_eq!(rules.length, Duration::from_secs(8 * 60));
        assert_eq!(rules.rotation_offset, Duration::from_secs(4 * 60));
        let public = PeriodRules::new(&consensus, false);
        assert_eq!(public.length, Duration::from_secs(DAY));
        // No SRV in this young network: both descriptors use disaster SRVs.
        let [first, second] = rules.slots_for(&consensus).unwrap();
        assert_eq!(first.srv, disaster_srv(first.period));
        assert_eq!(second.srv, disaster_srv(second.period));
        assert_ne!(first.srv, second.srv);
    }

    #[test]
    fn a_descriptor_retires_at_the_first_run_start_after_its_period() {
        // Public network: the period that ends at 12:00 is dropped at the
        // next 00:00, when the service rotates.
        let t = 1_795_244_400 - 1_795_244_400 % DAY + 7 * 3600;
        let current = public_rules().period_at(at(t)).unwrap();
        let midnight = t - 7 * 3600;
        assert_eq!(
            public_rules().retirement(current.prev().unwrap()),
            Some(at(midnight))
        );
        assert_eq!(public_rules().retirement(current), Some(at(midnight + DAY)));

        // Testing network (8-minute periods from hh:m4, runs from hh:m0 in
        // steps of 8 minutes), as seen in a tor's log: the descriptor for
        // 01:40-01:48 was rotated out at 01:52.
        let testing = PeriodRules {
            length: Duration::from_secs(480),
            rotation_offset: Duration::from_secs(240),
            run_length: Duration::from_secs(480),
        };
        let period = TimePeriod::from_parts(8, 3_740_232, 240);
        assert_eq!(period.range().unwrap().start, at(1_795_305_600 + 6000));
        assert_eq!(testing.retirement(period), Some(at(1_795_305_600 + 6720)));
    }

    #[test]
    fn disaster_srv_vector() {
        // H("shared-random-disaster" | INT_8(1440) | INT_8(20000)), computed
        // independently with Python's hashlib.
        let period = TimePeriod::from_parts(1440, 20000, 12 * 3600);
        assert_eq!(
            data_encoding::HEXLOWER.encode(&disaster_srv(period)),
            DISASTER_1440_20000
        );
    }

    const DISASTER_1440_20000: &str =
        "f916536d94fc4bd9e5caa6d00c06f76f9db50fd157746580ec5ce09b2b19193f";
}
