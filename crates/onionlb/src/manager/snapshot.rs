//! The balancer's state as a [`StatusReport`] and as metric gauges, made
//! when a client asks.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use onionlb_core::balancer::{Balancer, DrainState, Instance, Published, Service};
use onionlb_core::health::Verdict;
use onionlb_core::publish::REPUBLISH_AFTER;
use onionlb_core::upload::UploadState;
use onionlb_core::OnionAddress;

use crate::metrics::ServiceGauges;
use crate::status::report::{
    timestamp, DescriptorStatus, InstanceStatus, ManagerStatus, ProbeStatus, ServiceStatus,
    StatusReport, UploadStatus,
};

/// Whether each instance has an agent configured, by address.
pub type AgentConfigured<'a> = &'a HashMap<OnionAddress, onionlb_core::agent::AgentPublicKey>;

/// The metrics' gauges at `now`.
pub fn gauges<R>(balancer: &Balancer<R>, now: SystemTime) -> Vec<ServiceGauges> {
    let secs = |then: SystemTime| {
        i64::try_from(now.duration_since(then).unwrap_or_default().as_secs()).unwrap_or(i64::MAX)
    };
    balancer
        .services()
        .iter()
        .map(|service| {
            let members = || {
                service
                    .members()
                    .iter()
                    .filter_map(|m| Some((m, balancer.instance(&m.address)?)))
            };
            ServiceGauges {
                service: service.address().to_string(),
                live_instances: members()
                    .filter(|(_, i)| i.is_live(now))
                    .count()
                    .try_into()
                    .unwrap_or(i64::MAX),
                drained_instances: members()
                    .filter(|(_, i)| i.drained().is_some())
                    .count()
                    .try_into()
                    .unwrap_or(i64::MAX),
                intro_points: service.published().each_ref().map(|p| {
                    p.as_ref().map(|p| {
                        let n: usize = p
                            .layout
                            .descriptors
                            .iter()
                            .map(|d| d.intro_keys.len())
                            .sum();
                        i64::try_from(n).unwrap_or(i64::MAX)
                    })
                }),
                master_age: service
                    .published()
                    .each_ref()
                    .map(|p| p.as_ref().map(|p| secs(p.at))),
                instance_age: members()
                    .filter_map(|(m, i)| Some((m.label(), secs(i.received()?))))
                    .collect(),
            }
        })
        .collect()
}

/// Where the control connection stands.
#[derive(Debug, Clone, Default)]
pub struct ControlHealth {
    /// Connected now.
    pub connected: bool,
    /// Reconnections since start.
    pub reconnects: u64,
    /// While not connected: why the last connection ended.
    pub down_because: Option<String>,
}

/// What became of configuration reloads.
#[derive(Debug, Clone, Default)]
pub struct Reloads {
    /// Configurations taken.
    pub applied: u64,
    /// Configurations refused.
    pub refused: u64,
    /// Why the last one was refused, until one is taken.
    pub refused_because: Option<String>,
}

/// The report at `now` (`mono` is the same instant on the monotonic
/// clock, which upload states use).
pub fn report<R>(
    balancer: &Balancer<R>,
    agents: AgentConfigured<'_>,
    control: ControlHealth,
    reloads: &Reloads,
    now: SystemTime,
    mono: Instant,
) -> StatusReport {
    // Upload states carry monotonic instants; show them as wall-clock time.
    let wall = |at: Instant| {
        let shifted = if at <= mono {
            now.checked_sub(mono - at)
        } else {
            now.checked_add(at - mono)
        };
        shifted.unwrap_or(now)
    };
    StatusReport {
        manager: ManagerStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            generated_at: timestamp(now),
            control_connected: control.connected,
            control_reconnects: control.reconnects,
            control_down_because: control.down_because,
            config_reloads: reloads.applied,
            config_reloads_refused: reloads.refused,
            config_refused_because: reloads.refused_because.clone(),
        },
        services: balancer
            .services()
            .iter()
            .map(|service| service_status(balancer, service, agents, now, &wall))
            .collect(),
    }
}

fn service_status<R>(
    balancer: &Balancer<R>,
    service: &Service,
    agents: AgentConfigured<'_>,
    now: SystemTime,
    wall: &dyn Fn(Instant) -> SystemTime,
) -> ServiceStatus {
    let published_at = |slot: usize| service.published()[slot].as_ref().map(|p| timestamp(p.at));
    let mut next: Option<SystemTime> = None;
    let mut descriptors = Vec::new();
    for (slot, published) in service.published().iter().enumerate() {
        let Some(published) = published else {
            continue;
        };
        let mut candidates = vec![published.at + REPUBLISH_AFTER];
        candidates.extend(
            published
                .uploads
                .iter()
                .filter_map(|(_, state)| match state {
                    UploadState::Failed { retry_at, .. } => Some(wall(*retry_at)),
                    _ => None,
                }),
        );
        if let Some(earliest) = candidates.into_iter().min() {
            next = Some(next.map_or(earliest, |n| n.min(earliest)));
        }
        descriptors.push(descriptor_status(slot, published, wall));
    }
    ServiceStatus {
        onion_address: service.address().to_string(),
        instances: service
            .members()
            .iter()
            .filter_map(|member| {
                let instance = balancer.instance(&member.address)?;
                let drain = balancer.drain_state(&member.address, now);
                Some(instance_status(
                    instance,
                    member.label(),
                    agents.contains_key(&member.address),
                    drain,
                    now,
                    wall,
                ))
            })
            .collect(),
        publish_attempt_first_descriptor: published_at(0),
        publish_attempt_second_descriptor: published_at(1),
        descriptors,
        next_publish: next.map(timestamp),
    }
}

fn instance_status(
    instance: &Instance,
    name: String,
    has_agent: bool,
    drain: Option<DrainState>,
    now: SystemTime,
    wall: &dyn Fn(Instant) -> SystemTime,
) -> InstanceStatus {
    let descriptor = instance.state().descriptor();
    InstanceStatus {
        onion_address: instance.address().to_string(),
        intro_points_num: descriptor.map(|_| instance.state().intro_point_count()),
        intro_set_modified: instance.intro_set_modified().map(timestamp),
        descriptor_received: descriptor.and(instance.received()).map(timestamp),
        received: None,
        name,
        live: instance.is_live(now),
        problem: match instance.verdict() {
            Verdict::Down(why) => Some(why.to_string()),
            Verdict::Up => instance.problem().map(ToString::to_string),
        },
        revision: descriptor.map(|d| d.revision),
        valid_until: descriptor.and_then(|d| d.valid_until).map(timestamp),
        agent: has_agent.then(|| match instance.agent() {
            Some(peer) => format!("connected ({peer})"),
            None => "not connected".to_owned(),
        }),
        drain: drain.map(|d| match d {
            DrainState::Draining => "draining".to_owned(),
            DrainState::Drained { .. } => "drained".to_owned(),
        }),
        probe: instance.probe().last().map(|(at, outcome)| ProbeStatus {
            at: timestamp(wall(at)),
            result: match outcome {
                Ok(()) => "passed".to_owned(),
                Err(failure) => failure.to_string(),
            },
        }),
    }
}

fn descriptor_status(
    slot: usize,
    published: &Published,
    wall: &dyn Fn(Instant) -> SystemTime,
) -> DescriptorStatus {
    DescriptorStatus {
        slot: if slot == 0 { "first" } else { "second" }.into(),
        period: published.layout.period,
        revision: published.revision,
        published_at: timestamp(published.at),
        reason: published.reason.to_string(),
        distinct: published.layout.descriptors.len(),
        instances: published.instances,
        intro_points: published
            .layout
            .descriptors
            .iter()
            .map(|d| d.intro_keys.len())
            .sum(),
        hsdirs: published
            .uploads
            .iter()
            .map(|(dir, state)| {
                let (name, at, reason, retry_at) = match state {
                    UploadState::Sent { at, .. } => ("sent", *at, None, None),
                    UploadState::Accepted { at, .. } => ("accepted", *at, None, None),
                    UploadState::Failed {
                        at,
                        reason,
                        retry_at,
                        ..
                    } => (
                        "failed",
                        *at,
                        Some(reason.label().to_owned()),
                        Some(*retry_at),
                    ),
                };
                UploadStatus {
                    fingerprint: dir.to_string(),
                    state: name.into(),
                    attempt: state.attempt(),
                    at: timestamp(wall(at)),
                    reason,
                    retry_at: retry_at.map(|r| timestamp(wall(r))),
                }
            })
            .collect(),
    }
}
