//! Serving the status report on a Unix socket.

use std::path::Path;

use crate::answer::Asker;
use crate::unix_socket::Server;

/// Mode of the socket: the report names every instance's address, which
/// the operator may want to keep from other local users; the group lets
/// an admin group read it.
const SOCKET_MODE: u32 = 0o660;

/// Listens at `path`, answering each connection with the daemon's report,
/// as JSON, made when asked. A stale socket file is replaced; a live one
/// (another manager) is not.
pub async fn start(path: &Path, reports: Asker) -> anyhow::Result<Server> {
    let server = Server::start(path, SOCKET_MODE, "status socket", move |stream| {
        let reports = reports.clone();
        async move {
            // A daemon too busy to answer in time: closed unanswered.
            let Some(report) = reports.status().await else {
                return;
            };
            let Ok(json) = serde_json::to_vec(&*report) else {
                return;
            };
            crate::answer::send_and_close(stream, &[&json, b"\n"]).await;
        }
    })
    .await?;
    tracing::info!("status socket at {}", path.display());
    Ok(server)
}
