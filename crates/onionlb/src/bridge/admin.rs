//! The balancer's admin socket: a client sends one line and reads one JSON
//! line back, every instance's state after the request was carried out.
//!
//! ```text
//! DRAIN bridge1      bridge1 takes no new connections
//! UNDRAIN bridge1    it takes them again
//! STATUS             nothing changes
//! ```
//!
//! The answer: `{"ok":true,"instances":[{"name":..,"open":..,"up":..,
//! "drained":..}]}`, or `{"ok":false,"error":".."}` for a request it cannot
//! carry out. The socket is mode 0660.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use onionlb_core::bridge::Pool;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

use crate::unix_socket::Server;

/// Mode of the socket: the balancer's user and group.
const SOCKET_MODE: u32 = 0o660;
/// Bound on a request line.
const MAX_REQUEST_BYTES: u64 = 512;
/// Bound on an answer.
const MAX_ANSWER_BYTES: u64 = 256 * 1024;
/// Time a client has to send its request, and to read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the admin socket at `path`; `pool` gives the pool to change and
/// report (locked for the length of one request).
pub async fn serve<F>(path: &Path, pool: F) -> anyhow::Result<Server>
where
    F: Fn(&dyn Fn(&mut Pool) -> String) -> String + Send + Sync + 'static,
{
    let pool = std::sync::Arc::new(pool);
    Server::start(path, SOCKET_MODE, "admin socket", move |stream| {
        let pool = std::sync::Arc::clone(&pool);
        async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES));
            let read = tokio::time::timeout(CLIENT_TIMEOUT, reader.read_line(&mut line)).await;
            if !matches!(read, Ok(Ok(n)) if n > 0) {
                return;
            }
            let request = line.trim_end().to_owned();
            let mut answer = pool(&|pool: &mut Pool| carry_out(pool, &request));
            answer.push('\n');
            let _ = tokio::time::timeout(CLIENT_TIMEOUT, write.write_all(answer.as_bytes())).await;
        }
    })
    .await
}

/// Carries out one request line on `pool` and returns the answer.
pub fn carry_out(pool: &mut Pool, request: &str) -> String {
    let (verb, name) = request.split_once(' ').unwrap_or((request, ""));
    let result = match verb {
        "DRAIN" | "UNDRAIN" if pool.set_drained(name, verb == "DRAIN") => Ok(()),
        "DRAIN" | "UNDRAIN" => Err(format!("no instance is named {name:?}")),
        "STATUS" if name.is_empty() => Ok(()),
        _ => Err("expected DRAIN NAME, UNDRAIN NAME or STATUS".to_owned()),
    };
    let answer = match result {
        Ok(()) => {
            let instances: Vec<_> = pool
                .members()
                .iter()
                .map(|m| {
                    json!({
                        "name": m.name(),
                        "open": m.open(),
                        "up": m.is_up(),
                        "drained": m.is_drained(),
                    })
                })
                .collect();
            json!({ "ok": true, "instances": instances })
        }
        Err(error) => json!({ "ok": false, "error": error }),
    };
    answer.to_string()
}

/// Sends `line` to the admin socket at `path` and prints the answer; an
/// answer that says the request failed is an error.
pub async fn ask(path: &Path, line: &str) -> anyhow::Result<()> {
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(path)
            .await
            .with_context(|| format!("connecting to the admin socket {}", path.display()))?;
        stream.write_all(format!("{line}\n").as_bytes()).await?;
        let mut answer = String::new();
        (&mut stream)
            .take(MAX_ANSWER_BYTES)
            .read_to_string(&mut answer)
            .await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .with_context(|| {
            format!(
                "no answer from {} within {CLIENT_TIMEOUT:?}",
                path.display()
            )
        })??;
    let parsed: serde_json::Value =
        serde_json::from_str(answer.trim()).context("the balancer's answer is not JSON")?;
    if parsed["ok"] != true {
        bail!(
            "the balancer refused: {}",
            parsed["error"].as_str().unwrap_or("(no reason given)")
        );
    }
    println!("{}", answer.trim());
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;
    use onionlb_core::bridge::Strategy;

    #[test]
    fn requests_change_the_pool_and_answer_its_state() {
        let mut pool = Pool::new(["a", "b"], Strategy::LeastConnections);
        let answer: serde_json::Value =
            serde_json::from_str(&carry_out(&mut pool, "DRAIN b")).unwrap();
        assert_eq!(answer["ok"], true);
        assert_eq!(answer["instances"][1]["drained"], true);
        assert!(pool.members()[1].is_drained());
        let answer: serde_json::Value =
            serde_json::from_str(&carry_out(&mut pool, "UNDRAIN b")).unwrap();
        assert_eq!(answer["instances"][1]["drained"], false);
        for bad in ["DRAIN zz", "DRAIN", "STATUS x", "HELLO", ""] {
            let answer: serde_json::Value =
                serde_json::from_str(&carry_out(&mut pool, bad)).unwrap();
            assert_eq!(answer["ok"], false, "{bad}");
        }
        assert!(!pool.members()[1].is_drained());
    }
}
