//! `onionlb demo`: what the README's first command shows.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use onionlb_core::MasterKey;
use testnet::app::served_by;
use testnet::process::{Process, STOP_GRACE};
use testnet::Testnet;

use crate::cli::DemoArgs;
use crate::testnet_cmd::config;

/// Bound on the master address becoming reachable once the manager runs.
const MASTER_REACHABLE_WITHIN: Duration = Duration::from_secs(180);

/// Brings up a private network whose instances serve a fresh master key,
/// shows the client reaching each instance over its own address, runs the
/// manager, and shows the client's requests to the master address spread
/// over the instances. Stops everything it started.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let master_dir = args.shape.dir.join("master");
    std::fs::create_dir_all(&master_dir)
        .with_context(|| format!("creating {}", master_dir.display()))?;
    let key_path = master_dir.join("master.pem");
    let (key, pem) = MasterKey::generate(&mut rand::rng())?;
    write_private(&key_path, &pem)?;
    let master = key.address();

    let mut net_config = config(&args.shape)?;
    net_config.masters = vec![master];
    println!(
        "Starting a private Tor network on loopback in {} (about a minute: its authorities vote, then the instances publish)...",
        args.shape.dir.display()
    );
    let net = Testnet::start(net_config).await?;
    println!();
    println!(
        "Private Tor network up in {:.1} s. The client fetches each instance's page over its own onion address:",
        started.elapsed().as_secs_f64()
    );
    for (node, address) in net.layout().instances().zip(net.instance_addresses()) {
        let response = net.fetch(&format!("http://{address}/")).await?;
        println!(
            "  {:<10} {address} -> {}",
            node.name,
            served_by(&response.body).unwrap_or("?")
        );
    }

    let config_path = master_dir.join("config.yaml");
    // The key path is relative to the configuration file, as in Python
    // Onionbalance's configs.
    let mut yaml = String::from("services:\n- key: master.pem\n  instances:\n");
    for (node, address) in net.layout().instances().zip(net.instance_addresses()) {
        yaml.push_str(&format!(
            "  - address: {address}\n    name: {}\n",
            node.name
        ));
    }
    std::fs::write(&config_path, yaml)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let torctl::ControlAddr::Tcp(control) = net.manager_control().addr else {
        anyhow::bail!("the testnet's management tor does not listen on TCP");
    };
    let log = master_dir.join("onionlb.log");
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.arg("-c").arg(&config_path).args([
        "-i",
        &control.ip().to_string(),
        "-p",
        &control.port().to_string(),
    ]);
    let marker = config_path.display().to_string();
    // Should the demo fail before stopping it, onionlb still exits on its
    // own: dropping `net` stops the management tor it depends on.
    let mut manager = Process::spawn("onionlb", &marker, command, &log)?;
    let log = log.display();
    println!();
    println!("onionlb manages {master} (log: {log}).");

    let url = format!("http://{master}/");
    let waited = Instant::now();
    loop {
        if let Some(status) = manager.exit_status() {
            anyhow::bail!("onionlb exited ({status}); see {log}");
        }
        match net.fetch(&url).await {
            Ok(response) if served_by(&response.body).is_some() => break,
            _ if waited.elapsed() > MASTER_REACHABLE_WITHIN => {
                anyhow::bail!(
                    "the master address did not answer within {MASTER_REACHABLE_WITHIN:?}; see {log}"
                )
            }
            _ => net.newnym().await?,
        }
    }
    println!(
        "The master address answers {:.1} s after onionlb started. {} requests, each on a fresh circuit:",
        waited.elapsed().as_secs_f64(),
        args.requests
    );
    let mut tally = std::collections::BTreeMap::new();
    for request in 1..=args.requests {
        let at = Instant::now();
        let who = match net.fetch(&url).await {
            Ok(response) => served_by(&response.body)
                .unwrap_or("an unexpected answer")
                .to_owned(),
            Err(e) => format!("failed: {e}"),
        };
        println!(
            "  request {request:>2} -> {who} ({:.1} s)",
            at.elapsed().as_secs_f64()
        );
        *tally.entry(who).or_insert(0) += 1;
    }
    let summary: Vec<String> = tally.iter().map(|(who, n)| format!("{who}: {n}")).collect();
    println!("Served by {}.", summary.join(", "));
    println!("Stopping onionlb and the network.");
    manager.stop(STOP_GRACE);
    net.stop();
    Ok(())
}

/// Writes a secret file, readable by its owner only from the start.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    crate::private_file::create(path, contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
