//! `onionlb-bench`: the benchmark harness behind `scripts/bench` (see the
//! crate README for what it measures and how).

mod network;
mod observe;
mod tool;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

/// Benchmarks onionlb side by side with Python Onionbalance.
#[derive(Debug, Parser)]
#[command(version)]
enum Cli {
    /// Both tools on one private Tor network: start to reachable, an
    /// instance killed, an instance restarted, client share.
    Network(NetworkArgs),
    /// Writes the micro benchmarks' inputs (keys, instance descriptors, a
    /// consensus of 8000 HSDirs), which both tools then read.
    Inputs {
        /// Where to write them (JSON).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct NetworkArgs {
    /// The onionlb binary (also the instances' test app).
    #[arg(long)]
    onionlb: PathBuf,
    /// Python Onionbalance's `onionbalance` script.
    #[arg(long)]
    onionbalance: PathBuf,
    /// Directory for the network and the tools' files.
    #[arg(long)]
    dir: PathBuf,
    /// Where to write the figures (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Which tools, in order.
    #[arg(long, value_delimiter = ',', default_value = "onionlb,onionbalance")]
    tools: Vec<tool::Tool>,
    /// Bound on every wait, in seconds.
    #[arg(long, default_value_t = 600)]
    bound: u64,
    /// Requests over fresh circuits for the client share.
    #[arg(long, default_value_t = 60)]
    share_requests: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Inputs { out } => onionlb_bench::micro::Inputs::generate()?.write(&out),
        Cli::Network(args) => {
            // Absolute, as the tools resolve paths in their config from it.
            std::fs::create_dir_all(&args.dir)
                .with_context(|| format!("creating {}", args.dir.display()))?;
            let dir = args
                .dir
                .canonicalize()
                .with_context(|| format!("resolving {}", args.dir.display()))?;
            let plan = network::Plan {
                tools: args.tools,
                programs: tool::Programs {
                    onionlb: args.onionlb,
                    onionbalance: args.onionbalance,
                },
                dir,
                bound: Duration::from_secs(args.bound),
                share_requests: args.share_requests,
            };
            // On a signal, dropping the run stops every process it started.
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("installing SIGTERM")?;
            let report = tokio::select! {
                report = network::run(&plan) => report?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
                _ = terminate.recv() => anyhow::bail!("terminated"),
            };
            let json = serde_json::to_string_pretty(&report).context("encoding the figures")?;
            std::fs::write(&args.out, json + "\n")
                .with_context(|| format!("writing {}", args.out.display()))?;
            eprintln!("wrote {}", args.out.display());
            Ok(())
        }
    }
}
