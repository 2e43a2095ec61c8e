//! More intro points than one descriptor holds: with 12 instances (36
//! intro points on 9 relays), each fetchable HSDir gets its own descriptor,
//! none with two intro points on one relay, and every instance serves
//! clients through the master address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{intro_points, manager_port, relay_fingerprints, testnet_config, tmp_dir, Manager};
use onionlb_core::MasterKey;
use testnet::app::served_by;
use testnet::Testnet;
use tor_hscrypto::pk::HsIdKey;
use torctl::{Command, ControlClient, Event};

const INSTANCES: usize = 12;

type Keys = BTreeMap<[u8; 32], Option<[u8; 20]>>;

/// Asks the client for every instance's descriptor and, from every relay,
/// the master's: which instance owns each intro point key, and which keys
/// each HSDir's master descriptor holds.
async fn snapshot(
    client: &ControlClient,
    events: &mut torctl::Events,
    identities: &BTreeMap<String, (String, HsIdKey)>,
    master_identity: &HsIdKey,
    relays: &[String],
) -> (BTreeMap<[u8; 32], String>, BTreeMap<String, Keys>) {
    while events.try_recv().is_some() {}
    for address in identities.keys() {
        client
            .request(&Command::new("HSFETCH").arg(address.clone()))
            .await
            .unwrap();
    }
    let master = onionlb_core::OnionAddress::from(master_identity.id());
    let fetch = Command::new("HSFETCH")
        .arg(master.without_suffix())
        .args(relays.iter().map(|fp| format!("SERVER=${fp}")));
    client.request(&fetch).await.unwrap();
    let mut owner: BTreeMap<[u8; 32], String> = BTreeMap::new();
    let mut held: BTreeMap<String, Keys> = BTreeMap::new();
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
            for key in intro_points(&content.descriptor, identity)
                .unwrap_or_default()
                .into_keys()
            {
                owner.insert(key, name.clone());
            }
        } else if let (Some(hsdir), Some(points)) = (
            content.hsdir,
            intro_points(&content.descriptor, master_identity),
        ) {
            held.insert(hsdir, points);
        }
    }
    (owner, held)
}

/// The intro points of each instance tor's own current descriptor, by
/// owner. Just after a period starts, clients (and this test's snapshot)
/// fetch the new period's instance descriptors while the master
/// descriptor still carries those the manager fetched before; the
/// instances' tors still hold those as their current ones.
async fn own_intro_points(
    net: &Testnet,
    identities: &BTreeMap<String, (String, HsIdKey)>,
) -> BTreeMap<[u8; 32], String> {
    let mut owner = BTreeMap::new();
    for (address, (name, identity)) in identities {
        let control = control_of(net, name).await;
        let Ok(text) = control
            .getinfo(&format!("hs/service/desc/id/{address}"))
            .await
        else {
            continue;
        };
        for key in intro_points(&text, identity)
            .unwrap_or_default()
            .into_keys()
        {
            owner.insert(key, name.clone());
        }
    }
    owner
}

/// Each HSDir's descriptor as the instances its intro points belong to
/// (`?` for keys no instance descriptor has).
fn carried(
    owner: &BTreeMap<[u8; 32], String>,
    held: &BTreeMap<String, Keys>,
) -> BTreeMap<String, Vec<String>> {
    held.iter()
        .map(|(hsdir, keys)| {
            let mut names: Vec<String> = keys
                .keys()
                .map(|k| owner.get(k).cloned().unwrap_or_else(|| "?".into()))
                .collect();
            names.sort();
            (hsdir[..8].to_owned(), names)
        })
        .collect()
}

async fn control_of(net: &Testnet, name: &str) -> ControlClient {
    common::control_of(net.layout().node(name).unwrap()).await
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
    manager.wait_for_status(Duration::from_secs(240), |s| {
        let service = &s["services"][0];
        common::both_descriptors_carry(service, 12)
            && service["descriptors"]
                .as_array()
                .is_some_and(|d| d.iter().all(|d| d["distinct"] == 6))
    });

    let client = control_of(&net, "client").await;
    let mut events = client.take_events().unwrap();
    client
        .request(&Command::setevents(["HS_DESC_CONTENT"]))
        .await
        .unwrap();
    let relays = relay_fingerprints(&net);
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
    let master_identity = HsIdKey::from(key.keypair());
    let (mut owner, held) =
        snapshot(&client, &mut events, &identities, &master_identity, &relays).await;
    assert_eq!(
        owner.len(),
        INSTANCES * 3,
        "not every instance's descriptor was fetched"
    );
    owner.extend(own_intro_points(&net, &identities).await);
    eprintln!("HSDirs hold: {:#?}", carried(&owner, &held));
    // At least the six fetchable HSDirs hold a descriptor; each carries at
    // most one intro point per relay (C tor clients use only the first on
    // each), they are not all the same, and together they carry every
    // instance.
    assert!(
        held.len() >= 6,
        "only {} HSDirs hold a master descriptor",
        held.len()
    );
    for (hsdir, points) in &held {
        let relays: Vec<_> = points.values().flatten().collect();
        let distinct_relays: BTreeSet<_> = relays.iter().collect();
        assert!(!relays.is_empty(), "{hsdir} holds no intro points");
        assert_eq!(
            relays.len(),
            distinct_relays.len(),
            "{hsdir}: two intro points on one relay"
        );
    }
    let distinct: BTreeSet<Vec<&[u8; 32]>> = held.values().map(|p| p.keys().collect()).collect();
    assert!(distinct.len() >= 2, "every HSDir holds the same descriptor");
    let present: BTreeSet<&String> = held
        .values()
        .flat_map(|p| p.keys())
        .filter_map(|k| owner.get(k))
        .collect();
    assert_eq!(
        present.len(),
        INSTANCES,
        "instances missing from every descriptor: {:#?}",
        carried(&owner, &held)
    );

    // Every instance answers through the master address.
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while served.len() < INSTANCES {
        if Instant::now() >= deadline {
            // What the HSDirs hold now, for the diagnosis.
            let (owner, held) =
                snapshot(&client, &mut events, &identities, &master_identity, &relays).await;
            panic!(
                "not every instance answered: {served:?}\nHSDirs hold now: {:#?}",
                carried(&owner, &held)
            );
        }
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

    eprintln!("answers: {served:?}");
    let (owner, held) =
        snapshot(&client, &mut events, &identities, &master_identity, &relays).await;
    eprintln!("HSDirs hold at the end: {:#?}", carried(&owner, &held));

    manager.stop();
    net.stop();
}
