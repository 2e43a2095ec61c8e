//! `onionlb testnet up|status|env|down` as an operator or script runs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn onionlb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn pid_alive(pid: &str) -> bool {
    std::fs::read(Path::new("/proc").join(pid).join("cmdline"))
        .is_ok_and(|cmdline| !cmdline.is_empty())
}

#[test]
fn up_status_env_down() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-test");
    let dir_arg = dir.to_str().unwrap();

    // Instances start as balancer instances of this master (any valid
    // address will do: nothing publishes it here).
    let master = "aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4bqead.onion";
    let up = onionlb(&[
        "testnet",
        "up",
        "--dir",
        dir_arg,
        "--relays",
        "4",
        "--instances",
        "2",
        "--master",
        master,
    ]);
    assert!(up.status.success(), "{}", text(&up));
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(
        stderr.contains("bootstrapped 100%"),
        "no progress shown: {}",
        text(&up)
    );
    assert!(
        stderr.contains("network up in"),
        "no elapsed time: {}",
        text(&up)
    );

    for instance in ["instance0", "instance1"] {
        let log = std::fs::read_to_string(dir.join(instance).join("notice.log")).unwrap();
        let registered = format!("OnionBalance: MasterOnionAddress {master} registered");
        assert!(
            log.contains(&registered),
            "{instance} did not register the master:\n{log}"
        );
    }

    // A second network cannot start over a running one.
    let again = onionlb(&["testnet", "up", "--dir", dir_arg]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already running"),
        "{}",
        text(&again)
    );

    let env = onionlb(&["testnet", "env", "--dir", dir_arg]);
    assert!(env.status.success(), "{}", text(&env));
    let env = String::from_utf8_lossy(&env.stdout).into_owned();
    for key in [
        "SOCKS",
        "MANAGER_CONTROL",
        "MANAGER_COOKIE",
        "CLIENT_CONTROL",
        "INSTANCE0",
        "INSTANCE1",
    ] {
        assert!(
            env.contains(&format!("export ONIONLB_TESTNET_{key}='")),
            "{key} missing from:\n{env}"
        );
    }
    assert!(env.contains(".onion"));

    let status = onionlb(&["testnet", "status", "--dir", dir_arg]);
    assert!(status.status.success(), "{}", text(&status));
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    let rows: Vec<Vec<&str>> = status
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    // 3 authorities, 4 relays, 2 instances, manager, client; 2 apps.
    assert_eq!(rows.len(), 11 + 2, "{status}");
    assert!(rows.iter().all(|row| row[2] == "running"), "{status}");
    let client = rows.iter().find(|row| row[0] == "client").unwrap();
    assert_eq!(client[3], "100%", "{status}");
    let pids: Vec<String> = rows.iter().map(|row| row[1].to_owned()).collect();
    assert!(pids.iter().all(|pid| pid_alive(pid)));

    let down = onionlb(&["testnet", "down", "--dir", dir_arg]);
    assert!(down.status.success(), "{}", text(&down));
    let down = String::from_utf8_lossy(&down.stdout).into_owned();
    assert_eq!(
        down.lines().filter(|l| l.ends_with(" stopped")).count(),
        13,
        "{down}"
    );
    for pid in &pids {
        assert!(!pid_alive(pid), "pid {pid} still runs after down");
    }
    assert!(!dir.join("testnet.json").exists());

    // Without a network, the commands say so instead of guessing.
    let status = onionlb(&["testnet", "status", "--dir", dir_arg]);
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("no usable testnet state"));
}
