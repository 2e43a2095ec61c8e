//! The parts of a microdescriptor-flavoured consensus (dir-spec section 3.4)
//! that placing descriptors needs, and the microdescriptors that supply each
//! relay's ed25519 identity.
//!
//! The consensus comes from our own management tor, which has already
//! checked its signatures, so this reader does not check them again; it
//! only has to be exact about the fields it reads, and refuse what it
//! cannot read rather than guess.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use data_encoding::BASE64_NOPAD;
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// A shared random value.
pub type Srv = [u8; 32];

/// A relay's RSA identity fingerprint, as `HSPOST SERVER=` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RsaId(pub [u8; 20]);

impl std::fmt::Display for RsaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

/// The text was not a 40-digit hex fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not a relay fingerprint (40 hex digits): {0:?}")]
pub struct BadFingerprint(pub String);

impl std::str::FromStr for RsaId {
    type Err = BadFingerprint;

    /// Reads a fingerprint as tor's events write it: 40 hex digits, either
    /// case, no `$`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadFingerprint(s.to_owned());
        let bytes = data_encoding::HEXUPPER_PERMISSIVE
            .decode(s.as_bytes())
            .map_err(|_| bad())?;
        Ok(RsaId(bytes.try_into().map_err(|_| bad())?))
    }
}

/// One relay's entry in the consensus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayStatus {
    /// Its nickname, for logs.
    pub nickname: String,
    /// Its RSA identity.
    pub rsa_id: RsaId,
    /// SHA-256 digest of its microdescriptor.
    pub md_digest: [u8; 32],
    /// Whether it has the HSDir flag.
    pub hsdir_flag: bool,
    /// Whether it speaks the v3 onion service directory protocol (HSDir=2).
    pub hsdir_v3: bool,
}

/// What onionlb needs from a consensus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consensus {
    /// Start of its validity.
    pub valid_after: SystemTime,
    /// When the next consensus is expected.
    pub fresh_until: SystemTime,
    /// End of its validity.
    pub valid_until: SystemTime,
    /// The `params` line.
    pub params: BTreeMap<String, i32>,
    /// `shared-rand-previous-value`, if the authorities agreed on one.
    pub srv_previous: Option<Srv>,
    /// `shared-rand-current-value`, if the authorities agreed on one.
    pub srv_current: Option<Srv>,
    /// Every relay listed.
    pub relays: Vec<RelayStatus>,
}

/// Why a consensus or microdescriptor text could not be read.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum NetdocError {
    /// A line was not what its keyword requires.
    #[error("line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A required line is missing.
    #[error("no {0} line")]
    Missing(&'static str),
    /// The document is not a microdescriptor consensus.
    #[error("not a microdesc-flavoured consensus")]
    WrongFlavor,
}

impl Consensus {
    /// Reads the text of `GETINFO dir/status-vote/current/consensus-microdesc`
    /// (or a `cached-microdesc-consensus` file).
    pub fn parse(text: &str) -> Result<Self, NetdocError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        match lines.next() {
            Some((_, "network-status-version 3 microdesc")) => {}
            _ => return Err(NetdocError::WrongFlavor),
        }
        let mut valid_after = None;
        let mut fresh_until = None;
        let mut valid_until = None;
        let mut params = BTreeMap::new();
        let mut srv_previous = None;
        let mut srv_current = None;
        let mut relays = Vec::new();
        let mut relay: Option<RelayStatus> = None;

        for (number, line) in lines {
            let bad = |reason: &'static str| NetdocError::BadLine {
                line: number,
                reason,
            };
            let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
            match keyword {
                "valid-after" => {
                    valid_after = Some(parse_time(rest).ok_or_else(|| bad("bad time"))?)
                }
                "fresh-until" => {
                    fresh_until = Some(parse_time(rest).ok_or_else(|| bad("bad time"))?)
                }
                "valid-until" => {
                    valid_until = Some(parse_time(rest).ok_or_else(|| bad("bad time"))?)
                }
                "params" => params = parse_params(rest).ok_or_else(|| bad("bad params"))?,
                "shared-rand-previous-value" => {
                    srv_previous = Some(parse_srv(rest).ok_or_else(|| bad("bad SRV"))?)
                }
                "shared-rand-current-value" => {
                    srv_current = Some(parse_srv(rest).ok_or_else(|| bad("bad SRV"))?)
                }
                "r" => {
                    relays.extend(relay.take());
                    relay = Some(parse_r(rest).ok_or_else(|| bad("bad r line"))?);
                }
                "m" => {
                    let current = relay
                        .as_mut()
                        .ok_or_else(|| bad("m line before any r line"))?;
                    current.md_digest =
                        decode_fixed(rest.trim()).ok_or_else(|| bad("bad microdesc digest"))?;
                }
                "s" => {
                    let current = relay
                        .as_mut()
                        .ok_or_else(|| bad("s line before any r line"))?;
                    current.hsdir_flag = rest.split(' ').any(|flag| flag == "HSDir");
                }
                "pr" => {
                    let current = relay
                        .as_mut()
                        .ok_or_else(|| bad("pr line before any r line"))?;
                    current.hsdir_v3 = protocol_supports(rest, "HSDir", 2);
                }
                "directory-footer" => break,
                _ => {}
            }
        }
        relays.extend(relay);
        Ok(Consensus {
            valid_after: valid_after.ok_or(NetdocError::Missing("valid-after"))?,
            fresh_until: fresh_until.ok_or(NetdocError::Missing("fresh-until"))?,
            valid_until: valid_until.ok_or(NetdocError::Missing("valid-until"))?,
            params,
            srv_previous,
            srv_current,
            relays,
        })
    }

    /// The voting interval: how far apart consensuses are.
    pub fn voting_interval(&self) -> Duration {
        self.fresh_until
            .duration_since(self.valid_after)
            .unwrap_or_default()
    }

    /// A consensus parameter, clamped to `[min, max]`, or `default` when
    /// the consensus does not set it (as tor's `networkstatus_get_param`).
    pub fn param(&self, name: &str, default: i32, min: i32, max: i32) -> i32 {
        self.params
            .get(name)
            .copied()
            .unwrap_or(default)
            .clamp(min, max)
    }
}

/// Maps each microdescriptor's digest to the ed25519 identity it names,
/// from the text of `GETINFO md/all` (or a `cached-microdescs` file).
///
/// A microdescriptor starts at its `onion-key` line; its digest is SHA-256
/// over its text with every line ending in a newline. tor's answer lacks the
/// final newline of the last one, so lines are re-terminated here rather
/// than sliced from the input (the slip that loses a relay in stem).
pub fn microdesc_ed25519_ids(text: &str) -> HashMap<[u8; 32], [u8; 32]> {
    let mut ids = HashMap::new();
    let mut body = String::new();
    let mut ed_id = None;
    let mut finish = |body: &mut String, ed_id: &mut Option<[u8; 32]>| {
        if let Some(id) = ed_id.take() {
            ids.insert(Sha256::digest(body.as_bytes()).into(), id);
        }
        body.clear();
    };
    for line in text.lines() {
        if line.starts_with('@') {
            continue; // Cache annotations are not part of a microdescriptor.
        }
        if line.starts_with("onion-key") && !body.is_empty() {
            finish(&mut body, &mut ed_id);
        }
        if let Some(id) = line.strip_prefix("id ed25519 ") {
            ed_id = decode_fixed(id.trim());
        }
        body.push_str(line);
        body.push('\n');
    }
    finish(&mut body, &mut ed_id);
    ids
}

/// Whether a `pr` line lists `version` of `protocol`.
fn protocol_supports(entries: &str, protocol: &str, version: u32) -> bool {
    let Some(ranges) = entries
        .split(' ')
        .find_map(|entry| entry.strip_prefix(protocol)?.strip_prefix('='))
    else {
        return false;
    };
    ranges.split(',').any(|range| {
        let (low, high) = range.split_once('-').unwrap_or((range, range));
        matches!((low.parse::<u32>(), high.parse::<u32>()), (Ok(l), Ok(h)) if l <= version && version <= h)
    })
}

/// `nickname identity published-date published-time address orport dirport`
fn parse_r(rest: &str) -> Option<RelayStatus> {
    let mut fields = rest.split(' ');
    let nickname = fields.next()?.to_owned();
    let rsa_id = RsaId(decode_fixed(fields.next()?)?);
    Some(RelayStatus {
        nickname,
        rsa_id,
        md_digest: [0; 32],
        hsdir_flag: false,
        hsdir_v3: false,
    })
}

/// `NumReveals Value`, the value in base64.
fn parse_srv(rest: &str) -> Option<Srv> {
    let value = rest.split(' ').nth(1)?;
    decode_fixed(value)
}

/// `name=value name=value ...`
fn parse_params(rest: &str) -> Option<BTreeMap<String, i32>> {
    rest.split(' ')
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (name, value) = entry.split_once('=')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Base64 with or without padding, into exactly `N` bytes.
fn decode_fixed<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = BASE64_NOPAD
        .decode(text.trim_end_matches('=').as_bytes())
        .ok()?;
    bytes.try_into().ok()
}

/// `YYYY-MM-DD HH:MM:SS`, in UTC: [`parse_time`]'s inverse, and how
/// directory documents and Python Onionbalance write times.
pub fn format_time(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (the
/// days-to-civil algorithm of Howard Hinnant's date library).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DD HH:MM:SS`, in UTC, from 1970 to 9999 (tor writes four-digit
/// years; beyond them the day arithmetic could overflow).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let (date, time) = text.trim().split_once(' ')?;
    let mut date = date.split('-').map(str::parse::<i64>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let mut time = time.split(':').map(str::parse::<u64>);
    let (hour, minute, second) = (time.next()?.ok()?, time.next()?.ok()?, time.next()?.ok()?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let seconds = days * 86400 + hour * 3600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod test {
    use super::*;

    /// Found by the `consensus` fuzz target: a huge year overflowed the
    /// day arithmetic (a panic with overflow checks, a wrong time without).
    #[test]
    fn times_outside_four_digit_years_are_refused() {
        assert_eq!(parse_time("9999999999999999-01-01 00:00:00"), None);
        assert_eq!(parse_time("-5-01-01 00:00:00"), None);
        assert_eq!(parse_time("1969-12-31 23:59:59"), None);
        assert_eq!(
            parse_time("1970-01-01 00:00:00"),
            Some(SystemTime::UNIX_EPOCH)
        );
        assert!(parse_time("9999-12-31 23:59:59").is_some());
    }

    #[test]
    fn fingerprints_round_trip_and_bad_ones_are_refused() {
        let id = RsaId([0xab; 20]);
        let text = id.to_string();
        assert_eq!(text.parse::<RsaId>(), Ok(id));
        assert_eq!(text.to_lowercase().parse::<RsaId>(), Ok(id));
        for bad in [
            "",
            "AB",
            &text[..38],
            &format!("{text}00"),
            &format!("${text}"),
        ] {
            assert!(bad.parse::<RsaId>().is_err(), "{bad:?}");
        }
    }

    /// A consensus and microdescriptors from a private network that
    /// onionlb's testnet ran (3 authorities, 4 relays), as the management
    /// tor cached them.
    const CONSENSUS: &str = include_str!("../testdata/consensus-microdesc.txt");
    const MICRODESCS: &str = include_str!("../testdata/microdescs.txt");

    #[test]
    fn times() {
        assert_eq!(
            parse_time("1970-01-01 00:00:00"),
            Some(SystemTime::UNIX_EPOCH)
        );
        let t = parse_time("2026-11-21 16:19:40").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_795_277_980
        );
        assert_eq!(parse_time("2026-13-01 00:00:00"), None);
        assert_eq!(parse_time("2026-11-21"), None);
        for text in [
            "1970-01-01 00:00:00",
            "2000-02-29 23:59:59",
            "2026-11-21 16:19:40",
        ] {
            assert_eq!(format_time(parse_time(text).unwrap()), text);
        }
    }

    #[test]
    fn reads_the_testnet_consensus() {
        let consensus = Consensus::parse(CONSENSUS).unwrap();
        assert_eq!(consensus.voting_interval(), Duration::from_secs(20));
        assert_eq!(consensus.srv_previous, None);
        assert_eq!(consensus.srv_current, None);
        assert_eq!(consensus.relays.len(), 7);
        let auth2 = &consensus.relays[0];
        assert_eq!(auth2.nickname, "auth2");
        assert_eq!(
            auth2.rsa_id.to_string(),
            "250862DD23256DAFFB0492F4770F5D43EBDE4D3D"
        );
        assert!(auth2.hsdir_flag && auth2.hsdir_v3);
        assert_eq!(consensus.param("hsdir_n_replicas", 2, 1, 16), 2);
    }

    #[test]
    fn microdescs_map_to_consensus_entries() {
        let consensus = Consensus::parse(CONSENSUS).unwrap();
        let ids = microdesc_ed25519_ids(MICRODESCS);
        for relay in &consensus.relays {
            assert!(
                ids.contains_key(&relay.md_digest),
                "{} has no microdescriptor",
                relay.nickname
            );
        }
        // The same text without the final newline, as tor's GETINFO sends it.
        let trimmed = microdesc_ed25519_ids(MICRODESCS.trim_end());
        assert_eq!(trimmed, ids);
    }

    #[test]
    fn params_srvs_and_protocols() {
        let text = "network-status-version 3 microdesc\nvalid-after 2026-01-01 00:00:00\nfresh-until 2026-01-01 01:00:00\nvalid-until 2026-01-01 03:00:00\nparams hsdir_spread_store=5 cc_sendme_inc=31\nshared-rand-previous-value 9 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\nr x AAAAAAAAAAAAAAAAAAAAAAAAAAA 2038-01-01 00:00:00 127.0.0.1 1 0\nm AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\ns Fast HSDir\npr HSDir=1,3-4\n";
        let consensus = Consensus::parse(text).unwrap();
        assert_eq!(consensus.param("hsdir_spread_store", 4, 1, 128), 5);
        assert_eq!(consensus.param("hsdir_spread_store", 4, 1, 3), 3);
        assert_eq!(consensus.voting_interval(), Duration::from_secs(3600));
        let srv: Srv = std::array::from_fn(|i| i as u8);
        assert_eq!(consensus.srv_previous, Some(srv));
        assert!(!consensus.relays[0].hsdir_v3);
        assert!(protocol_supports("Cons=1 HSDir=1-2", "HSDir", 2));
        assert!(!protocol_supports("HSDirX=2", "HSDir", 2));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert_eq!(
            Consensus::parse("network-status-version 3\n"),
            Err(NetdocError::WrongFlavor)
        );
        let no_time = "network-status-version 3 microdesc\n";
        assert_eq!(
            Consensus::parse(no_time),
            Err(NetdocError::Missing("valid-after"))
        );
        let bad_r = "network-status-version 3 microdesc\nr onlyname\n";
        assert!(matches!(
            Consensus::parse(bad_r),
            Err(NetdocError::BadLine { line: 2, .. })
        ));
    }
}
