//! The private network, driven through the `testnet` library as later
//! integration tests drive it: real tor processes, a real client fetching
//! pages over onion addresses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fetch_until_served, testnet_config};

use std::path::Path;
use std::time::Duration;

use testnet::app::served_by;
use testnet::process::ProcessRecord;
use testnet::Testnet;
use torctl::{ControlClient, Credentials};

fn alive(record: &ProcessRecord) -> bool {
    Path::new("/proc")
        .join(record.pid.to_string())
        .join("cmdline")
        .exists()
        && !std::fs::read(
            Path::new("/proc")
                .join(record.pid.to_string())
                .join("cmdline"),
        )
        .unwrap_or_default()
        .is_empty()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_reaches_every_instance_over_its_onion_address() {
    let mut net = Testnet::start(testnet_config("network-test"))
        .await
        .unwrap();
    let instances: Vec<_> = net.layout().instances().map(|n| n.name.clone()).collect();
    let addresses = net.instance_addresses().to_vec();
    assert_eq!(instances.len(), 3);
    assert_eq!(addresses.len(), 3);

    // Each instance answers with its own name, on a fresh circuit each time.
    for (name, address) in instances.iter().zip(&addresses) {
        for _ in 0..2 {
            let response = net.fetch(&format!("http://{address}/")).await.unwrap();
            assert_eq!(response.status, 200);
            assert_eq!(served_by(&response.body), Some(name.as_str()));
        }
    }

    // The management tor is there for a balancer: its cookie opens it and
    // its consensus is loaded.
    let manager = net.manager_control();
    let control = ControlClient::connect_authenticated(
        &manager.addr,
        &Credentials::CookieFile(manager.cookie),
    )
    .await
    .unwrap();
    let phase = control.getinfo("status/bootstrap-phase").await.unwrap();
    assert!(phase.contains("PROGRESS=100"), "{phase}");

    // Stopping an instance's app (its tor stays up) makes fetches fail;
    // starting it again brings the instance back.
    let url0 = format!("http://{}/", addresses[0]);
    net.stop_app(0).unwrap();
    assert!(net.fetch(&url0).await.is_err());
    net.start_app(0).unwrap();
    fetch_until_served(&net, &url0, Some(&instances[0]), Duration::from_secs(60)).await;

    // Stopping an instance's tor kills exactly that process; starting it
    // again (same keys, same address) makes it reachable again.
    let before = net.state();
    let tor1 = before
        .processes
        .iter()
        .find(|p| p.name == instances[1])
        .unwrap()
        .clone();
    net.stop_instance(1).unwrap();
    assert!(!alive(&tor1));
    let after = net.state();
    assert_eq!(after.processes.len(), before.processes.len() - 1);
    assert!(after.processes.iter().all(alive));
    net.start_instance(1, Duration::from_secs(120))
        .await
        .unwrap();
    let url1 = format!("http://{}/", addresses[1]);
    fetch_until_served(&net, &url1, Some(&instances[1]), Duration::from_secs(180)).await;

    // Stopping the network stops every process it started.
    let all = net.state().processes;
    assert_eq!(all.len(), 14 + 3);
    net.stop();
    for record in &all {
        assert!(
            !alive(record),
            "{} (pid {}) still runs",
            record.name,
            record.pid
        );
    }
}
