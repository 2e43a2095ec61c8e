//! The systemd units in contrib/ (manager and agent) pass `systemd-analyze
//! verify` and keep their hardening, where systemd-analyze is available.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

const UNITS: [&str; 2] = ["onionlb.service", "onionlb-agent.service"];

fn unit_for_this_build(name: &str) -> std::path::PathBuf {
    let unit = format!(
        "{}/../../contrib/systemd/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(unit).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/onionlb"));
    // verify wants ExecStart to exist: point it at this build.
    let text = text.replace("/usr/local/bin/onionlb", env!("CARGO_BIN_EXE_onionlb"));
    let dir = common::tmp_dir("systemd-unit");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn systemd_analyze() -> Option<()> {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(output) if output.status.success() => Some(()),
        _ => {
            eprintln!("systemd-analyze is not available here: the unit is not checked");
            None
        }
    }
}

#[test]
fn unit_verifies_cleanly() {
    if systemd_analyze().is_none() {
        return;
    }
    for name in UNITS {
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .arg(unit_for_this_build(name))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{name}: {said}");
        assert!(
            said.trim().is_empty(),
            "systemd-analyze warned about {name}: {said}"
        );
    }
}

#[test]
fn unit_stays_hardened() {
    if systemd_analyze().is_none() {
        return;
    }
    for name in UNITS {
        let output = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(unit_for_this_build(name))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        let exposure: f64 = said
            .lines()
            .find_map(|l| {
                l.split(&format!("Overall exposure level for {name}: "))
                    .nth(1)
            })
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no exposure level in:\n{said}{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        assert!(
            exposure <= 2.0,
            "{name}: exposure {exposure} (0 best, 10 worst):\n{said}"
        );
    }
}
