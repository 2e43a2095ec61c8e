//! The systemd units in contrib/ (the manager's, and the agent's template)
//! pass `systemd-analyze verify`, their man pages included, and keep their
//! hardening, where systemd-analyze is available.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

/// The unit files, and the unit each is checked as (an instance of the
/// template).
const UNITS: [(&str, &str); 2] = [
    ("onionlb.service", "onionlb.service"),
    ("onionlb-agent@.service", "onionlb-agent@web1.service"),
];

/// Writes `file` from contrib/systemd into a directory of its own for
/// `check`, running this build, and returns the path to check it as `unit`
/// by and a MANPATH of this build's man pages, which verify looks up.
fn unit_for_this_build(
    check: &str,
    file: &str,
    unit: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let source = format!(
        "{}/../../contrib/systemd/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(source).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/onionlb"));
    // verify wants ExecStart to exist: point it at this build.
    let text = text.replace("/usr/bin/onionlb", env!("CARGO_BIN_EXE_onionlb"));
    let dir = common::tmp_dir(&format!("systemd-{check}-{file}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), text).unwrap();
    let man = dir.join("man");
    let made = Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .arg("man-pages")
        .arg(man.join("man1"))
        .status()
        .unwrap();
    assert!(made.success());
    (dir.join(unit), man)
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
    for (file, name) in UNITS {
        let (unit, man) = unit_for_this_build("verify", file, name);
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .arg(unit)
            .env("MANPATH", man)
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
    for (file, name) in UNITS {
        let (unit, man) = unit_for_this_build("security", file, name);
        let output = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(unit)
            .env("MANPATH", man)
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
