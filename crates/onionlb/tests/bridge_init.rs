//! `onionlb bridge init` without a network: a fleet migrated from a single
//! bridge (its keys and obfs4 state) whose files real tor, obfs4proxy and
//! HAProxy accept, written again without change, refusing to replace what
//! differs unless forced, and never making a secret anew.
//!
//! The fleet running on the private network is in `bridge.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{free_port, tmp_dir};

/// A process this test started; killed by its PID when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn onionlb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn init(prefix: &Path, public: u16, extra: &[&str]) -> Output {
    let public = format!("127.0.0.1:{public}");
    let mut args = vec![
        "bridge",
        "init",
        "--instances",
        "2",
        "--nickname",
        "fleet",
        "--no-publish",
        "--public",
        &public,
        "--prefix",
        prefix.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    onionlb(&args)
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// The `Bridge obfs4 ADDR FINGERPRINT cert=... iat-mode=0` line printed.
fn bridge_line(output: &Output) -> Vec<String> {
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find(|line| line.starts_with("Bridge obfs4 "))
        .unwrap_or_else(|| panic!("no bridge line in:\n{text}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Starts obfs4proxy with `env` and returns it with the `cert=` of the
/// SMETHOD line it prints (within 30 s).
fn obfs4proxy(env: &[(String, String)]) -> (Started, String) {
    let mut child = Command::new("obfs4proxy")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("obfs4proxy runs (scripts/ensure-tor installs it)");
    let stdout = child.stdout.take().unwrap();
    let started = Started(child);
    let (lines, said) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = said
            .recv_timeout(Duration::from_secs(30))
            .expect("obfs4proxy printed no SMETHOD line within 30 s");
        if let Some(args) = line
            .strip_prefix("SMETHOD obfs4 ")
            .and_then(|rest| rest.split_once("ARGS:"))
        {
            let cert = args
                .1
                .split(',')
                .find_map(|a| a.strip_prefix("cert="))
                .unwrap()
                .to_owned();
            return (started, cert);
        }
        assert!(!line.contains("ERROR"), "obfs4proxy: {line}");
    }
}

/// The `Environment=` lines of a unit.
fn unit_environment(unit: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(unit)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("Environment="))
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// tor's own check of a torrc.
fn tor_accepts(torrc: &Path, dir: &Path) {
    let empty = dir.join("empty-defaults");
    let checked = Command::new("tor")
        .arg("--verify-config")
        .arg("--defaults-torrc")
        .arg(&empty)
        .arg("-f")
        .arg(torrc)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "tor refuses {}: {}",
        torrc.display(),
        String::from_utf8_lossy(&checked.stdout)
    );
}

#[test]
fn a_single_bridge_becomes_a_fleet_that_tor_obfs4proxy_and_haproxy_accept() {
    let dir = tmp_dir("bridge-init");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // The single bridge being migrated: its keys (made by tor) and its
    // obfs4 state (made by obfs4proxy), with the cert its users have.
    let old = dir.join("old");
    let empty = dir.join("empty-defaults");
    std::fs::write(&empty, "").unwrap();
    let listed = Command::new("tor")
        .arg("--list-fingerprint")
        .arg("--defaults-torrc")
        .arg(&empty)
        .arg("--DataDirectory")
        .arg(&old)
        .args(["--ORPort", "127.0.0.1:auto", "--BridgeRelay", "1"])
        .args(["--Nickname", "old", "--Log", "err stderr"])
        .args(["-f", "/nonexistent", "--allow-missing-torrc"])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let fingerprint = std::fs::read_to_string(old.join("fingerprint"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let pt_state = old.join("pt_state");
    std::fs::create_dir_all(&pt_state).unwrap();
    let env = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    let (old_pt, old_cert) = obfs4proxy(&env(&[
        ("TOR_PT_MANAGED_TRANSPORT_VER", "1".into()),
        ("TOR_PT_SERVER_TRANSPORTS", "obfs4".into()),
        ("TOR_PT_SERVER_BINDADDR", "obfs4-127.0.0.1:0".into()),
        ("TOR_PT_ORPORT", "127.0.0.1:1".into()),
        ("TOR_PT_STATE_LOCATION", pt_state.display().to_string()),
    ]));
    drop(old_pt);
    let old_state = pt_state.join("obfs4_state.json");

    // The fleet, from the old bridge's keys and state.
    let prefix = dir.join("fleet");
    let public = free_port();
    let given = [
        "--keys-from",
        old.to_str().unwrap(),
        "--obfs4-state",
        old_state.to_str().unwrap(),
    ];
    let dry = init(&prefix, public, &[&given[..], &["--dry-run"]].concat());
    assert!(dry.status.success(), "{dry:?}");
    assert!(!prefix.exists(), "--dry-run wrote something");
    let made = init(&prefix, public, &given);
    assert!(made.status.success(), "{made:?}");
    let line = bridge_line(&made);
    assert_eq!(line[2], format!("127.0.0.1:{public}"));
    assert_eq!(line[3], fingerprint, "the old bridge's fingerprint");
    assert_eq!(line[4], format!("cert={old_cert}"), "the old bridge's cert");

    let instance = |name: &str| prefix.join("var/lib/tor-instances").join(name);
    for name in ["fleet1", "fleet2"] {
        for key in [
            "secret_id_key",
            "ed25519_master_id_secret_key",
            "ed25519_master_id_public_key",
            "secret_onion_key",
            "secret_onion_key_ntor",
        ] {
            let path = instance(name).join("keys").join(key);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                std::fs::read(old.join("keys").join(key)).unwrap(),
                "{name}'s {key}"
            );
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        tor_accepts(
            &prefix.join("etc/tor/instances").join(name).join("torrc"),
            &dir,
        );
    }
    let checked = onionlb(&[
        "bridge",
        "keys",
        "check",
        instance("fleet1").to_str().unwrap(),
        instance("fleet2").to_str().unwrap(),
    ]);
    assert!(checked.status.success(), "{checked:?}");

    // obfs4proxy run as the generated unit runs it serves the old cert:
    // the users' bridge line still works.
    let pt_unit = prefix.join("etc/systemd/system/onionlb-bridge-pt.service");
    let (_pt, cert) = obfs4proxy(&unit_environment(&pt_unit));
    assert_eq!(cert, old_cert);

    // Run again, with or without the secrets given: nothing changes.
    let before = snapshot(&prefix);
    let again = init(&prefix, public, &given);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(snapshot(&prefix), before, "a second run changed files");
    let kept = init(&prefix, public, &[]);
    assert!(kept.status.success(), "{kept:?}");
    assert_eq!(
        snapshot(&prefix),
        before,
        "the fleet's own secrets were not kept"
    );
    assert_eq!(bridge_line(&kept), line);

    // Another answer: refused without --force (nothing touched), then
    // replaced with it; the secrets stay.
    let refused = init(&prefix, public + 1, &[]);
    assert!(!refused.status.success(), "replaced without asking");
    assert_eq!(snapshot(&prefix), before);
    let forced = init(&prefix, public + 1, &["--force"]);
    assert!(forced.status.success(), "{forced:?}");
    let after = snapshot(&prefix);
    assert_ne!(after[&pt_unit], before[&pt_unit]);
    for secret in [
        "etc/onionlb/bridge/static_cookie",
        "var/lib/onionlb-bridge-pt/obfs4_state.json",
        "var/lib/tor-instances/fleet2/keys/secret_onion_key_ntor",
    ] {
        let path = prefix.join(secret);
        assert_eq!(after[&path], before[&path], "{secret} changed");
    }

    // A tor whose onion key differs from the first's (rotated on its
    // own) is not papered over: init refuses and writes nothing, until
    // the keys to share are given.
    let ntor = instance("fleet2").join("keys/secret_onion_key_ntor");
    let mut other = std::fs::read(&ntor).unwrap();
    other[40] ^= 1;
    std::fs::write(&ntor, &other).unwrap();
    let before = snapshot(&prefix);
    let refused = init(&prefix, public + 1, &[]);
    assert!(!refused.status.success(), "divergent keys kept");
    let dry = init(&prefix, public + 1, &["--dry-run"]);
    assert!(
        !dry.status.success(),
        "--dry-run accepts what a run refuses"
    );
    assert_eq!(snapshot(&prefix), before);
    let fixed = init(
        &prefix,
        public + 1,
        &["--keys-from", old.to_str().unwrap(), "--force"],
    );
    assert!(fixed.status.success(), "{fixed:?}");
    assert_eq!(
        std::fs::read(&ntor).unwrap(),
        std::fs::read(old.join("keys/secret_onion_key_ntor")).unwrap()
    );
    for (flag, value) in [
        ("--extor-listen", "203.0.113.5:10000"),
        ("--metrics-listen", "0.0.0.0:9300"),
        ("--extor-port", "0"),
    ] {
        let refused = init(&prefix, public + 1, &[flag, value]);
        assert!(!refused.status.success(), "{flag} {value} accepted");
    }
    assert_eq!(snapshot(&prefix).len(), before.len());

    // HAProxy over compatibility shims, with new keys made by tor: HAProxy
    // and tor accept the files, and both tors have the same keys.
    let compat = dir.join("compat");
    let made = init(&compat, free_port(), &["--haproxy"]);
    assert!(made.status.success(), "{made:?}");
    let config = compat.join("etc/onionlb/bridge/haproxy.cfg");
    let checked = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&config)
        .output()
        .expect("haproxy runs (scripts/ensure-tor installs it)");
    assert!(checked.status.success(), "haproxy -c: {checked:?}");
    tor_accepts(&compat.join("etc/tor/instances/fleet2/torrc"), &dir);
    let checked = onionlb(&[
        "bridge",
        "keys",
        "check",
        compat
            .join("var/lib/tor-instances/fleet1")
            .to_str()
            .unwrap(),
        compat
            .join("var/lib/tor-instances/fleet2")
            .to_str()
            .unwrap(),
    ]);
    assert!(checked.status.success(), "{checked:?}");
}

#[test]
fn refuses_a_broken_obfs4_state_and_missing_keys_naming_the_file() {
    let dir = tmp_dir("bridge-init-refusals");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let state = dir.join("obfs4_state.json");
    std::fs::write(&state, "{\"node-id\":\"00\"}").unwrap();
    let prefix = dir.join("fleet");
    for (extra, names) in [
        (["--obfs4-state", state.to_str().unwrap()], &state),
        (
            ["--keys-from", dir.to_str().unwrap()],
            &dir.join("keys/secret_id_key"),
        ),
    ] {
        let refused = init(&prefix, free_port(), &extra);
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success());
        assert!(said.contains(&names.display().to_string()), "{said}");
        assert!(!prefix.exists(), "something was written");
    }
}

#[test]
fn the_units_init_writes_verify_cleanly() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not available here: the units are not checked");
        return;
    }
    for haproxy in [false, true] {
        let dir = tmp_dir(&format!("bridge-init-units-{haproxy}"));
        let _ = std::fs::remove_dir_all(&dir);
        let prefix = dir.join("fleet");
        let extra: &[&str] = if haproxy { &["--haproxy"] } else { &[] };
        let made = init(&prefix, free_port(), extra);
        assert!(made.status.success(), "{made:?}");
        // verify wants ExecStart to exist: point it at this build.
        let units = dir.join("units");
        std::fs::create_dir_all(&units).unwrap();
        let mut names = Vec::new();
        for entry in std::fs::read_dir(prefix.join("etc/systemd/system"))
            .unwrap()
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("/usr/bin/onionlb", env!("CARGO_BIN_EXE_onionlb"));
            let unit = units.join(entry.file_name());
            std::fs::write(&unit, text).unwrap();
            names.push(unit);
        }
        assert_eq!(names.len(), 4, "{names:?}");
        let output = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&names)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{said}");
        assert!(said.trim().is_empty(), "systemd-analyze warned: {said}");
    }
}
