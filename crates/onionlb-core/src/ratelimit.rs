//! A token bucket: how the manager keeps one agent (or whoever holds its
//! key) from making it validate descriptors all day.
//!
//! Pure: the caller passes the time.

use std::time::{Duration, Instant};

/// Allows bursts of up to `capacity` events, refilled at one event per
/// `every`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    every: Duration,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, every: Duration, now: Instant) -> Self {
        TokenBucket {
            capacity: f64::from(capacity),
            every,
            tokens: f64::from(capacity),
            at: now,
        }
    }

    /// Takes one token if there is one: whether the event may go ahead.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        let refill = elapsed.as_secs_f64() / self.every.as_secs_f64().max(f64::MIN_POSITIVE);
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn bursts_up_to_capacity_then_one_per_period() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3, Duration::from_secs(2), t0);
        assert!(bucket.take(t0));
        assert!(bucket.take(t0));
        assert!(bucket.take(t0));
        assert!(!bucket.take(t0));
        assert!(!bucket.take(t0 + Duration::from_secs(1)));
        assert!(bucket.take(t0 + Duration::from_secs(2)));
        assert!(!bucket.take(t0 + Duration::from_secs(2)));
        // A long quiet spell refills to capacity, not beyond.
        let later = t0 + Duration::from_secs(600);
        assert!((0..3).all(|_| bucket.take(later)));
        assert!(!bucket.take(later));
    }
}
