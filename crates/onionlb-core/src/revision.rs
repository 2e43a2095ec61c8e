//! Revision counters for master descriptors.
//!
//! HSDirs keep the descriptor with the highest revision counter for a
//! blinded key and refuse lower ones, so a manager taking over from another
//! mid-period must never count below it. onionlb computes exactly what
//! Python Onionbalance computes for the same key and time
//! (rend-spec-v3 appendix F's order-preserving encryption of the seconds
//! since the start of the SRV run, keyed by
//! `SHA3-256("rev-counter-generation" | identity secret)`), so an operator
//! can swap one for the other in either direction; it adds one when two
//! descriptors would fall in the same second, so its own counter always
//! strictly increases.

use std::fmt;
use std::time::{Duration, SystemTime};

use aes::Aes256;
use ctr::cipher::{KeyIvInit as _, StreamCipher as _};
use sha3::{Digest as _, Sha3_256};

use crate::period::DescriptorSlot;

type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// The OPE key of one master identity.
#[derive(Clone)]
pub struct RevisionKey([u8; 32]);

impl Drop for RevisionKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl RevisionKey {
    /// Derives the key from the identity secret as stored: the 32-byte seed
    /// of a PEM key, or the 64-byte expanded key of a tor key file.
    pub fn from_identity_secret(secret: &[u8]) -> Self {
        let mut hash = Sha3_256::new();
        hash.update(b"rev-counter-generation");
        hash.update(secret);
        RevisionKey(hash.finalize().into())
    }

    /// The order-preserving encryption of `n`: the sum of the first `n`
    /// words of the AES-256-CTR keystream (zero IV), each word a
    /// little-endian `u16` plus one. Strictly increasing in `n`.
    pub fn encrypt(&self, n: u64) -> u64 {
        let mut cipher = Aes256Ctr::new(&self.0.into(), &[0u8; 16].into());
        let mut block = [0u8; 4096];
        let mut remaining = n;
        let mut sum = 0u64;
        while remaining > 0 {
            let words = remaining.min(block.len() as u64 / 2);
            let bytes = &mut block[..(words * 2) as usize];
            bytes.fill(0);
            cipher.apply_keystream(bytes);
            sum += bytes
                .chunks_exact(2)
                .map(|w| u64::from(u16::from_le_bytes([w[0], w[1]])) + 1)
                .sum::<u64>();
            remaining -= words;
        }
        sum
    }

    /// The counter for `slot` at `now`, on a network whose shared-random
    /// runs last `run_length`: the first descriptor counts from the start
    /// of the previous run, the second from the start of the current one.
    pub fn counter(&self, slot: DescriptorSlot, now: SystemTime, run_length: Duration) -> u64 {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let run = run_length.as_secs().max(1);
        let current_run_start = now - now % run;
        let start = match slot {
            DescriptorSlot::First => current_run_start.saturating_sub(run),
            DescriptorSlot::Second => current_run_start,
        };
        // "This must be strictly positive": one more than the seconds since.
        self.encrypt(now - start + 1)
    }
}

impl fmt::Debug for RevisionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RevisionKey(<secret>)")
    }
}

/// The counter to publish: `computed`, or one more than the `last` one
/// published for the same blinded key if that is not lower.
pub fn next_revision(computed: u64, last: Option<u64>) -> u64 {
    match last {
        Some(last) if last >= computed => last + 1,
        _ => computed,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // Vectors computed with Python Onionbalance's own formula (its
    // `_get_revision_counter`, through Python's `cryptography`), for the
    // PEM seed 00..1f and for the tor-format expanded key of that seed.
    const SEED: [u8; 32] = {
        let mut seed = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            seed[i] = i as u8;
            i += 1;
        }
        seed
    };

    #[test]
    fn matches_python_onionbalance() {
        let key = RevisionKey::from_identity_secret(&SEED);
        assert_eq!(key.encrypt(1), 42756);
        assert_eq!(key.encrypt(2), 65516);
        assert_eq!(key.encrypt(10), 284945);
        assert_eq!(key.encrypt(1000), 32711276);
        assert_eq!(key.encrypt(86401), 2827625763);
        let expanded = data_encoding::HEXLOWER
            .decode(b"3894eea49c580aef816935762be049559d6d1440dede12e6a125f1841fff8e6fa9d71862a3e5746b571be3d187b0041046f52ebd850c7cbd5fde8ee38473b649")
            .unwrap();
        assert_eq!(
            RevisionKey::from_identity_secret(&expanded).encrypt(1000),
            33153415
        );
    }

    #[test]
    fn counter_counts_from_the_run_start() {
        let key = RevisionKey::from_identity_secret(&SEED);
        let day = Duration::from_secs(86400);
        let midnight = SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * 86400);
        // One second into the run: the second descriptor's input is 2, the
        // first's a whole run more.
        let t = midnight + Duration::from_secs(1);
        assert_eq!(key.counter(DescriptorSlot::Second, t, day), key.encrypt(2));
        assert_eq!(
            key.counter(DescriptorSlot::First, t, day),
            key.encrypt(86400 + 2)
        );
        let later = t + Duration::from_secs(5);
        assert!(
            key.counter(DescriptorSlot::Second, later, day)
                > key.counter(DescriptorSlot::Second, t, day)
        );
    }

    #[test]
    fn never_repeats_or_goes_back() {
        assert_eq!(next_revision(10, None), 10);
        assert_eq!(next_revision(10, Some(9)), 10);
        assert_eq!(next_revision(10, Some(10)), 11);
        assert_eq!(next_revision(10, Some(50)), 51);
        assert!(!format!("{:?}", RevisionKey::from_identity_secret(&SEED)).contains('0'));
    }
}
