//! `onionlb demo`: what the README's first command shows.

use std::time::Instant;

use testnet::app::served_by;
use testnet::Testnet;

use crate::cli::DemoArgs;
use crate::testnet_cmd::config;

/// Brings up a private network, fetches a page from every instance over
/// its onion address through the client tor, prints who answered, and
/// stops the network.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let net = Testnet::start(config(&args.shape)?).await?;
    println!();
    println!("Private Tor network up in {:.1} s. A tor client now fetches each instance's page over its onion address:", started.elapsed().as_secs_f64());
    let mut failures = 0;
    for (node, address) in net.layout().instances().zip(net.instance_addresses()) {
        for _ in 0..args.requests {
            let url = format!("http://{address}/");
            let fetch_started = Instant::now();
            match net.fetch(&url).await {
                Ok(response) => println!(
                    "  {:<10} {url:<72} -> {} ({:.1} s)",
                    node.name,
                    served_by(&response.body).unwrap_or("an unexpected answer"),
                    fetch_started.elapsed().as_secs_f64()
                ),
                Err(e) => {
                    failures += 1;
                    println!("  {:<10} {url:<72} -> failed: {e}", node.name);
                }
            }
        }
    }
    println!("Stopping the network.");
    net.stop();
    anyhow::ensure!(failures == 0, "{failures} fetches failed");
    Ok(())
}
