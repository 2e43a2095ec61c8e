//! What the balancer tells its operator: each thing worth a log line or a
//! counter, as a value. The shell writes them to its log (at
//! [`Notice::level`]) and counts the ones metrics count; tests match on
//! them instead of on log text.

use std::fmt;
use std::time::Duration;

use crate::agent::TorProcess;
use crate::consensus::RsaId;
use crate::descriptor::DescriptorError;
use crate::health::Down;
use crate::instance::{Accepted, Expired, Rejected};
use crate::period::DescriptorSlot;
use crate::publish::PublishReason;
use crate::upload::UploadFailure;
use crate::OnionAddress;

/// How much an operator needs to hear of a [`Notice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Only when debugging.
    Debug,
    /// Routine: what was done.
    Info,
    /// Something is wrong and the balancer works around it.
    Warn,
    /// Something is wrong and clients may notice.
    Error,
}

/// One thing that happened, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// An instance's descriptor was taken, and changed what is on offer.
    InstanceChanged {
        /// The instance's name.
        instance: String,
        /// What changed ([`Accepted::NowUsable`] or
        /// [`Accepted::IntroPointsChanged`]).
        change: Accepted,
        /// Intro points its kept descriptors carry.
        intro_points: usize,
        /// The newest descriptor's revision.
        revision: u64,
        /// Whether its agent pushed it (else it was fetched).
        pushed: bool,
    },
    /// An instance became unusable or a descriptor of it was refused
    /// (said once per distinct problem).
    InstanceProblem {
        /// The instance's name.
        instance: String,
        /// What is wrong.
        problem: Problem,
    },
    /// A descriptor of an instance was refused (every time, for the
    /// counters; the reason is said once, in the notices above and below).
    DescriptorRefused {
        /// The instance's name.
        instance: String,
        /// Why.
        rejected: Rejected,
    },
    /// An HSDir served an instance descriptor older than one in use (it
    /// missed an upload, or lags behind an agent's push): routine.
    OlderDescriptorServed {
        /// The instance's name.
        instance: String,
        /// The refusal.
        rejected: Rejected,
    },
    /// An agent pushed a descriptor that was refused.
    PushRefused {
        /// The instance's name.
        instance: String,
        /// Why.
        rejected: Rejected,
    },
    /// An instance's tor restarted: every intro point of its old run
    /// was dropped.
    TorRestarted {
        /// The instance's name.
        instance: String,
        /// The run before.
        before: TorProcess,
        /// The run now.
        now: TorProcess,
    },
    /// An instance's health verdict went down: its intro points leave.
    Leaving {
        /// The instance's name.
        instance: String,
        /// Why.
        why: Down,
    },
    /// An instance's health verdict came back up.
    HealthyAgain {
        /// The instance's name.
        instance: String,
    },
    /// A fetch of an instance's descriptor failed at one HSDir.
    FetchFailed {
        /// The instance's name.
        instance: String,
    },
    /// No instance of a service is usable: its last descriptors stay.
    NoUsableInstance {
        /// The service.
        service: OnionAddress,
    },
    /// Every instance of a service is held out by failed probes alone:
    /// more likely the management tor's trouble than all of theirs, so
    /// their intro points are published as without probes.
    ProbesFailEverywhere {
        /// The service.
        service: OnionAddress,
    },
    /// A probe could not use the management tor's SOCKS port (said when
    /// it starts failing): probes say nothing until it works again.
    CannotProbe,
    /// A master descriptor is being published.
    Publishing {
        /// The service.
        service: OnionAddress,
        /// Which of its two descriptors.
        slot: DescriptorSlot,
        /// Why now.
        reason: PublishReason,
        /// Distinct descriptors made (one per group of HSDirs).
        distinct: usize,
        /// Intro point slots filled, over all of them.
        intro_points: usize,
        /// Instances whose intro points are in.
        instances: usize,
        /// The revision counter.
        revision: u64,
        /// HSDirs it goes to.
        hsdirs: usize,
    },
    /// A master descriptor could not be built; the last one stays.
    BuildFailed {
        /// The service.
        service: OnionAddress,
        /// Why.
        error: DescriptorError,
    },
    /// An HSDir accepted a master descriptor.
    UploadAccepted {
        /// The service.
        service: OnionAddress,
        /// The HSDir.
        hsdir: RsaId,
    },
    /// An upload of a master descriptor failed; it is retried.
    UploadFailed {
        /// The service.
        service: OnionAddress,
        /// The HSDir.
        hsdir: RsaId,
        /// Why.
        reason: UploadFailure,
        /// When it is tried again.
        retry_in: Duration,
    },
    /// An instance was drained (taken out of new master descriptors on
    /// purpose) or let back in.
    Drain {
        /// The instance's name.
        instance: String,
        /// Drained, or back.
        drained: bool,
    },
    /// A service appeared in a reloaded configuration.
    ServiceAdded {
        /// The service.
        service: OnionAddress,
    },
    /// A service left the configuration; what it published stays on the
    /// HSDirs until it expires.
    ServiceRemoved {
        /// The service.
        service: OnionAddress,
    },
}

/// Why an instance is unusable, or a descriptor of it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A descriptor was refused.
    Rejected(Rejected),
    /// Its last descriptor expired or was rotated out.
    Expired(Expired),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Rejected(rejected) => rejected.fmt(f),
            Problem::Expired(expired) => expired.fmt(f),
        }
    }
}

impl Notice {
    /// How much the operator needs to hear of it.
    pub fn level(&self) -> Level {
        match self {
            Notice::UploadAccepted { .. }
            | Notice::FetchFailed { .. }
            | Notice::DescriptorRefused { .. } => Level::Debug,
            Notice::InstanceChanged { .. }
            | Notice::OlderDescriptorServed { .. }
            | Notice::HealthyAgain { .. }
            | Notice::Publishing { .. }
            | Notice::Drain { .. }
            | Notice::ServiceAdded { .. } => Level::Info,
            Notice::InstanceProblem { .. }
            | Notice::PushRefused { .. }
            | Notice::TorRestarted { .. }
            | Notice::Leaving { .. }
            | Notice::UploadFailed { .. }
            | Notice::ServiceRemoved { .. }
            | Notice::CannotProbe
            | Notice::ProbesFailEverywhere { .. } => Level::Warn,
            Notice::NoUsableInstance { .. } | Notice::BuildFailed { .. } => Level::Error,
        }
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::InstanceChanged {
                instance,
                change,
                intro_points,
                revision,
                pushed,
            } => write!(
                f,
                "{instance}: {}, {intro_points} intro point(s), revision {revision}{}",
                match change {
                    Accepted::NowUsable => "usable",
                    Accepted::NewRun =>
                        "a new run of its tor (every intro point new): its old run's other descriptor dropped",
                    _ => "new intro points",
                },
                if *pushed { " (pushed by its agent)" } else { "" }
            ),
            Notice::InstanceProblem { instance, problem } => write!(f, "{instance}: {problem}"),
            Notice::DescriptorRefused { instance, rejected } => {
                write!(f, "{instance}: refused a descriptor ({})", rejected.kind())
            }
            Notice::OlderDescriptorServed { instance, rejected } => {
                write!(f, "{instance}: an HSDir served an older descriptor: {rejected}")
            }
            Notice::PushRefused { instance, rejected } => {
                write!(f, "{instance}: its agent pushed a descriptor that was {rejected}")
            }
            Notice::TorRestarted {
                instance,
                before,
                now,
            } => write!(
                f,
                "{instance}: its tor restarted ({before} before, {now} now): dropping the old run's intro points"
            ),
            Notice::Leaving { instance, why } => {
                write!(f, "{instance}: leaving the master descriptors: {why}")
            }
            Notice::HealthyAgain { instance } => write!(f, "{instance}: healthy again"),
            Notice::FetchFailed { instance } => write!(f, "{instance}: a fetch failed"),
            Notice::NoUsableInstance { service } => write!(
                f,
                "{service}: no instance is usable; keeping the last published descriptors"
            ),
            Notice::ProbesFailEverywhere { service } => write!(
                f,
                "{service}: probes fail for every instance (is the management tor cut off?); publishing their intro points as if they passed"
            ),
            Notice::CannotProbe => write!(
                f,
                "probes cannot use the management tor's SOCKS port; instances without an agent are judged by fetches alone until they can"
            ),
            Notice::Publishing {
                service,
                slot,
                reason,
                distinct,
                intro_points,
                instances,
                revision,
                hsdirs,
            } => write!(
                f,
                "{service}: publishing {} descriptor ({reason}): {distinct} distinct, {intro_points} intro point slots from {instances} instance(s), revision {revision}, to {hsdirs} HSDirs",
                match slot {
                    DescriptorSlot::First => "first",
                    DescriptorSlot::Second => "second",
                }
            ),
            Notice::BuildFailed { service, error } => {
                write!(f, "{service}: cannot build a descriptor: {error}")
            }
            Notice::UploadAccepted { service, hsdir } => {
                write!(f, "{service}: descriptor accepted by HSDir {hsdir}")
            }
            Notice::UploadFailed {
                service,
                hsdir,
                reason,
                retry_in,
            } => write!(
                f,
                "{service}: upload to HSDir {hsdir} failed ({reason}); retrying in {retry_in:?}"
            ),
            Notice::Drain {
                instance,
                drained: true,
            } => write!(
                f,
                "{instance}: drained: leaving the master descriptors until undrained"
            ),
            Notice::Drain {
                instance,
                drained: false,
            } => write!(f, "{instance}: undrained: back in the master descriptors"),
            Notice::ServiceAdded { service } => write!(f, "{service}: added"),
            Notice::ServiceRemoved { service } => write!(
                f,
                "{service}: removed from the configuration; its published descriptors stay on the HSDirs until they expire"
            ),
        }
    }
}
