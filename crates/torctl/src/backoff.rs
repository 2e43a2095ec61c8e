//! How long to wait before reconnecting to a tor that went away.
//!
//! Pure: the caller supplies the randomness and does the waiting.

use std::time::Duration;

use rand::RngExt as _;

/// Exponential backoff with jitter.
///
/// The nth delay is drawn from the upper half of `first * 2^n` (capped at
/// `max`), so a fleet of managers that lost the same tor do not all knock
/// at the same instant, and a tor that stays down is asked at most once per
/// `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Starts at `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max: max.max(first),
            failures: 0,
        }
    }

    /// The delay before the next attempt, after one more failure.
    pub fn next_delay<R: rand::Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let ceiling = self
            .first
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rng.random_range(0..=spread))
    }

    /// How many attempts have failed since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Forgets the failures, after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

impl Default for Backoff {
    /// 1 s doubling to 60 s: a restarting tor is back within seconds, and
    /// one that stays down costs a connection attempt a minute.
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use rand::SeedableRng as _;

    #[test]
    fn delays_double_within_jitter_and_stop_at_the_cap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let ceilings = [1, 2, 4, 8, 10, 10, 10];
        for ceiling in ceilings {
            let ceiling = Duration::from_secs(ceiling);
            let delay = backoff.next_delay(&mut rng);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        assert_eq!(backoff.failures(), 7);
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let delays: std::collections::BTreeSet<Duration> = (0..20)
            .map(|_| {
                Backoff::new(Duration::from_secs(8), Duration::from_secs(8)).next_delay(&mut rng)
            })
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..200 {
            assert!(backoff.next_delay(&mut rng) <= Duration::from_secs(60));
        }
    }
}
