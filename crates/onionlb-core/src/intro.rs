//! An introduction point as the manager carries it from an instance's
//! descriptor into the master's: the keys as bytes, checked once when the
//! instance's descriptor is read.
//!
//! A master descriptor repeats an instance's intro point with two new
//! certificates: its `auth-key` certified as is, and its ntor `enc-key`
//! converted to ed25519 with sign bit 0 (rend-spec-v3 [ENC-KEY-CERT]),
//! then certified. The ed25519 form depends only on the key, so it is
//! found here, once, not by every period's signer of every master that
//! lists the instance (one instance in two masters' two periods was
//! converted four times). A key that does not convert, or an auth key
//! that is not a curve point, makes the instance's descriptor unreadable
//! instead of making a master descriptor that clients cannot use (Arti
//! refuses a whole descriptor for one such key).
//!
//! An instance's descriptor already carries the ed25519 form, as the
//! subject of its `enc-key-cert`. Taking it from there and checking it
//! costs a square root (is it a point?) per intro point and one field
//! inversion shared by all (does it map back to the `enc-key`?), where
//! converting costs an inversion and a square root per intro point and
//! one more inversion: the cheaper way is taken when the form is known.
//! The form taken is the one tor itself computes, byte for byte: sign bit
//! 0, canonical, and not the identity point (which would map back to
//! u = 0, whose real form is y = -1).

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
    /// What its `enc-key-cert` certifies, when read from a descriptor:
    /// `enc_key`'s ed25519 form, checked instead of computed.
    pub enc_key_certified: Option<[u8; 32]>,
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
    /// An `enc-key-cert` certifies another key than the `enc-key`'s
    /// ed25519 form.
    #[error("an enc-key-cert that does not certify the enc-key's ed25519 form")]
    EncKeyCert,
}

impl IntroPoint {
    /// Checks each intro point's keys and finds their `enc-key`s' ed25519
    /// forms: checks the certified one where given, converts otherwise,
    /// sharing one field inversion among the checks and one among the
    /// conversions.
    pub fn from_keys(points: Vec<IntroPointKeys>) -> Result<Vec<IntroPoint>, IntroPointError> {
        let mut claimed = Vec::new();
        let mut converted = Vec::new();
        for point in &points {
            CompressedEdwardsY(point.auth_key)
                .decompress()
                .ok_or(IntroPointError::AuthKey)?;
            match point.enc_key_certified {
                Some(form) => claimed.push(tor_form(&form)?),
                None => converted.push(
                    MontgomeryPoint(point.enc_key)
                        .to_edwards(0)
                        .ok_or(IntroPointError::EncKey)?,
                ),
            }
        }
        let mapped_back = EdwardsPoint::to_montgomery_batch(&claimed);
        let claimed_back = points
            .iter()
            .filter(|p| p.enc_key_certified.is_some())
            .zip(&mapped_back);
        for (point, u) in claimed_back {
            if u.as_bytes() != &point.enc_key {
                return Err(IntroPointError::EncKeyCert);
            }
        }
        let mut converted = EdwardsPoint::compress_batch_alloc(&converted).into_iter();
        points
            .into_iter()
            .map(|point| {
                let enc_key_ed25519 = match point.enc_key_certified {
                    Some(form) => form,
                    None => converted.next().ok_or(IntroPointError::EncKey)?.to_bytes(),
                };
                Ok(IntroPoint {
                    link_specifiers: point.link_specifiers,
                    onion_key: point.onion_key,
                    auth_key: point.auth_key,
                    enc_key: point.enc_key,
                    enc_key_ed25519,
                })
            })
            .collect()
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
                    enc_key_certified: None,
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

/// `form` as a point, if it is an ed25519 form tor could have computed:
/// sign bit 0, canonical (below 2^255 - 19), not the identity.
fn tor_form(form: &[u8; 32]) -> Result<EdwardsPoint, IntroPointError> {
    const IDENTITY: [u8; 32] = {
        let mut one = [0; 32];
        one[0] = 1;
        one
    };
    // 2^255 - 19 is ed ff .. ff 7f little-endian: a value with bit 255
    // clear is at least that only with byte 31 at 7f, bytes 1 to 30 at
    // ff and byte 0 at ed or more.
    let canonical = form[31] < 0x7f || form[1..31].iter().any(|&b| b != 0xff) || form[0] < 0xed;
    if form[31] & 0x80 != 0 || !canonical || *form == IDENTITY {
        return Err(IntroPointError::EncKeyCert);
    }
    CompressedEdwardsY(*form)
        .decompress()
        .ok_or(IntroPointError::EncKeyCert)
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
            enc_key_certified: None,
        }
    }

    /// tor-llcrypto's ed25519 form of `keys`' enc-key.
    fn their_form(keys: &IntroPointKeys) -> [u8; 32] {
        tor_llcrypto::pk::keymanip::convert_curve25519_to_ed25519_public(
            &curve25519::PublicKey::from(keys.enc_key),
            0,
        )
        .unwrap()
        .to_bytes()
    }

    #[test]
    fn a_certified_form_is_used_when_it_is_the_enc_key_s() {
        let all: Vec<IntroPointKeys> = (0..5)
            .map(|i| {
                let mut k = keys();
                // Mixed: some with their certificate's form, some without.
                if i % 2 == 0 {
                    k.enc_key_certified = Some(their_form(&k));
                }
                k
            })
            .collect();
        let points = IntroPoint::from_keys(all.clone()).unwrap();
        for (keys, point) in all.iter().zip(&points) {
            assert_eq!(point.enc_key_ed25519(), &their_form(keys));
        }
    }

    #[test]
    fn a_certified_form_that_is_not_the_enc_key_s_is_refused() {
        let good = || {
            let mut k = keys();
            k.enc_key_certified = Some(their_form(&k));
            k
        };
        let refused = |form: [u8; 32], enc_key: Option<[u8; 32]>| {
            let mut bad = good();
            bad.enc_key_certified = Some(form);
            if let Some(u) = enc_key {
                bad.enc_key = u;
            }
            assert_eq!(
                IntroPoint::from_keys(vec![good(), bad, good()]),
                Err(IntroPointError::EncKeyCert),
                "{form:02x?}"
            );
        };
        // Another key's form.
        refused(their_form(&keys()), None);
        // The right form with the sign bit set (the other point of that y).
        let mut k = keys();
        let mut signed = their_form(&k);
        signed[31] |= 0x80;
        k.enc_key_certified = Some(signed);
        refused(signed, Some(k.enc_key));
        // The identity, which maps back to u = 0 (whose form is y = -1).
        let mut identity = [0; 32];
        identity[0] = 1;
        refused(identity, Some([0; 32]));
        // y = -1 written as p - 1 + p: not canonical (p + 18 = 2^255 - 1).
        let mut minus_one_plus_p = [0xff; 32];
        minus_one_plus_p[31] = 0x7f;
        minus_one_plus_p[0] = 0xff;
        refused(minus_one_plus_p, Some([0; 32]));
        // y = 2 is not a point.
        let mut two = [0; 32];
        two[0] = 2;
        refused(two, None);
        // And the true form of u = 0 passes.
        let mut zero = keys();
        zero.enc_key = [0; 32];
        let mut minus_one = [0xff; 32];
        minus_one[31] = 0x7f;
        minus_one[0] = 0xec;
        zero.enc_key_certified = Some(minus_one);
        assert_eq!(
            IntroPoint::from_keys(vec![zero]).unwrap()[0].enc_key_ed25519(),
            &minus_one
        );
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
