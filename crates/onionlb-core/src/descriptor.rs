//! Onion service descriptors: checking an instance's before its intro
//! points are used, and building and signing a master descriptor.
//!
//! The descriptor format and its encryption are Arti's (`tor-netdoc`); this
//! module decides what is checked and what goes in.

use std::num::NonZeroU8;
use std::time::{Duration, SystemTime};

use tor_cell::chancell::msg::HandshakeType;
use tor_hscrypto::pk::{HsBlindId, HsIdKey};
use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::Subcredential;
use tor_llcrypto::pk::ed25519;
use tor_netdoc::doc::hsdesc::{create_desc_sign_key_cert, HsDescBuilder};

pub use tor_netdoc::doc::hsdesc::IntroPointDesc;
use tor_netdoc::NetdocBuilder as _;
use tor_protover::{ProtoKind, Protocols};
use tor_units::IntegerMinutes;

pub use crate::hsdesc::ReadError;
use crate::key::MasterKey;

/// Lifetime of the master descriptors we publish, as C tor's services use.
pub const MASTER_LIFETIME_MINUTES: u16 = 180;

/// Most intro points a descriptor may carry: C tor clients reject
/// descriptors with more.
pub const MAX_INTRO_POINTS: usize = 20;

/// How long the certificates inside a master descriptor stay valid
/// (C tor's `HS_DESC_CERT_LIFETIME`).
const CERT_LIFETIME: Duration = Duration::from_secs(54 * 3600);

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
    pub intro_points: Vec<IntroPointDesc>,
    /// When it stops being valid.
    pub valid_until: Option<SystemTime>,
    /// Its `flow-control` line, if it had one.
    pub flow_control: Option<(Protocols, NonZeroU8)>,
}

/// Why an instance descriptor was not used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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
    /// Malformed, badly signed, or undecryptable.
    #[error("invalid descriptor: {0}")]
    Invalid(String),
    /// Not readable, or not made by the instance's key: see
    /// [`validate_blinded`] for what is checked.
    #[error("invalid descriptor: {0}")]
    Unreadable(ReadError),
    /// Outside its validity period.
    #[error("descriptor is not valid now: {0}")]
    Untimely(String),
    /// The master descriptor could not be built.
    #[error("cannot build descriptor: {0}")]
    Build(String),
}

/// The RSA identity of the relay an intro point is on, from its link
/// specifiers: what a C tor client matches an intro circuit against.
pub fn intro_point_relay(intro_point: &IntroPointDesc) -> Option<[u8; 20]> {
    intro_point
        .link_specifiers()
        .iter()
        .find_map(|spec| match spec.parse() {
            Ok(tor_linkspec::LinkSpec::RsaId(id)) => id.as_bytes().try_into().ok(),
            _ => None,
        })
}

/// One identity's blinded key and subcredential for one time period:
/// what checking and decrypting a descriptor of that period needs.
///
/// Deriving them is a scalar multiplication and two hashes, the dearest
/// step of checking a descriptor after the signatures, and the same for
/// every descriptor of the period: keep them.
#[derive(Debug, Clone)]
pub struct Blinding {
    /// The period.
    pub period: TimePeriod,
    /// The blinded key of the identity for it.
    pub blinded: HsBlindId,
    /// The same key as a curve point, for verifying what it signs.
    pub public: ed25519::PublicKey,
    /// The subcredential, which keys the descriptor's encryption.
    pub subcredential: Subcredential,
}

impl Blinding {
    /// Derives `identity`'s blinding for `period`; `None` for a period
    /// tor-hscrypto cannot blind for.
    pub fn derive(identity: &HsIdKey, period: TimePeriod) -> Option<Self> {
        let (blinded, subcredential) = identity.compute_blinded_key(period).ok()?;
        Some(Blinding {
            period,
            blinded: blinded.id(),
            public: *blinded.as_ref(),
            subcredential,
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
    let signer = descriptor_signer(text).ok_or(DescriptorError::Invalid(
        "no readable descriptor-signing-key-cert".into(),
    ))?;
    let blinding = blindings
        .iter()
        .find(|b| b.blinded == signer)
        .ok_or(DescriptorError::WrongKey)?;
    let content = crate::hsdesc::read(text, blinding, now).map_err(|e| match e {
        ReadError::Expired => DescriptorError::Untimely(e.to_string()),
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
    pub intro_points: &'a [IntroPointDesc],
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

/// Builds and signs a master descriptor for `key`.
pub fn build_master_descriptor<R>(
    key: &MasterKey,
    plan: &MasterDescriptorPlan<'_>,
    rng: &mut R,
) -> Result<MasterDescriptor, DescriptorError>
where
    R: rand::Rng + rand::CryptoRng,
{
    let build = |e: &dyn std::fmt::Display| DescriptorError::Build(e.to_string());
    if plan.intro_points.is_empty() || plan.intro_points.len() > MAX_INTRO_POINTS {
        return Err(DescriptorError::Build(format!(
            "{} intro points; a descriptor needs 1 to {MAX_INTRO_POINTS}",
            plan.intro_points.len()
        )));
    }
    let (blinded_public, blinded_keypair, subcredential) = key
        .keypair()
        .compute_blinded_key(plan.period)
        .map_err(|e| build(&e))?;
    let signing = ed25519::Keypair::generate(rng);
    let expiry = plan.now + CERT_LIFETIME;
    let cert = create_desc_sign_key_cert(&signing.verifying_key(), &blinded_keypair, expiry)
        .map_err(|e| build(&e))?;
    let text = HsDescBuilder::default()
        .blinded_id(&blinded_public)
        .hs_desc_sign(&signing)
        .hs_desc_sign_cert(cert)
        .create2_formats(&[HandshakeType::NTOR])
        .auth_required(None)
        .is_single_onion_service(false)
        .intro_points(plan.intro_points)
        .intro_auth_key_cert_expiry(expiry)
        .intro_enc_key_cert_expiry(expiry)
        .flow_control(plan.flow_control.clone())
        .lifetime(IntegerMinutes::new(MASTER_LIFETIME_MINUTES))
        .revision_counter(plan.revision.into())
        .subcredential(subcredential)
        .build_sign(rng)
        .map_err(|e| build(&e))?;
    if text.len() > plan.max_size {
        return Err(DescriptorError::TooLarge {
            size: text.len(),
            limit: plan.max_size,
        });
    }
    Ok(MasterDescriptor {
        blinded: blinded_public.id(),
        text,
    })
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
    use crate::test_support::{build, fixture, intro_point};
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
            Err(DescriptorError::Untimely(_))
        ));

        assert!(matches!(
            validate_instance_descriptor(&desc.text, &f.identity, &periods, f.now, 1000),
            Err(DescriptorError::TooLarge { limit: 1000, .. })
        ));
        assert!(matches!(
            validate_instance_descriptor("hs-descriptor 3\n", &f.identity, &periods, f.now, 1000),
            Err(DescriptorError::Invalid(_))
        ));
    }

    #[test]
    fn an_intro_point_names_its_relay() {
        let mut rng = rand::rng();
        // The fixture's intro points name relay [7; 20].
        assert_eq!(intro_point_relay(&intro_point(&mut rng, 1)), Some([7; 20]));
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
