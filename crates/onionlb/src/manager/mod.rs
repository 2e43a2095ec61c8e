//! The manager: the daemon that balances the configured services.

mod keyfile;

use onionlb_core::MasterKey;

use crate::cli::RunArgs;
use crate::config::Config;

/// Loads the configuration and keys, then runs the manager (or, with
/// `--check`, reports what it would balance).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    for (line, key) in &config.unknown_keys {
        tracing::warn!(
            "{}:{line}: unknown key {key} ignored",
            config.path.display()
        );
    }
    let mut keys = Vec::new();
    for (index, service) in config.services.iter().enumerate() {
        keys.push(keyfile::load(
            &config.path,
            index,
            service,
            args.allow_shared_key_file,
        )?);
    }
    if args.check {
        print_summary(&config, &keys);
        return Ok(());
    }
    anyhow::bail!("running the manager is not built yet; use --check to validate a configuration")
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
