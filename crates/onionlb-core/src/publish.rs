//! When a master descriptor must be published again.
//!
//! A descriptor is uploaded when there is none for its time period yet,
//! when the intro points it should carry changed, when the HSDirs that
//! should hold it changed, and when it is an hour old (HSDirs drop
//! descriptors after their lifetime, and a periodic upload also covers an
//! HSDir that lost it). Nothing else causes an upload: each one costs every
//! responsible HSDir a signature check and the manager a new revision.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::consensus::RsaId;

/// Republish a descriptor at least this often.
pub const REPUBLISH_AFTER: Duration = Duration::from_secs(3600);

/// What a publication for one descriptor slot consists of, as far as the
/// decision to publish again is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The time period number the descriptors are for.
    pub period: u64,
    /// Each distinct descriptor: its intro points and its HSDirs.
    pub descriptors: Vec<DescriptorLayout>,
}

/// One distinct descriptor of a [`Layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorLayout {
    /// The intro points' service keys, sorted: the order in a descriptor
    /// means nothing to clients.
    pub intro_keys: Vec<[u8; 32]>,
    /// The HSDirs it goes to.
    pub hsdirs: Vec<RsaId>,
}

impl DescriptorLayout {
    /// A descriptor carrying intro points with service keys `intro_keys`,
    /// in any order.
    pub fn new(mut intro_keys: Vec<[u8; 32]>, hsdirs: Vec<RsaId>) -> Self {
        intro_keys.sort_unstable();
        DescriptorLayout { intro_keys, hsdirs }
    }
}

/// Why a descriptor is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishReason {
    /// Nothing was published for this slot yet.
    First,
    /// The slot moved to another time period.
    NewPeriod,
    /// The intro points to carry changed.
    IntroPointsChanged,
    /// The same intro points go to other HSDirs.
    HsdirsChanged,
    /// The last upload is [`REPUBLISH_AFTER`] old.
    Age,
}

impl fmt::Display for PublishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublishReason::First => "first publication",
            PublishReason::NewPeriod => "new time period",
            PublishReason::IntroPointsChanged => "intro points changed",
            PublishReason::HsdirsChanged => "HSDir set changed",
            PublishReason::Age => "age",
        })
    }
}

impl PublishReason {
    /// A short name for metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            PublishReason::First => "first",
            PublishReason::NewPeriod => "new_period",
            PublishReason::IntroPointsChanged => "intro_points_changed",
            PublishReason::HsdirsChanged => "hsdirs_changed",
            PublishReason::Age => "age",
        }
    }
}

/// Whether `next` must be published, given what was published last
/// (`previous`, at `published_at`), and why.
pub fn publish_reason(
    previous: Option<(&Layout, SystemTime)>,
    next: &Layout,
    now: SystemTime,
) -> Option<PublishReason> {
    let Some((previous, published_at)) = previous else {
        return Some(PublishReason::First);
    };
    if previous.period != next.period {
        return Some(PublishReason::NewPeriod);
    }
    let keys = |layout: &Layout| {
        layout
            .descriptors
            .iter()
            .map(|d| d.intro_keys.clone())
            .collect::<Vec<_>>()
    };
    if keys(previous) != keys(next) {
        return Some(PublishReason::IntroPointsChanged);
    }
    if previous != next {
        return Some(PublishReason::HsdirsChanged);
    }
    // A clock that went backwards counts as no time passed.
    let age = now.duration_since(published_at).unwrap_or_default();
    (age >= REPUBLISH_AFTER).then_some(PublishReason::Age)
}

#[cfg(test)]
mod test {
    use super::*;

    fn layout(period: u64, keys: &[u8], dirs: &[u8]) -> Layout {
        Layout {
            period,
            descriptors: vec![DescriptorLayout::new(
                keys.iter().map(|k| [*k; 32]).collect(),
                dirs.iter().map(|d| RsaId([*d; 20])).collect(),
            )],
        }
    }

    #[test]
    fn each_reason_in_order_of_precedence() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let soon = t0 + Duration::from_secs(60);
        let base = layout(7, &[1, 2], &[1, 2]);
        let previous = Some((&base, t0));
        assert_eq!(publish_reason(None, &base, t0), Some(PublishReason::First));
        assert_eq!(publish_reason(previous, &base, soon), None);
        assert_eq!(
            publish_reason(previous, &layout(8, &[3], &[3]), soon),
            Some(PublishReason::NewPeriod)
        );
        assert_eq!(
            publish_reason(previous, &layout(7, &[1, 3], &[3]), soon),
            Some(PublishReason::IntroPointsChanged)
        );
        assert_eq!(
            publish_reason(previous, &layout(7, &[1, 2], &[1, 3]), soon),
            Some(PublishReason::HsdirsChanged)
        );
        assert_eq!(
            publish_reason(
                previous,
                &base,
                t0 + REPUBLISH_AFTER - Duration::from_secs(1)
            ),
            None
        );
        assert_eq!(
            publish_reason(previous, &base, t0 + REPUBLISH_AFTER),
            Some(PublishReason::Age)
        );
    }

    #[test]
    fn intro_point_order_does_not_matter_and_a_clock_going_back_is_no_age() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = layout(7, &[1, 2, 3], &[1]);
        let b = layout(7, &[3, 1, 2], &[1]);
        assert_eq!(publish_reason(Some((&a, t0)), &b, t0), None);
        let earlier = t0 - Duration::from_secs(7200);
        assert_eq!(publish_reason(Some((&a, t0)), &b, earlier), None);
    }
}
