//! `onionlb bridge`: one bridge identity over several tor processes.
//!
//! The balancer (`extor`) sits where HAProxy and one extor-static-cookie
//! shim per tor sit in the Snowflake bridges' setup: the transport
//! authenticates to it with a static cookie, and it carries each
//! connection to one tor's Extended ORPort with that tor's current cookie,
//! read again for every connection (tor writes a new one at each start).
//! The protocol is the `extorport` crate's, the choice of instance
//! `onionlb_core::bridge`'s; this module does the I/O.

mod admin;
mod extor;
mod init;
mod keys;
mod metrics;
mod relay;
mod rotate;
mod shim;
mod tor_metrics;

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;

use anyhow::Context as _;
use rand::Rng as _;

use crate::cli::{BridgeCommand, CookieArgs};

/// Runs an `onionlb bridge` subcommand.
pub async fn run(command: BridgeCommand) -> anyhow::Result<()> {
    match command {
        BridgeCommand::Extor(args) => extor::run(*args).await,
        BridgeCommand::Cookie(args) => write_cookie(&args),
        BridgeCommand::Drain(args) => {
            admin::ask(&args.admin_socket, &format!("DRAIN {}", args.instance)).await
        }
        BridgeCommand::Undrain(args) => {
            admin::ask(&args.admin_socket, &format!("UNDRAIN {}", args.instance)).await
        }
        BridgeCommand::Status(args) => admin::ask(&args.admin_socket, "STATUS").await,
        BridgeCommand::Keys(crate::cli::BridgeKeysCommand::Check(args)) => keys::check(&args),
        BridgeCommand::Keys(crate::cli::BridgeKeysCommand::Rotate(args)) => {
            rotate::run(&args).await
        }
        BridgeCommand::Init(args) => init::run(&args),
        BridgeCommand::Metrics(args) => tor_metrics::serve_alone(args.listen, args.tors).await,
    }
}

/// A new static cookie from fresh random bytes.
fn new_cookie() -> extorport::Cookie {
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(&mut *secret);
    extorport::Cookie::from_secret(*secret)
}

/// Writes a new static cookie to a file that must not exist yet, readable
/// by its owner only.
fn write_cookie(args: &CookieArgs) -> anyhow::Result<()> {
    let cookie = new_cookie();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.path)
        .with_context(|| {
            format!(
                "creating {} (an existing cookie is never overwritten)",
                args.path.display()
            )
        })?;
    file.write_all(&cookie.file_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", args.path.display()))?;
    println!("{}", args.path.display());
    Ok(())
}
