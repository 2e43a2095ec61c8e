//! The manager's state as a [`StatusReport`].

use std::time::{Instant, SystemTime};

use onionlb_core::health::Verdict;
use onionlb_core::publish::REPUBLISH_AFTER;
use onionlb_core::upload::UploadState;

use crate::manager::state::{Instance, Published, Service};
use crate::metrics::ServiceGauges;
use crate::status::report::{
    timestamp, DescriptorStatus, InstanceStatus, ManagerStatus, ServiceStatus, StatusReport,
    UploadStatus,
};

/// The metrics' gauges for `services` at `now`.
pub fn gauges(services: &[Service], now: SystemTime) -> Vec<ServiceGauges> {
    let secs = |then: SystemTime| {
        i64::try_from(now.duration_since(then).unwrap_or_default().as_secs()).unwrap_or(i64::MAX)
    };
    services
        .iter()
        .map(|service| ServiceGauges {
            service: service.address.to_string(),
            live_instances: service
                .instances
                .iter()
                .filter(|i| is_live(i, now))
                .count()
                .try_into()
                .unwrap_or(i64::MAX),
            intro_points: service.published.each_ref().map(|p| {
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
                .published
                .each_ref()
                .map(|p| p.as_ref().map(|p| secs(p.at))),
            instance_age: service
                .instances
                .iter()
                .filter_map(|i| Some((i.config.label(), secs(i.received?))))
                .collect(),
        })
        .collect()
}

/// Whether `instance`'s intro points are published at `now`: it is
/// healthy and its descriptor valid.
fn is_live(instance: &Instance, now: SystemTime) -> bool {
    instance.verdict == Verdict::Up
        && instance
            .state
            .descriptor()
            .is_some_and(|d| d.valid_until.is_none_or(|end| end > now))
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

/// The report for `services` at `now` (`mono` is the same instant on the
/// monotonic clock, which upload states use).
pub fn report(
    services: &[Service],
    control: ControlHealth,
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
        },
        services: services
            .iter()
            .map(|service| service_status(service, now, &wall))
            .collect(),
    }
}

fn service_status(
    service: &Service,
    now: SystemTime,
    wall: &dyn Fn(Instant) -> SystemTime,
) -> ServiceStatus {
    let published_at = |slot: usize| service.published[slot].as_ref().map(|p| timestamp(p.at));
    let mut next: Option<SystemTime> = None;
    let mut descriptors = Vec::new();
    for (slot, published) in service.published.iter().enumerate() {
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
        onion_address: service.address.to_string(),
        instances: service
            .instances
            .iter()
            .map(|instance| {
                let descriptor = instance.state.descriptor();
                let valid_until = descriptor.and_then(|d| d.valid_until);
                let live = is_live(instance, now);
                InstanceStatus {
                    onion_address: instance.config.address.to_string(),
                    intro_points_num: descriptor.map(|_| instance.state.intro_point_count()),
                    intro_set_modified: instance.intro_set_modified.map(timestamp),
                    descriptor_received: descriptor.and(instance.received).map(timestamp),
                    received: None,
                    name: instance.config.label(),
                    live,
                    problem: match &instance.verdict {
                        Verdict::Down(why) => Some(why.clone()),
                        Verdict::Up => instance.problem.clone(),
                    },
                    revision: descriptor.map(|d| d.revision),
                    valid_until: valid_until.map(timestamp),
                    agent: instance.config.agent_key.map(|_| match &instance.agent {
                        Some(peer) => format!("connected ({peer})"),
                        None => "not connected".to_owned(),
                    }),
                }
            })
            .collect(),
        publish_attempt_first_descriptor: published_at(0),
        publish_attempt_second_descriptor: published_at(1),
        descriptors,
        next_publish: next.map(timestamp),
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
                    } => ("failed", *at, Some(reason.clone()), Some(*retry_at)),
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
