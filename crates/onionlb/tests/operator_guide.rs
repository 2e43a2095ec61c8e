//! docs/operator-guide.md's steps on the private network: `onionlb config`
//! makes the keys and files, two instance tors run with the generated
//! torrc lines and HiddenServiceDirs as they are, onionlb runs with the
//! generated config.yaml, and a client is served through the master
//! address by both instances.
//!
//! What the guide does with sudo, cp and systemctl on real machines is
//! replaced by using the generated directories in place; every file tor
//! and onionlb read is the generator's, unchanged, except the second
//! instance's app port (both instances share this machine, so their apps
//! cannot both listen on the port the guide gives).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{fetch_until_served, manager_port, testnet_config, tmp_dir, Manager};
use testnet::Testnet;

#[tokio::test(flavor = "multi_thread")]
async fn the_guide_ends_with_a_client_served_through_the_master_address() {
    let mut config = testnet_config("guide-net");
    // The network's own instances play no part; one keeps it small.
    config.instances = 1;
    // Both guide instances must be reachable from the one client; with
    // guards, a few relays make that a matter of luck.
    config.client_guards = false;
    let mut net = Testnet::start(config).await.unwrap();

    // Each backend's application.
    let names = ["guide-instance1", "guide-instance2"];
    let ports: Vec<u16> = names
        .iter()
        .map(|name| net.start_guest_app(name).unwrap())
        .collect();

    // Step 1: keys and configuration.
    let out = tmp_dir("guide-onionlb");
    let _ = std::fs::remove_dir_all(&out);
    let generated = Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(["config", "--no-interactive", "--new-instances", "2"])
        .args(["--virtual-port", "80", "--target"])
        .arg(format!("127.0.0.1:{}", ports[0]))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&generated.stdout).into_owned();
    assert!(generated.status.success(), "{said}");
    let master = said
        .lines()
        .find_map(|l| l.strip_prefix("Master address: "))
        .unwrap()
        .to_owned();

    // Step 2: each instance's tor with its generated torrc lines.
    for (n, name) in names.iter().enumerate() {
        let lines = std::fs::read_to_string(out.join(format!("instances/instance{}/torrc", n + 1)))
            .unwrap()
            .replace(
                &format!("127.0.0.1:{}", ports[0]),
                &format!("127.0.0.1:{}", ports[n]),
            );
        net.start_guest(name, &lines, Duration::from_secs(120))
            .await
            .unwrap();
        let log = std::fs::read_to_string(net.layout().dir.join(name).join("notice.log")).unwrap();
        assert!(
            log.contains(&format!(
                "OnionBalance: MasterOnionAddress {master} registered"
            )),
            "{name} did not take the ob_config:\n{log}"
        );
    }

    // Step 3: onionlb with the generated config.
    let manager = Manager::spawn(&out.join("config.yaml"), manager_port(&net));

    // Step 4: a client reaches both instances through the master address.
    let url = format!("http://{master}/");
    for name in names {
        fetch_until_served(&net, &url, Some(name), Duration::from_secs(240)).await;
    }
    manager.wait_for_status(Duration::from_secs(60), |s| {
        common::both_descriptors_carry(&s["services"][0], 2)
    });
    manager.stop();
    net.stop();
}
