//! The manager: the daemon that balances the configured services.

mod agent_onion;
mod agents;
mod commands;
mod daemon;
mod drain;
pub(crate) mod keyfile;
mod link;
mod network;
mod notices;
mod probe;
mod settings;
mod signals;
mod snapshot;
mod tor_events;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use onionlb_core::{MasterKey, OnionAddress};
use torctl::{Connector, ControlAddr, Credentials};

use crate::cli::RunArgs;
use crate::config::{Config, ConfigError};

/// Loads the configuration and keys, then runs the manager (or, with
/// `--check`, reports what it would balance).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let source = ConfigSource {
        path: args.config.clone(),
        allow_shared_key_file: args.allow_shared_key_file,
    };
    let (config, keys) = source.load()?;
    if args.is_testnet {
        tracing::info!(
            "--is-testnet is taken from the management tor (whether it sets TestingTorNetwork), not from the command line"
        );
    }
    if args.check {
        print_summary(&config, &keys);
        return Ok(());
    }
    let socket = crate::status::socket_location(&config);
    let admin_socket = crate::admin::socket_location(&config);
    let metrics_listen = config.metrics_listen;
    let connector = connector(&args, config.control_timeout)?;
    // From here on a stop signal is honoured at once, and a SIGHUP waits
    // for the daemon to be running.
    let mut stop = signals::StopSignals::install()?;
    let start = daemon::Daemon::start(connector, source, config, keys);
    let Some(daemon) = stop.unless_stopped(start).await else {
        tracing::info!("stopping");
        return Ok(());
    };
    let daemon = daemon?;
    // Held until the daemon stops; dropping it removes the socket.
    let _status = match socket {
        Some(path) => Some(crate::status::serve(&path, daemon.asker()).await?),
        None => None,
    };
    let _admin = match admin_socket {
        Some(path) => Some(crate::admin::serve(&path, daemon.asker()).await?),
        None => None,
    };
    let _metrics = match metrics_listen {
        Some(addr) => Some(crate::metrics::serve(addr, daemon.metrics(), daemon.asker()).await?),
        None => None,
    };
    daemon.run(stop).await
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
    /// Reads the configuration and every service's key, and checks them
    /// together; warns about keys it does not know and settings that are
    /// likely mistakes. Start-up, `--check` and SIGHUP all come here, so
    /// they accept and refuse the same files.
    pub fn load(&self) -> Result<(Config, Vec<MasterKey>), ConfigError> {
        let config = Config::load(&self.path)?;
        for (line, key) in &config.unknown_keys {
            tracing::warn!(
                "{}:{line}: unknown key {key} ignored",
                config.path.display()
            );
        }
        for warning in &config.warnings {
            tracing::warn!(
                "{}:{}: {}: {}",
                config.path.display(),
                warning.line,
                warning.key,
                warning.problem
            );
        }
        let keys: Vec<MasterKey> = config
            .services
            .iter()
            .enumerate()
            .map(|(index, service)| {
                keyfile::load(&config.path, index, service, self.allow_shared_key_file)
            })
            .collect::<Result<_, _>>()?;
        check_keys(&config, &keys)?;
        Ok((config, keys))
    }
}

/// Refuses two services with one master identity (two publishers in one
/// process would undo each other's descriptors) and a master address
/// listed as an instance (its own descriptors would be fed back to it).
fn check_keys(config: &Config, keys: &[MasterKey]) -> Result<(), ConfigError> {
    let error = |line, key: String, problem: String| ConfigError {
        file: config.path.clone(),
        line,
        key,
        problem,
    };
    // By address, the first service of each: linear in the services and
    // instances, as a configuration of thousands of each must be.
    let mut masters: HashMap<OnionAddress, usize> = HashMap::new();
    for (index, (service, key)) in config.services.iter().zip(keys).enumerate() {
        let address = key.address();
        if let Some(&first) = masters.get(&address) {
            return Err(error(
                service.key_line,
                format!("services[{index}].key"),
                format!(
                    "{} is the key of {address}, which services[{first}] (line {}) already balances; list each master once",
                    service.key.display(),
                    config.services[first].key_line
                ),
            ));
        }
        masters.insert(address, index);
    }
    for (index, service) in config.services.iter().enumerate() {
        for (i, instance) in service.instances.iter().enumerate() {
            if let Some(master) = masters.get(&instance.address) {
                return Err(error(
                    instance.line,
                    format!("services[{index}].instances[{i}].address"),
                    format!(
                        "{} is the master address of services[{master}], not an instance; an instance is a tor with its own key and HiddenServiceOnionbalanceInstance 1",
                        instance.address
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Where Python Onionbalance looks for tor's control socket by default.
const DEFAULT_CONTROL_SOCKET: &str = "/var/run/tor/control";

/// How to reach the management tor: its control socket when one is given
/// or the default one exists, else its control port; with the events the
/// manager follows.
fn connector(args: &RunArgs, control_timeout: std::time::Duration) -> anyhow::Result<Connector> {
    let addr = match &args.socket {
        Some(socket) => ControlAddr::Unix(socket.clone()),
        None if Path::new(DEFAULT_CONTROL_SOCKET).exists() => {
            ControlAddr::Unix(DEFAULT_CONTROL_SOCKET.into())
        }
        None => ControlAddr::Tcp(SocketAddr::new(args.ip, args.port)),
    };
    let credentials = password_file_credentials(args.control_password_file.as_deref())?;
    Ok(Connector::new(addr, credentials)
        .subscribe(tor_events::EVENTS)
        .with_options(torctl::Options {
            command_timeout: control_timeout,
            ..torctl::Options::default()
        }))
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
