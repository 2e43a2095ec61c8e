//! The manager: the daemon that balances the configured services.

mod agent_onion;
mod agents;
mod daemon;
mod keyfile;
mod network;
mod snapshot;
mod state;

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use onionlb_core::MasterKey;
use torctl::{Connector, ControlAddr, Credentials};

use crate::cli::RunArgs;
use crate::config::Config;

/// Loads the configuration and keys, then runs the manager (or, with
/// `--check`, reports what it would balance).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let source = ConfigSource {
        path: args.config.clone(),
        allow_shared_key_file: args.allow_shared_key_file,
    };
    let (config, keys) = source.load()?;
    if args.check {
        print_summary(&config, &keys);
        return Ok(());
    }
    let socket = crate::status::socket_location(&config);
    let metrics_listen = config.metrics_listen;
    let daemon = daemon::Daemon::start(connector(&args)?, source, config, keys).await?;
    // Held until the daemon stops; dropping it removes the socket.
    let _status = match socket {
        Some(path) => {
            Some(crate::status::StatusServer::start(&path, daemon.status_reports()).await?)
        }
        None => None,
    };
    let _metrics = match metrics_listen {
        Some(addr) => Some(crate::metrics::serve(addr, daemon.metrics()).await?),
        None => None,
    };
    daemon.run().await
}

/// Where the configuration comes from, for the start and for each
/// reload.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The config file.
    pub path: std::path::PathBuf,
    /// `--allow-shared-key-file`.
    pub allow_shared_key_file: bool,
}

impl ConfigSource {
    /// Reads the configuration and every service's key; warns about keys
    /// it does not know.
    pub fn load(&self) -> Result<(Config, Vec<MasterKey>), crate::config::ConfigError> {
        let config = Config::load(&self.path)?;
        for (line, key) in &config.unknown_keys {
            tracing::warn!(
                "{}:{line}: unknown key {key} ignored",
                config.path.display()
            );
        }
        let keys = config
            .services
            .iter()
            .enumerate()
            .map(|(index, service)| {
                keyfile::load(&config.path, index, service, self.allow_shared_key_file)
            })
            .collect::<Result<_, _>>()?;
        Ok((config, keys))
    }
}

/// Where Python Onionbalance looks for tor's control socket by default.
const DEFAULT_CONTROL_SOCKET: &str = "/var/run/tor/control";

/// How to reach the management tor: its control socket when one is given
/// or the default one exists, else its control port; with the events the
/// manager follows.
fn connector(args: &RunArgs) -> anyhow::Result<Connector> {
    let addr = match &args.socket {
        Some(socket) => ControlAddr::Unix(socket.clone()),
        None if Path::new(DEFAULT_CONTROL_SOCKET).exists() => {
            ControlAddr::Unix(DEFAULT_CONTROL_SOCKET.into())
        }
        None => ControlAddr::Tcp(SocketAddr::new(args.ip, args.port)),
    };
    let credentials = password_file_credentials(args.control_password_file.as_deref())?;
    Ok(Connector::new(addr, credentials).subscribe(daemon::EVENTS))
}

/// The password from `--control-password-file` if given, else whatever
/// tor offers (cookie or none).
pub(crate) fn password_file_credentials(file: Option<&Path>) -> anyhow::Result<Credentials> {
    let Some(file) = file else {
        return Ok(Credentials::Auto);
    };
    Credentials::from_password_file(file)
        .with_context(|| format!("reading the control password from {}", file.display()))
}

fn print_summary(config: &Config, keys: &[MasterKey]) {
    println!("{} is valid:", config.path.display());
    for (service, key) in config.services.iter().zip(keys) {
        println!(
            "  {} ({:?} key {}) with {} instance(s):",
            key.address(),
            key.format(),
            service.key.display(),
            service.instances.len()
        );
        for instance in &service.instances {
            println!("    {:<20} {}", instance.label(), instance.address);
        }
    }
}
