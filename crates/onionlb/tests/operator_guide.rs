//! docs/operator-guide.md's steps on the private network, from the
//! package's files: two instance tors make their own keys, `onionlb config
//! --add-service` adds the service to the packaged config.yaml, each
//! instance gets its `ob_config` and `HiddenServiceOnionbalanceInstance 1`
//! and restarts, onionlb runs with the packaged unit's settings, and a
//! client is served through the master address by both instances.
//!
//! Then, on the same network and instances, docs/migrating.md's runbook:
//! a Python Onionbalance config.yaml and PEM key (mode 0640) in an
//! onionbalance directory, copied into onionlb's with the key's mode
//! fixed, checked, and published by onionlb with the packaged settings
//! with both instances, and a client served through it.
//!
//! What the guide does with apt, sudo and systemctl on real machines is
//! done here on files in a test directory: /etc/onionlb is that
//! directory, `systemctl restart tor` stops a tor by its PID and starts
//! it again, and the manager's tor is reached on its TCP control port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{fetch_until_served, manager_port, testnet_config, tmp_dir, Manager};
use testnet::Testnet;

#[tokio::test(flavor = "multi_thread")]
async fn the_guide_and_the_migration_runbook_end_with_clients_served() {
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

    // Step 2: each instance's tor makes its own keys.
    let mut instances = Vec::new();
    for (name, port) in names.iter().zip(&ports) {
        let hs_dir = net.layout().dir.join(name).join("instance");
        let block = format!(
            "HiddenServiceDir {}\nHiddenServicePort 80 127.0.0.1:{port}\n",
            hs_dir.display()
        );
        let control = net
            .start_guest(name, &block, Duration::from_secs(120))
            .await
            .unwrap();
        let hostname = wait_for_file(&hs_dir.join("hostname"), Duration::from_secs(30));
        instances.push((name, hs_dir, control, hostname.trim().to_owned()));
    }

    // Step 3: the service added to the packaged config.yaml.
    let etc = tmp_dir("guide-etc-onionlb");
    let _ = std::fs::remove_dir_all(&etc);
    std::fs::create_dir_all(&etc).unwrap();
    let packaged = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/debian/config.yaml"
    );
    std::fs::copy(packaged, etc.join("config.yaml")).unwrap();
    let mut add = Command::new(env!("CARGO_BIN_EXE_onionlb"));
    add.args(["config", "--no-interactive", "--add-service", "--config"])
        .arg(etc.join("config.yaml"));
    for (_, _, _, address) in &instances {
        add.args(["--instance", address]);
    }
    let added = add.output().unwrap();
    let said = String::from_utf8_lossy(&added.stdout).into_owned();
    assert!(
        added.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let master = said
        .lines()
        .find_map(|l| l.strip_prefix("Master address: "))
        .unwrap()
        .to_owned();
    let checked = Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(["--check", "-c"])
        .arg(etc.join("config.yaml"))
        .output()
        .unwrap();
    assert!(checked.status.success(), "{checked:?}");

    // Step 4: each instance joins: the guide's ob_config line (the one
    // `onionlb config` wrote for it), the torrc line, a restart.
    for (n, (name, hs_dir, control, _)) in instances.iter().enumerate() {
        let line = format!("MasterOnionAddress {master}\n");
        let written = etc.join(format!("instances/instance{}/ob_config", n + 1));
        assert_eq!(std::fs::read_to_string(written).unwrap(), line);
        std::fs::write(hs_dir.join("ob_config"), line).unwrap();
        let torrc = net.layout().dir.join(name).join("torrc");
        let text = std::fs::read_to_string(&torrc).unwrap().replace(
            &format!("HiddenServiceDir {}\n", hs_dir.display()),
            &format!(
                "HiddenServiceDir {}\nHiddenServiceOnionbalanceInstance 1\n",
                hs_dir.display()
            ),
        );
        std::fs::write(&torrc, text).unwrap();
        restart_and_wait(&mut net, name, control, &master).await;
    }

    // Step 5: onionlb as the packaged unit runs it.
    let manager = Manager::spawn_packaged(&etc, manager_port(&net));

    // Step 6: a client reaches both instances through the master address.
    let url = format!("http://{master}/");
    for name in names {
        fetch_until_served(&net, &url, Some(name), Duration::from_secs(240)).await;
    }
    manager.wait_for_status(Duration::from_secs(60), |s| {
        common::both_descriptors_carry(&s["services"][0], 2)
    });
    manager.stop();

    // The migration runbook. The old setup: what onionbalance-config
    // writes, a PEM key beside a config.yaml naming it, group-readable.
    let old = tmp_dir("migration-etc-onionbalance");
    let _ = std::fs::remove_dir_all(&old);
    std::fs::create_dir_all(&old).unwrap();
    let (key, pem) = onionlb_core::MasterKey::generate(&mut rand::rng()).unwrap();
    let old_master = key.address().to_string();
    let key_file = format!("{}.key", old_master.trim_end_matches(".onion"));
    std::fs::write(old.join(&key_file), pem).unwrap();
    set_mode(&old.join(&key_file), 0o640);
    let mut yaml = String::from("services:\n- instances:\n");
    for (n, (_, _, _, address)) in instances.iter().enumerate() {
        yaml.push_str(&format!(
            "  - address: {address}\n    name: node{}\n",
            n + 1
        ));
    }
    yaml.push_str(&format!("  key: {key_file}\n"));
    std::fs::write(old.join("config.yaml"), yaml).unwrap();
    // The instances already serve the old master (a second line in their
    // ob_config).
    for (name, hs_dir, control, _) in &instances {
        let ob_config = hs_dir.join("ob_config");
        let mut text = std::fs::read_to_string(&ob_config).unwrap();
        text.push_str(&format!("MasterOnionAddress {old_master}\n"));
        std::fs::write(&ob_config, text).unwrap();
        restart_and_wait(&mut net, name, control, &old_master).await;
    }

    // Step 2: the copy, then the key's mode; before the chmod, the check
    // refuses the key.
    let new = tmp_dir("migration-etc-onionlb");
    let _ = std::fs::remove_dir_all(&new);
    std::fs::create_dir_all(&new).unwrap();
    for file in ["config.yaml", key_file.as_str()] {
        std::fs::copy(old.join(file), new.join(file)).unwrap();
    }
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_onionlb"))
            .args(["--check", "-c"])
            .arg(new.join("config.yaml"))
            .output()
            .unwrap()
    };
    let refused = check();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    set_mode(&new.join(&key_file), 0o600);
    // Step 3: the check lists the old master address and its instances.
    let checked = check();
    let said = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(checked.status.success(), "{checked:?}");
    assert!(said.contains(&old_master), "{said}");
    for (_, _, _, address) in &instances {
        assert!(said.contains(address.as_str()), "{said}");
    }

    // Step 4: onionlb as packaged publishes both instances for the old
    // master address, and a client is served through it.
    let manager = Manager::spawn_packaged(&new, manager_port(&net));
    manager.wait_for_status(Duration::from_secs(120), |s| {
        common::both_descriptors_carry(&s["services"][0], 2)
    });
    let url = format!("http://{old_master}/");
    fetch_until_served(&net, &url, None, Duration::from_secs(240)).await;
    manager.stop();
    net.stop();
}

/// Restarts the instance tor `name` (as `systemctl restart tor` does) and
/// waits until it has registered `master` from its ob_config. A reload
/// is not enough: C tor (0.4.9) makes an instance's Onionbalance keys only
/// when it builds descriptors, so a service made an instance by a reload
/// drops every introduction ("Non-fatal assertion
/// !(!service->state.ob_subcreds) failed") until its descriptors rotate.
async fn restart_and_wait(
    net: &mut Testnet,
    name: &str,
    control: &testnet::ControlEndpoint,
    master: &str,
) {
    net.restart_guest(name, control, Duration::from_secs(120))
        .await
        .unwrap();
    let log = net.layout().dir.join(name).join("notice.log");
    let registered = format!("OnionBalance: MasterOnionAddress {master} registered");
    wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&registered))
    });
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The file's contents once it exists, within `bound`.
fn wait_for_file(path: &std::path::Path, bound: Duration) -> String {
    let mut text = String::new();
    wait_for(bound, || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        !text.is_empty()
    });
    text
}

/// Polls `done` every 100 ms for at most `bound`.
fn wait_for(bound: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !done() {
        assert!(Instant::now() < deadline, "not within {bound:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
