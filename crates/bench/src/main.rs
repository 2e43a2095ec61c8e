//! `onionlb-bench`: the benchmark harness behind `scripts/bench` (see the
//! crate README for what it measures and how).

mod bridge;
mod network;
mod observe;
mod scale;
mod stats;
mod tool;

use std::path::{Path, PathBuf};
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
    /// Each tool against the control-port simulator, for growing numbers
    /// of services: CPU time, peak memory and wall time of one full
    /// fetch and publish cycle.
    Scale(ScaleArgs),
    /// A bridge fleet's middle tier: `onionlb bridge extor` against
    /// HAProxy over one `--compat-shim` per tor, between a simulated
    /// transport and simulated tors: CPU per GB, handshakes, latency,
    /// memory per idle connection.
    Bridge(BridgeArgs),
    /// Writes the micro benchmarks' inputs (keys, instance descriptors, a
    /// consensus of 8000 HSDirs), which both tools then read.
    Inputs {
        /// Where to write them (JSON).
        #[arg(long)]
        out: PathBuf,
    },
}

/// What every comparison run takes.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The onionlb binary (for the network run, also the instances' test
    /// app).
    #[arg(long)]
    onionlb: PathBuf,
    /// Python Onionbalance's `onionbalance` script.
    #[arg(long, default_value = "target/bench/venv/bin/onionbalance")]
    onionbalance: PathBuf,
    /// Directory for the run's files (the network, the tools' configs,
    /// keys and logs).
    #[arg(long)]
    dir: PathBuf,
    /// Where to write the figures (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Which tools, in order.
    #[arg(long, value_delimiter = ',', default_value = "onionlb,onionbalance")]
    tools: Vec<tool::Tool>,
}

impl RunArgs {
    fn programs(&self) -> tool::Programs {
        tool::Programs {
            onionlb: self.onionlb.clone(),
            onionbalance: self.onionbalance.clone(),
        }
    }
}

#[derive(Debug, clap::Args)]
struct NetworkArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Bound on every wait, in seconds.
    #[arg(long, default_value_t = 600)]
    bound: u64,
    /// Requests for each client spread (each after a fresh descriptor
    /// fetch, over fresh circuits).
    #[arg(long, default_value_t = 120)]
    spread_requests: usize,
    /// Instance counts whose client spread is measured.
    #[arg(long, value_delimiter = ',', default_value = "2,3,6")]
    spread_instances: Vec<usize>,
    /// Relays besides the three authorities. Each instance's tor puts its
    /// three intro points on relays of its own choosing, and a master
    /// descriptor carries at most one intro point per relay (C tor
    /// clients use only the first), so with six instances on few relays
    /// some instances' intro points must be left out of descriptors.
    #[arg(long, default_value_t = 6)]
    relays: usize,
}

#[derive(Debug, clap::Args)]
struct ScaleArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Numbers of services.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    services: Vec<usize>,
    /// Instances per service.
    #[arg(long, default_value_t = 5)]
    instances: usize,
    /// Intro points per instance.
    #[arg(long, default_value_t = 3)]
    intro_points: usize,
    /// HSDirs in the generated consensus.
    #[arg(long, default_value_t = 8000)]
    relays: usize,
    /// Bound on each run, in seconds.
    #[arg(long, default_value_t = 600)]
    bound: u64,
    /// After a run finishes, keep the tool running this many seconds with
    /// nothing changing and report the CPU it used (`idle_cpu_seconds`).
    #[arg(long, default_value_t = 0)]
    idle: u64,
    /// Fail when a run does not finish within the bound (for the CI smoke
    /// of the harness; a benchmark reports it instead).
    #[arg(long)]
    check: bool,
}

#[derive(Debug, clap::Args)]
struct BridgeArgs {
    /// The onionlb binary.
    #[arg(long)]
    onionlb: PathBuf,
    /// Directory for the run's files.
    #[arg(long)]
    dir: PathBuf,
    /// Where to write the figures (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Simulated tors.
    #[arg(long, default_value_t = 2)]
    tors: usize,
    /// Concurrent connections for the throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    connections: Vec<usize>,
    /// Total bytes each bulk run sends, split over its connections.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    bulk_bytes: usize,
    /// Total cell round trips each cell-sized run makes, split over its
    /// connections.
    #[arg(long, default_value_t = 100_000)]
    cells: usize,
    /// Handshakes for the handshake rate.
    #[arg(long, default_value_t = 2000)]
    handshakes: usize,
    /// Idle connections for the memory figure.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Inputs { out } => onionlb_bench::micro::Inputs::generate()?.write(&out),
        Cli::Scale(args) => {
            let plan = scale::Plan {
                tools: args.run.tools.clone(),
                programs: args.run.programs(),
                dir: absolute_dir(&args.run.dir)?,
                services: args.services,
                instances: args.instances,
                intro_points: args.intro_points,
                relays: args.relays,
                bound: Duration::from_secs(args.bound),
                idle: Duration::from_secs(args.idle),
            };
            let report = until_signalled(scale::run(&plan)).await?;
            write_json(&report, &args.run.out)?;
            let unfinished = report.runs.iter().filter(|run| !run.finished).count();
            anyhow::ensure!(
                !args.check || unfinished == 0,
                "{unfinished} run(s) did not finish within the bound"
            );
            Ok(())
        }
        Cli::Bridge(args) => {
            let plan = bridge::Plan {
                onionlb: args.onionlb.canonicalize().context("--onionlb")?,
                dir: absolute_dir(&args.dir)?,
                tors: args.tors,
                connections: args.connections,
                bulk_bytes: args.bulk_bytes,
                cells: args.cells,
                handshakes: args.handshakes,
                idle: args.idle,
            };
            let report = until_signalled(bridge::run(&plan)).await?;
            write_json(&report, &args.out)
        }
        Cli::Network(args) => {
            let plan = network::Plan {
                tools: args.run.tools.clone(),
                programs: args.run.programs(),
                dir: absolute_dir(&args.run.dir)?,
                bound: Duration::from_secs(args.bound),
                spread_requests: args.spread_requests,
                spread_instances: args.spread_instances,
                relays: args.relays,
            };
            let report = until_signalled(network::run(&plan)).await?;
            write_json(&report, &args.run.out)
        }
    }
}

/// Creates `dir` and makes it absolute, as the tools resolve paths in
/// their config from it.
fn absolute_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// Runs `work` unless SIGINT or SIGTERM comes first; then dropping it
/// stops every process it started.
async fn until_signalled<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM")?;
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = terminate.recv() => anyhow::bail!("terminated"),
    }
}

fn write_json(report: &impl serde::Serialize, out: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("encoding the figures")?;
    std::fs::write(out, json + "\n").with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
