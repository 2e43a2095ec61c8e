//! When a tor fails, `Testnet::start` names it, shows what it said, and
//! leaves nothing running. Fake `tor` and `tor-gencert` scripts make the
//! failure certain and fast.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use testnet::keys::Programs;
use testnet::process::StopOutcome;
use testnet::{Config, Error, Testnet};

/// Answers `--version` and `--list-fingerprint` like tor; run as a tor, it
/// prints an error and exits.
const FAKE_TOR: &str = r#"#!/bin/sh
case "$*" in
  *--version*) echo "Tor version 0.0.0-fake."; exit 0 ;;
  *--list-fingerprint*)
    datadir=$(sed -n 's/^DataDirectory //p' "$4")
    echo "relay 0123456789ABCDEF0123456789ABCDEF01234567" > "$datadir/fingerprint"
    exit 0 ;;
esac
echo "[err] simulated failure: this tor will not start"
exit 1
"#;

/// Writes the certificate `tor-gencert -c FILE` would write.
const FAKE_GENCERT: &str = r#"#!/bin/sh
read -r passphrase
while [ $# -gt 0 ]; do
  if [ "$1" = "-c" ]; then echo "fingerprint 89ABCDEF0123456789ABCDEF0123456789ABCDEF" > "$2"; fi
  shift
done
exit 0
"#;

/// Held by each test for its whole run. Writing a script and running it
/// while another test's thread forks would race: the child inherits the
/// still-open write descriptor for an instant, and exec then fails with
/// "Text file busy" (ETXTBSY).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Every process whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    mentioning(needle)
        .into_iter()
        .map(|(_, _, cmdline)| cmdline)
        .collect()
}

/// The processes mentioning `needle` whose parent does not: a shell that
/// has just forked to run `sleep` has a child with its own command line for
/// an instant, which is not another app.
fn apps_mentioning(needle: &str) -> usize {
    let found = mentioning(needle);
    found
        .iter()
        .filter(|(_, parent, _)| !found.iter().any(|(pid, _, _)| pid == parent))
        .count()
}

/// (pid, parent pid, command line) of every process whose command line
/// mentions `needle`.
fn mentioning(needle: &str) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains(needle) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let parent = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        found.push((
            entry.file_name().to_string_lossy().into_owned(),
            parent,
            cmdline,
        ));
    }
    found
}

/// A network whose tors all fail at once, in `target/tmp/<name>`, whose
/// apps carry `marker` on their command line.
fn failing_config(name: &str, marker: &str) -> Config {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&root).unwrap();
    let app = vec![
        "sh".into(),
        "-c".into(),
        "while true; do sleep 1; done".into(),
        marker.into(),
    ];
    let mut config = Config::new(root.join("net"), app);
    config.programs = Programs {
        tor: script(&root, "tor", FAKE_TOR),
        tor_gencert: script(&root, "tor-gencert", FAKE_GENCERT),
    };
    config.relays = 1;
    config.instances = 2;
    config.bootstrap_timeout = Duration::from_secs(20);
    config
}

#[tokio::test]
async fn failing_tor_is_named_with_its_output_and_everything_stops() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let marker = format!("fake-app-stop-{}", std::process::id());
    let config = failing_config("failure-test", &marker);
    let dir = config.dir.clone();

    let error = Testnet::start(config).await.unwrap_err();
    match &error {
        Error::Exited { node, log_tail, .. } => {
            assert_eq!(node, "auth0");
            assert!(log_tail.contains("simulated failure"), "{log_tail}");
        }
        other => panic!("expected the first tor to be named as exited, got {other:?}"),
    }
    let shown = error.to_string();
    assert!(shown.starts_with("auth0 exited"), "{shown}");

    // The instance apps were started and are stopped again.
    assert!(dir.join("instance0/app.log").exists());
    assert_eq!(processes_mentioning(&marker), Vec::<String>::new());
    assert_eq!(
        processes_mentioning(&dir.display().to_string()),
        Vec::<String>::new()
    );
    assert!(!dir.join("testnet.json").exists());
}

#[tokio::test]
async fn keep_on_failure_leaves_processes_for_down() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let marker = format!("fake-app-keep-{}", std::process::id());
    let mut config = failing_config("keep-test", &marker);
    config.keep_on_failure = true;
    let dir = config.dir.clone();

    assert!(Testnet::start(config).await.is_err());
    assert_eq!(apps_mentioning(&marker), 2);

    let outcomes = testnet::stop_recorded_network(&dir).unwrap();
    // Every recorded process is accounted for: the apps were still running
    // and are stopped now; the failing tors exit on their own, before or
    // while `down` runs.
    assert_eq!(outcomes.len(), 8 + 2);
    for (record, outcome) in &outcomes {
        if record.name.ends_with("-app") {
            assert_eq!(*outcome, StopOutcome::Stopped, "{record:?}");
        } else {
            assert_ne!(*outcome, StopOutcome::NotOurs, "{record:?}");
        }
    }
    assert_eq!(processes_mentioning(&marker), Vec::<String>::new());
}
