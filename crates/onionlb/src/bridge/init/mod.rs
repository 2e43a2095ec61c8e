//! `onionlb bridge init`: the fleet generator.
//!
//! [`layout`] decides every file from the operator's answers and the
//! fleet's secrets; this module finds those secrets (keys given, kept from
//! the first tor, or made by tor itself; the transport's state given, kept
//! or made; the static cookie kept or made), compares the plan with the
//! disk, and writes only what differs: a file that exists with other
//! contents is replaced only when the operator says so (`--force`, or yes
//! on a terminal), and a secret made once is never replaced by another
//! made anew. Run again with the same answers, it changes nothing.

mod layout;
mod obfs4;

use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::Rng as _;
use zeroize::Zeroizing;

use crate::cli::BridgeInitArgs;
use layout::{Existing, Owner, Plan, Request, Secrets, SHARED_KEYS};

/// Largest key file read (tor's RSA keys are under 1 KiB).
const MAX_KEY_FILE: u64 = 16 * 1024;
/// Largest existing file compared with the plan.
const MAX_COMPARED: u64 = 1024 * 1024;
/// Largest log of `tor --list-fingerprint` shown when it fails.
const MAX_TOR_LOG: u64 = 64 * 1024;
/// Bound on `tor --list-fingerprint`.
const TOR_BOUND: Duration = Duration::from_secs(60);

/// Runs the generator.
pub fn run(args: &BridgeInitArgs) -> anyhow::Result<()> {
    let request = request(args)?;
    let secrets = secrets(args, &request)?;
    let plan = layout::plan(&request, &secrets);
    let survey = survey(&plan)?;
    report(&plan, &survey, args.dry_run);
    // Refused alike with --dry-run: it shows what a run would do.
    refuse_divergent_keys(&plan, &survey)?;
    if args.dry_run {
        println!("\nBridge line (nothing written): {}", plan.bridge_line);
        return Ok(());
    }
    confirm(&plan, &survey, args.force)?;
    let unowned = apply(&plan, &survey)?;
    println!("\n{}\n", plan.bridge_line);
    print!("{}", next_steps(&request, &unowned));
    Ok(())
}

/// The answers as the layout takes them.
fn request(args: &BridgeInitArgs) -> anyhow::Result<Request> {
    let prefix = std::path::absolute(&args.prefix)
        .with_context(|| format!("--prefix {}", args.prefix.display()))?;
    if args.public.port() == 0 {
        bail!("--public {}: the transport needs a fixed port", args.public);
    }
    for (flag, addr) in [
        ("--extor-listen", args.extor_listen),
        ("--metrics-listen", args.metrics_listen),
    ] {
        if !addr.ip().is_loopback() || addr.port() == 0 {
            bail!("{flag} {addr}: a fixed port on a loopback address");
        }
    }
    for (flag, port) in [
        ("--extor-port", args.extor_port),
        ("--tor-metrics-port", args.tor_metrics_port),
    ] {
        if port == 0 {
            bail!("{flag} 0: the balancer needs fixed ports");
        }
    }
    if args.haproxy && u32::from(args.extor_listen.port()) + u32::from(args.instances) > 65535 {
        bail!(
            "--extor-listen {}: the shims take the {} ports after it",
            args.extor_listen,
            args.instances
        );
    }
    Ok(Request {
        names: (1..=args.instances)
            .map(|n| format!("{}{n}", args.nickname))
            .collect(),
        prefix,
        public: args.public,
        extor_listen: args.extor_listen,
        extor_port: args.extor_port,
        tor_metrics_port: args.tor_metrics_port,
        metrics_listen: args.metrics_listen,
        haproxy: args.haproxy,
        no_publish: args.no_publish,
        contact_info: args.contact_info.clone(),
    })
}

/// The keys, fingerprint, transport state and static cookie the plan
/// places: given ones first, then those the fleet already has, then new.
fn secrets(args: &BridgeInitArgs, request: &Request) -> anyhow::Result<Secrets> {
    let first_keys = layout::under(
        &request.prefix,
        &format!("/var/lib/tor-instances/{}/keys", request.names[0]),
    );
    let (keys, keys_given) = match &args.keys_from {
        Some(dir) => (read_keys(&keys_dir(dir))?, true),
        None if SHARED_KEYS.iter().all(|k| first_keys.join(k).exists()) => {
            (read_keys(&first_keys)?, false)
        }
        None => (Vec::new(), false),
    };
    let (keys, fingerprint) = fingerprint(&args.tor, &request.names[0], keys)?;

    let state_path = layout::under(
        &request.prefix,
        "/var/lib/onionlb-bridge-pt/obfs4_state.json",
    );
    let (obfs4, obfs4_given) = match &args.obfs4_state {
        Some(path) => (read_obfs4(path)?, true),
        None if state_path.exists() => (read_obfs4(&state_path)?, false),
        None => {
            let mut random = Zeroizing::new([0u8; obfs4::RANDOM_LEN]);
            rand::rng().fill_bytes(&mut *random);
            (obfs4::State::from_random(&random), false)
        }
    };

    let cookie_path = layout::under(&request.prefix, "/etc/onionlb/bridge/static_cookie");
    let static_cookie = if cookie_path.exists() {
        super::extor::read_cookie(&cookie_path)?.file_bytes()
    } else {
        super::new_cookie().file_bytes()
    };
    Ok(Secrets {
        keys,
        keys_given,
        fingerprint,
        obfs4,
        obfs4_given,
        static_cookie,
    })
}

/// A DataDirectory's `keys/`, or `dir` itself when it has none.
fn keys_dir(dir: &Path) -> PathBuf {
    let keys = dir.join("keys");
    if keys.is_dir() {
        keys
    } else {
        dir.to_owned()
    }
}

/// The shared key files in `dir`, each required.
fn read_keys(dir: &Path) -> anyhow::Result<Vec<Zeroizing<Vec<u8>>>> {
    SHARED_KEYS
        .iter()
        .map(|key| {
            let path = dir.join(key);
            torctl::file::read_capped(&path, MAX_KEY_FILE)
                .map(Zeroizing::new)
                .with_context(|| format!("reading the bridge's key {}", path.display()))
        })
        .collect()
}

fn read_obfs4(path: &Path) -> anyhow::Result<obfs4::State> {
    let bytes = Zeroizing::new(
        torctl::file::read_capped(path, obfs4::MAX_FILE)
            .with_context(|| format!("reading {}", path.display()))?,
    );
    obfs4::State::parse(&bytes).with_context(|| format!("{}", path.display()))
}

/// Runs `tor --list-fingerprint` on a private copy of `keys` (or, when
/// there are none, lets tor make them), and returns the keys with the
/// bridge's fingerprint. The copy is removed after.
fn fingerprint(
    tor: &Path,
    nickname: &str,
    keys: Vec<Zeroizing<Vec<u8>>>,
) -> anyhow::Result<(Vec<Zeroizing<Vec<u8>>>, String)> {
    let scratch = Scratch::new()?;
    let data = scratch.0.join("data");
    let keys_path = data.join("keys");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&keys_path)
        .with_context(|| format!("creating {}", keys_path.display()))?;
    for (key, contents) in SHARED_KEYS.iter().zip(&keys) {
        crate::private_file::create(&keys_path.join(key), contents)
            .with_context(|| format!("copying {key} for tor"))?;
    }
    let torrc = scratch.0.join("torrc");
    std::fs::write(&torrc, "").with_context(|| format!("writing {}", torrc.display()))?;
    let log = scratch.0.join("tor.log");
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(tor)
        .arg("--list-fingerprint")
        .arg("--defaults-torrc")
        .arg(&torrc)
        .arg("-f")
        .arg(&torrc)
        .arg("--DataDirectory")
        .arg(&data)
        .args(["--ORPort", "127.0.0.1:auto", "--BridgeRelay", "1"])
        .args(["--Nickname", nickname, "--Log", "warn stderr"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("running {} --list-fingerprint", tor.display()))?;
    let deadline = Instant::now() + TOR_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for tor")? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("tor --list-fingerprint did not finish within {TOR_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        let said = torctl::file::read_capped(&log, MAX_TOR_LOG)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        bail!(
            "tor --list-fingerprint failed ({status}) on the bridge's keys:\n{}",
            said.lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let printed = torctl::file::read_capped(&data.join("fingerprint"), 256)
        .context("reading the fingerprint tor wrote")?;
    let fingerprint = String::from_utf8_lossy(&printed)
        .split_whitespace()
        .nth(1)
        .filter(|f| f.len() == 40 && f.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .context("tor wrote no fingerprint")?;
    let keys = if keys.is_empty() {
        read_keys(&keys_path)?
    } else {
        keys
    };
    Ok((keys, fingerprint))
}

/// A private scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "onionlb-bridge-init-{}-{:016x}",
            std::process::id(),
            rand::rng().next_u64()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What happens to one planned file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// It does not exist: written.
    Create,
    /// It is as planned.
    Same,
    /// Its contents are as planned, its mode or owner not: fixed.
    Fix,
    /// It differs: replaced once the operator agrees.
    Replace,
    /// It differs but is a secret made once: kept as it is.
    Keep,
}

/// Each planned file's change, in the plan's order.
struct Survey {
    files: Vec<Change>,
}

/// Compares the plan with the disk.
fn survey(plan: &Plan) -> anyhow::Result<Survey> {
    let mut files = Vec::with_capacity(plan.files.len());
    for file in &plan.files {
        let metadata = match std::fs::symlink_metadata(&file.path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                files.push(Change::Create);
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("looking at {}", file.path.display())),
        };
        if !metadata.file_type().is_file() {
            bail!(
                "{} exists and is not a regular file (a symlink or a directory); move it away first",
                file.path.display()
            );
        }
        let existing = Zeroizing::new(
            torctl::file::read_capped(&file.path, MAX_COMPARED)
                .with_context(|| format!("reading {}", file.path.display()))?,
        );
        let change = if *existing != *file.contents {
            match file.existing {
                Existing::Replace => Change::Replace,
                Existing::Keep => Change::Keep,
            }
        } else if metadata.permissions().mode() & 0o7777 != file.mode
            || !owned_as_planned(&metadata, file.owner.as_ref())
        {
            Change::Fix
        } else {
            Change::Same
        };
        files.push(change);
    }
    Ok(Survey { files })
}

/// Whether `metadata` has `owner`'s ids; an owner that does not exist
/// here, or a run as an ordinary user, counts as as planned.
fn owned_as_planned(metadata: &std::fs::Metadata, owner: Option<&Owner>) -> bool {
    match owner.map(ids) {
        Some(Ok((uid, gid))) => metadata.uid() == uid && metadata.gid() == gid,
        _ => true,
    }
}

/// Why a file cannot be given to its owner now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoOwner {
    /// Not run as root.
    NotRoot,
    /// This user or group does not exist yet.
    Missing(String),
}

/// The owner's user and group ids.
fn ids(owner: &Owner) -> Result<(u32, u32), NoOwner> {
    if !nix::unistd::geteuid().is_root() {
        return Err(NoOwner::NotRoot);
    }
    let user = nix::unistd::User::from_name(&owner.user)
        .ok()
        .flatten()
        .ok_or_else(|| NoOwner::Missing(owner.user.clone()))?;
    let group = nix::unistd::Group::from_name(&owner.group)
        .ok()
        .flatten()
        .ok_or_else(|| NoOwner::Missing(owner.group.clone()))?;
    Ok((user.uid.as_raw(), group.gid.as_raw()))
}

/// Prints what changes (with `all`, every file).
fn report(plan: &Plan, survey: &Survey, all: bool) {
    for (file, change) in plan.files.iter().zip(&survey.files) {
        let label = match change {
            Change::Create => "create",
            Change::Same if all => "same",
            Change::Same => continue,
            Change::Fix => "fix mode or owner",
            Change::Replace => "REPLACE (differs)",
            Change::Keep => "keep (differs; a secret is never made anew)",
        };
        println!("{label:>20}  {}", file.path.display());
    }
}

/// Refuses to leave a tor with keys other than the fleet's: kept, they
/// would split the fleet (a client that learned one tor's onion keys
/// stalls on another).
fn refuse_divergent_keys(plan: &Plan, survey: &Survey) -> anyhow::Result<()> {
    let divergent: Vec<String> = plan
        .files
        .iter()
        .zip(&survey.files)
        .filter(|(file, change)| {
            **change == Change::Keep && file.path.parent().is_some_and(|p| p.ends_with("keys"))
        })
        .map(|(file, _)| file.path.display().to_string())
        .collect();
    if divergent.is_empty() {
        return Ok(());
    }
    bail!(
        "{} differ from the first tor's keys: the tors would not share one identity and one \
         set of onion keys (onionlb bridge keys check shows which); give the keys to share \
         with --keys-from",
        divergent.join(", ")
    )
}

/// Refuses to replace differing files unless `--force`, or the operator
/// says yes on a terminal.
fn confirm(plan: &Plan, survey: &Survey, force: bool) -> anyhow::Result<()> {
    let replaced: Vec<String> = plan
        .files
        .iter()
        .zip(&survey.files)
        .filter(|(_, change)| **change == Change::Replace)
        .map(|(file, _)| file.path.display().to_string())
        .collect();
    if replaced.is_empty() || force {
        return Ok(());
    }
    if std::io::stdin().is_terminal() {
        print!(
            "Replace the {} files marked REPLACE? [y/N] ",
            replaced.len()
        );
        std::io::stdout().flush().context("writing the question")?;
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .take(256)
            .read_line(&mut answer)
            .context("reading the answer")?;
        if answer.trim().eq_ignore_ascii_case("y") || answer.trim().eq_ignore_ascii_case("yes") {
            return Ok(());
        }
    }
    bail!(
        "refusing to replace {} (they differ from what init writes; --dry-run shows all, --force replaces)",
        replaced.join(", ")
    )
}

/// Makes the directories and writes the changed files, each replaced
/// whole by rename, then gives them to their owners. Returns the owners
/// that do not exist here yet.
fn apply(plan: &Plan, survey: &Survey) -> anyhow::Result<Vec<NoOwner>> {
    let mut unowned: Vec<NoOwner> = Vec::new();
    let mut give = |path: &Path, owner: Option<&Owner>| -> anyhow::Result<()> {
        let Some(owner) = owner else { return Ok(()) };
        match ids(owner) {
            Ok((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to {}", path.display(), owner.user)),
            Err(why) => {
                if !unowned.contains(&why) {
                    unowned.push(why);
                }
                Ok(())
            }
        }
    };
    for dir in &plan.dirs {
        if !dir.path.exists() {
            if let Some(parent) = dir.path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::DirBuilder::new()
                .mode(dir.mode & 0o777)
                .create(&dir.path)
                .with_context(|| format!("creating {}", dir.path.display()))?;
            std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(dir.mode))
                .with_context(|| format!("setting the mode of {}", dir.path.display()))?;
        }
        give(&dir.path, dir.owner.as_ref())?;
    }
    for (file, change) in plan.files.iter().zip(&survey.files) {
        match change {
            Change::Same | Change::Keep => {}
            Change::Fix => {
                std::fs::set_permissions(&file.path, std::fs::Permissions::from_mode(file.mode))
                    .with_context(|| format!("setting the mode of {}", file.path.display()))?;
            }
            Change::Create | Change::Replace => {
                crate::private_file::replace(&file.path, &file.contents, file.mode, None)
                    .with_context(|| format!("writing {}", file.path.display()))?;
            }
        }
        if *change != Change::Keep {
            give(&file.path, file.owner.as_ref())?;
        }
    }
    Ok(unowned)
}

/// What the operator does next.
fn next_steps(request: &Request, unowned: &[NoOwner]) -> String {
    let names = request.names.join(" ");
    let mut out = String::from("Next steps:\n");
    let mut step = 1;
    let mut say = |text: String| {
        out.push_str(&format!("{step}. {text}\n"));
        step += 1;
    };
    let missing: Vec<&str> = unowned
        .iter()
        .filter_map(|why| match why {
            NoOwner::Missing(name) => Some(name.as_str()),
            NoOwner::NotRoot => None,
        })
        .collect();
    if unowned.contains(&NoOwner::NotRoot) {
        say(
            "Not run as root: no file was given to its owner (the tors', the transport's). \
             Run this command again as root once the users exist."
                .to_owned(),
        );
    } else if !missing.is_empty() {
        say(format!(
            "Make the users and groups that own the fleet's files ({}): for each tor, \
             `tor-instance-create NAME` ({names}; it keeps these torrcs), and `systemd-sysusers`; \
             then run this command again to give them their files.",
            missing.join(", ")
        ));
    }
    let units: Vec<String> = request.names.iter().map(|n| format!("tor@{n}")).collect();
    if request.haproxy {
        say(format!(
            "Load {} in HAProxy beside its own config (another -f in its unit), and check it with haproxy -c.",
            layout::under(&request.prefix, "/etc/onionlb/bridge/haproxy.cfg").display()
        ));
        say(format!(
            "systemctl daemon-reload && systemctl enable --now {} haproxy onionlb-bridge-pt onionlb-bridge-rotate.timer",
            units.join(" ")
        ));
    } else {
        say(format!(
            "systemctl daemon-reload && systemctl enable --now {} onionlb-bridge-extor onionlb-bridge-pt onionlb-bridge-rotate.timer",
            units.join(" ")
        ));
    }
    say(
        "Check: onionlb bridge keys check on every DataDirectory; onionlb bridge status; \
         the metrics; a client with the bridge line above."
            .to_owned(),
    );
    out
}
