//! `onionlb bridge keys check`: are the fleet's tors still one bridge?
//!
//! Every tor must hold the same identity keys, and the same onion keys:
//! a client learns a bridge's onion keys from the descriptor of the tor
//! it first reached, and a circuit through a tor holding other keys fails
//! (a client stalls at "Bootstrapped 95%"). Each tor rotates its onion
//! keys on its own schedule (`LastRotatedOnionKey` in its state file, plus
//! the consensus's `onion-key-rotation-days`, 28 by default), so fleets
//! drift apart unless something keeps them together. Files are compared
//! by digest in memory; no key material and no digest is printed.

use std::path::Path;

use anyhow::bail;
use onionlb_core::bridge::{KeyAgreement, KeyFile};
use sha2::{Digest as _, Sha256};

use crate::cli::BridgeKeysCheckArgs;

/// The keys compared, as (label, file under `keys/`).
const KEYS: [(&str, &str); 7] = [
    ("identity (RSA)", "secret_id_key"),
    ("identity (ed25519)", "ed25519_master_id_public_key"),
    ("onion key (ntor)", "secret_onion_key_ntor"),
    ("onion key (TAP)", "secret_onion_key"),
    ("previous onion key (ntor)", "secret_onion_key_ntor.old"),
    ("previous onion key (TAP)", "secret_onion_key.old"),
    ("identity (ed25519 secret)", "ed25519_master_id_secret_key"),
];

/// How many of [`KEYS`] every tor must have (the rest may be kept offline
/// or not exist yet).
const REQUIRED: usize = 4;

/// Compares the keys of every data directory, prints what differs, and
/// fails if anything does.
pub fn check(args: &BridgeKeysCheckArgs) -> anyhow::Result<()> {
    let names: Vec<String> = args
        .data_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let mut problems = 0;
    for (index, (label, file)) in KEYS.iter().enumerate() {
        let found = args
            .data_dirs
            .iter()
            .map(|dir| key_file(&dir.join("keys").join(file)))
            .collect::<anyhow::Result<Vec<KeyFile>>>()?;
        let agreement = KeyAgreement::of(&found);
        match &agreement {
            KeyAgreement::Same => println!("{label}: the same on all {}", found.len()),
            KeyAgreement::Absent if index >= REQUIRED => println!("{label}: none yet"),
            KeyAgreement::Absent => {
                problems += 1;
                println!("{label}: MISSING on every tor (keys/{file})");
            }
            KeyAgreement::Diverged(groups) => {
                problems += 1;
                println!("{label}: DIFFERS (keys/{file})");
                for ((name, group), file_found) in names.iter().zip(groups).zip(&found) {
                    let what = match (group, file_found) {
                        (Some(group), _) => format!("key {group}"),
                        (None, KeyFile::Blocked) => {
                            "not a file (a directory here stops tor's rotation)".to_owned()
                        }
                        (None, _) => "missing".to_owned(),
                    };
                    println!("    {name}: {what}");
                }
            }
        }
    }
    for (name, dir) in names.iter().zip(&args.data_dirs) {
        let rotated = last_rotated(&dir.join("state"));
        println!(
            "{name}: onion keys last rotated {}",
            rotated.as_deref().unwrap_or("(not recorded)")
        );
    }
    if problems > 0 {
        bail!("{problems} key(s) differ or are missing across the tors: clients will stall on some of them");
    }
    Ok(())
}

/// What is at `path`: its digest, or why there is none; an error when it
/// is there but cannot be read.
fn key_file(path: &Path) -> anyhow::Result<KeyFile> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeyFile::Missing),
        Ok(meta) if !meta.file_type().is_file() => return Ok(KeyFile::Blocked),
        _ => {}
    }
    let bytes = torctl::file::read_capped(path, crate::SMALL_FILE_MAX).map_err(|e| {
        anyhow::Error::new(e).context("reading a tor's key (run as root or as tor's user)")
    })?;
    let bytes = zeroize::Zeroizing::new(bytes);
    Ok(KeyFile::Contents(Sha256::digest(&*bytes).into()))
}

/// The `LastRotatedOnionKey` of a tor's state file.
fn last_rotated(state: &Path) -> Option<String> {
    let bytes = torctl::file::read_capped(state, crate::SMALL_FILE_MAX).ok()?;
    String::from_utf8_lossy(&bytes)
        .lines()
        .find_map(|line| line.strip_prefix("LastRotatedOnionKey "))
        .map(str::to_owned)
}

#[cfg(test)]
mod test {
    use super::*;

    /// Two data directories with the required keys alike; `trick` makes
    /// both previous ntor keys directories.
    fn fleet(name: &str, trick: bool) -> Vec<std::path::PathBuf> {
        let root = std::env::temp_dir().join(format!("onionlb-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        (0..2)
            .map(|i| {
                let dir = root.join(format!("b{i}"));
                std::fs::create_dir_all(dir.join("keys")).unwrap();
                for (_, file) in &KEYS[..REQUIRED] {
                    std::fs::write(dir.join("keys").join(file), file.as_bytes()).unwrap();
                }
                if trick {
                    std::fs::create_dir(dir.join("keys/secret_onion_key_ntor.old")).unwrap();
                }
                dir
            })
            .collect()
    }

    #[test]
    fn alike_keys_pass_and_the_directory_trick_does_not() {
        let data_dirs = fleet("alike", false);
        assert!(check(&BridgeKeysCheckArgs {
            data_dirs: data_dirs.clone()
        })
        .is_ok());
        std::fs::write(data_dirs[1].join("keys/secret_onion_key_ntor"), b"other").unwrap();
        assert!(check(&BridgeKeysCheckArgs { data_dirs }).is_err());
        let blocked = fleet("trick", true);
        assert_eq!(
            key_file(&blocked[0].join("keys/secret_onion_key_ntor.old")).unwrap(),
            KeyFile::Blocked
        );
        assert!(check(&BridgeKeysCheckArgs { data_dirs: blocked }).is_err());
    }
}
