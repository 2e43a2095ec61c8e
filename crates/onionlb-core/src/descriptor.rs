//! Onion service descriptors: checking an instance's before its intro
//! points are used, and building and signing a master descriptor.
//!
//! Both formats are ours ([`crate::hsdesc`]); the signing-key certificate
//! is made with tor-netdoc's helper, the intro points' certificates in
//! batches by [`crate::sign`].
//! This module decides what is checked and what goes in, and keeps what a
//! service's descriptors of one period share ([`PeriodSigner`]).

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU8;
use std::time::{Duration, SystemTime};

use tor_cert::CertType;
use tor_hscrypto::pk::{HsBlindId, HsIdKey};
use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::Subcredential;
use tor_llcrypto::pk::ed25519;
use tor_netdoc::doc::hsdesc::create_desc_sign_key_cert;

pub use crate::intro::IntroPoint;
use tor_protover::{ProtoKind, Protocols};

pub use crate::hsdesc::ReadError;
use crate::key::MasterKey;
use crate::sign::{SigningKey, Subject, CERTIFICATE_LEN};

/// Lifetime of the master descriptors we publish, as C tor's services use.
pub const MASTER_LIFETIME_MINUTES: u16 = 180;

/// Most intro points a descriptor may carry: C tor clients reject
/// descriptors with more.
pub const MAX_INTRO_POINTS: usize = 20;

/// How long the certificates inside a master descriptor stay valid
/// (C tor's `HS_DESC_CERT_LIFETIME`).
const CERT_LIFETIME: Duration = Duration::from_secs(54 * 3600);

/// A [`PeriodSigner`] whose certificate expires sooner than this is not
/// used: a descriptor built with it must stay valid through its lifetime.
const SIGNER_MARGIN: Duration = Duration::from_secs(6 * 3600);

/// An instance descriptor that passed every check.
#[derive(Debug, Clone)]
pub struct InstanceDescriptor {
    /// The blinded key it was published under.
    pub blinded: HsBlindId,
    /// The time period of that key.
    pub period: TimePeriod,
    /// Its revision counter.
    pub revision: u64,
    /// Its introduction points.
    pub intro_points: Vec<IntroPoint>,
    /// When it stops being valid.
    pub valid_until: Option<SystemTime>,
    /// Its `flow-control` line, if it had one.
    pub flow_control: Option<(Protocols, NonZeroU8)>,
}

/// Why an instance descriptor was not used, or a master descriptor not
/// built.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DescriptorError {
    /// Larger than the network allows.
    #[error("descriptor of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not signed by this instance's blinded key for the periods asked
    /// about: another service's descriptor, or one for another period.
    #[error("descriptor is not signed by this instance's key for the period in use")]
    WrongKey,
    /// Not readable, or not made by the instance's key: see
    /// [`validate_blinded`] for what is checked.
    #[error("invalid descriptor: {0}")]
    Unreadable(ReadError),
    /// Outside its validity period.
    #[error("descriptor is not valid now: a certificate has expired")]
    Untimely,
    /// A master descriptor needs 1 to [`MAX_INTRO_POINTS`] intro points.
    #[error("{count} intro points; a descriptor needs 1 to {MAX_INTRO_POINTS}")]
    IntroPointCount {
        /// How many it was given.
        count: usize,
    },
    /// tor-hscrypto could not blind the service's key for the period.
    #[error("the service key cannot be blinded for time period {period}")]
    Unblindable {
        /// The period.
        period: u64,
    },
    /// A certificate could not be made.
    #[error("cannot certify {what}")]
    Certify {
        /// What was to be certified.
        what: &'static str,
    },
    /// The signer is for another period than the descriptor, or its
    /// certificate expires too soon to sign with.
    #[error("the descriptor signer of period {signer} cannot sign for period {period} now")]
    SignerUnfit {
        /// The signer's period.
        signer: u64,
        /// The descriptor's.
        period: u64,
    },
}

/// One identity's blinded key and subcredential for one time period:
/// what checking and decrypting a descriptor of that period needs.
///
/// Deriving them is a scalar multiplication and three hashes
/// ([`crate::blind`]), the dearest step of checking a descriptor after the
/// signatures, and the same for every descriptor of the period: keep them.
#[derive(Debug, Clone)]
pub struct Blinding {
    /// The period.
    pub period: TimePeriod,
    /// The blinded key of the identity for it.
    pub blinded: HsBlindId,
    /// The same key as a curve point, for verifying what it signs.
    pub public: ed25519_dalek::VerifyingKey,
    /// The subcredential, which keys the descriptor's encryption.
    pub subcredential: Subcredential,
}

impl Blinding {
    /// Derives `identity`'s blinding for `period`; `None` if `identity`
    /// is not a curve point.
    pub fn derive(identity: &HsIdKey, period: TimePeriod) -> Option<Self> {
        let identity = identity.as_ref().as_bytes();
        let public = crate::blind::blind_public(identity, period)?;
        Some(Blinding {
            period,
            blinded: HsBlindId::from(public.to_bytes()),
            public,
            subcredential: crate::blind::subcredential(identity, public.as_bytes()),
        })
    }
}

/// Checks an instance's descriptor: size, outer signature and signing-key
/// certificate, that its blinded key is the instance's for one of
/// `periods`, decryption and inner signature, and validity at `now`.
/// (That its revision never goes backwards is the caller's to check, as it
/// needs history.)
pub fn validate_instance_descriptor(
    text: &str,
    instance: &HsIdKey,
    periods: &[TimePeriod],
    now: SystemTime,
    max_size: usize,
) -> Result<InstanceDescriptor, DescriptorError> {
    let blindings: Vec<Blinding> = periods
        .iter()
        .filter_map(|period| Blinding::derive(instance, *period))
        .collect();
    validate_blinded(text, &blindings, now, max_size)
}

/// [`validate_instance_descriptor`] with the instance's blindings for the
/// acceptable periods already derived.
///
/// What is checked, in order, cheapest first:
///
/// 1. the size, against the network's limit;
/// 2. that the `descriptor-signing-key-cert` names one of `blindings` as
///    its signer (read before any signature is trusted: it only picks the
///    period, so a descriptor of another service or period is refused
///    before any public-key work);
/// 3. the certificate's signature by that blinded key, and the outer
///    signature over the whole document by the certified signing key
///    (tor-netdoc): so the encrypted body is what someone holding the
///    instance's identity signed for that period;
/// 4. decryption of both layers with the subcredential, the inner
///    document's structure, and that it names the same signing key;
/// 5. that `now` is within the validity of every certificate.
///
/// Not checked: the inner layer's per-intro-point certificates, signed by
/// the same signing key over content step 3 already covers. They would
/// double the public-key work, and a master descriptor certifies its
/// intro points anew with its own signing key.
pub fn validate_blinded(
    text: &str,
    blindings: &[Blinding],
    now: SystemTime,
    max_size: usize,
) -> Result<InstanceDescriptor, DescriptorError> {
    if text.len() > max_size {
        return Err(DescriptorError::TooLarge {
            size: text.len(),
            limit: max_size,
        });
    }
    let signer =
        descriptor_signer(text).ok_or(DescriptorError::Unreadable(ReadError::Malformed {
            layer: "outer",
            what: "no readable descriptor-signing-key-cert",
        }))?;
    let blinding = blindings
        .iter()
        .find(|b| b.blinded == signer)
        .ok_or(DescriptorError::WrongKey)?;
    let content = crate::hsdesc::read(text, blinding, now).map_err(|e| match e {
        ReadError::Expired => DescriptorError::Untimely,
        e => DescriptorError::Unreadable(e),
    })?;
    Ok(InstanceDescriptor {
        blinded: blinding.blinded,
        period: blinding.period,
        revision: content.revision,
        intro_points: content.intro_points,
        valid_until: Some(content.valid_until),
        flow_control: content.flow_control,
    })
}

/// The blinded key that certified a descriptor's signing key, read from its
/// `descriptor-signing-key-cert` (before any signature is trusted: it only
/// picks which period to check against).
fn descriptor_signer(text: &str) -> Option<HsBlindId> {
    let after = text.split("descriptor-signing-key-cert\n").nth(1)?;
    let body = after.strip_prefix("-----BEGIN ED25519 CERT-----\n")?;
    let body = &body[..body.find("-----END ED25519 CERT-----")?];
    let der: String = body.split_whitespace().collect();
    let bytes = data_encoding::BASE64.decode(der.as_bytes()).ok()?;
    let cert = tor_cert::Ed25519Cert::decode(&bytes).ok()?;
    let unchecked = cert.should_have_signing_key().ok()?;
    Some(HsBlindId::from(*unchecked.peek_signing_key()))
}

/// Everything that goes into one master descriptor.
#[derive(Debug, Clone)]
pub struct MasterDescriptorPlan<'a> {
    /// The period it is for.
    pub period: TimePeriod,
    /// Its revision counter.
    pub revision: u64,
    /// Its intro points, at most [`MAX_INTRO_POINTS`].
    pub intro_points: &'a [IntroPoint],
    /// The `flow-control` line to write.
    pub flow_control: Option<(Protocols, u8)>,
    /// When it is built.
    pub now: SystemTime,
    /// Size limit (`HSV3MaxDescriptorSize`).
    pub max_size: usize,
}

/// A built, signed, encrypted master descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterDescriptor {
    /// The blinded key it is published under (what HSPOST's HSDirs index).
    pub blinded: HsBlindId,
    /// The descriptor text.
    pub text: String,
}

/// Builds and signs a master descriptor for `key` with a signer made for
/// it alone; a service that publishes again keeps a [`PeriodSigner`].
pub fn build_master_descriptor<R>(
    key: &MasterKey,
    plan: &MasterDescriptorPlan<'_>,
    rng: &mut R,
) -> Result<MasterDescriptor, DescriptorError>
where
    R: rand::Rng + rand::CryptoRng,
{
    PeriodSigner::new(key, plan.period, plan.now, rng)?.build(plan, rng)
}

/// What a service's master descriptors of one time period share: the
/// blinded key, the subcredential, a descriptor-signing key with its
/// certificate by the blinded key, and the certificates that key made for
/// intro points.
///
/// C tor keeps its descriptor-signing key for a period the same way. A
/// publication of intro points already certified then costs one signature
/// and the encryption, not two signatures and a key conversion per intro
/// point. Each period gets its own signing key: one key in the descriptors
/// of two periods would let HSDirs link the periods' blinded keys.
///
/// The blinded secret key is dropped once the certificate is made, so a
/// signer could as well come from a certificate made elsewhere (offline
/// keys); only [`PeriodSigner::new`] needs the identity key.
pub struct PeriodSigner {
    period: TimePeriod,
    blinded: HsBlindId,
    subcredential: Subcredential,
    signing: SigningKey,
    /// The `descriptor-signing-key-cert`, encoded.
    certificate: Vec<u8>,
    /// When it and every certificate made with the key expire.
    expiry: SystemTime,
    /// Certificates made for intro points, by auth key.
    certified: HashMap<[u8; 32], PointCertificates>,
}

/// An intro point's two certificates by a signer's key.
struct PointCertificates {
    /// The ntor key the `enc-key-cert` certifies.
    enc_key: [u8; 32],
    auth_key_cert: [u8; CERTIFICATE_LEN],
    enc_key_cert: [u8; CERTIFICATE_LEN],
    /// Used by a build since the last [`PeriodSigner::forget_unused`].
    used: bool,
}

impl fmt::Debug for PeriodSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeriodSigner")
            .field("period", &self.period.interval_num())
            .field("blinded", &self.blinded)
            .field("expiry", &self.expiry)
            .field("certified", &self.certified.len())
            .finish_non_exhaustive()
    }
}

impl PeriodSigner {
    /// Blinds `key` for `period`, makes a descriptor-signing key with
    /// `rng` and certifies it with the blinded key, valid for 54 hours
    /// from `now`.
    pub fn new<R>(
        key: &MasterKey,
        period: TimePeriod,
        now: SystemTime,
        rng: &mut R,
    ) -> Result<Self, DescriptorError>
    where
        R: rand::Rng + rand::CryptoRng,
    {
        let identity: &ed25519::ExpandedKeypair = key.keypair().as_ref();
        let blinded_keypair =
            crate::blind::blind_keypair(identity, period).ok_or(DescriptorError::Unblindable {
                period: period.interval_num(),
            })?;
        let blinded = *blinded_keypair.public().as_bytes();
        let subcredential = crate::blind::subcredential(identity.public().as_bytes(), &blinded);
        let blinded_keypair = tor_hscrypto::pk::HsBlindIdKeypair::from(blinded_keypair);
        let signing = ed25519::Keypair::generate(rng);
        let expiry = now + CERT_LIFETIME;
        let certificate =
            create_desc_sign_key_cert(&signing.verifying_key(), &blinded_keypair, expiry).map_err(
                |_| DescriptorError::Certify {
                    what: "the descriptor-signing key",
                },
            )?;
        Ok(PeriodSigner {
            period,
            blinded: HsBlindId::from(blinded),
            subcredential,
            signing: SigningKey::from(&ed25519::ExpandedKeypair::from(&signing)),
            certificate: certificate.as_ref().to_vec(),
            expiry,
            certified: HashMap::new(),
        })
    }

    /// The period it signs for.
    pub fn period(&self) -> TimePeriod {
        self.period
    }

    /// The blinded key its descriptors are published under.
    pub fn blinded(&self) -> HsBlindId {
        self.blinded
    }

    /// Whether a descriptor of `period` built at `now` may be signed with
    /// it: its period, and a certificate that outlives the descriptor.
    pub fn fits(&self, period: TimePeriod, now: SystemTime) -> bool {
        period == self.period && now + SIGNER_MARGIN <= self.expiry
    }

    /// Builds and signs the master descriptor `plan` describes, certifying
    /// the intro points it has not certified before.
    pub fn build<R>(
        &mut self,
        plan: &MasterDescriptorPlan<'_>,
        rng: &mut R,
    ) -> Result<MasterDescriptor, DescriptorError>
    where
        R: rand::Rng + rand::CryptoRng,
    {
        let count = plan.intro_points.len();
        if count == 0 || count > MAX_INTRO_POINTS {
            return Err(DescriptorError::IntroPointCount { count });
        }
        if !self.fits(plan.period, plan.now) {
            return Err(DescriptorError::SignerUnfit {
                signer: self.period.interval_num(),
                period: plan.period.interval_num(),
            });
        }
        self.certify(plan.intro_points);
        let certified: Vec<crate::hsdesc::Certified<'_>> = plan
            .intro_points
            .iter()
            .filter_map(|point| {
                let certs = self.certified.get(point.auth_key())?;
                Some(crate::hsdesc::Certified {
                    point,
                    auth_key_cert: &certs.auth_key_cert,
                    enc_key_cert: &certs.enc_key_cert,
                })
            })
            .collect();
        let document = crate::hsdesc::Document {
            lifetime_minutes: MASTER_LIFETIME_MINUTES,
            signing_key_cert: &self.certificate,
            revision: plan.revision,
            blinded: self.blinded.as_ref(),
            subcredential: self.subcredential.as_ref(),
            flow_control: plan.flow_control.as_ref(),
            intro_points: &certified,
        };
        let text = crate::hsdesc::write(&document, &self.signing, rng);
        if text.len() > plan.max_size {
            return Err(DescriptorError::TooLarge {
                size: text.len(),
                limit: plan.max_size,
            });
        }
        Ok(MasterDescriptor {
            blinded: self.blinded,
            text,
        })
    }

    /// Forgets the certificates of intro points no build used since the
    /// last call: what it keeps stays bounded by what it publishes.
    pub fn forget_unused(&mut self) {
        self.certified
            .retain(|_, certs| std::mem::take(&mut certs.used));
    }

    /// Makes the certificates of those of `points` it has none for (for
    /// the same ntor key), in one batch, and marks every one of `points`
    /// used.
    fn certify(&mut self, points: &[IntroPoint]) {
        let mut missing: Vec<&IntroPoint> = Vec::new();
        for point in points {
            match self.certified.get_mut(point.auth_key()) {
                Some(certs) if certs.enc_key == *point.enc_key() => certs.used = true,
                _ => missing.push(point),
            }
        }
        if missing.is_empty() {
            return;
        }
        let subjects: Vec<Subject> = missing
            .iter()
            .flat_map(|point| {
                [
                    Subject {
                        kind: CertType::HS_IP_V_SIGNING.into(),
                        key: *point.auth_key(),
                    },
                    Subject {
                        kind: CertType::HS_IP_CC_SIGNING.into(),
                        key: *point.enc_key_ed25519(),
                    },
                ]
            })
            .collect();
        let certificates = crate::sign::certify_all(&self.signing, &subjects, self.expiry);
        for (point, pair) in missing.iter().zip(certificates.chunks_exact(2)) {
            self.certified.insert(
                *point.auth_key(),
                PointCertificates {
                    enc_key: *point.enc_key(),
                    auth_key_cert: pair[0],
                    enc_key_cert: pair[1],
                    used: true,
                },
            );
        }
    }
}

/// The `flow-control` line C tor writes: the FlowCtrl versions it speaks
/// and the consensus `cc_sendme_inc`.
pub fn default_flow_control(sendme_inc: u8) -> Option<(Protocols, u8)> {
    let versions = Protocols::from_kind_and_versions(ProtoKind::FlowCtrl, "1-2").ok()?;
    Some((versions, sendme_inc))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::test_support::{build, fixture, intro_point, Fixture};
    use tor_hscrypto::pk::HsIdKey;

    #[test]
    fn built_descriptor_validates_with_everything_in_it() {
        let f = fixture();
        let desc = build(&f, 4242);
        assert!(
            desc.text
                .starts_with("hs-descriptor 3\ndescriptor-lifetime 180\n"),
            "{}",
            &desc.text[..60]
        );
        let periods = [f.period.prev().unwrap(), f.period, f.period.next().unwrap()];
        let checked =
            validate_instance_descriptor(&desc.text, &f.identity, &periods, f.now, 50_000).unwrap();
        assert_eq!(checked.revision, 4242);
        assert_eq!(checked.period, f.period);
        assert_eq!(checked.blinded, desc.blinded);
        assert_eq!(checked.intro_points.len(), 3);
        let (versions, inc) = checked.flow_control.unwrap();
        assert_eq!(
            (versions.to_string(), inc.get()),
            ("FlowCtrl=1-2".to_owned(), 31)
        );
        assert!(checked.valid_until.unwrap() > f.now);
    }

    #[test]
    fn tampered_foreign_stale_and_oversized_descriptors_are_refused() {
        let f = fixture();
        let desc = build(&f, 1);
        let periods = [f.period];

        // A changed revision counter breaks the outer signature.
        let tampered = desc
            .text
            .replace("revision-counter 1\n", "revision-counter 2\n");
        assert_ne!(tampered, desc.text);
        assert_eq!(
            validate_instance_descriptor(&tampered, &f.identity, &periods, f.now, 50_000)
                .unwrap_err(),
            DescriptorError::Unreadable(ReadError::BadSignature)
        );

        // Another service's key, or another period's.
        let other = HsIdKey::from(&tor_hscrypto::pk::HsIdKeypair::from(
            ed25519::ExpandedKeypair::from(&ed25519::Keypair::generate(&mut rand::rng())),
        ));
        assert_eq!(
            validate_instance_descriptor(&desc.text, &other, &periods, f.now, 50_000).unwrap_err(),
            DescriptorError::WrongKey
        );
        let later = [f.period.next().unwrap()];
        assert_eq!(
            validate_instance_descriptor(&desc.text, &f.identity, &later, f.now, 50_000)
                .unwrap_err(),
            DescriptorError::WrongKey
        );

        // Three days later it has expired.
        let late = f.now + Duration::from_secs(3 * 86400);
        assert!(matches!(
            validate_instance_descriptor(&desc.text, &f.identity, &periods, late, 50_000),
            Err(DescriptorError::Untimely)
        ));

        assert!(matches!(
            validate_instance_descriptor(&desc.text, &f.identity, &periods, f.now, 1000),
            Err(DescriptorError::TooLarge { limit: 1000, .. })
        ));
        assert!(matches!(
            validate_instance_descriptor("hs-descriptor 3\n", &f.identity, &periods, f.now, 1000),
            Err(DescriptorError::Unreadable(_))
        ));
    }

    fn plan_of<'a>(f: &Fixture, points: &'a [IntroPoint]) -> MasterDescriptorPlan<'a> {
        MasterDescriptorPlan {
            period: f.period,
            revision: 1,
            intro_points: points,
            flow_control: default_flow_control(31),
            now: f.now,
            max_size: 50_000,
        }
    }

    /// The intro points of `text` as a client reads them: tor-netdoc
    /// checks every certificate, the intro points' included.
    fn client_reads(f: &Fixture, text: &str) -> Vec<[u8; 32]> {
        use tor_checkable::Timebound as _;
        let b = Blinding::derive(&f.identity, f.period).unwrap();
        let desc = tor_netdoc::doc::hsdesc::HsDesc::parse_decrypt_validate(
            text,
            &b.blinded,
            &b.subcredential,
            None,
        )
        .unwrap()
        .if_valid_at(&f.now)
        .unwrap();
        desc.intro_points()
            .iter()
            .map(|ip| ip.ipt_sid_key().to_bytes())
            .collect()
    }

    #[test]
    fn a_signer_certifies_each_intro_point_once_and_forgets_unused_ones() {
        let f = fixture();
        let mut rng = rand::rng();
        let points: Vec<_> = (0..4).map(|i| intro_point(&mut rng, 9100 + i)).collect();
        let auth = |i: usize| *points[i].auth_key();
        let mut signer = PeriodSigner::new(&f.key, f.period, f.now, &mut rng).unwrap();

        let first = signer.build(&plan_of(&f, &points[..3]), &mut rng).unwrap();
        let made = signer.certified[&auth(1)].auth_key_cert;
        let second = signer.build(&plan_of(&f, &points[1..]), &mut rng).unwrap();
        assert_eq!(signer.certified.len(), 4);
        assert_eq!(signer.certified[&auth(1)].auth_key_cert, made);
        assert_eq!(client_reads(&f, &first.text), [auth(0), auth(1), auth(2)]);
        assert_eq!(client_reads(&f, &second.text), [auth(1), auth(2), auth(3)]);

        // Everything was used since the signer was made; then only the
        // last intro point.
        signer.forget_unused();
        assert_eq!(signer.certified.len(), 4);
        signer.build(&plan_of(&f, &points[3..]), &mut rng).unwrap();
        signer.forget_unused();
        assert_eq!(signer.certified.keys().collect::<Vec<_>>(), [&auth(3)]);
    }

    /// The sizes the operator guide gives for `max-intro-points`: the
    /// encrypted part is padded in steps, so a descriptor is about 14 kB
    /// up to 8 intro points, 28 kB up to 18, and 41 kB with 19 or 20
    /// (over the vanguards add-on's 30 kB).
    #[test]
    fn descriptor_size_grows_in_padding_steps_of_intro_points() {
        let f = fixture();
        let mut rng = rand::rng();
        let points: Vec<_> = (0..20).map(|i| intro_point(&mut rng, 9100 + i)).collect();
        let mut signer = PeriodSigner::new(&f.key, f.period, f.now, &mut rng).unwrap();
        let mut size = |n: usize| {
            signer
                .build(&plan_of(&f, &points[..n]), &mut rng)
                .unwrap()
                .text
                .len()
        };
        let sizes: Vec<usize> = [1, 8, 9, 18, 19, 20].into_iter().map(&mut size).collect();
        assert_eq!(sizes[0], sizes[1], "{sizes:?}");
        assert!(sizes[1] < 15_000, "{sizes:?}");
        assert!(sizes[2] > sizes[1] && sizes[2] == sizes[3], "{sizes:?}");
        assert!(sizes[3] < 30_000, "{sizes:?}");
        assert!(sizes[4] > 30_000 && sizes[4] == sizes[5], "{sizes:?}");
    }

    #[test]
    fn a_signer_signs_only_for_its_period_while_its_certificate_lasts() {
        let f = fixture();
        let mut rng = rand::rng();
        let mut signer = PeriodSigner::new(&f.key, f.period, f.now, &mut rng).unwrap();
        let next = f.period.next().unwrap();
        assert!(signer.fits(f.period, f.now + Duration::from_secs(47 * 3600)));
        assert!(!signer.fits(f.period, f.now + Duration::from_secs(49 * 3600)));
        assert!(!signer.fits(next, f.now));
        let mut plan = plan_of(&f, &f.intro_points);
        plan.period = next;
        assert_eq!(
            signer.build(&plan, &mut rng).unwrap_err(),
            DescriptorError::SignerUnfit {
                signer: f.period.interval_num(),
                period: next.interval_num(),
            }
        );
        // Each signer has its own signing key, so descriptors of two
        // periods share none.
        let other = PeriodSigner::new(&f.key, f.period, f.now, &mut rng).unwrap();
        assert_ne!(signer.signing.public(), other.signing.public());
        assert_eq!(signer.blinded(), other.blinded());
    }

    #[test]
    fn an_intro_point_names_its_relay() {
        let mut rng = rand::rng();
        // The fixture's intro points name relay [7; 20].
        assert_eq!(intro_point(&mut rng, 1).relay(), Some([7; 20]));
    }

    #[test]
    fn intro_point_count_is_bounded() {
        let f = fixture();
        let mut rng = rand::rng();
        let many: Vec<_> = (0..21).map(|i| intro_point(&mut rng, i)).collect();
        for points in [&many[..0], &many[..]] {
            let plan = MasterDescriptorPlan {
                period: f.period,
                revision: 1,
                intro_points: points,
                flow_control: None,
                now: f.now,
                max_size: 50_000,
            };
            assert!(build_master_descriptor(&f.key, &plan, &mut rng).is_err());
        }
        let plan = MasterDescriptorPlan {
            period: f.period,
            revision: 1,
            intro_points: &many[..20],
            flow_control: None,
            now: f.now,
            max_size: 50_000,
        };
        let desc = build_master_descriptor(&f.key, &plan, &mut rng).unwrap();
        assert!(desc.text.len() < 50_000);
    }
}
