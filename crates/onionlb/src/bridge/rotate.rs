//! `onionlb bridge keys rotate`: carries out
//! [`onionlb_core::bridge::rotation_plan`] on real tors.
//!
//! What each step does on disk, always while that tor is stopped:
//! `MakeDue` sets `LastRotatedOnionKey` in its state file to long ago (tor
//! then rotates at start, moving its current onion keys to `.old`);
//! `TakePrevious` writes the lead's current onion keys
//! (`secret_onion_key_ntor`, `secret_onion_key`) as the tor's `.old` ones;
//! `TakeCurrent` writes the lead's current and `.old` keys as the tor's;
//! both copy the lead's `LastRotatedOnionKey`. Files are replaced by
//! renaming a new file beside them, with mode 0600 and the owner of the
//! tor's `keys` directory. tor loads `.old` keys at start as its previous
//! keys and accepts handshakes with either.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use onionlb_core::bridge::{rotation_plan, RotationStep};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use crate::cli::BridgeKeysRotateArgs;

/// The onion key files, current names (previous ones add `.old`).
const ONION_KEYS: [&str; 2] = ["secret_onion_key_ntor", "secret_onion_key"];
/// A rotation time long enough ago for any `onion-key-rotation-days`.
const LONG_AGO: &str = "2000-01-01 00:00:00";
/// Bound on a stop or start command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on a tor rotating at start, and on the balancer seeing it up.
const AWAIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Rotates the fleet's onion keys, saying each step as it goes.
pub async fn run(args: &BridgeKeysRotateArgs) -> anyhow::Result<()> {
    if args.tors.len() < 2 {
        bail!("--tor: give every tor of the fleet, at least two");
    }
    for (name, dir) in &args.tors {
        for key in ONION_KEYS {
            for file in [key.to_owned(), format!("{key}.old")] {
                let path = dir.join("keys").join(&file);
                if path.symlink_metadata().is_ok_and(|m| !m.is_file()) {
                    bail!(
                        "{name}: {} is not a file (the trick that stops rotation?): remove it first",
                        path.display()
                    );
                }
            }
        }
    }
    let (lead, lead_dir) = &args.tors[0];
    let before = digest(&lead_dir.join("keys").join(ONION_KEYS[0]))?;
    for step in rotation_plan(args.tors.len()) {
        let index = match step {
            RotationStep::Swap { drain: t, .. }
            | RotationStep::Drain(t)
            | RotationStep::Undrain(t)
            | RotationStep::Stop(t)
            | RotationStep::MakeDue(t)
            | RotationStep::Start(t)
            | RotationStep::AwaitRotated(t)
            | RotationStep::AwaitUp(t)
            | RotationStep::TakePrevious(t)
            | RotationStep::TakeCurrent(t) => t,
        };
        let (name, dir) = &args.tors[index];
        println!("{name}: {}", describe(step, lead));
        match step {
            RotationStep::Drain(_) | RotationStep::Undrain(_) => {
                if let Some(socket) = &args.admin_socket {
                    let verb = if matches!(step, RotationStep::Drain(_)) {
                        "DRAIN"
                    } else {
                        "UNDRAIN"
                    };
                    super::admin::request(socket, &format!("{verb} {name}")).await?;
                }
            }
            RotationStep::Swap { undrain, .. } => {
                if let Some(socket) = &args.admin_socket {
                    let other = &args.tors[undrain].0;
                    super::admin::request(socket, &format!("DRAIN {name} UNDRAIN {other}")).await?;
                }
            }
            RotationStep::Stop(_) => run_command(&args.stop_command, name, dir).await?,
            RotationStep::Start(_) => run_command(&args.start_command, name, dir).await?,
            RotationStep::MakeDue(_) => set_last_rotated(&dir.join("state"), LONG_AGO)?,
            RotationStep::AwaitRotated(_) => {
                let current = dir.join("keys").join(ONION_KEYS[0]);
                wait_for(&format!("{name} rotating its onion keys"), || {
                    let current = current.clone();
                    async move { digest(&current).is_ok_and(|now| now != before) }
                })
                .await?;
            }
            RotationStep::AwaitUp(_) => match &args.admin_socket {
                Some(socket) => {
                    wait_for(&format!("the balancer to see {name} up"), || {
                        is_up(socket, name)
                    })
                    .await?;
                }
                None => tokio::time::sleep(Duration::from_secs(args.settle)).await,
            },
            RotationStep::TakePrevious(_) => {
                for key in ONION_KEYS {
                    copy_key(lead_dir, key, dir, &format!("{key}.old"))?;
                }
                copy_last_rotated(lead_dir, dir)?;
            }
            RotationStep::TakeCurrent(_) => {
                for key in ONION_KEYS {
                    copy_key(lead_dir, key, dir, key)?;
                    let old = format!("{key}.old");
                    copy_key(lead_dir, &old, dir, &old)?;
                }
                copy_last_rotated(lead_dir, dir)?;
            }
        }
    }
    println!("every tor has {lead}'s new onion keys, and the old ones as previous");
    Ok(())
}

fn describe(step: RotationStep, lead: &str) -> String {
    match step {
        RotationStep::Drain(_) => "draining".to_owned(),
        RotationStep::Undrain(_) => "undraining".to_owned(),
        RotationStep::Swap { .. } => format!("draining, and undraining {lead}"),
        RotationStep::Stop(_) => "stopping".to_owned(),
        RotationStep::Start(_) => "starting".to_owned(),
        RotationStep::MakeDue(_) => "marking its onion keys due for rotation".to_owned(),
        RotationStep::AwaitRotated(_) => "waiting for it to rotate".to_owned(),
        RotationStep::AwaitUp(_) => "waiting until it serves".to_owned(),
        RotationStep::TakePrevious(_) => format!("taking {lead}'s new onion keys as previous"),
        RotationStep::TakeCurrent(_) => format!("taking {lead}'s onion keys as current"),
    }
}

/// Runs `template` through `sh -c` with `{name}` and `{datadir}` replaced;
/// fails unless it exits 0 within [`COMMAND_TIMEOUT`].
async fn run_command(template: &str, name: &str, dir: &Path) -> anyhow::Result<()> {
    let command = template
        .replace("{name}", name)
        .replace("{datadir}", &dir.display().to_string());
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {command:?}"))?;
    let status = tokio::time::timeout(COMMAND_TIMEOUT, child.wait())
        .await
        .with_context(|| format!("{command:?} did not end within {COMMAND_TIMEOUT:?}"))?
        .with_context(|| format!("waiting for {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// Polls `ready` every 200 ms until it holds, for at most
/// [`AWAIT_TIMEOUT`].
async fn wait_for<F, Fut>(what: &str, ready: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + AWAIT_TIMEOUT;
    while !ready().await {
        if Instant::now() >= deadline {
            bail!("gave up waiting for {what} after {AWAIT_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Whether the balancer's status says tor `name` is up.
async fn is_up(socket: &Path, name: &str) -> bool {
    let Ok(status) = super::admin::request(socket, "STATUS").await else {
        return false;
    };
    status["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| i["name"] == name && i["up"] == true)
}

/// The SHA-256 of a key file.
fn digest(path: &Path) -> anyhow::Result<[u8; 32]> {
    let bytes = zeroize::Zeroizing::new(
        torctl::file::read_capped(path, crate::SMALL_FILE_MAX)
            .with_context(|| format!("reading {}", path.display()))?,
    );
    Ok(Sha256::digest(&*bytes).into())
}

/// Copies `from_dir/keys/from` over `to_dir/keys/to`; nothing if the
/// source does not exist (a lead that never rotated has no `.old`).
fn copy_key(from_dir: &Path, from: &str, to_dir: &Path, to: &str) -> anyhow::Result<()> {
    let source = from_dir.join("keys").join(from);
    if !source.exists() {
        return Ok(());
    }
    let bytes = zeroize::Zeroizing::new(
        torctl::file::read_capped(&source, crate::SMALL_FILE_MAX)
            .with_context(|| format!("reading {}", source.display()))?,
    );
    let keys = to_dir.join("keys");
    let owner = keys
        .metadata()
        .with_context(|| format!("reading {}", keys.display()))?;
    replace(&keys.join(to), &bytes, 0o600, (owner.uid(), owner.gid()))
}

/// Sets `LastRotatedOnionKey` in a stopped tor's state file.
fn set_last_rotated(state: &Path, when: &str) -> anyhow::Result<()> {
    let text = read_state(state)?;
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| !line.starts_with("LastRotatedOnionKey "))
        .map(str::to_owned)
        .collect();
    lines.push(format!("LastRotatedOnionKey {when}"));
    let meta = state
        .metadata()
        .with_context(|| format!("reading {}", state.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    let text = lines.join("\n") + "\n";
    replace(state, text.as_bytes(), mode, (meta.uid(), meta.gid()))
}

/// Gives a stopped tor the lead's `LastRotatedOnionKey`.
fn copy_last_rotated(lead: &Path, to: &Path) -> anyhow::Result<()> {
    let text = read_state(&lead.join("state"))?;
    let Some(when) = text
        .lines()
        .find_map(|line| line.strip_prefix("LastRotatedOnionKey "))
    else {
        bail!(
            "{} has no LastRotatedOnionKey",
            lead.join("state").display()
        );
    };
    set_last_rotated(&to.join("state"), when)
}

fn read_state(state: &Path) -> anyhow::Result<String> {
    let bytes = torctl::file::read_capped(state, crate::SMALL_FILE_MAX)
        .with_context(|| format!("reading {}", state.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not text", state.display()))
}

/// Replaces `path` with `bytes` in one rename, with `mode` and `owner`.
fn replace(path: &Path, bytes: &[u8], mode: u32, owner: (u32, u32)) -> anyhow::Result<()> {
    crate::private_file::replace(path, bytes, mode, Some(owner))
        .with_context(|| format!("replacing {}", path.display()))
}
