//! onionlb: load balancer and high-availability manager for Tor v3 onion
//! services.
//!
//! This binary is the thin shell: command line, logging, and wiring of the
//! library crates. Protocol rules live in `onionlb-core` and `torctl`.

mod admin;
mod agent;
mod answer;
mod bridge;
mod channel;
mod cli;
mod config;
#[cfg(feature = "testnet")]
mod demo;
mod generate;
mod manager;
mod manual;
mod metrics;
mod private_file;
mod status;
#[cfg(feature = "testnet")]
mod testnet_cmd;
mod unix_socket;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

/// Bound on the small files onionlb reads besides its configuration:
/// keys (96 bytes in tor's format, about 120 as PEM), a hostname.
pub(crate) const SMALL_FILE_MAX: u64 = 64 * 1024;

/// Exit status after a panic: EX_SOFTWARE, an internal error.
const PANIC_EXIT: i32 = 70;

fn main() -> ExitCode {
    // A panic anywhere, in any task, ends the process with a clear line
    // and status 70, instead of a task that silently stops (tokio would
    // catch it) or an unwinding that hides what happened. Panic messages
    // are our own text and carry no secret.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("onionlb: internal error at {place}: {message}; this is a bug, please report it; exiting with status {PANIC_EXIT}");
        std::process::exit(PANIC_EXIT);
    }));
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.verbosity.as_deref()) {
        eprintln!("onionlb: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        // The generator and the manual need no runtime.
        Some(Command::Config(args)) => generate::run(*args),
        Some(Command::Completions(args)) => manual::completions(&args),
        Some(Command::ManPages(args)) => manual::man_pages(&args),
        command => match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(async {
                match command {
                    #[cfg(feature = "testnet")]
                    Some(Command::Testnet(args)) => testnet_cmd::run(args).await,
                    #[cfg(feature = "testnet")]
                    Some(Command::Demo(args)) => demo::run(args).await,
                    Some(Command::Status(args)) => {
                        let config = args.config.clone();
                        status::run(args, &config).await
                    }
                    Some(Command::Drain(args)) => admin::run(args, true).await,
                    Some(Command::Undrain(args)) => admin::run(args, false).await,
                    Some(Command::Config(args)) => generate::run(*args),
                    Some(Command::Completions(args)) => manual::completions(&args),
                    Some(Command::ManPages(args)) => manual::man_pages(&args),
                    Some(Command::Agent(command)) => agent::run(command).await,
                    Some(Command::Bridge(command)) => bridge::run(command).await,
                    None => manager::run(cli.run).await,
                }
            }),
            Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onionlb: {e:#}");
            // A configuration the operator must fix exits 2, like a usage error.
            if e.downcast_ref::<config::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Plain lines on stderr at the level `-v` names (Python Onionbalance's
/// names), `RUST_LOG` for anything finer.
fn init_logging(verbosity: Option<&str>) -> Result<(), String> {
    let default = match verbosity.map(str::to_ascii_lowercase).as_deref() {
        None | Some("info") => "info",
        Some("debug") => "debug",
        Some("trace") => "trace",
        Some("warning" | "warn") => "warn",
        Some("error" | "critical") => "error",
        Some(other) => {
            return Err(format!(
                "unknown log level {other:?}: use debug, info, warning, error or critical"
            ))
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}
