//! What the balancer's notices become: a log line at the notice's level,
//! and the counters some of them move.

use onionlb_core::balancer::{Level, Notice};

use crate::metrics::Metrics;

/// Logs a notice at its level, and counts in `metrics` what they count.
pub(super) fn tell(metrics: &Metrics, notice: &Notice) {
    match notice {
        Notice::FetchFailed { instance } => metrics.fetch_failed(instance),
        Notice::DescriptorRefused { instance, rejected } => {
            metrics.refused(instance, rejected.kind());
        }
        Notice::Publishing {
            service,
            slot,
            reason,
            ..
        } => {
            metrics.published(&service.to_string(), slot.label(), reason.label());
        }
        Notice::UploadAccepted { service, hsdir } => {
            metrics.upload(&service.to_string(), &hsdir.to_string(), "accepted");
        }
        Notice::UploadFailed { service, hsdir, .. } => {
            metrics.upload(&service.to_string(), &hsdir.to_string(), "failed");
        }
        _ => {}
    }
    match notice.level() {
        Level::Debug => tracing::debug!("{notice}"),
        Level::Info => tracing::info!("{notice}"),
        Level::Warn => tracing::warn!("{notice}"),
        _ => tracing::error!("{notice}"),
    }
}
