//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use onionlb_core::OnionAddress;

/// Load balancer and high-availability manager for Tor v3 onion services.
#[derive(Debug, Parser)]
#[command(name = "onionlb", version)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A private Tor network on loopback, for trying onionlb and testing it.
    #[command(subcommand)]
    Testnet(TestnetCommand),
    /// Brings up a private network and shows a client reaching every instance.
    Demo(DemoArgs),
}

/// `onionlb testnet ...`
#[derive(Debug, Subcommand)]
pub enum TestnetCommand {
    /// Starts a network and returns once every instance answers over its
    /// onion address; it keeps running until `down`.
    Up(UpArgs),
    /// Stops every process `up` started in DIR, by PID.
    Down(DirArg),
    /// Shows which processes of the network in DIR run and how far each
    /// tor has bootstrapped.
    Status(DirArg),
    /// Prints shell exports describing the network in DIR:
    /// eval "$(onionlb testnet env --dir DIR)"
    Env(DirArg),
    /// Runs one instance's HTTP app (started by `up`).
    #[command(hide = true)]
    App(AppArgs),
}

/// The network's directory.
#[derive(Debug, Args)]
pub struct DirArg {
    /// Directory holding the network's keys, configs, data and logs.
    #[arg(long, default_value = ".testnet")]
    pub dir: PathBuf,
}

/// `onionlb testnet up`
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The network's directory and its shape.
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Leave every process running when `up` fails, for debugging.
    #[arg(long)]
    pub keep_on_failure: bool,
}

/// The shape of a network, shared by `up` and `demo`.
#[derive(Debug, Args)]
pub struct ShapeArgs {
    /// Directory holding the network's keys, configs, data and logs.
    #[arg(long, default_value = ".testnet")]
    pub dir: PathBuf,
    /// Relays besides the 3 directory authorities.
    #[arg(long, default_value_t = 6)]
    pub relays: usize,
    /// Onion service instances, each with its own HTTP app.
    #[arg(long, default_value_t = 3)]
    pub instances: usize,
    /// First of the consecutive loopback ports to use (default: the first
    /// free block from 15000).
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Start the instances as balancer instances of this master address
    /// (repeatable).
    #[arg(long = "master", value_name = "ADDR")]
    pub masters: Vec<OnionAddress>,
    /// Bound on bootstrap, in seconds.
    #[arg(long, default_value_t = 180)]
    pub bootstrap_timeout: u64,
    /// Bound on every instance answering, after bootstrap, in seconds.
    #[arg(long, default_value_t = 180)]
    pub reachable_timeout: u64,
}

/// `onionlb demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The network's directory and its shape.
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Requests to make through the client to each instance.
    #[arg(long, default_value_t = 1)]
    pub requests: usize,
}

/// `onionlb testnet app`
#[derive(Debug, Args)]
pub struct AppArgs {
    /// The instance's name, sent in every answer.
    #[arg(long)]
    pub name: String,
    /// Where to listen.
    #[arg(long)]
    pub listen: std::net::SocketAddr,
}
