//! Checking an instance end to end through Tor, as a client would, when
//! no agent beside it reports: when to probe each instance, and what a
//! probe's outcome says.
//!
//! A probe opens a stream to the instance's own onion address and a
//! virtual port of it through the management tor's SOCKS port, and closes
//! it at once. tor answers the SOCKS request only once the whole path
//! worked: the instance's descriptor, an introduction at one of its intro
//! points, a rendezvous, and the instance's tor connecting to the
//! application behind the port. So a probe fails when the instance's tor
//! is gone (its intro points refuse introductions: SOCKS `0xF2`, or no
//! answer), and when only the application is down (the instance's tor
//! ends the stream: "connection refused").
//!
//! What a probe costs: tor keeps the rendezvous circuit of a passed probe
//! and sends later probes' streams over it (each one RELAY_BEGIN and
//! RELAY_END, no new circuit) until it is `MaxCircuitDirtiness` old (10
//! minutes by default); then one introduction circuit and one rendezvous
//! circuit on the manager's side and one rendezvous circuit on the
//! instance's. A failed probe costs up to one introduction circuit per
//! intro point tried.
//!
//! Probes are spread: each instance is next due an interval after its
//! last probe ended (sooner after a failure that has yet to put it down,
//! [`RETRY_DIVISOR`]), and no more than [`Policy::per_second`] start per
//! second, however many instances are due. Pure: the caller passes the
//! time.

use std::time::{Duration, Instant};

/// A failed probe is tried again after this fraction of the interval, so
/// that [`Policy::failures`] failures in a row take out a dead instance
/// within about one interval of the first.
pub const RETRY_DIVISOR: u32 = 10;

/// The probing knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Time from the end of one probe of an instance to the next.
    pub interval: Duration,
    /// Time a probe may take before it counts as failed.
    pub timeout: Duration,
    /// Failed probes in a row that put an instance down.
    pub failures: u32,
    /// Probes started per second at most, over all instances.
    pub per_second: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            // A dead instance is out after two failures: the first when
            // its end tears down the rendezvous circuit (or the next
            // probe, within the interval, fails), the second a retry
            // later. A failed probe takes up to the timeout: an intro
            // point can acknowledge an introduction for a service that
            // just died, and the rendezvous then never comes. A live
            // instance answers over the kept rendezvous circuit in well
            // under a second, and with fresh circuits in a few seconds.
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            failures: 2,
            per_second: 10,
        }
    }
}

impl Policy {
    /// The delay before probing again after a failure.
    pub fn retry(&self) -> Duration {
        (self.interval / RETRY_DIVISOR).max(Duration::from_secs(1))
    }
}

/// Why a probe did not reach the instance's application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// tor answered the SOCKS request with this error code (tor's
    /// extended codes `0xF0`..`0xF7` name the onion service step that
    /// failed; `0x05` is the instance refusing the stream).
    #[error("SOCKS reply {code:#04x} ({meaning})")]
    Refused {
        /// The SOCKS5 reply code.
        code: u8,
        /// What tor means by it.
        meaning: &'static str,
    },
    /// No answer within [`Policy::timeout`].
    #[error("no answer within the probe timeout")]
    TimedOut,
    /// The far end tore down the rendezvous circuit a passed probe left
    /// open: the instance's tor (or a relay on the way) went away. It
    /// counts as a failure, and the instance is probed again at once.
    #[error("the instance's end tore down the rendezvous circuit")]
    RendezvousLost,
    /// The management tor's SOCKS port could not be used (not reached,
    /// not SOCKS5): the manager's problem, which says nothing of the
    /// instance.
    #[error("the management tor's SOCKS port could not be used")]
    Unreachable,
}

impl Failure {
    /// Whether it is evidence against the instance (else against the
    /// manager's own tor).
    pub fn counts(&self) -> bool {
        !matches!(self, Failure::Unreachable)
    }

    /// A short name for counters: `refused`, `timeout`, `rendezvous_lost`
    /// or `unreachable`.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Refused { .. } => "refused",
            Failure::TimedOut => "timeout",
            Failure::RendezvousLost => "rendezvous_lost",
            Failure::Unreachable => "unreachable",
        }
    }
}

/// When one instance is probed.
#[derive(Debug, Clone)]
pub struct Schedule {
    next: Instant,
    /// When the probe in flight started.
    started: Option<Instant>,
    /// The last probe's end and outcome.
    last: Option<(Instant, Result<(), Failure>)>,
}

impl Schedule {
    /// A schedule due at once.
    pub fn new(now: Instant) -> Self {
        Schedule {
            next: now,
            started: None,
            last: None,
        }
    }

    /// When it is next due (its probe in flight counts as lost once twice
    /// the timeout passed without an outcome).
    pub fn next(&self, policy: &Policy) -> Instant {
        match self.started {
            Some(at) => at + 2 * policy.timeout,
            None => self.next,
        }
    }

    /// A probe starts at `now`.
    pub fn start(&mut self, now: Instant) {
        self.started = Some(now);
    }

    /// Whether a probe is in flight.
    pub fn in_flight(&self) -> bool {
        self.started.is_some()
    }

    /// A probe ended at `now` with `outcome`: the next one is due an
    /// interval later, or sooner after a failure while the instance is
    /// not `down` (to confirm it). An outcome with no probe in flight (one
    /// counted lost) is still taken.
    pub fn finish(
        &mut self,
        outcome: Result<(), Failure>,
        down: bool,
        now: Instant,
        policy: &Policy,
    ) {
        self.started = None;
        let wait = match outcome {
            Err(_) if !down => policy.retry(),
            _ => policy.interval,
        };
        self.next = now + wait;
        self.last = Some((now, outcome));
    }

    /// Due at once (a new tor run, a reconnected manager).
    pub fn due_now(&mut self, now: Instant) {
        self.next = self.next.min(now);
    }

    /// The last probe's end and outcome.
    pub fn last(&self) -> Option<(Instant, Result<(), Failure>)> {
        self.last
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn probes_follow_the_interval_retry_sooner_and_a_lost_one_is_due_again() {
        let t0 = Instant::now();
        let policy = Policy::default();
        let mut schedule = Schedule::new(t0);
        assert_eq!(schedule.next(&policy), t0);
        schedule.start(t0);
        assert!(schedule.in_flight());
        // Lost (no outcome): due again after twice the timeout.
        assert_eq!(schedule.next(&policy), t0 + 2 * policy.timeout);
        let t1 = t0 + Duration::from_secs(2);
        schedule.finish(Ok(()), false, t1, &policy);
        assert_eq!(schedule.next(&policy), t1 + policy.interval);
        schedule.start(t1 + policy.interval);
        let t2 = t1 + policy.interval + Duration::from_secs(3);
        schedule.finish(Err(Failure::TimedOut), false, t2, &policy);
        assert_eq!(schedule.next(&policy), t2 + Duration::from_secs(1));
        assert_eq!(schedule.last(), Some((t2, Err(Failure::TimedOut))));
        // Down already: failures need no confirming.
        schedule.start(t2);
        schedule.finish(Err(Failure::TimedOut), true, t2, &policy);
        assert_eq!(schedule.next(&policy), t2 + policy.interval);
        schedule.due_now(t2);
        assert_eq!(schedule.next(&policy), t2);
    }

    #[test]
    fn only_failures_at_the_instance_count_against_it() {
        assert!(Failure::Refused {
            code: 0xF2,
            meaning: "onion service introduction failed"
        }
        .counts());
        assert!(Failure::TimedOut.counts());
        assert!(!Failure::Unreachable.counts());
    }
}
