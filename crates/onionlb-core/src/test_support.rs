//! Signed descriptors and intro points for unit tests.

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use tor_hscrypto::pk::HsIdKey;
use tor_hscrypto::time::TimePeriod;
use tor_linkspec::LinkSpec;
use tor_llcrypto::pk::{curve25519, ed25519};

use crate::descriptor::{
    build_master_descriptor, default_flow_control, IntroPoint, MasterDescriptor,
    MasterDescriptorPlan,
};
use crate::key::MasterKey;

/// A fixed ed25519 key in PKCS#8 PEM.
pub const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n-----END PRIVATE KEY-----\n";

/// A fresh intro point on `port`.
pub fn intro_point(rng: &mut rand::rngs::ThreadRng, port: u16) -> IntroPoint {
    let curve = |rng: &mut rand::rngs::ThreadRng| {
        curve25519::PublicKey::from(&curve25519::EphemeralSecret::random_from_rng(rng))
    };
    let point = tor_netdoc::doc::hsdesc::IntroPointDesc::builder()
        .link_specifiers(vec![
            LinkSpec::OrPort(Ipv4Addr::LOCALHOST.into(), port)
                .encode()
                .unwrap(),
            LinkSpec::RsaId([7; 20].into()).encode().unwrap(),
            LinkSpec::Ed25519Id([8; 32].into()).encode().unwrap(),
        ])
        .ipt_kp_ntor(curve(rng))
        .kp_hs_ipt_sid(ed25519::Keypair::generate(rng).verifying_key().into())
        .kp_hss_ntor(curve(rng).into())
        .build()
        .unwrap();
    IntroPoint::from_netdoc(&[point]).unwrap().remove(0)
}

/// A service key, a time and its period, and three intro points.
pub struct Fixture {
    pub key: MasterKey,
    pub identity: HsIdKey,
    pub period: TimePeriod,
    pub now: SystemTime,
    pub intro_points: Vec<IntroPoint>,
}

pub fn fixture() -> Fixture {
    let mut rng = rand::rng();
    let key = MasterKey::from_bytes(PEM.as_bytes()).unwrap();
    let identity = HsIdKey::from(key.keypair());
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_277_980);
    let period =
        TimePeriod::new(Duration::from_secs(86400), now, Duration::from_secs(43200)).unwrap();
    let intro_points = (0..3).map(|i| intro_point(&mut rng, 9000 + i)).collect();
    Fixture {
        key,
        identity,
        period,
        now,
        intro_points,
    }
}

/// The fixture's descriptor with `revision`, signed by its key.
pub fn build(f: &Fixture, revision: u64) -> MasterDescriptor {
    build_with(f, revision, &f.intro_points)
}

/// A descriptor of the fixture's key carrying `intro_points`.
pub fn build_with(f: &Fixture, revision: u64, intro_points: &[IntroPoint]) -> MasterDescriptor {
    let plan = MasterDescriptorPlan {
        period: f.period,
        revision,
        intro_points,
        flow_control: default_flow_control(31),
        now: f.now,
        max_size: 50_000,
    };
    build_master_descriptor(&f.key, &plan, &mut rand::rng()).unwrap()
}
