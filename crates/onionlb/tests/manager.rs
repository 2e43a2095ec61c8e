//! The manager end to end on a private Tor network: real C tor instances,
//! HSDirs and client; onionlb run as an operator runs it, with a Python
//! Onionbalance style config, through an instance's death and the
//! management tor's restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{fetch_until_served, manager_port, testnet_config, tmp_dir, Manager};
use onionlb_core::MasterKey;
use testnet::app::served_by;
use testnet::Testnet;

#[tokio::test(flavor = "multi_thread")]
async fn clients_reach_every_instance_through_the_master_and_survive_a_dead_one() {
    let (key, pem) = MasterKey::generate(&mut rand::rng()).unwrap();
    let master = key.address();
    let mut config = testnet_config("manager-test");
    config.masters = vec![master];
    let mut net = Testnet::start(config).await.unwrap();
    let control_port = manager_port(&net);
    let manager = Manager::start(
        &tmp_dir("manager-test-onionlb"),
        &net,
        &pem,
        control_port,
        // Short enough that the instance restarted below is fetched soon.
        "fetch-interval: 15\n",
    );
    let url = format!("http://{master}/");

    // The master address becomes reachable once onionlb has published.
    fetch_until_served(&net, &url, None, Duration::from_secs(180)).await;
    let log = manager.log();
    assert!(log.contains("publishing first descriptor"), "{log}");
    assert!(log.contains("publishing second descriptor"), "{log}");
    assert!(
        log.contains("1 distinct, 9 intro point slots from 3 instance(s)"),
        "{log}"
    );

    // (a) With fresh circuits, every instance answers at least once in 30.
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        let response = net.fetch(&url).await.unwrap();
        let who = served_by(&response.body).unwrap().to_owned();
        *served.entry(who).or_default() += 1;
    }
    let instances: Vec<String> = net.layout().instances().map(|n| n.name.clone()).collect();
    for instance in &instances {
        assert!(
            served.contains_key(instance),
            "{instance} never answered: {served:?}"
        );
    }

    // (b) After one instance is killed, 10 requests in a row succeed, each
    // answered by a live instance.
    net.stop_instance(0).unwrap();
    // Let the relays tear down the dead instance's intro circuits. Until
    // its DESTROY cells arrive, an intro point may still accept an
    // introduction for it and leave that one client waiting for a
    // rendezvous that never comes: a race inside C tor that no balancer
    // can prevent.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for request in 0..10 {
        let response = net
            .fetch(&url)
            .await
            .unwrap_or_else(|e| panic!("request {request} after the kill failed: {e}"));
        let who = served_by(&response.body).unwrap();
        assert_ne!(who, instances[0], "a dead instance answered");
    }

    // The management tor restarts while the dead instance comes back with
    // new intro points: onionlb reconnects, subscribes to its events again,
    // fetches the new descriptor and publishes the new intro points, and
    // clients reach the returned instance through the master address.
    net.stop_manager();
    net.start_instance(0, Duration::from_secs(60))
        .await
        .unwrap();
    net.start_manager(Duration::from_secs(60)).await.unwrap();
    let reconnected = "reconnected to the management tor";
    manager.wait_for_log(
        reconnected,
        "(intro points changed)",
        Duration::from_secs(120),
    );
    manager.wait_for_log(reconnected, "accepted by HSDir", Duration::from_secs(60));
    fetch_until_served(&net, &url, Some(&instances[0]), Duration::from_secs(120)).await;
    let log = manager.log();
    assert!(
        log.contains("lost the control connection to the management tor"),
        "{log}"
    );

    manager.stop();
    net.stop();
}
