//! Keys made before any tor starts: authority certificates (`tor-gencert`)
//! and relay identities (`tor --list-fingerprint`). Every tor's torrc names
//! the authorities by both fingerprints, so these come first.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::Error;
use crate::layout::Node;

/// Bound on one run of a key tool.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Lifetime of authority signing certificates, in months.
const CERT_LIFETIME_MONTHS: &str = "12";

/// The tor programs the network runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programs {
    /// `tor`.
    pub tor: PathBuf,
    /// `tor-gencert`.
    pub tor_gencert: PathBuf,
}

impl Default for Programs {
    fn default() -> Self {
        Programs {
            tor: "tor".into(),
            tor_gencert: "tor-gencert".into(),
        }
    }
}

impl Programs {
    /// Checks both programs run, so a missing `tor` is reported once,
    /// plainly, before anything is created.
    pub async fn check(&self) -> Result<String, Error> {
        let missing = |program: &Path| {
            let program = program.display().to_string();
            move |source| Error::MissingProgram { program, source }
        };
        let output = Command::new(&self.tor)
            .arg("--version")
            .output()
            .await
            .map_err(missing(&self.tor))?;
        Command::new(&self.tor_gencert)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(missing(&self.tor_gencert))?;
        let version = String::from_utf8_lossy(&output.stdout);
        Ok(version.lines().next().unwrap_or_default().to_owned())
    }
}

/// Makes an authority's identity and signing keys and certificate in its
/// `keys/` directory, and returns its v3 identity fingerprint.
pub async fn make_authority_keys(programs: &Programs, node: &Node) -> Result<String, Error> {
    let keys = node.data_dir.join("keys");
    let (_, dir_port) = relay_ports(node)?;
    let cert = keys.join("authority_certificate");
    let mut command = Command::new(&programs.tor_gencert);
    command
        .arg("--create-identity-key")
        .args(["--passphrase-fd", "0"])
        .arg("-i")
        .arg(keys.join("authority_identity_key"))
        .arg("-s")
        .arg(keys.join("authority_signing_key"))
        .arg("-c")
        .arg(&cert)
        .args(["-m", CERT_LIFETIME_MONTHS])
        .args(["-a", &format!("127.0.0.1:{dir_port}")])
        .current_dir(&keys)
        .stdin(Stdio::piped());
    let mut child = spawn_tool(command, &programs.tor_gencert)?;
    if let Some(mut stdin) = child.stdin.take() {
        // An empty passphrase: the keys never leave this test directory.
        stdin
            .write_all(b"\n")
            .await
            .map_err(Error::io("writing passphrase to tor-gencert for", &keys))?;
    }
    let output = run_bounded(child, &node.name, "tor-gencert").await?;
    let text = tokio::fs::read_to_string(&cert)
        .await
        .map_err(Error::io("reading", &cert))?;
    parse_v3ident(&text).ok_or_else(|| Error::Setup {
        node: node.name.clone(),
        what: "tor-gencert",
        detail: format!("no fingerprint in {}; it said: {output}", cert.display()),
    })
}

/// Makes a relay's identity key and returns its fingerprint.
///
/// `tor --list-fingerprint` needs a config that makes it a relay on a
/// testing network, which needs some `DirAuthority`; a placeholder will do
/// because this tor never connects anywhere.
pub async fn make_relay_identity(
    programs: &Programs,
    node: &Node,
    defaults_torrc: &Path,
) -> Result<String, Error> {
    let (or_port, _) = relay_ports(node)?;
    let torrc_path = node.data_dir.join("torrc.fingerprint");
    let placeholder = "0".repeat(40);
    let torrc = format!(
        "TestingTorNetwork 1\nDataDirectory {}\nNickname {}\nORPort 127.0.0.1:{or_port}\nDirAuthority placeholder orport=1 no-v2 v3ident={placeholder} 127.0.0.1:1 {placeholder}\nLog err stderr\n",
        node.data_dir.display(),
        node.name
    );
    tokio::fs::write(&torrc_path, torrc)
        .await
        .map_err(Error::io("writing", &torrc_path))?;
    let mut command = Command::new(&programs.tor);
    command
        .arg("--defaults-torrc")
        .arg(defaults_torrc)
        .arg("-f")
        .arg(&torrc_path)
        .arg("--list-fingerprint")
        .stdin(Stdio::null());
    let child = spawn_tool(command, &programs.tor)?;
    let output = run_bounded(child, &node.name, "tor --list-fingerprint").await?;
    let path = node.data_dir.join("fingerprint");
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(Error::io("reading", &path))?;
    let _ = tokio::fs::remove_file(&torrc_path).await;
    parse_fingerprint_file(&text).ok_or_else(|| Error::Setup {
        node: node.name.clone(),
        what: "tor --list-fingerprint",
        detail: format!(
            "unexpected {}: {text:?}; tor said: {output}",
            path.display()
        ),
    })
}

fn relay_ports(node: &Node) -> Result<(u16, u16), Error> {
    node.relay_ports.ok_or_else(|| Error::Setup {
        node: node.name.clone(),
        what: "relay keys",
        detail: "not a relay".into(),
    })
}

/// Starts a key tool with its output captured; it dies with us.
fn spawn_tool(mut command: Command, program: &Path) -> Result<tokio::process::Child, Error> {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::MissingProgram {
            program: program.display().to_string(),
            source,
        })
}

/// Waits for a key tool, bounded; fails with its output unless it
/// succeeded. Returns its output for later error messages.
async fn run_bounded(
    child: tokio::process::Child,
    node: &str,
    what: &'static str,
) -> Result<String, Error> {
    let output = tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| Error::Setup {
            node: node.to_owned(),
            what,
            detail: format!("no answer within {TOOL_TIMEOUT:?}"),
        })?
        .map_err(|e| Error::Setup {
            node: node.to_owned(),
            what,
            detail: e.to_string(),
        })?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(Error::Setup {
            node: node.to_owned(),
            what,
            detail: format!("{}: {said}", output.status),
        });
    }
    Ok(said)
}

/// The `fingerprint` line of an authority certificate.
pub fn parse_v3ident(certificate: &str) -> Option<String> {
    certificate
        .lines()
        .find_map(|line| line.strip_prefix("fingerprint "))
        .map(str::trim)
        .filter(|fp| is_fingerprint(fp))
        .map(str::to_owned)
}

/// The fingerprint in a relay's `fingerprint` file (`nickname HEX`).
pub fn parse_fingerprint_file(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    let _nickname = words.next()?;
    let fingerprint: String = words.collect();
    is_fingerprint(&fingerprint).then_some(fingerprint)
}

/// Writes a key file for a test or benchmark: mode 0600 from the moment it
/// exists, replacing any file left from an earlier run. (The daemon's own
/// writer refuses to replace a key; harnesses rerun in the same place.)
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
}

fn is_fingerprint(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn reads_certificate_fingerprint() {
        let cert = "dir-key-certificate-version 3\ndir-address 127.0.0.1:5000\nfingerprint 7036D5FC4132DF1867B446738445FD0226CCCE20\ndir-key-published 2026-11-21\n";
        assert_eq!(
            parse_v3ident(cert).as_deref(),
            Some("7036D5FC4132DF1867B446738445FD0226CCCE20")
        );
        assert_eq!(parse_v3ident("fingerprint XYZ\n"), None);
        assert_eq!(parse_v3ident(""), None);
    }

    #[test]
    fn reads_fingerprint_file() {
        assert_eq!(
            parse_fingerprint_file("relay0 D3C1F232BCCB17AF2A48423E3F3EECAE3F8CC170\n").as_deref(),
            Some("D3C1F232BCCB17AF2A48423E3F3EECAE3F8CC170")
        );
        assert_eq!(parse_fingerprint_file("relay0\n"), None);
        assert_eq!(parse_fingerprint_file("relay0 D3C1\n"), None);
    }

    #[test]
    fn a_private_file_replaces_an_earlier_one_and_only_its_owner_reads_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("testnet-private-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, b"old").unwrap();
        write_private(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
