//! The manager end to end on a private Tor network: real C tor instances,
//! HSDirs and client; onionlb run as an operator runs it, with a Python
//! Onionbalance style config.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{fetch_until_served, testnet_config, tmp_dir};
use onionlb_core::MasterKey;
use testnet::app::served_by;
use testnet::Testnet;

/// onionlb running against the network's management tor.
struct Manager {
    child: Child,
    log: std::path::PathBuf,
}

impl Manager {
    fn start(net: &Testnet, dir: &Path, key_pem: &str) -> Manager {
        std::fs::create_dir_all(dir).unwrap();
        let key = dir.join("master.key");
        let _ = std::fs::remove_file(&key);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .unwrap();
        file.write_all(key_pem.as_bytes()).unwrap();

        let mut yaml = String::from("services:\n- key: master.key\n  instances:\n");
        for (node, address) in net.layout().instances().zip(net.instance_addresses()) {
            yaml.push_str(&format!(
                "  - address: {address}\n    name: {}\n",
                node.name
            ));
        }
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).unwrap();

        let control = net.manager_control().addr.to_string();
        let (_, port) = control.rsplit_once(':').unwrap();
        let log = dir.join("onionlb.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_onionlb"))
            .args(["-v", "debug", "-p", port, "-c"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Manager { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and it must exit cleanly within 10 s.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "onionlb exited with {status}:\n{}",
                    self.log()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!(
            "onionlb did not exit within 10 s of SIGTERM:\n{}",
            self.log()
        );
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_reach_every_instance_through_the_master_and_survive_a_dead_one() {
    let (key, pem) = MasterKey::generate(&mut rand::rng()).unwrap();
    let master = key.address();
    let mut config = testnet_config("manager-test");
    config.masters = vec![master];
    let mut net = Testnet::start(config).await.unwrap();
    let manager = Manager::start(&net, &tmp_dir("manager-test-onionlb"), &pem);
    let url = format!("http://{master}/");

    // The master address becomes reachable once onionlb has published.
    fetch_until_served(&net, &url, None, Duration::from_secs(180)).await;
    let log = manager.log();
    assert!(log.contains("publishing first descriptor"), "{log}");
    assert!(log.contains("publishing second descriptor"), "{log}");
    assert!(log.contains("9 intro points from 3 instance(s)"), "{log}");

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

    manager.stop();
    net.stop();
}
