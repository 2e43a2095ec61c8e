//! What the fuzz targets share: onionlb's config loader (compiled here
//! from the binary crate's source, which has no library), a fixed instance
//! identity, and the seed inputs.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use onionlb_core::descriptor::{
    build_master_descriptor, default_flow_control, IntroPoint, MasterDescriptorPlan,
};
use onionlb_core::MasterKey;
use tor_hscrypto::pk::HsIdKey;
use tor_hscrypto::time::TimePeriod;
use tor_linkspec::LinkSpec;
use tor_llcrypto::pk::{curve25519, ed25519};
use tor_netdoc::doc::hsdesc::IntroPointDesc;

#[allow(dead_code, missing_docs)]
#[path = "../../crates/onionlb/src/config.rs"]
pub mod config;

/// The instance the descriptor target feeds: a fixed key, a fixed time
/// and its period.
pub struct InstanceFixture {
    /// The instance's signing key.
    pub key: MasterKey,
    /// Its public identity.
    pub identity: HsIdKey,
    /// The period of `now`.
    pub period: TimePeriod,
    /// The time descriptors are judged at.
    pub now: SystemTime,
}

/// The seed of the fixture's key: bytes 0 to 31, in PKCS#8 PEM.
const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n-----END PRIVATE KEY-----\n";

/// The fixture, the same on every call.
pub fn instance_fixture() -> InstanceFixture {
    let key = MasterKey::from_bytes(PEM.as_bytes()).expect("the fixed key is valid");
    let identity = HsIdKey::from(key.keypair());
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_277_980);
    let period = TimePeriod::new(Duration::from_secs(86400), now, Duration::from_secs(43200))
        .expect("a valid period");
    InstanceFixture {
        key,
        identity,
        period,
        now,
    }
}

/// A valid descriptor of the fixture's instance with `count` intro points,
/// as its tor would upload it.
pub fn instance_descriptor(count: u16) -> String {
    let fixture = instance_fixture();
    let mut rng = rand::rng();
    let intro_points: Vec<IntroPointDesc> = (0..count)
        .map(|i| {
            let curve = |rng: &mut rand::rngs::ThreadRng| {
                curve25519::PublicKey::from(&curve25519::EphemeralSecret::random_from_rng(rng))
            };
            IntroPointDesc::builder()
                .link_specifiers(vec![
                    LinkSpec::OrPort(Ipv4Addr::LOCALHOST.into(), 9000 + i)
                        .encode()
                        .expect("encodes"),
                    LinkSpec::RsaId([i as u8; 20].into())
                        .encode()
                        .expect("encodes"),
                ])
                .ipt_kp_ntor(curve(&mut rng))
                .kp_hs_ipt_sid(ed25519::Keypair::generate(&mut rng).verifying_key().into())
                .kp_hss_ntor(curve(&mut rng).into())
                .build()
                .expect("a valid intro point")
        })
        .collect();
    let intro_points = IntroPoint::from_netdoc(&intro_points).expect("valid keys");
    let plan = MasterDescriptorPlan {
        period: fixture.period,
        revision: 1000,
        intro_points: &intro_points,
        flow_control: default_flow_control(31),
        now: fixture.now,
        max_size: 50_000,
    };
    build_master_descriptor(&fixture.key, &plan, &mut rng)
        .expect("builds")
        .text
}
