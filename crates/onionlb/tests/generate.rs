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

#[test]
fn onionbalance_config_flags_work_and_what_cannot_be_honoured_is_refused() {
    let dir = fresh("generate-onionbalance-flags");
    let key = dir.join("old.key");
    std::fs::create_dir_all(&dir).unwrap();
    let (master, _) = MasterKey::generate(&mut rand::rng()).unwrap();
    std::fs::write(&key, master.encode(KeyFormat::Tor).unwrap()).unwrap();
    let out = dir.join("config");
    let args = [
        "config",
        "--hs-version",
        "v3",
        "--key",
        key.to_str().unwrap(),
        "-n",
        "2",
        "-t",
        "node",
        "--output",
        out.to_str().unwrap(),
        "--no-interactive",
        "-v",
        "info",
        "--service-virtual-port",
        "443",
        "--service-target",
        "127.0.0.1:8443",
    ];
    let written = onionlb(&args, "");
    assert!(written.status.success(), "{}", text(&written));
    let config = onionlb(
        &["--check", "-c", out.join("config.yaml").to_str().unwrap()],
        "",
    );
    let said = text(&config);
    assert!(config.status.success(), "{said}");
    assert!(said.contains(&master.address().to_string()), "{said}");
    assert!(said.contains("node1") && said.contains("node2"), "{said}");
    let torrc = std::fs::read_to_string(out.join("instances/node1/torrc")).unwrap();
    assert!(
        torrc.contains("HiddenServicePort 443 127.0.0.1:8443\n"),
        "{torrc}"
    );

    // A password or several services at once: refused before anything is
    // written, saying what to do instead (and never echoing the password).
    for (extra, hint) in [
        (["-p", "hunter2"], "file mode"),
        (["-s", "3"], "--add-service"),
    ] {
        let elsewhere = dir.join(format!("refused{}", extra[0]));
        let mut refused_args = vec![
            "config",
            "--no-interactive",
            "--output",
            elsewhere.to_str().unwrap(),
        ];
        refused_args.extend(extra);
        let refused = onionlb(&refused_args, "");
        let said = text(&refused);
        assert_eq!(refused.status.code(), Some(1), "{said}");
        assert!(said.contains(hint), "{said}");
        assert!(!said.contains("hunter2"), "{said}");
        assert!(!elsewhere.exists());
    }
}

#[test]
fn services_and_instances_are_added_in_place_and_duplicates_refused() {
    let dir = fresh("generate-add");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    let commented = "# Our balanced services.\n# services:\n#   (added by onionlb config)\n";
    std::fs::write(&config, commented).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (instance, _) = MasterKey::generate(&mut rand::rng()).unwrap();
    let instance = instance.address().to_string();
    let config_arg = config.to_str().unwrap();
    let add = |extra: &[&str]| {
        let mut args = vec![
            "config",
            "--no-interactive",
            "--add-service",
            "-c",
            config_arg,
        ];
        args.extend(extra);
        onionlb(&args, "")
    };

    let first = add(&["--instance", &instance]);
    assert!(first.status.success(), "{}", text(&first));
    let second = add(&["--new-instances", "1"]);
    assert!(second.status.success(), "{}", text(&second));
    let yaml = std::fs::read_to_string(&config).unwrap();
    assert!(yaml.starts_with(commented), "{yaml}");
    assert_eq!(mode(&config), 0o640);
    let checked = onionlb(&["--check", "-c", config_arg], "");
    let said = text(&checked);
    assert!(checked.status.success(), "{said}");
    // Two services; the second's new instance is named after the first's.
    assert!(
        said.contains("instance1") && said.contains("instance2"),
        "{said}"
    );
    assert!(dir
        .join("instances/instance2/hidden_service/hostname")
        .exists());

    // The same master again is refused, the file unchanged.
    let master = |output: &Output| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Master address: ").map(str::to_owned))
            .unwrap()
    };
    let first_master = master(&first);
    let key = dir.join(format!("{}.key", first_master.trim_end_matches(".onion")));
    let again = add(&[
        "--import-key",
        key.to_str().unwrap(),
        "--instance",
        &instance,
        "--force",
    ]);
    let said = text(&again);
    assert!(!again.status.success(), "{said}");
    assert!(said.contains("already configured"), "{said}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), yaml);

    // An instance joins the second service; the same one again is refused.
    let second_master = master(&second);
    let add_instance = || {
        onionlb(
            &[
                "config",
                "--add-instance",
                &second_master,
                &instance,
                "-c",
                config_arg,
            ],
            "",
        )
    };
    let added = add_instance();
    assert!(added.status.success(), "{}", text(&added));
    assert!(text(&added).contains(&format!("MasterOnionAddress {second_master}")));
    let twice = add_instance();
    assert!(!twice.status.success());
    assert!(
        text(&twice).contains("already an instance"),
        "{}",
        text(&twice)
    );
    let checked = onionlb(&["--check", "-c", config_arg], "");
    let said = text(&checked);
    assert!(checked.status.success(), "{said}");
    assert_eq!(said.matches(instance.as_str()).count(), 2, "{said}");
}
