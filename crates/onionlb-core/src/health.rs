//! Whether an instance's intro points belong in the master descriptors,
//! from what is known of its health.
//!
//! An HSDir keeps serving a dead instance's descriptor for its whole
//! lifetime, so a valid descriptor alone says little. Better evidence:
//!
//! * an agent beside the instance reports it healthy or not, and sends
//!   heartbeats: the instance is down when the agent says so, or when no
//!   heartbeat came for [`Policy::heartbeat_timeout`];
//! * without an agent, probes through Tor ([`crate::probe`]) that fail
//!   [`Policy::probe_failures`] times in a row mean it is down, and so do
//!   fetches that keep failing ([`Policy::failed_rounds`] rounds in a
//!   row). An agent's word, while one reports, overrides both: it sees
//!   the instance from beside it, the probes from across the network.
//!
//! It is up again as soon as healthy evidence arrives, unless it flaps:
//! each fall adds one to a penalty that halves every
//! [`Policy::half_life`]; once the penalty reaches [`Policy::suppress`]
//! the instance stays out until it decays to [`Policy::reuse`] (route
//! flap damping, as RFC 2439 does for BGP). An instance that fails once
//! is back at once; one that bounces every few seconds is held out for
//! minutes instead of making every client's descriptor a lottery.
//!
//! Pure: the caller passes the time.

use std::fmt;
use std::time::{Duration, Instant};

use crate::probe::Failure;

/// The knobs of [`Health`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Without a heartbeat for this long, an agent's instance is down.
    pub heartbeat_timeout: Duration,
    /// Failed fetch rounds in a row that put an agent-less instance down.
    pub failed_rounds: u32,
    /// Failed probes in a row that put an agent-less instance down.
    pub probe_failures: u32,
    /// Time for the flap penalty to halve.
    pub half_life: Duration,
    /// Penalty at which an instance is held out.
    pub suppress: f64,
    /// Penalty below which a held-out instance may return.
    pub reuse: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            // Four heartbeats of an agent's default 2 s: with the last
            // one up to 2 s before a failure, the instance is out within
            // 10 s of it.
            heartbeat_timeout: Duration::from_secs(8),
            failed_rounds: 3,
            probe_failures: crate::probe::Policy::default().failures,
            half_life: Duration::from_secs(60),
            suppress: 3.0,
            reuse: 1.5,
        }
    }
}

/// What is known of one instance's health.
#[derive(Debug, Clone)]
pub struct Health {
    policy: Policy,
    /// The agent's last word, if an agent reports on it.
    agent: Option<AgentReport>,
    failed_rounds: u32,
    /// Probes failed in a row, and the last one's failure.
    probe_failures: u32,
    last_probe_failure: Option<Failure>,
    /// Flap penalty, as of `penalty_at`.
    penalty: f64,
    penalty_at: Instant,
    suppressed: bool,
    /// Whether it was up at the last [`Health::verdict`], to count falls.
    was_up: bool,
}

#[derive(Debug, Clone)]
struct AgentReport {
    healthy: bool,
    reason: String,
    last_heard: Instant,
}

/// Whether to publish an instance's intro points, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Publish them.
    Up,
    /// Leave them out.
    Down(Down),
}

/// Why an instance's intro points are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Down {
    /// No heartbeat from its agent for this many seconds.
    AgentSilent {
        /// Seconds since the agent was last heard.
        secs: u64,
    },
    /// Its agent says it is unhealthy.
    AgentReportsUnhealthy {
        /// The agent's words (what its probe saw).
        reason: String,
    },
    /// Its descriptor could not be fetched this many rounds in a row.
    FetchesFailing {
        /// Failed rounds in a row.
        rounds: u32,
    },
    /// Its probes through Tor failed this many times in a row.
    ProbesFailing {
        /// Failed probes in a row.
        failures: u32,
        /// How the last one failed.
        last: Failure,
    },
    /// It fell too often lately; held out until it has been stable.
    Flapping {
        /// The flap penalty, in tenths.
        penalty_tenths: u32,
    },
}

impl fmt::Display for Down {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Down::AgentSilent { secs } => write!(f, "its agent has been silent for {secs}s"),
            Down::AgentReportsUnhealthy { reason } => {
                write!(f, "its agent reports it unhealthy: {reason}")
            }
            Down::FetchesFailing { rounds } => write!(
                f,
                "its descriptor could not be fetched {rounds} times in a row"
            ),
            Down::ProbesFailing { failures, last } => write!(
                f,
                "{failures} probe(s) through Tor failed in a row (the last: {last})"
            ),
            Down::Flapping { penalty_tenths } => write!(
                f,
                "held out for flapping until it has been stable for a while (penalty {}.{})",
                penalty_tenths / 10,
                penalty_tenths % 10
            ),
        }
    }
}

impl Health {
    /// An instance with no evidence yet: up (its descriptor decides).
    pub fn new(policy: Policy, now: Instant) -> Self {
        Health {
            policy,
            agent: None,
            failed_rounds: 0,
            probe_failures: 0,
            last_probe_failure: None,
            penalty: 0.0,
            penalty_at: now,
            suppressed: false,
            was_up: true,
        }
    }

    /// Takes new knobs (a reloaded configuration), keeping what is known.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// The agent reports the instance healthy or not (`reason` says why
    /// not); any report is also a heartbeat.
    pub fn agent_report(&mut self, healthy: bool, reason: &str, now: Instant) {
        self.agent = Some(AgentReport {
            healthy,
            reason: reason.to_owned(),
            last_heard: now,
        });
    }

    /// A round of fetching the instance's descriptor failed everywhere.
    pub fn fetch_failed(&mut self) {
        self.failed_rounds = self.failed_rounds.saturating_add(1);
    }

    /// The instance's descriptor was fetched.
    pub fn fetch_succeeded(&mut self) {
        self.failed_rounds = 0;
    }

    /// A probe failed for a reason that [`Failure::counts`] against the
    /// instance (others are ignored).
    pub fn probe_failed(&mut self, failure: Failure) {
        if failure.counts() {
            self.probe_failures = self.probe_failures.saturating_add(1);
            self.last_probe_failure = Some(failure);
        }
    }

    /// Probes failed in a row (of those that count).
    pub fn probe_failures(&self) -> u32 {
        self.probe_failures
    }

    /// A probe reached the instance's application.
    pub fn probe_passed(&mut self) {
        self.probe_failures = 0;
    }

    /// Whether to publish the instance now. Call it whenever publishing is
    /// considered: it also counts falls for the damping.
    pub fn verdict(&mut self, now: Instant) -> Verdict {
        let raw = self.raw(now);
        let penalty = self.decayed_penalty(now);
        if self.was_up && raw.is_some() {
            self.set_penalty(penalty + 1.0, now);
        } else {
            self.set_penalty(penalty, now);
        }
        if self.penalty >= self.policy.suppress {
            self.suppressed = true;
        } else if self.penalty <= self.policy.reuse {
            self.suppressed = false;
        }
        let verdict = match raw {
            Some(reason) => Verdict::Down(reason),
            None if self.suppressed => Verdict::Down(Down::Flapping {
                // Float to int casts saturate; a penalty is never negative.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                penalty_tenths: (self.penalty * 10.0).round() as u32,
            }),
            None => Verdict::Up,
        };
        self.was_up = verdict == Verdict::Up;
        verdict
    }

    /// Down and why, before damping.
    fn raw(&self, now: Instant) -> Option<Down> {
        if let Some(agent) = &self.agent {
            let silent = now.saturating_duration_since(agent.last_heard);
            if silent >= self.policy.heartbeat_timeout {
                return Some(Down::AgentSilent {
                    secs: silent.as_secs(),
                });
            }
            if !agent.healthy {
                return Some(Down::AgentReportsUnhealthy {
                    reason: agent.reason.clone(),
                });
            }
            return None;
        }
        if let Some(last) = self.last_probe_failure {
            if self.probe_failures >= self.policy.probe_failures.max(1) {
                return Some(Down::ProbesFailing {
                    failures: self.probe_failures,
                    last,
                });
            }
        }
        (self.failed_rounds >= self.policy.failed_rounds).then_some(Down::FetchesFailing {
            rounds: self.failed_rounds,
        })
    }

    fn decayed_penalty(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.penalty_at).as_secs_f64();
        let half_lives = elapsed / self.policy.half_life.as_secs_f64().max(f64::MIN_POSITIVE);
        self.penalty * 0.5f64.powf(half_lives)
    }

    fn set_penalty(&mut self, penalty: f64, now: Instant) {
        // A penalty this small changes nothing; zero lets
        // `changes_with_time` say so.
        self.penalty = if penalty < 0.01 { 0.0 } else { penalty };
        self.penalty_at = now;
    }

    /// Whether the verdict can change with time alone: an agent's
    /// heartbeat can go missing, and a flap penalty decays. Otherwise it
    /// changes only with new evidence, and needs judging only then.
    pub fn changes_with_time(&self) -> bool {
        self.agent.is_some() || self.penalty > 0.0 || self.suppressed
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn an_agent_s_word_and_silence_decide() {
        let t0 = Instant::now();
        let mut health = Health::new(Policy::default(), t0);
        assert_eq!(health.verdict(t0), Verdict::Up);
        health.agent_report(true, "", t0);
        assert_eq!(health.verdict(t0 + secs(7)), Verdict::Up);
        assert!(matches!(
            health.verdict(t0 + secs(8)),
            Verdict::Down(Down::AgentSilent { secs: 8 })
        ));
        health.agent_report(false, "HTTP probe: connection refused", t0 + secs(11));
        assert!(
            matches!(health.verdict(t0 + secs(11)), Verdict::Down(Down::AgentReportsUnhealthy { reason }) if reason.contains("connection refused"))
        );
        health.agent_report(true, "", t0 + secs(12));
        assert_eq!(health.verdict(t0 + secs(12)), Verdict::Up);
    }

    #[test]
    fn without_an_agent_repeated_fetch_failures_decide() {
        let t0 = Instant::now();
        let mut health = Health::new(Policy::default(), t0);
        health.fetch_failed();
        health.fetch_failed();
        assert_eq!(health.verdict(t0), Verdict::Up);
        health.fetch_failed();
        assert!(matches!(health.verdict(t0), Verdict::Down(_)));
        health.fetch_succeeded();
        assert_eq!(health.verdict(t0), Verdict::Up);
    }

    #[test]
    fn without_an_agent_failed_probes_decide_and_an_agent_overrides_them() {
        let t0 = Instant::now();
        let mut health = Health::new(Policy::default(), t0);
        health.probe_failed(Failure::Refused {
            code: 0xF2,
            meaning: "onion service introduction failed",
        });
        assert_eq!(health.verdict(t0), Verdict::Up);
        // The manager's own SOCKS port failing says nothing of the
        // instance.
        health.probe_failed(Failure::Unreachable);
        assert_eq!(health.verdict(t0), Verdict::Up);
        health.probe_failed(Failure::TimedOut);
        assert_eq!(
            health.verdict(t0),
            Verdict::Down(Down::ProbesFailing {
                failures: 2,
                last: Failure::TimedOut
            })
        );
        health.probe_passed();
        assert_eq!(health.verdict(t0 + secs(1)), Verdict::Up);
        health.probe_failed(Failure::TimedOut);
        health.probe_failed(Failure::TimedOut);
        health.agent_report(true, "", t0 + secs(2));
        assert_eq!(health.verdict(t0 + secs(2)), Verdict::Up);
    }

    #[test]
    fn one_fall_returns_at_once_a_flapping_instance_is_held_out_then_forgiven() {
        let t0 = Instant::now();
        let mut health = Health::new(Policy::default(), t0);
        let mut now = t0;
        // Falls and recovers every 5 s.
        let mut verdicts = Vec::new();
        for _ in 0..4 {
            health.agent_report(false, "down", now);
            health.verdict(now);
            now += secs(5);
            health.agent_report(true, "", now);
            verdicts.push(health.verdict(now) == Verdict::Up);
            now += secs(5);
        }
        // It comes back from the first three falls; the fourth, 35 s
        // after the first, brings the penalty to the suppress level.
        assert_eq!(verdicts, [true, true, true, false]);
        // Healthy and quiet: it returns once the penalty has decayed to
        // the reuse level (a couple of half-lives), not before.
        let mut back = None;
        for s in (0..600).step_by(5) {
            let at = now + secs(s);
            health.agent_report(true, "", at);
            if health.verdict(at) == Verdict::Up {
                back = Some(s);
                break;
            }
        }
        let back = back.expect("returns eventually");
        assert!((30..=120).contains(&back), "returned after {back}s");
    }
}
