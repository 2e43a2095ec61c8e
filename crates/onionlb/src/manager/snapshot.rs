//! The manager's state as a [`StatusReport`].

use std::time::{Instant, SystemTime};

use onionlb_core::publish::REPUBLISH_AFTER;
use onionlb_core::upload::UploadState;

use crate::manager::state::{Published, Service};
use crate::status::report::{
    timestamp, DescriptorStatus, InstanceStatus, ManagerStatus, ServiceStatus, StatusReport,
    UploadStatus,
};

/// Where the control connection stands.
#[derive(Debug, Clone, Copy, Default)]
pub struct ControlHealth {
    /// Connected now.
    pub connected: bool,
    /// Reconnections since start.
    pub reconnects: u64,
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
                let live = descriptor.is_some() && valid_until.is_none_or(|end| end > now);
                InstanceStatus {
                    onion_address: instance.config.address.to_string(),
                    intro_points_num: descriptor.map(|d| d.intro_points.len()),
                    intro_set_modified: instance.intro_set_modified.map(timestamp),
                    descriptor_received: descriptor.and(instance.received).map(timestamp),
                    received: None,
                    name: instance.config.label(),
                    live,
                    problem: instance.problem.clone(),
                    revision: descriptor.map(|d| d.revision),
                    valid_until: valid_until.map(timestamp),
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
