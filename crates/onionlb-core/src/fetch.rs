//! When to fetch an instance's descriptor again.
//!
//! Each instance is fetched every `interval` (the configured fetch
//! interval). An instance the manager has no usable descriptor for is
//! asked sooner after a failed fetch, with a delay that doubles from
//! [`FIRST_RETRY`] up to the interval: an instance that was just started
//! has usually not uploaded yet when it is first asked, and should not
//! have to wait a whole interval to be picked up. Failures of an instance
//! that has a good descriptor change nothing: some HSDirs of a fetch often
//! lack it.
//!
//! It also follows how each round ends, for the health verdict: a round
//! in which some HSDir said it failed and none delivered a descriptor
//! failed everywhere. Pure: the caller passes the time.

use std::time::{Duration, Instant};

/// Delay after the first failed fetch of an instance without a
/// descriptor.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);

/// The fetch schedule of one instance.
#[derive(Debug, Clone)]
pub struct FetchSchedule {
    interval: Duration,
    next: Instant,
    /// Fetch rounds that failed in a row; one per round however many
    /// HSDirs report failure.
    failures: u32,
    /// Which round the last counted failure belonged to.
    failed_round: Option<u64>,
    round: u64,
    /// How the current round stands.
    outcome: Round,
}

/// Where a fetch round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// None sent yet.
    NotSent,
    /// Asked; nothing heard yet.
    Pending,
    /// An HSDir said it failed, and none has delivered.
    Failed,
    /// A descriptor arrived.
    Succeeded,
}

impl FetchSchedule {
    /// A schedule fetching every `interval`, due at once.
    pub fn new(interval: Duration, now: Instant) -> Self {
        FetchSchedule {
            interval,
            next: now,
            failures: 0,
            failed_round: None,
            round: 0,
            outcome: Round::NotSent,
        }
    }

    /// Whether a fetch is due.
    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Starts a round at `now`; the next is due an interval later unless
    /// this one fails. Returns whether the round before failed everywhere
    /// (an HSDir said it failed and none delivered).
    pub fn sent(&mut self, now: Instant) -> bool {
        let previous_failed = self.outcome == Round::Failed;
        self.outcome = Round::Pending;
        self.round += 1;
        self.next = later(now, self.interval);
        previous_failed
    }

    /// A descriptor arrived: the round succeeded.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.outcome = Round::Succeeded;
    }

    /// An HSDir reported a failed fetch: the round failed unless a
    /// descriptor came. Without a usable descriptor (`has_descriptor`
    /// false), the next fetch comes sooner.
    pub fn failed(&mut self, now: Instant, has_descriptor: bool) {
        if self.outcome == Round::Pending {
            self.outcome = Round::Failed;
        }
        if has_descriptor || self.failed_round == Some(self.round) {
            return;
        }
        self.failed_round = Some(self.round);
        self.failures = self.failures.saturating_add(1);
        let delay = FIRST_RETRY
            .saturating_mul(2u32.saturating_pow(self.failures - 1))
            .min(self.interval);
        self.next = self.next.min(later(now, delay));
    }

    /// How many rounds were started.
    pub fn rounds(&self) -> u64 {
        self.round
    }

    /// Makes a fetch due now (new time period, new configuration).
    pub fn due_now(&mut self, now: Instant) {
        self.next = now;
    }

    /// Takes a new interval, keeping when the next fetch is due unless
    /// that is now further away than the interval.
    pub fn set_interval(&mut self, interval: Duration, now: Instant) {
        self.interval = interval;
        self.next = self.next.min(later(now, interval));
    }
}

/// `now + after`, or as far ahead as an `Instant` goes: an interval no
/// configuration check let through must still not panic.
fn later(now: Instant, after: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    now.checked_add(after)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

/// Which of `candidates` to fetch at `now`, when at most `max` may be
/// asked at once: those due, the longest overdue first and otherwise by
/// key (configuration order keeps a service's instances together).
pub fn pick_due<'a, K: Ord + 'a>(
    candidates: impl IntoIterator<Item = (K, &'a FetchSchedule)>,
    now: Instant,
    max: usize,
) -> Vec<K> {
    let mut due: Vec<(Instant, K)> = candidates
        .into_iter()
        .filter(|(_, schedule)| schedule.is_due(now))
        .map(|(key, schedule)| (schedule.next, key))
        .collect();
    due.sort_unstable();
    due.into_iter().take(max).map(|(_, key)| key).collect()
}

#[cfg(test)]
mod test {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(300);

    #[test]
    fn an_interval_past_what_instants_hold_does_not_panic() {
        let t0 = Instant::now();
        let mut schedule = FetchSchedule::new(Duration::MAX, t0);
        let _ = schedule.sent(t0);
        schedule.set_interval(Duration::MAX, t0);
        assert!(!schedule.is_due(t0 + Duration::from_secs(86_400 * 365)));
        schedule.failed(t0, false);
        assert!(schedule.is_due(t0 + FIRST_RETRY));
    }

    #[test]
    fn fetched_every_interval_while_all_is_well() {
        let t0 = Instant::now();
        let mut schedule = FetchSchedule::new(INTERVAL, t0);
        assert!(schedule.is_due(t0));
        let _ = schedule.sent(t0);
        schedule.succeeded();
        assert!(!schedule.is_due(t0 + INTERVAL - Duration::from_secs(1)));
        assert!(schedule.is_due(t0 + INTERVAL));
    }

    #[test]
    fn an_instance_without_descriptor_is_asked_again_sooner_and_sooner_not() {
        let t0 = Instant::now();
        let mut schedule = FetchSchedule::new(INTERVAL, t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let _ = schedule.sent(now);
            // Six HSDirs fail in one round: counted once.
            for _ in 0..6 {
                schedule.failed(now, false);
            }
            let mut wait = Duration::ZERO;
            while !schedule.is_due(now + wait) {
                wait += Duration::from_secs(1);
            }
            waits.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        // Success resets the backoff.
        let _ = schedule.sent(now);
        schedule.succeeded();
        schedule.failed(now, false);
        assert!(schedule.is_due(now + FIRST_RETRY));
    }

    #[test]
    fn a_round_failed_only_if_an_hsdir_failed_and_none_delivered() {
        let t0 = Instant::now();
        let mut schedule = FetchSchedule::new(INTERVAL, t0);
        assert!(!schedule.sent(t0), "no round before the first");
        schedule.failed(t0, false);
        schedule.failed(t0, false);
        assert!(schedule.sent(t0), "every HSDir failed");
        schedule.failed(t0, true);
        schedule.succeeded();
        assert!(!schedule.sent(t0), "one delivered");
        // Nothing heard at all is not a failure.
        assert!(!schedule.sent(t0));
    }

    #[test]
    fn failures_do_not_matter_with_a_good_descriptor() {
        let t0 = Instant::now();
        let mut schedule = FetchSchedule::new(INTERVAL, t0);
        let _ = schedule.sent(t0);
        schedule.failed(t0, true);
        assert!(!schedule.is_due(t0 + Duration::from_secs(299)));
    }

    #[test]
    fn due_now_and_a_shorter_interval_take_effect_at_once() {
        let t0 = Instant::now();
        let mut schedule = FetchSchedule::new(INTERVAL, t0);
        let _ = schedule.sent(t0);
        schedule.due_now(t0 + Duration::from_secs(1));
        assert!(schedule.is_due(t0 + Duration::from_secs(1)));
        let _ = schedule.sent(t0 + Duration::from_secs(1));
        schedule.set_interval(Duration::from_secs(10), t0 + Duration::from_secs(2));
        assert!(schedule.is_due(t0 + Duration::from_secs(12)));
    }

    #[test]
    fn at_most_max_are_picked_longest_overdue_first_then_in_order() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let new = |name| (name, FetchSchedule::new(INTERVAL, t0 + secs(10)));
        let mut schedules = [new("a"), new("b"), new("c"), new("d"), new("late")];
        // "late" was due first; "d" is not due yet.
        schedules[4].1.due_now(t0);
        let _ = schedules[3].1.sent(t0);
        let candidates = || schedules.iter().map(|(name, s)| (*name, s));
        assert_eq!(pick_due(candidates(), t0 + secs(10), 3), ["late", "a", "b"]);
        assert_eq!(
            pick_due(candidates(), t0 + secs(10), 10),
            ["late", "a", "b", "c"]
        );
        assert!(pick_due(candidates(), t0, 0).is_empty());
    }
}
