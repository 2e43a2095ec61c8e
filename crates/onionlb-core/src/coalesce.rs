//! Batching bursts of changes into one publication.
//!
//! Instance descriptors arrive in bursts: at start-up every instance's
//! descriptor comes from several HSDirs within a second or two, and an
//! instance that restarts uploads two descriptors in a row. Publishing on
//! every arrival would send the HSDirs a series of descriptors each
//! replacing the last, and spend revision counters for nothing. So a
//! change is acted on once no further change has come for a quiet
//! interval, but never later than a bound after the first one, so that a
//! steady trickle of changes cannot hold publication back forever.

use std::time::{Duration, Instant};

/// Quiet interval after the last change before acting on it.
pub const QUIET: Duration = Duration::from_secs(2);
/// Longest wait after the first change not yet acted on. The manager
/// looks once a second, so a change is uploaded within 5 s, however busy
/// the burst.
pub const MAX_DELAY: Duration = Duration::from_secs(4);

/// Changes not yet acted on, and whether it is time to act.
#[derive(Debug, Clone)]
pub struct Coalescer {
    quiet: Duration,
    max_delay: Duration,
    /// First and last change since the last [`Coalescer::clear`].
    pending: Option<(Instant, Instant)>,
}

impl Coalescer {
    /// Acts after `quiet` without changes, or `max_delay` after the first.
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        Coalescer {
            quiet,
            max_delay,
            pending: None,
        }
    }

    /// Something changed at `now`.
    pub fn changed(&mut self, now: Instant) {
        let first = self.pending.map_or(now, |(first, _)| first);
        self.pending = Some((first, now));
    }

    /// Whether changes are waiting to settle: true from the first change
    /// until it is time to act on them.
    pub fn is_settling(&self, now: Instant) -> bool {
        let Some((first, last)) = self.pending else {
            return false;
        };
        now.saturating_duration_since(last) < self.quiet
            && now.saturating_duration_since(first) < self.max_delay
    }

    /// Whether a change is waiting to be acted on (settling or not).
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// When the pending change stops settling, if one is pending.
    pub fn settles_at(&self) -> Option<Instant> {
        let (first, last) = self.pending?;
        Some((last + self.quiet).min(first + self.max_delay))
    }

    /// The changes were acted on.
    pub fn clear(&mut self) {
        self.pending = None;
    }
}

impl Default for Coalescer {
    /// [`QUIET`] and [`MAX_DELAY`].
    fn default() -> Self {
        Coalescer::new(QUIET, MAX_DELAY)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn nothing_pending_means_act_now() {
        assert!(!Coalescer::default().is_settling(Instant::now()));
    }

    #[test]
    fn a_burst_is_acted_on_after_its_quiet_interval() {
        let t0 = Instant::now();
        let mut changes = Coalescer::default();
        changes.changed(t0);
        changes.changed(t0 + secs(0.5));
        changes.changed(t0 + secs(1.0));
        assert!(changes.is_settling(t0 + secs(2.9)));
        assert!(!changes.is_settling(t0 + secs(3.0)));
        changes.clear();
        assert!(!changes.is_settling(t0 + secs(3.0)));
    }

    #[test]
    fn a_steady_trickle_is_acted_on_within_the_bound() {
        let t0 = Instant::now();
        let mut changes = Coalescer::default();
        let mut now = t0;
        let mut acted = None;
        while now < t0 + secs(20.0) {
            changes.changed(now);
            if !changes.is_settling(now) {
                acted = Some(now);
                break;
            }
            now += secs(1.0);
        }
        assert_eq!(acted, Some(t0 + MAX_DELAY));
    }
}
