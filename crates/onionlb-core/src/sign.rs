//! Ed25519 signatures and certificates made many at a time.
//!
//! A master descriptor of N intro points carries 2N certificates by its
//! descriptor-signing key (`auth-key` and `enc-key-cert`, cert-spec
//! section 2.1), so a cold start of 1000 services signs some 60,000
//! times. Most of a signature's cost is the nonce point `R = r·B` (a
//! constant-time fixed-base multiplication, which nothing can share) and
//! its compression, a field inversion of about a quarter of that.
//! [`SigningKey::sign_all`] compresses all the nonce points of a batch
//! with one inversion (Montgomery's trick, `compress_batch_alloc`), so a
//! batch of 30 pays for one compression instead of 30.
//!
//! The signatures are RFC 8032's, deterministic: the nonce is
//! `SHA-512(prefix || M)` with the expanded key's prefix, as C tor and
//! ed25519-dalek compute it, so the same key and message give the same
//! bytes (tested against tor-llcrypto's signer).
//!
//! The certificates are laid out as tor-cert lays them out, with one
//! extension, `signed-with-ed25519-key` (type 4, flags 0), so a verifier
//! needs nothing but the certificate.

use curve25519_dalek_5::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek_5::{EdwardsPoint, Scalar};
use sha2::{Digest as _, Sha512};
use std::time::SystemTime;
use tor_llcrypto::pk::ed25519;
use zeroize::{Zeroize as _, Zeroizing};

/// An ed25519 signature's length.
pub(crate) const SIGNATURE_LEN: usize = 64;
/// An encoded certificate of one ed25519 key with a signed-with-key
/// extension.
pub(crate) const CERTIFICATE_LEN: usize = 1 + 1 + 4 + 1 + 32 + 1 + (2 + 1 + 1 + 32) + SIGNATURE_LEN;

/// An expanded ed25519 secret key (scalar and nonce prefix) with its
/// public key. Zeroed when dropped; its `Debug` shows only the public
/// key.
pub(crate) struct SigningKey {
    scalar: Scalar,
    prefix: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &data_encoding::HEXLOWER.encode(&self.public))
            .finish_non_exhaustive()
    }
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        self.scalar.zeroize();
    }
}

impl From<&ed25519::ExpandedKeypair> for SigningKey {
    fn from(keypair: &ed25519::ExpandedKeypair) -> Self {
        let secret = Zeroizing::new(keypair.to_secret_key_bytes());
        let mut scalar = Zeroizing::new([0u8; 32]);
        scalar.copy_from_slice(&secret[..32]);
        let mut prefix = Zeroizing::new([0u8; 32]);
        prefix.copy_from_slice(&secret[32..]);
        SigningKey {
            // The expanded key holds its scalar reduced, so this is the
            // same scalar.
            scalar: Scalar::from_bytes_mod_order(*scalar),
            prefix,
            public: keypair.public().to_bytes(),
        }
    }
}

impl SigningKey {
    /// Its public key.
    pub(crate) fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// Signs `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut signatures = self.sign_all(&[message]);
        signatures.pop().unwrap_or([0; SIGNATURE_LEN])
    }

    /// Signs each of `messages`, compressing their nonce points together.
    pub(crate) fn sign_all(&self, messages: &[&[u8]]) -> Vec<[u8; SIGNATURE_LEN]> {
        let nonces: Vec<Zeroizing<Scalar>> = messages
            .iter()
            .map(|message| {
                let digest = Sha512::new()
                    .chain_update(*self.prefix)
                    .chain_update(message)
                    .finalize();
                Zeroizing::new(Scalar::from_bytes_mod_order_wide(&digest.into()))
            })
            .collect();
        let points: Vec<EdwardsPoint> = nonces
            .iter()
            .map(|nonce| ED25519_BASEPOINT_TABLE * &**nonce)
            .collect();
        let compressed = EdwardsPoint::compress_batch_alloc(&points);
        messages
            .iter()
            .zip(nonces.iter().zip(compressed))
            .map(|(message, (nonce, r))| {
                let digest = Sha512::new()
                    .chain_update(r.as_bytes())
                    .chain_update(self.public)
                    .chain_update(message)
                    .finalize();
                let challenge = Scalar::from_bytes_mod_order_wide(&digest.into());
                let s = challenge * self.scalar + **nonce;
                let mut signature = [0u8; SIGNATURE_LEN];
                signature[..32].copy_from_slice(r.as_bytes());
                signature[32..].copy_from_slice(s.as_bytes());
                signature
            })
            .collect()
    }
}

/// What a certificate binds: a key, for a purpose (its cert-spec type).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject {
    /// The certificate type (`tor_cert::CertType`'s number).
    pub(crate) kind: u8,
    /// The certified ed25519 key.
    pub(crate) key: [u8; 32],
}

/// Certifies each of `subjects` with `signer` until `expiry` (rounded up
/// to the hour, as tor-cert rounds it), in one batch; the certificates
/// come encoded, in the order of `subjects`.
pub(crate) fn certify_all(
    signer: &SigningKey,
    subjects: &[Subject],
    expiry: SystemTime,
) -> Vec<[u8; CERTIFICATE_LEN]> {
    let hours = expiry_hours(expiry);
    let mut bodies: Vec<[u8; CERTIFICATE_LEN]> = subjects
        .iter()
        .map(|subject| body(subject, hours, signer.public()))
        .collect();
    let unsigned = CERTIFICATE_LEN - SIGNATURE_LEN;
    let messages: Vec<&[u8]> = bodies.iter().map(|body| &body[..unsigned]).collect();
    let signatures = signer.sign_all(&messages);
    for (body, signature) in bodies.iter_mut().zip(signatures) {
        body[unsigned..].copy_from_slice(&signature);
    }
    bodies
}

/// A certificate's bytes with room for its signature at the end.
fn body(subject: &Subject, hours: u32, signer: &[u8; 32]) -> [u8; CERTIFICATE_LEN] {
    /// Key type of an ed25519 key, and of the signed-with-key extension.
    const ED25519_KEY: u8 = 1;
    const SIGNED_WITH_ED25519_KEY: u8 = 4;
    let mut cert = [0u8; CERTIFICATE_LEN];
    cert[0] = 1; // version
    cert[1] = subject.kind;
    cert[2..6].copy_from_slice(&hours.to_be_bytes());
    cert[6] = ED25519_KEY;
    cert[7..39].copy_from_slice(&subject.key);
    cert[39] = 1; // one extension
    cert[40..42].copy_from_slice(&32u16.to_be_bytes());
    cert[42] = SIGNED_WITH_ED25519_KEY;
    cert[43] = 0; // flags: none
    cert[44..76].copy_from_slice(signer);
    debug_assert_eq!(76 + SIGNATURE_LEN, CERTIFICATE_LEN);
    cert
}

/// Hours since the epoch at `expiry`, rounded up; saturating.
fn expiry_hours(expiry: SystemTime) -> u32 {
    let seconds = expiry
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(seconds.div_ceil(3600)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod test {
    use super::*;
    use std::time::Duration;
    use tor_cert::{CertType, CertifiedKey, Ed25519Cert};

    fn keypair() -> ed25519::ExpandedKeypair {
        ed25519::ExpandedKeypair::from(&ed25519::Keypair::generate(&mut rand::rng()))
    }

    #[test]
    fn signs_as_tor_llcrypto_does() {
        let expanded = keypair();
        let period = crate::test_support::fixture().period;
        let blinded = crate::blind::blind_keypair(&expanded, period).unwrap();
        for key in [&expanded, &blinded] {
            let ours = SigningKey::from(key);
            let messages: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 17 * i as usize]).collect();
            let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let signatures = ours.sign_all(&refs);
            assert_eq!(signatures.len(), messages.len());
            for (message, signature) in messages.iter().zip(&signatures) {
                assert_eq!(*signature, key.sign(message).to_bytes());
                key.public()
                    .verify(message, &ed25519::Signature::from_bytes(signature))
                    .unwrap();
            }
            assert_eq!(ours.sign(b"alone"), key.sign(b"alone").to_bytes());
        }
        assert!(SigningKey::from(&expanded).sign_all(&[]).is_empty());
    }

    #[test]
    fn certificates_are_tor_certs_byte_for_byte() {
        let signer = keypair();
        let ours = SigningKey::from(&signer);
        let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600 + 1234);
        let subjects: Vec<Subject> = [CertType::HS_IP_V_SIGNING, CertType::HS_IP_CC_SIGNING]
            .into_iter()
            .map(|kind| Subject {
                kind: kind.into(),
                key: keypair().public().to_bytes(),
            })
            .collect();
        let certs = certify_all(&ours, &subjects, expiry);
        for (subject, cert) in subjects.iter().zip(&certs) {
            let theirs = Ed25519Cert::builder()
                .cert_type(subject.kind.into())
                .expiration(expiry)
                .signing_key(ed25519::Ed25519Identity::from(signer.public()))
                .cert_key(CertifiedKey::Ed25519(subject.key.into()))
                .encode_and_sign(&signer)
                .unwrap();
            assert_eq!(cert.as_slice(), theirs.as_ref());
            let decoded = Ed25519Cert::decode(cert).unwrap();
            let checked = tor_checkable::SelfSigned::check_signature(
                decoded
                    .should_be_signed_with(&signer.public().into())
                    .unwrap(),
            )
            .unwrap();
            let checked =
                tor_checkable::Timebound::if_valid_at(checked, &(expiry - Duration::from_secs(60)))
                    .unwrap();
            assert_eq!(checked.cert_type(), subject.kind.into());
            assert_eq!(
                checked.subject_key().as_ed25519().unwrap().as_bytes(),
                &subject.key
            );
        }
    }
}
