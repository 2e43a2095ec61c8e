//! What became of each upload of one master descriptor, and when to try
//! again.
//!
//! tor reports each `HSPOST` per HSDir with an `HS_DESC UPLOADED` or
//! `HS_DESC FAILED` event. An HSDir that refused, or that tor never
//! reported on, is tried again after a delay that doubles with each
//! attempt, so a broken HSDir costs little while a transient failure is
//! fixed quickly. Pure: the caller passes the time and does the sending.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::consensus::RsaId;

/// Why an upload failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UploadFailure {
    /// tor reported the upload failed (`HS_DESC FAILED`), for this reason.
    Tor(HsDescReason),
    /// tor refused the `HSPOST` command itself.
    PostRefused,
    /// The control connection to tor was lost before tor said.
    ConnectionLost,
}

impl UploadFailure {
    /// A short name, for status and metrics: tor's own word for what tor
    /// reported, ours otherwise.
    pub fn label(self) -> &'static str {
        match self {
            UploadFailure::Tor(reason) => reason.word(),
            UploadFailure::PostRefused => "post_refused",
            UploadFailure::ConnectionLost => "connection_lost",
        }
    }
}

impl std::fmt::Display for UploadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadFailure::Tor(reason) => write!(f, "tor reported {}", reason.word()),
            UploadFailure::PostRefused => f.write_str("tor refused the HSPOST command"),
            UploadFailure::ConnectionLost => f.write_str("the control connection to tor was lost"),
        }
    }
}

/// The `REASON` of tor's `HS_DESC FAILED` event (control-spec), for a
/// fetch or an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HsDescReason {
    /// `BAD_DESC`: the descriptor could not be parsed or checked.
    BadDesc,
    /// `QUERY_REJECTED`: the HSDir refused the query.
    QueryRejected,
    /// `UPLOAD_REJECTED`: the HSDir refused the descriptor.
    UploadRejected,
    /// `NOT_FOUND`: the HSDir has no such descriptor.
    NotFound,
    /// `UNEXPECTED`: anything else tor saw go wrong.
    Unexpected,
    /// `QUERY_NO_HSDIR`: no HSDir to ask.
    QueryNoHsdir,
    /// `QUERY_RATE_LIMITED`: tor limited the query's rate.
    QueryRateLimited,
    /// A reason this version does not know.
    Other,
    /// tor gave no reason.
    Unstated,
}

impl HsDescReason {
    /// The reason tor gave (`None` when it gave none).
    pub fn from_word(word: Option<&str>) -> Self {
        match word {
            None => HsDescReason::Unstated,
            Some("BAD_DESC") => HsDescReason::BadDesc,
            Some("QUERY_REJECTED") => HsDescReason::QueryRejected,
            Some("UPLOAD_REJECTED") => HsDescReason::UploadRejected,
            Some("NOT_FOUND") => HsDescReason::NotFound,
            Some("UNEXPECTED") => HsDescReason::Unexpected,
            Some("QUERY_NO_HSDIR") => HsDescReason::QueryNoHsdir,
            Some("QUERY_RATE_LIMITED") => HsDescReason::QueryRateLimited,
            Some(_) => HsDescReason::Other,
        }
    }

    /// tor's word for it.
    pub fn word(self) -> &'static str {
        match self {
            HsDescReason::BadDesc => "BAD_DESC",
            HsDescReason::QueryRejected => "QUERY_REJECTED",
            HsDescReason::UploadRejected => "UPLOAD_REJECTED",
            HsDescReason::NotFound => "NOT_FOUND",
            HsDescReason::Unexpected => "UNEXPECTED",
            HsDescReason::QueryNoHsdir => "QUERY_NO_HSDIR",
            HsDescReason::QueryRateLimited => "QUERY_RATE_LIMITED",
            HsDescReason::Other => "other",
            HsDescReason::Unstated => "unstated",
        }
    }
}

/// Wait before the first retry; doubles with each failed attempt.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest wait between attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// An upload tor has not reported on after this long counts as failed.
/// tor gives up on a directory connection well before this.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Where one HSDir's upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadState {
    /// Sent; waiting for tor to report how it went.
    Sent {
        /// When it was sent.
        at: Instant,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// The HSDir accepted it.
    Accepted {
        /// When tor reported it.
        at: Instant,
        /// Which attempt succeeded.
        attempt: u32,
    },
    /// The HSDir refused it, or it was lost; another attempt is due at
    /// `retry_at`.
    Failed {
        /// When it failed.
        at: Instant,
        /// Which attempt failed.
        attempt: u32,
        /// Why.
        reason: UploadFailure,
        /// When to send it again.
        retry_at: Instant,
    },
}

/// The uploads of one descriptor (or one group of distinct descriptors)
/// to its HSDirs.
#[derive(Debug, Clone, Default)]
pub struct Uploads {
    dirs: BTreeMap<RsaId, UploadState>,
    /// [`Uploads::next_due`], kept up to date by every change: the
    /// balancer asks every service at every tick.
    next_due: Option<Instant>,
}

impl Uploads {
    /// Everything was just sent to `hsdirs`.
    pub fn sent(hsdirs: impl IntoIterator<Item = RsaId>, now: Instant) -> Self {
        let mut uploads = Uploads {
            dirs: hsdirs
                .into_iter()
                .map(|dir| {
                    (
                        dir,
                        UploadState::Sent {
                            at: now,
                            attempt: 1,
                        },
                    )
                })
                .collect(),
            next_due: None,
        };
        uploads.update_next_due();
        uploads
    }

    /// tor reports that `dir` accepted the descriptor. Returns false if
    /// `dir` is not one of ours.
    pub fn accepted(&mut self, dir: &RsaId, now: Instant) -> bool {
        let Some(state) = self.dirs.get_mut(dir) else {
            return false;
        };
        *state = UploadState::Accepted {
            at: now,
            attempt: state.attempt(),
        };
        self.update_next_due();
        true
    }

    /// The upload to `dir` failed. Returns how long until the next
    /// attempt, or `None` if `dir` is not one of ours.
    pub fn failed(&mut self, dir: &RsaId, reason: UploadFailure, now: Instant) -> Option<Duration> {
        let state = self.dirs.get_mut(dir)?;
        let attempt = state.attempt();
        let delay = retry_delay(attempt);
        *state = UploadState::Failed {
            at: now,
            attempt,
            reason,
            retry_at: now + delay,
        };
        self.update_next_due();
        Some(delay)
    }

    /// The control connection ended: tor will never report on what was in
    /// flight, so send those again right away.
    pub fn connection_lost(&mut self, now: Instant) {
        for state in self.dirs.values_mut() {
            if let UploadState::Sent { attempt, .. } = *state {
                *state = UploadState::Failed {
                    at: now,
                    attempt,
                    reason: UploadFailure::ConnectionLost,
                    retry_at: now,
                };
            }
        }
        self.update_next_due();
    }

    /// The HSDirs to send to again now: failed ones whose wait is over and
    /// ones tor has not reported on within [`ANSWER_TIMEOUT`]. They are
    /// marked sent (next attempt) as they are returned.
    pub fn take_due(&mut self, now: Instant) -> Vec<RsaId> {
        let mut due = Vec::new();
        for (dir, state) in &mut self.dirs {
            let is_due = match state {
                UploadState::Failed { retry_at, .. } => *retry_at <= now,
                UploadState::Sent { at, .. } => {
                    now.saturating_duration_since(*at) >= ANSWER_TIMEOUT
                }
                UploadState::Accepted { .. } => false,
            };
            if is_due {
                *state = UploadState::Sent {
                    at: now,
                    attempt: state.attempt().saturating_add(1),
                };
                due.push(*dir);
            }
        }
        self.update_next_due();
        due
    }

    /// When [`Uploads::take_due`] next has something to take: the
    /// earliest retry, or the earliest unanswered upload's answer timeout.
    pub fn next_due(&self) -> Option<Instant> {
        self.next_due
    }

    fn update_next_due(&mut self) {
        self.next_due = self
            .dirs
            .values()
            .filter_map(|state| match state {
                UploadState::Failed { retry_at, .. } => Some(*retry_at),
                UploadState::Sent { at, .. } => Some(*at + ANSWER_TIMEOUT),
                UploadState::Accepted { .. } => None,
            })
            .min();
    }

    /// Each HSDir and where its upload stands.
    pub fn iter(&self) -> impl Iterator<Item = (&RsaId, &UploadState)> {
        self.dirs.iter()
    }

    /// How many HSDirs accepted the descriptor.
    pub fn accepted_count(&self) -> usize {
        self.dirs
            .values()
            .filter(|s| matches!(s, UploadState::Accepted { .. }))
            .count()
    }
}

impl UploadState {
    /// Which attempt this state belongs to.
    pub fn attempt(&self) -> u32 {
        match self {
            UploadState::Sent { attempt, .. }
            | UploadState::Accepted { attempt, .. }
            | UploadState::Failed { attempt, .. } => *attempt,
        }
    }
}

/// The wait after attempt `attempt` (1-based) failed.
fn retry_delay(attempt: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(MAX_RETRY)
}

#[cfg(test)]
mod test {
    use super::*;

    const REJECTED: UploadFailure = UploadFailure::Tor(HsDescReason::UploadRejected);

    #[test]
    fn tors_reasons_read_back_as_its_words_and_others_are_kept_apart() {
        for word in [
            "BAD_DESC",
            "QUERY_REJECTED",
            "UPLOAD_REJECTED",
            "NOT_FOUND",
            "UNEXPECTED",
            "QUERY_NO_HSDIR",
            "QUERY_RATE_LIMITED",
        ] {
            assert_eq!(HsDescReason::from_word(Some(word)).word(), word);
        }
        assert_eq!(
            HsDescReason::from_word(Some("NEW_IN_0_5")),
            HsDescReason::Other
        );
        assert_eq!(HsDescReason::from_word(None), HsDescReason::Unstated);
        assert_eq!(REJECTED.label(), "UPLOAD_REJECTED");
        assert_eq!(UploadFailure::PostRefused.label(), "post_refused");
    }

    fn dir(byte: u8) -> RsaId {
        RsaId([byte; 20])
    }

    #[test]
    fn failures_are_retried_with_doubling_delays_up_to_the_cap() {
        let start = Instant::now();
        let mut uploads = Uploads::sent([dir(1), dir(2)], start);
        assert!(uploads.accepted(&dir(2), start));
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let wait = uploads.failed(&dir(1), REJECTED, now).unwrap();
            waits.push(wait.as_secs());
            assert!(uploads
                .take_due(now + wait - Duration::from_secs(1))
                .is_empty());
            now += wait;
            assert_eq!(uploads.take_due(now), vec![dir(1)]);
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(uploads.accepted_count(), 1);
        assert!(uploads.accepted(&dir(1), now));
        assert_eq!(uploads.accepted_count(), 2);
        assert!(uploads.take_due(now + MAX_RETRY * 10).is_empty());
    }

    #[test]
    fn unknown_hsdirs_are_ignored() {
        let now = Instant::now();
        let mut uploads = Uploads::sent([dir(1)], now);
        assert!(!uploads.accepted(&dir(9), now));
        assert_eq!(uploads.failed(&dir(9), REJECTED, now), None);
    }

    #[test]
    fn unanswered_uploads_are_sent_again_after_the_answer_timeout() {
        let start = Instant::now();
        let mut uploads = Uploads::sent([dir(1)], start);
        assert!(uploads.take_due(start + ANSWER_TIMEOUT / 2).is_empty());
        assert_eq!(uploads.next_due(), Some(start + ANSWER_TIMEOUT));
        assert_eq!(uploads.take_due(start + ANSWER_TIMEOUT), vec![dir(1)]);
        let (_, state) = uploads.iter().next().unwrap();
        assert_eq!(state.attempt(), 2);
    }

    #[test]
    fn a_lost_connection_resends_what_was_in_flight_at_once() {
        let now = Instant::now();
        let mut uploads = Uploads::sent([dir(1), dir(2), dir(3)], now);
        uploads.accepted(&dir(1), now);
        let later = now + Duration::from_secs(1);
        uploads.failed(&dir(3), REJECTED, now);
        uploads.connection_lost(later);
        // dir 1 was accepted, dir 3 waits for its backoff; dir 2 was in
        // flight.
        assert_eq!(uploads.take_due(later), vec![dir(2)]);
    }
}
