//! Records the commit onionlb is built from, for `onionlb --version`.
//!
//! The commit comes from `ONIONLB_COMMIT` when set (a build from a source
//! tarball, or a packager who knows it), else from `git rev-parse` in the
//! source tree; without either it is "unknown". A build from a tree with
//! uncommitted changes says so ("-modified").

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-env-changed=ONIONLB_COMMIT");
    let commit = std::env::var("ONIONLB_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=ONIONLB_COMMIT={commit}");
}

/// The checked-out commit, abbreviated, with "-modified" when tracked files
/// differ from it; `None` outside a git checkout or without git.
fn git_commit() -> Option<String> {
    let git_dir = git(&["rev-parse", "--absolute-git-dir"])?;
    // Rebuild when HEAD moves (a checkout, a commit on the branch), the
    // index changes (staging or committing), or a source file of the
    // workspace's crates changes (so "-modified" stays true).
    let git_dir = Path::new(&git_dir);
    println!("cargo::rerun-if-changed=..");
    for file in ["HEAD", "index"] {
        println!("cargo::rerun-if-changed={}", git_dir.join(file).display());
    }
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        println!(
            "cargo::rerun-if-changed={}",
            git_dir.join(head_ref).display()
        );
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let modified = Command::new("git")
        .args(["diff-index", "--quiet", "HEAD", "--"])
        .status()
        .is_ok_and(|s| s.code() == Some(1));
    Some(if modified {
        format!("{commit}-modified")
    } else {
        commit
    })
}

/// What `git ARGS` prints, trimmed, when it succeeds.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    Some(text.trim().to_owned())
}
