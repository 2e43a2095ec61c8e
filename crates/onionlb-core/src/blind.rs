//! Key blinding (rend-spec-v3 appendix A.2, [KEYBLIND]) and
//! subcredentials ([SUBCRED]), with fewer curve operations than
//! tor-hscrypto spends, as the manager blinds every instance and every
//! service for every period.
//!
//! - A blinded public key: `h * A` of an instance's identity `A`. All of it
//!   is public, so one variable-time multiplication does, and the point is
//!   kept for verifying what the blinded key signs (no decompression
//!   later). tor-hscrypto multiplies in constant time, then compresses and
//!   decompresses.
//! - A blinded keypair: the secret scalar times `h`, its public half one
//!   fixed-base multiplication. tor-hscrypto blinds the public key twice
//!   besides, once to return it and once to check itself.
//!
//! Here `h = SHA3-256("Derive temporary signing key" | 0 | A | B | N)`
//! clamped, with `B` the basepoint's decimal coordinates and
//! `N = "key-blind" | period number | period length in minutes` (8 bytes
//! each, big-endian); no optional secret. The blinded key's nonce prefix is
//! the first half of `SHA-512("Derive temporary signing key hash input" |
//! prefix)`. The tests check every result against tor-hscrypto.

use curve25519_dalek::{EdwardsPoint, Scalar};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest as _, Sha512};
use sha3::Sha3_256;
use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::Subcredential;
use tor_llcrypto::pk::ed25519;
use zeroize::Zeroizing;

/// `A | s | B` is preceded by this.
const BLIND_STRING: &[u8] = b"Derive temporary signing key\0";
/// The ed25519 basepoint as rend-spec-v3 writes it into the hash.
const BASEPOINT: &[u8] = b"(15112221349535400772501151409588531511454012693041857206046113283949847762202, 46316835694926478169428394003475163141307993866256225615783033603165251855960)";
/// What the blinded key's nonce prefix is derived with.
const PREFIX_STRING: &[u8] = b"Derive temporary signing key hash input";

/// The clamped blinding factor `h` of `identity` for `period`.
fn factor(identity: &[u8; 32], period: TimePeriod) -> Scalar {
    let mut hash = Sha3_256::new();
    hash.update(BLIND_STRING);
    hash.update(identity);
    hash.update(BASEPOINT);
    hash.update(b"key-blind");
    hash.update(period.interval_num().to_be_bytes());
    hash.update(u64::from(period.length().as_minutes()).to_be_bytes());
    let h: [u8; 32] = hash.finalize().into();
    Scalar::from_bytes_mod_order(curve25519_dalek::scalar::clamp_integer(h))
}

/// `identity`'s blinded public key for `period`; `None` if `identity` is
/// not a curve point.
pub(crate) fn blind_public(identity: &[u8; 32], period: TimePeriod) -> Option<VerifyingKey> {
    let point = curve25519_dalek::edwards::CompressedEdwardsY(*identity).decompress()?;
    let blinded = EdwardsPoint::vartime_double_scalar_mul_basepoint(
        &factor(identity, period),
        &point,
        &Scalar::ZERO,
    );
    Some(VerifyingKey::from(blinded))
}

/// `identity`'s blinded keypair for `period`.
pub(crate) fn blind_keypair(
    identity: &ed25519::ExpandedKeypair,
    period: TimePeriod,
) -> Option<ed25519::ExpandedKeypair> {
    let secret = Zeroizing::new(identity.to_secret_key_bytes());
    let (scalar, prefix) = secret.split_at(32);
    let scalar = Zeroizing::new(Scalar::from_bytes_mod_order(scalar.try_into().ok()?));
    let h = factor(identity.public().as_bytes(), period);
    let mut blinded = Zeroizing::new([0u8; 64]);
    blinded[..32].copy_from_slice(&(*scalar * h).to_bytes());
    let mut hash = Sha512::new();
    hash.update(PREFIX_STRING);
    hash.update(prefix);
    let digest = Zeroizing::new(<[u8; 64]>::from(hash.finalize()));
    blinded[32..].copy_from_slice(&digest[..32]);
    ed25519::ExpandedKeypair::from_secret_key_bytes(*blinded)
}

/// The subcredential of `identity` under its blinded key `blinded`:
/// `SHA3-256("subcredential" | SHA3-256("credential" | identity) |
/// blinded)`.
pub(crate) fn subcredential(identity: &[u8; 32], blinded: &[u8; 32]) -> Subcredential {
    let credential: [u8; 32] = Sha3_256::new()
        .chain_update(b"credential")
        .chain_update(identity)
        .finalize()
        .into();
    let subcredential: [u8; 32] = Sha3_256::new()
        .chain_update(b"subcredential")
        .chain_update(credential)
        .chain_update(blinded)
        .finalize()
        .into();
    subcredential.into()
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, SystemTime};

    use tor_hscrypto::pk::{HsIdKey, HsIdKeypair};

    use super::*;

    #[test]
    fn blinds_as_tor_hscrypto_does() {
        let mut rng = rand::rng();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_277_980);
        for (length, offset) in [(86_400, 43_200), (480, 240)] {
            let period = TimePeriod::new(
                Duration::from_secs(length),
                start,
                Duration::from_secs(offset),
            )
            .unwrap();
            for _ in 0..4 {
                let keypair = HsIdKeypair::from(ed25519::ExpandedKeypair::from(
                    &ed25519::Keypair::generate(&mut rng),
                ));
                let identity = HsIdKey::from(&keypair);
                let id_bytes = *identity.as_ref().as_bytes();
                let (theirs, their_pair, their_sub) = keypair.compute_blinded_key(period).unwrap();
                let their_bytes = *theirs.as_ref().as_bytes();

                let public = blind_public(&id_bytes, period).unwrap();
                assert_eq!(public.to_bytes(), their_bytes);
                let pair = blind_keypair(keypair.as_ref(), period).unwrap();
                assert_eq!(pair.public().to_bytes(), their_bytes);
                let their_pair: &ed25519::ExpandedKeypair = their_pair.as_ref();
                assert_eq!(pair.to_secret_key_bytes(), their_pair.to_secret_key_bytes());
                assert_eq!(
                    subcredential(&id_bytes, &their_bytes).as_ref(),
                    their_sub.as_ref()
                );
            }
        }
    }
}
