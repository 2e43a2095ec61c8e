//! `onionlb testnet ...`: the private network from the command line.

use std::time::Duration;

use anyhow::Context as _;
use testnet::process::{is_running, StopOutcome};
use testnet::{Config, State, Testnet};
use torctl::{ControlClient, Credentials};

use crate::cli::{AppArgs, DirArg, ShapeArgs, TestnetCommand, UpArgs};

/// Bound on asking one tor for its status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs one `testnet` subcommand.
pub async fn run(command: TestnetCommand) -> anyhow::Result<()> {
    match command {
        TestnetCommand::Up(args) => up(args).await,
        TestnetCommand::Down(DirArg { dir }) => down(&dir),
        TestnetCommand::Status(DirArg { dir }) => status(&dir).await,
        TestnetCommand::Env(DirArg { dir }) => {
            let state = State::read(&dir)?;
            print!("{}", state.env_exports());
            Ok(())
        }
        TestnetCommand::App(AppArgs { name, listen }) => {
            Ok(testnet::app::serve(&name, listen).await?)
        }
    }
}

/// The network config `shape` asks for, with this binary as the app.
pub fn config(shape: &ShapeArgs) -> anyhow::Result<Config> {
    let exe = std::env::current_exe()
        .context("cannot find the onionlb executable to run the instance apps")?;
    let mut config = Config::new(&shape.dir, vec![exe.into(), "testnet".into(), "app".into()]);
    config.relays = shape.relays;
    config.instances = shape.instances;
    config.base_port = shape.base_port;
    config.masters = shape.masters.clone();
    config.bootstrap_timeout = Duration::from_secs(shape.bootstrap_timeout);
    config.reachable_timeout = Duration::from_secs(shape.reachable_timeout);
    Ok(config)
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let mut config = config(&args.shape)?;
    config.keep_on_failure = args.keep_on_failure;
    let net = match Testnet::start(config).await {
        Ok(net) => net,
        Err(e) if args.keep_on_failure => {
            return Err(e).context(format!(
                "the network did not come up; its processes were left running (stop them with `onionlb testnet down --dir {}`)",
                args.shape.dir.display()
            ));
        }
        Err(e) => {
            return Err(e).context("the network did not come up; everything it started was stopped")
        }
    };
    let state = net.detach()?;
    println!("The network runs in {}.", state.layout.dir.display());
    for (node, address) in state.layout.instances().zip(&state.instance_addresses) {
        println!("  {:<10} http://{address}/", node.name);
    }
    println!(
        "Use it from a shell:  eval \"$(onionlb testnet env --dir {})\"",
        args.shape.dir.display()
    );
    println!(
        "Stop it:              onionlb testnet down --dir {}",
        args.shape.dir.display()
    );
    Ok(())
}

fn down(dir: &std::path::Path) -> anyhow::Result<()> {
    let outcomes = testnet::stop_recorded_network(dir)?;
    for (record, outcome) in &outcomes {
        let what = match outcome {
            StopOutcome::Stopped => "stopped",
            StopOutcome::AlreadyGone => "was not running",
            StopOutcome::NotOurs => "PID now belongs to another program; left alone",
        };
        println!("{:<14} pid {:<8} {what}", record.name, record.pid);
    }
    Ok(())
}

async fn status(dir: &std::path::Path) -> anyhow::Result<()> {
    let state = State::read(dir)?;
    println!("{:<14} {:<8} {:<8} bootstrap", "process", "pid", "state");
    for record in &state.processes {
        let running = is_running(record);
        let bootstrap = match (running, state.layout.node(&record.name)) {
            (true, Some(node)) => bootstrap_phase(node).await,
            _ => String::new(),
        };
        let state = if running { "running" } else { "stopped" };
        println!(
            "{:<14} {:<8} {state:<8} {bootstrap}",
            record.name, record.pid
        );
    }
    Ok(())
}

/// The tor's bootstrap status, or why it could not be read.
async fn bootstrap_phase(node: &testnet::layout::Node) -> String {
    let ask = async {
        let credentials = Credentials::CookieFile(node.cookie_path());
        let client =
            ControlClient::connect_authenticated(&node.control_addr(), &credentials).await?;
        client.getinfo("status/bootstrap-phase").await
    };
    match tokio::time::timeout(STATUS_TIMEOUT, ask).await {
        Ok(Ok(phase)) => {
            let (percent, summary) = testnet::parse_bootstrap(&phase);
            format!("{percent}% {summary}")
        }
        Ok(Err(e)) => format!("(control port: {e})"),
        Err(_) => "(control port did not answer)".into(),
    }
}
