//! Several services in one configuration, each with its own key, over
//! instances that serve both masters at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{
    both_descriptors_carry, fetch_until_served, manager_port, testnet_config, tmp_dir, Manager,
};
use onionlb_core::MasterKey;
use testnet::Testnet;

#[tokio::test(flavor = "multi_thread")]
async fn two_services_share_their_instances() {
    let masters: Vec<(MasterKey, String)> = (0..2)
        .map(|_| MasterKey::generate(&mut rand::rng()).unwrap())
        .collect();
    let mut config = testnet_config("services-test");
    config.instances = 2;
    config.masters = masters.iter().map(|(key, _)| key.address()).collect();
    config.client_guards = false;
    let net = Testnet::start(config).await.unwrap();

    let dir = tmp_dir("services-test-onionlb");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut yaml = String::from("fetch-interval: 15\nservices:\n");
    for (n, (_, pem)) in masters.iter().enumerate() {
        let key = dir.join(format!("master{n}.key"));
        common::write_private(&key, pem.as_bytes());
        yaml.push_str(&format!("- key: master{n}.key\n  instances:\n"));
        for (node, address) in net.layout().instances().zip(net.instance_addresses()) {
            yaml.push_str(&format!(
                "  - address: {address}\n    name: {}\n",
                node.name
            ));
        }
    }
    std::fs::write(dir.join("config.yaml"), yaml).unwrap();
    let manager = Manager::spawn(&dir.join("config.yaml"), manager_port(&net));

    // Each master address reaches each instance.
    for (key, _) in &masters {
        let url = format!("http://{}/", key.address());
        for node in net.layout().instances() {
            fetch_until_served(&net, &url, Some(&node.name), Duration::from_secs(240)).await;
        }
    }
    // And the status says both descriptors of each carry both instances.
    let status = manager.wait_for_status(Duration::from_secs(60), |s| {
        s["services"].as_array().is_some_and(|services| {
            services.len() == masters.len()
                && services
                    .iter()
                    .all(|service| both_descriptors_carry(service, 2))
        })
    });
    for (key, _) in &masters {
        let address = format!("{}", key.address());
        assert!(
            status["services"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["onionAddress"] == address.as_str()),
            "{status}"
        );
    }
    manager.stop();
    net.stop();
}
