//! `onionlb bridge extor --compat-shim`: what extor-static-cookie does, for
//! operators who keep HAProxy in front of their tors. Each tor launches
//! one shim as a managed server transport:
//!
//! ```text
//! ServerTransportPlugin extor_static_cookie exec /usr/bin/onionlb bridge extor --compat-shim --static-cookie /etc/onionlb/bridge-static-cookie
//! ServerTransportListenAddr extor_static_cookie 127.0.0.1:10001
//! ```
//!
//! and the shim takes the transport's connections (through HAProxy) with
//! the static cookie and hands them to that one tor's ExtORPort with its
//! current cookie: the balancer with one instance, told where by tor's
//! `TOR_PT_*` variables. Its answer to tor goes to standard output; it
//! exits when tor closes its standard input, as tor asks.

use extorport::pt::ManagedServer;
use onionlb_core::bridge::Strategy;

use super::extor::{listen_for_transport, read_static_cookie, Balance};
use crate::cli::{ExtorArgs, InstanceArg};

/// Runs as tor's managed transport until tor closes standard input (when
/// it asks for that), SIGTERM or SIGINT.
pub async fn run(args: &ExtorArgs) -> anyhow::Result<()> {
    let server = match ManagedServer::from_env(|name| std::env::var(name).ok()) {
        Ok(server) => server,
        Err(e) => {
            println!("{}", e.line());
            return Err(e.into());
        }
    };
    let method = server.method.clone();
    let refuse = |e: anyhow::Error| {
        println!("SMETHOD-ERROR {method} {e:#}");
        e
    };
    let cookie = read_static_cookie(&args.static_cookie)
        .await
        .map_err(refuse)?;
    let bind = server
        .bind
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = listen_for_transport(bind).map_err(refuse)?;
    let addr = listener.local_addr()?;
    print!("{}", server.ready_lines(addr));
    let balance = Balance {
        cookie,
        instances: vec![InstanceArg {
            name: "tor".to_owned(),
            addr: server.extended_server_port,
            cookie: server.auth_cookie_file.clone(),
        }],
        strategy: Strategy::LeastConnections,
        listener,
        metrics_listen: None,
        admin_socket: None,
        max_connections: args.max_connections as usize,
        tor_metrics: Vec::new(),
        relay: super::extor::relay_mode(args.relay),
    };
    let exit_on_close = server.exit_on_stdin_close;
    balance
        .run(async move {
            if exit_on_close {
                stdin_closed().await;
            } else {
                std::future::pending::<()>().await;
            }
        })
        .await
}

/// Returns once standard input ends (or fails). The reading thread is
/// detached, so a stop for another reason does not wait for it.
async fn stdin_closed() {
    let (closed, wait) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 256];
        while matches!(std::io::Read::read(&mut stdin, &mut buf), Ok(n) if n > 0) {}
        let _ = closed.send(());
    });
    let _ = wait.await;
}
