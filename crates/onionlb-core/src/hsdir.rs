//! The HSDir hash ring (rend-spec-v3 [HASHRING]): which relays store a
//! descriptor.
//!
//! Every HSDir gets a position from its ed25519 identity, the SRV and the
//! time period; a descriptor gets one position per replica from its blinded
//! key and the time period. Each replica is stored on the `spread_store`
//! HSDirs at or after its position, skipping relays an earlier replica
//! already chose.

use sha3::{Digest as _, Sha3_256};
use tor_hscrypto::pk::HsBlindId;

use crate::consensus::{microdesc_ed25519_ids, Consensus, RsaId};
use crate::period::SlotPeriod;

/// Default, minimum and maximum of `hsdir_n_replicas`.
const N_REPLICAS: (i32, i32, i32) = (2, 1, 16);
/// Default, minimum and maximum of `hsdir_spread_store`.
const SPREAD_STORE: (i32, i32, i32) = (4, 1, 128);
/// Default, minimum and maximum of `hsdir_spread_fetch`.
const SPREAD_FETCH: (i32, i32, i32) = (3, 1, 128);

/// The ring parameters a consensus sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingParams {
    /// Replicas per descriptor.
    pub n_replicas: u8,
    /// HSDirs each replica is stored on.
    pub spread_store: usize,
    /// HSDirs per replica a client may fetch from.
    pub spread_fetch: usize,
}

impl RingParams {
    /// The parameters of `consensus`, with tor's defaults and bounds.
    pub fn new(consensus: &Consensus) -> Self {
        let get = |name, (default, min, max)| consensus.param(name, default, min, max);
        // The bounds above keep every value positive and small.
        RingParams {
            n_replicas: u8::try_from(get("hsdir_n_replicas", N_REPLICAS)).unwrap_or(2),
            spread_store: usize::try_from(get("hsdir_spread_store", SPREAD_STORE)).unwrap_or(4),
            spread_fetch: usize::try_from(get("hsdir_spread_fetch", SPREAD_FETCH)).unwrap_or(3),
        }
    }
}

/// An HSDir that can be placed on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HsDir {
    /// Its RSA identity, which `HSPOST SERVER=` takes.
    pub rsa_id: RsaId,
    /// Its ed25519 identity, which positions it.
    pub ed25519_id: [u8; 32],
}

/// The HSDirs of a consensus: relays with the HSDir flag that speak HSDir=2
/// and whose microdescriptor (hence ed25519 identity) is known.
pub fn hsdirs(consensus: &Consensus, microdescs: &str) -> Vec<HsDir> {
    let ids = microdesc_ed25519_ids(microdescs);
    consensus
        .relays
        .iter()
        .filter(|relay| relay.hsdir_flag && relay.hsdir_v3)
        .filter_map(|relay| {
            Some(HsDir {
                rsa_id: relay.rsa_id,
                ed25519_id: *ids.get(&relay.md_digest)?,
            })
        })
        .collect()
}

/// The ring for one descriptor slot: HSDirs sorted by their position.
#[derive(Debug, Clone)]
pub struct Ring {
    slot: SlotPeriod,
    /// `(position, relay)`, sorted by position.
    positions: Vec<([u8; 32], RsaId)>,
}

impl Ring {
    /// Places `hsdirs` for `slot`.
    pub fn new(hsdirs: &[HsDir], slot: SlotPeriod) -> Self {
        let mut positions: Vec<_> = hsdirs
            .iter()
            .map(|dir| (hsdir_index(&dir.ed25519_id, &slot), dir.rsa_id))
            .collect();
        positions.sort_unstable();
        Ring { slot, positions }
    }

    /// The slot this ring is for.
    pub fn slot(&self) -> SlotPeriod {
        self.slot
    }

    /// How many HSDirs it holds.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// The HSDirs that store the descriptor with blinded key `blinded`, in
    /// the order tor chooses them: replica by replica, `spread` HSDirs each,
    /// skipping repeats. Fewer when the ring is small.
    pub fn responsible(&self, blinded: &HsBlindId, n_replicas: u8, spread: usize) -> Vec<RsaId> {
        let mut chosen: Vec<RsaId> = Vec::new();
        let len = self.positions.len();
        if len == 0 {
            return chosen;
        }
        for replica in 1..=n_replicas {
            let target = hs_index(blinded, replica, &self.slot);
            let start = self
                .positions
                .partition_point(|(position, _)| *position < target)
                % len;
            let mut added = 0;
            let mut i = start;
            while added < spread {
                let relay = self.positions[i].1;
                if !chosen.contains(&relay) {
                    chosen.push(relay);
                    added += 1;
                }
                i = (i + 1) % len;
                if i == start {
                    break;
                }
            }
        }
        chosen
    }
}

/// An HSDir's position:
/// `H("node-idx" | ed25519_id | SRV | INT_8(period_num) | INT_8(period_length))`.
pub fn hsdir_index(ed25519_id: &[u8; 32], slot: &SlotPeriod) -> [u8; 32] {
    let mut hash = Sha3_256::new();
    hash.update(b"node-idx");
    hash.update(ed25519_id);
    hash.update(slot.srv);
    hash.update(slot.period.interval_num().to_be_bytes());
    hash.update(u64::from(slot.period.length().as_minutes()).to_be_bytes());
    hash.finalize().into()
}

/// A descriptor replica's position:
/// `H("store-at-idx" | blinded_key | INT_8(replica) | INT_8(period_length) | INT_8(period_num))`.
pub fn hs_index(blinded: &HsBlindId, replica: u8, slot: &SlotPeriod) -> [u8; 32] {
    let mut hash = Sha3_256::new();
    hash.update(b"store-at-idx");
    hash.update(blinded.as_ref());
    hash.update(u64::from(replica).to_be_bytes());
    hash.update(u64::from(slot.period.length().as_minutes()).to_be_bytes());
    hash.update(slot.period.interval_num().to_be_bytes());
    hash.finalize().into()
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::period::PeriodRules;
    use crate::OnionAddress;
    use tor_hscrypto::pk::HsIdKey;

    const CONSENSUS: &str = include_str!("../testdata/consensus-microdesc.txt");
    const MICRODESCS: &str = include_str!("../testdata/microdescs.txt");

    /// The instance whose uploads tor logged (testdata/upload-log.txt)
    /// while that consensus was the newest.
    const INSTANCE: &str = "tuuzxd5jkuib7anygifwutuunra4vukj2x7gb67sgzcigygyt2yuqgqd.onion";
    const UPLOAD_LOG: &str = include_str!("../testdata/upload-log.txt");

    /// `(current|next, fingerprint, node index)` from tor's info log lines
    /// "... current descriptor ... upload request to $FP~nick [...] at ...
    /// with index HEX ...", in the order tor uploaded.
    fn logged_uploads() -> Vec<(String, String, String)> {
        UPLOAD_LOG
            .lines()
            .filter_map(|line| {
                let which = if line.contains(" current descriptor ") {
                    "current"
                } else {
                    "next"
                };
                let fp = line.split("upload request to $").nth(1)?.get(..40)?;
                let index = line.split(" with index ").nth(1)?.get(..64)?;
                Some((which.to_owned(), fp.to_owned(), index.to_ascii_lowercase()))
            })
            .collect()
    }

    #[test]
    fn matches_what_tor_did_on_the_testnet() {
        let consensus = Consensus::parse(CONSENSUS).unwrap();
        let dirs = hsdirs(&consensus, MICRODESCS);
        assert_eq!(dirs.len(), 7);
        let params = RingParams::new(&consensus);
        assert_eq!((params.n_replicas, params.spread_store), (2, 4));

        let rules = PeriodRules::new(&consensus, true);
        let identity =
            HsIdKey::try_from(INSTANCE.parse::<OnionAddress>().unwrap().hs_id()).unwrap();
        let logged = logged_uploads();
        assert_eq!(logged.len(), 14);

        for (slot, which) in rules
            .slots_for(&consensus)
            .unwrap()
            .into_iter()
            .zip(["current", "next"])
        {
            let ring = Ring::new(&dirs, slot);
            let (blinded, _) = identity.compute_blinded_key(slot.period).unwrap();
            let ours: Vec<String> = ring
                .responsible(&blinded.id(), params.n_replicas, params.spread_store)
                .iter()
                .map(ToString::to_string)
                .collect();
            let tors: Vec<&(String, String, String)> =
                logged.iter().filter(|(w, _, _)| w == which).collect();
            let tors_order: Vec<String> = tors.iter().map(|(_, fp, _)| fp.clone()).collect();
            assert_eq!(ours, tors_order, "{which} descriptor");

            for (_, fp, index) in tors {
                let dir = dirs.iter().find(|d| &d.rsa_id.to_string() == fp).unwrap();
                let ours = data_encoding::HEXLOWER.encode(&hsdir_index(&dir.ed25519_id, &slot));
                assert_eq!(&ours, index, "{which} index of {fp}");
            }
        }
    }

    #[test]
    fn small_rings_and_spreads() {
        let slot = PeriodRules {
            length: std::time::Duration::from_secs(86400),
            rotation_offset: std::time::Duration::from_secs(43200),
            run_length: std::time::Duration::from_secs(86400),
        }
        .slots(
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_244_400),
            None,
            None,
        )
        .unwrap()[0];
        let blinded = HsBlindId::from(tor_llcrypto::pk::ed25519::Ed25519Identity::new([9; 32]));
        assert!(Ring::new(&[], slot).responsible(&blinded, 2, 4).is_empty());

        let dirs: Vec<HsDir> = (0..10u8)
            .map(|i| HsDir {
                rsa_id: RsaId([i; 20]),
                ed25519_id: [i; 32],
            })
            .collect();
        let ring = Ring::new(&dirs, slot);
        let chosen = ring.responsible(&blinded, 2, 4);
        assert_eq!(chosen.len(), 8);
        let mut unique = chosen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 8, "no HSDir chosen twice");
        // Each replica's HSDirs are consecutive on the ring after its index.
        let first = hs_index(&blinded, 1, &slot);
        let expected_first = ring
            .positions
            .iter()
            .find(|(p, _)| *p >= first)
            .unwrap_or(&ring.positions[0])
            .1;
        assert_eq!(chosen[0], expected_first);
        assert_eq!(ring.responsible(&blinded, 3, 5).len(), 10);
    }

    /// A replica placed at the ring's end takes the last HSDirs and goes
    /// on from the first (Python Onionbalance 0.2.4 takes the first one
    /// twice there, and aborts the upload).
    #[test]
    fn a_replica_at_the_end_of_the_ring_wraps_around() {
        let slot = PeriodRules {
            length: std::time::Duration::from_secs(86400),
            rotation_offset: std::time::Duration::from_secs(43200),
            run_length: std::time::Duration::from_secs(86400),
        }
        .slots(
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_244_400),
            None,
            None,
        )
        .unwrap()[0];
        let dirs: Vec<HsDir> = (0..10u8)
            .map(|i| HsDir {
                rsa_id: RsaId([i; 20]),
                ed25519_id: [i; 32],
            })
            .collect();
        let ring = Ring::new(&dirs, slot);
        let len = ring.positions.len();
        // A blinded key whose first replica lands past the last HSDir but
        // one: at most two HSDirs before the end.
        let (blinded, start) = (0..=u16::MAX)
            .map(|n| {
                let mut key = [0u8; 32];
                key[..2].copy_from_slice(&n.to_be_bytes());
                HsBlindId::from(tor_llcrypto::pk::ed25519::Ed25519Identity::new(key))
            })
            .find_map(|blinded| {
                let target = hs_index(&blinded, 1, &slot);
                let start = ring.positions.partition_point(|(p, _)| *p < target);
                (start >= len - 1).then_some((blinded, start))
            })
            .expect("some key lands at the end");
        let chosen = ring.responsible(&blinded, 1, 4);
        let expected: Vec<RsaId> = (0..4)
            .map(|k| ring.positions[(start + k) % len].1)
            .collect();
        assert_eq!(chosen, expected);
        let mut unique = chosen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4);
    }
}
