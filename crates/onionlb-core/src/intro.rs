//! An introduction point as the manager carries it from an instance's
//! descriptor into the master's: the keys as bytes, checked once when the
//! instance's descriptor is read.
//!
//! A master descriptor repeats an instance's intro point with two new
//! certificates: its `auth-key` certified as is, and its ntor `enc-key`
//! converted to ed25519 with sign bit 0 (rend-spec-v3 [ENC-KEY-CERT]),
//! then certified. The conversion costs a field inversion and a square
//! root and depends only on the key, so it is made here, once, not by
//! every period's signer of every master that lists the instance (one
//! instance in two masters' two periods was converted four times). A key
//! that does not convert, or an auth key that is not a curve point, makes
//! the instance's descriptor unreadable instead of making a master
//! descriptor that clients cannot use.

use curve25519_dalek_5::edwards::CompressedEdwardsY;
use curve25519_dalek_5::{EdwardsPoint, MontgomeryPoint};
use tor_linkspec::EncodedLinkSpec;

/// One intro point: where it is (link specifiers), its ntor onion key,
/// the service's auth and encryption keys for it, and that encryption
/// key as ed25519.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntroPoint {
    link_specifiers: Vec<EncodedLinkSpec>,
    onion_key: [u8; 32],
    auth_key: [u8; 32],
    enc_key: [u8; 32],
    enc_key_ed25519: [u8; 32],
}

/// An intro point's items as a descriptor gives them.
#[derive(Debug, Clone)]
pub struct IntroPointKeys {
    /// Its link specifiers, encoded.
    pub link_specifiers: Vec<EncodedLinkSpec>,
    /// The relay's ntor onion key (`onion-key ntor`).
    pub onion_key: [u8; 32],
    /// The service's ed25519 auth key for it (`auth-key`'s subject).
    pub auth_key: [u8; 32],
    /// The service's ntor key for it (`enc-key ntor`).
    pub enc_key: [u8; 32],
}

/// Why intro points cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntroPointError {
    /// An `auth-key` is not an ed25519 point.
    #[error("an auth-key that is not an ed25519 point")]
    AuthKey,
    /// An `enc-key` has no ed25519 form.
    #[error("an enc-key that does not convert to ed25519")]
    EncKey,
}

impl IntroPoint {
    /// Checks each intro point's keys and converts their `enc-key`s,
    /// sharing one field inversion among them.
    pub fn from_keys(points: Vec<IntroPointKeys>) -> Result<Vec<IntroPoint>, IntroPointError> {
        let mut converted = Vec::with_capacity(points.len());
        for point in &points {
            CompressedEdwardsY(point.auth_key)
                .decompress()
                .ok_or(IntroPointError::AuthKey)?;
            converted.push(
                MontgomeryPoint(point.enc_key)
                    .to_edwards(0)
                    .ok_or(IntroPointError::EncKey)?,
            );
        }
        let converted = EdwardsPoint::compress_batch_alloc(&converted);
        Ok(points
            .into_iter()
            .zip(converted)
            .map(|(point, ed)| IntroPoint {
                link_specifiers: point.link_specifiers,
                onion_key: point.onion_key,
                auth_key: point.auth_key,
                enc_key: point.enc_key,
                enc_key_ed25519: ed.to_bytes(),
            })
            .collect())
    }

    /// [`IntroPoint::from_keys`] for intro points tor-netdoc read or
    /// built.
    pub fn from_netdoc(
        points: &[tor_netdoc::doc::hsdesc::IntroPointDesc],
    ) -> Result<Vec<IntroPoint>, IntroPointError> {
        IntroPoint::from_keys(
            points
                .iter()
                .map(|point| IntroPointKeys {
                    link_specifiers: point.link_specifiers().to_vec(),
                    onion_key: point.ipt_ntor_key().to_bytes(),
                    auth_key: point.ipt_sid_key().to_bytes(),
                    enc_key: point.svc_ntor_key().as_bytes().to_owned(),
                })
                .collect(),
        )
    }

    /// Its link specifiers, encoded.
    pub fn link_specifiers(&self) -> &[EncodedLinkSpec] {
        &self.link_specifiers
    }

    /// The relay's ntor onion key.
    pub fn onion_key(&self) -> &[u8; 32] {
        &self.onion_key
    }

    /// The service's ed25519 auth key for it: what names an intro point
    /// (tor's `HS_DESC` and `INTRODUCE2` speak of it).
    pub fn auth_key(&self) -> &[u8; 32] {
        &self.auth_key
    }

    /// The service's ntor key for it.
    pub fn enc_key(&self) -> &[u8; 32] {
        &self.enc_key
    }

    /// [`IntroPoint::enc_key`] as ed25519 with sign bit 0: what its
    /// `enc-key-cert` certifies.
    pub fn enc_key_ed25519(&self) -> &[u8; 32] {
        &self.enc_key_ed25519
    }

    /// The RSA identity of the relay it is on, from its link specifiers:
    /// what a C tor client matches an intro circuit against.
    pub fn relay(&self) -> Option<[u8; 20]> {
        self.link_specifiers
            .iter()
            .find_map(|spec| match spec.parse() {
                Ok(tor_linkspec::LinkSpec::RsaId(id)) => id.as_bytes().try_into().ok(),
                _ => None,
            })
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use tor_llcrypto::pk::{curve25519, ed25519};

    fn keys() -> IntroPointKeys {
        let mut rng = rand::rng();
        let ntor = |rng: &mut rand::rngs::ThreadRng| {
            curve25519::PublicKey::from(&curve25519::EphemeralSecret::random_from_rng(rng))
                .to_bytes()
        };
        IntroPointKeys {
            link_specifiers: vec![tor_linkspec::LinkSpec::RsaId([7; 20].into())
                .encode()
                .unwrap()],
            onion_key: ntor(&mut rng),
            auth_key: ed25519::Keypair::generate(&mut rng)
                .verifying_key()
                .to_bytes(),
            enc_key: ntor(&mut rng),
        }
    }

    #[test]
    fn enc_keys_convert_as_tor_llcrypto_converts_them() {
        let all: Vec<IntroPointKeys> = (0..4).map(|_| keys()).collect();
        let points = IntroPoint::from_keys(all.clone()).unwrap();
        for (keys, point) in all.iter().zip(&points) {
            let theirs = tor_llcrypto::pk::keymanip::convert_curve25519_to_ed25519_public(
                &curve25519::PublicKey::from(keys.enc_key),
                0,
            )
            .unwrap();
            assert_eq!(point.enc_key_ed25519(), theirs.as_bytes());
            assert_eq!(point.auth_key(), &keys.auth_key);
            assert_eq!(point.relay(), Some([7; 20]));
        }
        assert_eq!(IntroPoint::from_keys(Vec::new()), Ok(Vec::new()));
    }

    #[test]
    fn keys_that_are_not_points_are_refused() {
        // y = 2 is on neither curve's ed25519 form: no x satisfies it.
        let mut bad = keys();
        bad.auth_key = [0; 32];
        bad.auth_key[0] = 2;
        assert_eq!(
            IntroPoint::from_keys(vec![keys(), bad]),
            Err(IntroPointError::AuthKey)
        );
        // u = -1 has no Edwards form (it maps to y = infinity).
        let mut bad = keys();
        bad.enc_key = [0xff; 32];
        bad.enc_key[0] = 0xec;
        bad.enc_key[31] = 0x7f;
        assert_eq!(
            IntroPoint::from_keys(vec![bad]),
            Err(IntroPointError::EncKey)
        );
    }
}
