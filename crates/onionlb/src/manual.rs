//! Man pages and shell completions, generated from the command line's
//! definition so that they cannot say something the binary does not do.
//!
//! `onionlb man-pages DIR` (hidden; the package build runs it) writes
//! onionlb(1) and one page per visible subcommand, named as git names its
//! own (`onionlb-agent-run.1`). The top page also gets the sections
//! clap cannot know: exit status, the files a packaged onionlb uses, and
//! where to read more (each option's environment variable is in its own
//! description already).

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::cli::{Cli, CompletionsArgs, ManPagesArgs};

/// Sections appended to onionlb(1), in roff.
const TOP_PAGE_EXTRA: &str = r#".SH EXIT STATUS
.TP
0
Success.
.TP
1
A failure at run time (tor unreachable for too long, a socket that cannot be made).
.TP
2
A usage or configuration error: the message names the file, line and key. Restarting will not fix it (the packaged unit does not retry).
.TP
70
An internal error (a bug); the message says where.
.SH FILES
.TP
/etc/onionlb/config.yaml
The manager's configuration, in Python Onionbalance's format.
.TP
/etc/onionlb/*.key
Master keys, owned by the onionlb user, mode 0600.
.TP
/etc/onionlb\-agent/NAME.conf, /etc/onionlb\-agent/NAME.key
The settings and key of the agent onionlb\-agent@NAME.service runs beside one instance.
.TP
/run/onionlb/control
The manager's status socket (see \fBonionlb\-status\fR(1)).
.TP
/run/tor/control
The local tor's control socket, as Debian's tor opens it.
.SH SEE ALSO
\fBtor\fR(1), \fBonionlb\-config\fR(1), \fBonionlb\-status\fR(1), \fBonionlb\-agent\-run\fR(1);
/usr/share/doc/onionlb/operator\-guide.md, migrating.md and troubleshooting.md.
"#;

/// Writes the completion script for `args.shell` to stdout.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "onionlb", &mut std::io::stdout());
    Ok(())
}

/// Writes onionlb.1 and a page per visible subcommand into `args.dir`,
/// creating it; replaces pages that exist.
pub fn man_pages(args: &ManPagesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut command = Cli::command();
    command.build();
    write_pages(&command, "onionlb", &args.dir)
}

/// Writes the page of `command`, known as `name`, then those of its visible
/// subcommands.
fn write_pages(command: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<()> {
    let mut page = Vec::new();
    let named = command
        .clone()
        .name(name.to_owned())
        .bin_name(name.replace('-', " "));
    clap_mangen::Man::new(named)
        .render(&mut page)
        .context("cannot render a man page")?;
    if name == "onionlb" {
        page.extend_from_slice(TOP_PAGE_EXTRA.as_bytes());
    }
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn every_visible_subcommand_gets_a_page_and_hidden_ones_do_not() {
        let dir = std::env::temp_dir().join(format!("onionlb-man-{}", std::process::id()));
        man_pages(&ManPagesArgs { dir: dir.clone() }).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        std::fs::remove_dir_all(&dir).unwrap();
        for expected in [
            "onionlb.1",
            "onionlb-status.1",
            "onionlb-drain.1",
            "onionlb-undrain.1",
            "onionlb-config.1",
            "onionlb-agent.1",
            "onionlb-agent-run.1",
            "onionlb-agent-keygen.1",
            "onionlb-completions.1",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("man-pages") || n.contains("help")),
            "{names:?}"
        );
    }
}
