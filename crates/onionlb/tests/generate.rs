//! `onionlb config`: what it writes loads as a configuration, tor accepts
//! the instance lines and keys, and nothing is overwritten unasked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::tmp_dir;
use onionlb_core::{KeyFormat, MasterKey};

fn onionlb(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn fresh(name: &str) -> std::path::PathBuf {
    let dir = tmp_dir(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn generated_config_loads_and_tor_accepts_the_instances() {
    let dir = fresh("generate-flags");
    let out = dir.join("ob");
    let (existing, _) = MasterKey::generate(&mut rand::rng()).unwrap();
    let existing = existing.address().to_string();
    let generated = onionlb(
        &[
            "config",
            "--no-interactive",
            "--output",
            out.to_str().unwrap(),
            "--instance",
            &existing,
            "--new-instances",
            "2",
            "--virtual-port",
            "8080",
            "--target",
            "127.0.0.1:9999",
        ],
        "",
    );
    assert!(generated.status.success(), "{}", text(&generated));
    let said = text(&generated);
    let master = said
        .lines()
        .find_map(|l| l.strip_prefix("Master address: "))
        .unwrap()
        .to_owned();

    // The manager reads it back: the master key and all three instances.
    let check = onionlb(
        &["-c", out.join("config.yaml").to_str().unwrap(), "--check"],
        "",
    );
    assert!(check.status.success(), "{}", text(&check));
    let summary = text(&check);
    assert!(summary.contains(&format!("{master} (Tor key")), "{summary}");
    assert!(summary.contains(&existing), "{summary}");
    assert!(summary.contains("with 3 instance(s)"), "{summary}");

    // Secrets are private, as tor requires of a HiddenServiceDir.
    let key = out.join(format!("{}.key", master.trim_end_matches(".onion")));
    assert_eq!(mode(&key), 0o600);
    for name in ["instance2", "instance3"] {
        let hs = out.join("instances").join(name).join("hidden_service");
        assert_eq!(mode(&hs), 0o700);
        assert_eq!(mode(&hs.join("hs_ed25519_secret_key")), 0o600);
        assert_eq!(
            std::fs::read_to_string(hs.join("ob_config")).unwrap(),
            format!("MasterOnionAddress {master}\n")
        );
    }
    assert!(out.join("instances/instance1/ob_config").exists());
    assert!(!out.join("instances/instance1/hidden_service").exists());

    // tor accepts each new instance's lines, with its HiddenServiceDir
    // and the ob_config in it.
    for name in ["instance2", "instance3"] {
        let lines =
            std::fs::read_to_string(out.join("instances").join(name).join("torrc")).unwrap();
        assert!(
            lines.contains("HiddenServiceOnionbalanceInstance 1"),
            "{lines}"
        );
        let data = dir.join(format!("data-{name}"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let torrc = dir.join(format!("torrc-{name}"));
        std::fs::write(
            &torrc,
            format!(
                "DataDirectory {}\nSocksPort 0\nDisableNetwork 1\n{lines}",
                data.display()
            ),
        )
        .unwrap();
        let verify = Command::new("tor")
            .args(["--verify-config", "-f"])
            .arg(&torrc)
            .output()
            .expect("running tor (scripts/ensure-tor installs it)");
        assert!(
            verify.status.success(),
            "tor refused {name}'s lines:\n{lines}\n{}",
            text(&verify)
        );
        let registered = format!("MasterOnionAddress {master} registered");
        assert!(text(&verify).contains(&registered), "{}", text(&verify));
    }
}

#[test]
fn nothing_is_overwritten_unasked() {
    let out = fresh("generate-overwrite");
    let args = [
        "config",
        "--no-interactive",
        "--output",
        out.to_str().unwrap(),
    ];
    assert!(onionlb(&args, "").status.success());
    let config = std::fs::read(out.join("config.yaml")).unwrap();

    let again = onionlb(&args, "");
    assert!(!again.status.success());
    assert!(
        text(&again).contains("refusing to overwrite"),
        "{}",
        text(&again)
    );
    assert_eq!(std::fs::read(out.join("config.yaml")).unwrap(), config);

    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(onionlb(&forced, "").status.success());
    assert_ne!(std::fs::read(out.join("config.yaml")).unwrap(), config);
}

#[test]
fn interactive_answers_and_an_imported_key() {
    let dir = fresh("generate-interactive");
    let (key, pem) = MasterKey::generate(&mut rand::rng()).unwrap();
    let imported = dir.join("existing.pem");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&imported, &pem).unwrap();
    let out = dir.join("ob");
    // Directory, key to import, format, existing instances, new ones,
    // port, target.
    let answers = format!(
        "{}\n{}\ntor\n\n3\n\n127.0.0.1:8000\n",
        out.display(),
        imported.display()
    );
    let run = onionlb(&["config"], &answers);
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains(&format!("Master address: {}", key.address())));
    let stored = out.join(format!("{}.key", key.address().without_suffix()));
    let stored = MasterKey::from_bytes(&std::fs::read(stored).unwrap()).unwrap();
    assert_eq!(stored.address(), key.address());
    assert_eq!(stored.format(), KeyFormat::Tor);
    for n in 1..=3 {
        let lines =
            std::fs::read_to_string(out.join(format!("instances/instance{n}/torrc"))).unwrap();
        assert!(
            lines.contains("HiddenServicePort 80 127.0.0.1:8000"),
            "{lines}"
        );
    }

    // Input that ends early is an error, not a half-written directory.
    let cut = onionlb(&["config"], &format!("{}\n", dir.join("cut").display()));
    assert!(!cut.status.success());
    assert!(text(&cut).contains("end of input"), "{}", text(&cut));
    assert!(!dir.join("cut").exists());
}
