//! Synthetic inputs both tools can read: a microdesc consensus with many
//! HSDirs and their microdescriptors, and instance descriptors signed by
//! instance keys. Nothing here is valid on any real network; it only has
//! to parse and to place relays on the hash ring.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use data_encoding::{BASE64, BASE64_NOPAD};
use onionlb_core::consensus::format_time;
use onionlb_core::descriptor::IntroPoint;
use onionlb_core::descriptor::{
    build_master_descriptor, default_flow_control, MasterDescriptorPlan,
};
use onionlb_core::MasterKey;
use sha2::{Digest as _, Sha256};
use tor_hscrypto::time::TimePeriod;
use tor_linkspec::LinkSpec;
use tor_llcrypto::pk::{curve25519, ed25519};
use tor_netdoc::doc::hsdesc::IntroPointDesc;

/// The public network's layout: one shared-random run a day starting at
/// 00:00 UTC, time periods of a day starting at 12:00 UTC.
pub const RUN_LENGTH: Duration = Duration::from_secs(24 * 3600);
/// Time periods start this long after midnight UTC.
pub const ROTATION_OFFSET: Duration = Duration::from_secs(12 * 3600);
/// Voting interval of the synthetic consensus.
pub const VOTING_INTERVAL: Duration = Duration::from_secs(3600);

/// Deterministic pseudo-random bytes: the same `label` and `index` always
/// give the same relay, so both tools see the same network.
fn bytes<const N: usize>(label: &str, index: usize) -> [u8; N] {
    let mut out = [0u8; N];
    for (counter, chunk) in out.chunks_mut(32).enumerate() {
        let digest = Sha256::new()
            .chain_update(label.as_bytes())
            .chain_update(index.to_be_bytes())
            .chain_update(counter.to_be_bytes())
            .finalize();
        chunk.copy_from_slice(&digest[..chunk.len()]);
    }
    out
}

/// A consensus valid after `valid_after` listing `relays` HSDirs, and the
/// microdescriptors it refers to (as `GETINFO md/all` gives them).
pub fn network(relays: usize, valid_after: SystemTime) -> (String, String) {
    let mut consensus = String::new();
    let mut microdescs = String::new();
    let time = format_time;
    let _ = write!(
        consensus,
        "network-status-version 3 microdesc\nvote-status consensus\nconsensus-method 32\n\
         valid-after {}\nfresh-until {}\nvalid-until {}\nvoting-delay 300 300\n\
         client-versions 0.4.8.1\nserver-versions 0.4.8.1\n\
         known-flags Fast Guard HSDir Running Stable V2Dir Valid\n\
         recommended-client-protocols HSDir=2 Link=4\nrecommended-relay-protocols HSDir=2 Link=4\n\
         required-client-protocols HSDir=2 Link=4\nrequired-relay-protocols HSDir=2 Link=4\n\
         params hsdir_n_replicas=2 hsdir_spread_store=4\n\
         shared-rand-previous-value 9 {}\nshared-rand-current-value 9 {}\n",
        time(valid_after),
        time(valid_after + VOTING_INTERVAL),
        time(valid_after + 3 * VOTING_INTERVAL),
        BASE64.encode(&bytes::<32>("srv-previous", 0)),
        BASE64.encode(&bytes::<32>("srv-current", 0)),
    );
    for i in 0..relays {
        let md = format!(
            "onion-key\n-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\nntor-onion-key {}\nid ed25519 {}\n",
            BASE64.encode(&bytes::<48>("rsa-onion-key", i)),
            BASE64.encode(&bytes::<32>("ntor", i)),
            BASE64_NOPAD.encode(&bytes::<32>("ed25519-id", i)),
        );
        let digest = Sha256::digest(md.as_bytes());
        let address = Ipv4Addr::from(0x0a00_0000_u32 + u32::try_from(i).unwrap_or(0));
        let _ = write!(
            consensus,
            "r relay{i} {} {} {address} 9001 0\nm {}\ns Fast HSDir Running Stable V2Dir Valid\nv Tor 0.4.8.12\n\
             pr Cons=1-2 Desc=1-2 DirCache=2 FlowCtrl=1-2 HSDir=2 HSIntro=4-5 HSRend=1-2 Link=1-5 LinkAuth=1,3 Microdesc=1-2 Padding=2 Relay=1-4\nw Bandwidth=1000\n",
            BASE64_NOPAD.encode(&bytes::<20>("rsa-id", i)),
            time(valid_after - Duration::from_secs(3600)),
            BASE64_NOPAD.encode(&digest),
        );
        microdescs.push_str(&md);
    }
    consensus.push_str("directory-footer\nbandwidth-weights Wbd=0\n");
    (consensus, microdescs)
}

/// `count` fresh intro points, on relays `first_relay`, `first_relay + 1`,
/// ... of the synthetic network. Instances of one service should use
/// different relays, as real ones almost always do: a balancer never puts
/// two intro points on one relay into a descriptor.
pub fn intro_points(count: usize, first_relay: usize) -> anyhow::Result<Vec<IntroPoint>> {
    let mut rng = rand::rng();
    let points: Vec<IntroPointDesc> = (first_relay..first_relay + count)
        .map(|i| {
            let curve = |rng: &mut rand::rngs::ThreadRng| {
                curve25519::PublicKey::from(&curve25519::EphemeralSecret::random_from_rng(rng))
            };
            let encode = |spec: LinkSpec| spec.encode().context("encoding a link specifier");
            IntroPointDesc::builder()
                .link_specifiers(vec![
                    encode(LinkSpec::OrPort(Ipv4Addr::new(10, 0, 0, 1).into(), 9001))?,
                    encode(LinkSpec::RsaId(bytes::<20>("rsa-id", i).into()))?,
                    encode(LinkSpec::Ed25519Id(bytes::<32>("ed25519-id", i).into()))?,
                ])
                .ipt_kp_ntor(curve(&mut rng))
                .kp_hs_ipt_sid(ed25519::Keypair::generate(&mut rng).verifying_key().into())
                .kp_hss_ntor(curve(&mut rng).into())
                .build()
                .context("building an intro point")
        })
        .collect::<anyhow::Result<_>>()?;
    IntroPoint::from_netdoc(&points).context("converting intro points")
}

/// A descriptor of `key`'s, as an instance's tor would publish it, for
/// the period containing `now`.
pub fn instance_descriptor(
    key: &MasterKey,
    intro_points: &[IntroPoint],
    now: SystemTime,
    revision: u64,
) -> anyhow::Result<String> {
    let plan = MasterDescriptorPlan {
        period: period_at(now)?,
        revision,
        intro_points,
        flow_control: default_flow_control(31),
        now,
        max_size: 100_000,
    };
    Ok(build_master_descriptor(key, &plan, &mut rand::rng())
        .context("building an instance descriptor")?
        .text)
}

/// The public network's time period containing `now`.
pub fn period_at(now: SystemTime) -> anyhow::Result<TimePeriod> {
    TimePeriod::new(RUN_LENGTH, now, ROTATION_OFFSET).context("no time period then")
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use onionlb_core::consensus::Consensus;
    use onionlb_core::hsdir::hsdirs;

    #[test]
    fn the_synthetic_network_reads_as_that_many_hsdirs() {
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600);
        let (consensus, microdescs) = network(50, when);
        let parsed = Consensus::parse(&consensus).unwrap();
        assert_eq!(parsed.valid_after, when);
        assert_eq!(parsed.relays.len(), 50);
        assert!(parsed.srv_current.is_some() && parsed.srv_previous.is_some());
        assert_eq!(hsdirs(&parsed, &microdescs).len(), 50);
        assert_eq!(format_time(when), "2026-11-22 00:00:00");
    }

    #[test]
    fn instance_descriptors_validate_with_their_intro_points() {
        let (key, _) = MasterKey::generate(&mut rand::rng()).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600);
        let text = instance_descriptor(&key, &intro_points(6, 0).unwrap(), now, 7).unwrap();
        let identity = tor_hscrypto::pk::HsIdKey::from(key.keypair());
        let valid = onionlb_core::descriptor::validate_instance_descriptor(
            &text,
            &identity,
            &[period_at(now).unwrap()],
            now,
            100_000,
        )
        .unwrap();
        assert_eq!(valid.intro_points.len(), 6);
        assert_eq!(valid.revision, 7);
    }
}
