//! More intro points than one descriptor holds: with 12 instances (36
//! intro points), each HSDir gets its own descriptor of 20, and every
//! instance still serves clients through the master address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use common::{manager_port, testnet_config, tmp_dir, Manager};
use onionlb_core::descriptor::validate_instance_descriptor;
use onionlb_core::MasterKey;
use testnet::app::served_by;
use testnet::layout::Role;
use testnet::torrc::VOTING_INTERVAL_SECS;
use testnet::Testnet;
use tor_hscrypto::pk::HsIdKey;
use tor_hscrypto::time::TimePeriod;
use torctl::{Command, ControlClient, Credentials, Event};

const INSTANCES: usize = 12;

/// The time periods a testing network may be publishing for now.
fn periods_now() -> Vec<TimePeriod> {
    let run = Duration::from_secs(u64::from(VOTING_INTERVAL_SECS) * 24);
    let current = TimePeriod::new(run, SystemTime::now(), run / 2).unwrap();
    vec![current.prev().unwrap(), current, current.next().unwrap()]
}

/// Intro point keys of a descriptor, decrypted with `identity`.
fn intro_keys(text: &str, identity: &HsIdKey) -> Option<BTreeSet<[u8; 32]>> {
    let text = if text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    };
    let descriptor =
        validate_instance_descriptor(&text, identity, &periods_now(), SystemTime::now(), 50_000)
            .ok()?;
    Some(
        descriptor
            .intro_points
            .iter()
            .map(|ip| ip.ipt_sid_key().to_bytes())
            .collect(),
    )
}

async fn control_of(net: &Testnet, name: &str) -> ControlClient {
    let node = net.layout().node(name).unwrap();
    ControlClient::connect_authenticated(
        &node.control_addr(),
        &Credentials::CookieFile(node.cookie_path()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_hsdir_gets_its_own_descriptor_and_every_instance_answers() {
    let (key, pem) = MasterKey::generate(&mut rand::rng()).unwrap();
    let master = key.address();
    let mut config = testnet_config("distinct-test");
    config.instances = INSTANCES;
    config.masters = vec![master];
    // With 36 intro points on 9 relays, a client's one guard rules out
    // every intro point on it, and can leave an instance unreachable for
    // that client alone; without guards, each circuit may use any.
    config.client_guards = false;
    config.bootstrap_timeout = Duration::from_secs(300);
    config.reachable_timeout = Duration::from_secs(300);
    let net = Testnet::start(config).await.unwrap();
    let control_port = manager_port(&net);
    // Instances take new intro points for each new descriptor, and a
    // testing network's time periods last 8 minutes: fetch often, so the
    // master descriptors follow (pushed updates are issue 6's agent).
    let manager = Manager::start(
        &tmp_dir("distinct-test-onionlb"),
        &net,
        &pem,
        control_port,
        "fetch-interval: 10\n",
    );
    let url = format!("http://{master}/");

    // Wait for the manager to publish, then ask every HSDir for the master
    // descriptor it holds.
    // (It may first publish with fewer instances, as their descriptors
    // arrive.)
    let all_in = "6 distinct, 120 intro point slots from 12 instance(s)";
    let deadline = Instant::now() + Duration::from_secs(240);
    while manager.log().matches(all_in).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "never published for all instances:\n{}",
            manager.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let client = control_of(&net, "client").await;
    let mut events = client.take_events().unwrap();
    client
        .request(&Command::setevents(["HS_DESC_CONTENT"]))
        .await
        .unwrap();
    let relays: Vec<String> = net
        .layout()
        .nodes
        .iter()
        .filter(|n| matches!(n.role, Role::Authority | Role::Relay))
        .map(|n| {
            let text = std::fs::read_to_string(n.data_dir.join("fingerprint")).unwrap();
            text.split_whitespace().nth(1).unwrap().to_owned()
        })
        .collect();
    // The descriptors clients fetch now: each instance's (from one HSDir)
    // and the master's from every HSDir.
    let names: Vec<String> = net.layout().instances().map(|n| n.name.clone()).collect();
    let identities: BTreeMap<String, (String, HsIdKey)> = names
        .iter()
        .zip(net.instance_addresses())
        .map(|(name, address)| {
            let identity = HsIdKey::try_from(address.hs_id()).unwrap();
            (address.without_suffix(), (name.clone(), identity))
        })
        .collect();
    for address in identities.keys() {
        client
            .request(&Command::new("HSFETCH").arg(address.clone()))
            .await
            .unwrap();
    }
    let fetch = Command::new("HSFETCH")
        .arg(master.without_suffix())
        .args(relays.iter().map(|fp| format!("SERVER=${fp}")));
    client.request(&fetch).await.unwrap();
    let master_identity = HsIdKey::from(key.keypair());
    let mut owner: BTreeMap<[u8; 32], String> = BTreeMap::new();
    let mut held: BTreeMap<String, BTreeSet<[u8; 32]>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (owner.len() < INSTANCES * 3 || held.len() < 6) && Instant::now() < deadline {
        let Ok(Some(reply)) = tokio::time::timeout(Duration::from_secs(5), events.recv()).await
        else {
            continue;
        };
        let Event::HsDescContent(content) = Event::parse(&reply) else {
            continue;
        };
        if let Some((name, identity)) = identities.get(&content.address) {
            for key in intro_keys(&content.descriptor, identity).unwrap_or_default() {
                owner.insert(key, name.clone());
            }
        } else if let (Some(hsdir), Some(keys)) = (
            content.hsdir,
            intro_keys(&content.descriptor, &master_identity),
        ) {
            held.insert(hsdir, keys);
        }
    }
    assert_eq!(
        owner.len(),
        INSTANCES * 3,
        "not every instance's descriptor was fetched"
    );
    // Every HSDir holding a descriptor holds 20 intro points, and not all
    // hold the same ones.
    assert!(
        held.len() >= 6,
        "only {} HSDirs hold a master descriptor",
        held.len()
    );
    assert!(held.values().all(|keys| keys.len() == 20), "{held:?}");
    let distinct: BTreeSet<_> = held.values().collect();
    assert!(distinct.len() >= 2, "every HSDir holds the same descriptor");
    let present: BTreeSet<&String> = held
        .values()
        .flatten()
        .filter_map(|k| owner.get(k))
        .collect();
    assert_eq!(
        present.len(),
        INSTANCES,
        "instances missing from every descriptor"
    );

    // Which instances each HSDir's descriptor carries, for the failure
    // message below.
    let carried: BTreeMap<&String, Vec<&String>> = held
        .iter()
        .map(|(hsdir, keys)| (hsdir, keys.iter().filter_map(|k| owner.get(k)).collect()))
        .collect();

    // Every instance answers through the master address.
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while served.len() < INSTANCES {
        assert!(
            Instant::now() < deadline,
            "not every instance answered: {served:?}\nHSDirs held: {carried:#?}"
        );
        if let Ok(response) = net.fetch(&url).await {
            if let Some(who) = served_by(&response.body) {
                *served.entry(who.to_owned()).or_default() += 1;
            }
        }
        if served.values().sum::<usize>() % 20 == 19 {
            // Fetch the master descriptor again, likely from another HSDir.
            net.newnym().await.unwrap();
        }
    }

    manager.stop();
    net.stop();
}
