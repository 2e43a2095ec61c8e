//! The status socket and `onionlb status`.
//!
//! The manager serves a [`StatusReport`](report::StatusReport) as JSON on a
//! Unix socket, as Python Onionbalance does: connect, read to the end.
//! `onionlb status` reads it and prints a table.

pub mod report;
mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::AsyncReadExt as _;

pub use server::start as serve;

use crate::cli::StatusArgs;
use crate::config::Config;
use report::StatusReport;

/// The environment variable that overrides the config's
/// `status-socket-location`, as in Python Onionbalance.
pub const SOCKET_ENV: &str = "ONIONBALANCE_STATUS_SOCKET_LOCATION";

/// Bound on reading a report.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a report's size: a report names every instance and every
/// HSDir upload, megabytes at thousands of services.
const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;

/// Where the status socket is: the environment variable, else the config.
pub fn socket_location(config: &Config) -> Option<PathBuf> {
    match std::env::var_os(SOCKET_ENV) {
        Some(path) if !path.is_empty() => Some(path.into()),
        _ => config.status_socket.clone(),
    }
}

/// `onionlb status`.
pub async fn run(args: StatusArgs, config_path: &Path) -> anyhow::Result<()> {
    let path = match args.socket {
        Some(path) => path,
        None => {
            let config = Config::load(config_path)?;
            match socket_location(&config) {
                Some(path) => path,
                None => bail!(
                    "{} sets no status-socket-location (and {SOCKET_ENV} is not set): \
                     the manager serves no status; set one, or give --status-socket",
                    config.path.display()
                ),
            }
        }
    };
    let json = read(&path).await?;
    if args.json {
        println!("{json}");
        return Ok(());
    }
    let report: StatusReport = serde_json::from_str(&json)
        .with_context(|| format!("reading the status from {}", path.display()))?;
    print!("{}", report.render());
    Ok(())
}

/// Reads the report from the socket at `path`.
async fn read(path: &Path) -> anyhow::Result<String> {
    let work = async {
        let mut stream = tokio::net::UnixStream::connect(path)
            .await
            .with_context(|| {
                format!(
                    "connecting to the status socket {} (is onionlb running?)",
                    path.display()
                )
            })?;
        let mut json = String::new();
        (&mut stream)
            .take(MAX_REPORT_BYTES + 1)
            .read_to_string(&mut json)
            .await
            .with_context(|| format!("reading the status socket {}", path.display()))?;
        if json.len() as u64 > MAX_REPORT_BYTES {
            bail!(
                "the status socket {} sent more than {MAX_REPORT_BYTES} bytes: not onionlb's status",
                path.display()
            );
        }
        anyhow::Ok(json)
    };
    tokio::time::timeout(READ_TIMEOUT, work)
        .await
        .with_context(|| format!("no status from {} within {READ_TIMEOUT:?}", path.display()))?
}
