//! The balancer's admin socket: a client sends one line and reads one JSON
//! line back, every instance's state after the request was carried out.
//!
//! ```text
//! DRAIN bridge1                  bridge1 takes no new connections
//! UNDRAIN bridge1                it takes them again
//! DRAIN bridge1 UNDRAIN bridge0  both at once
//! STATUS                         nothing changes
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

/// Carries out one request line on `pool` and returns the answer. A line
/// may pair several verbs with names (`DRAIN b UNDRAIN a`): all are
/// checked first and carried out together, so that a tor can hand over to
/// another with no moment in which neither takes connections.
pub fn carry_out(pool: &mut Pool, request: &str) -> String {
    let result = changes(pool, request).map(|changes| {
        for (name, drained) in changes {
            pool.set_drained(name, drained);
        }
    });
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

/// The drains a request line asks for, each name checked.
fn changes<'a>(pool: &Pool, request: &'a str) -> Result<Vec<(&'a str, bool)>, String> {
    const USAGE: &str = "expected STATUS, or DRAIN NAME and UNDRAIN NAME pairs";
    let words: Vec<&str> = request.split_whitespace().collect();
    if words == ["STATUS"] {
        return Ok(Vec::new());
    }
    if words.is_empty() || words.len() % 2 != 0 {
        return Err(USAGE.to_owned());
    }
    words
        .chunks(2)
        .map(|pair| {
            let drained = match pair[0] {
                "DRAIN" => true,
                "UNDRAIN" => false,
                _ => return Err(USAGE.to_owned()),
            };
            match pool.find(pair[1]) {
                Some(_) => Ok((pair[1], drained)),
                None => Err(format!("no instance is named {:?}", pair[1])),
            }
        })
        .collect()
}

/// Sends `line` to the admin socket at `path` and prints the answer; an
/// answer that says the request failed is an error.
pub async fn ask(path: &Path, line: &str) -> anyhow::Result<()> {
    let answer = request(path, line).await?;
    println!("{answer}");
    Ok(())
}

/// Sends `line` to the admin socket at `path` and returns the answer; an
/// answer that says the request failed is an error.
pub async fn request(path: &Path, line: &str) -> anyhow::Result<serde_json::Value> {
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
    Ok(parsed)
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
        let answer: serde_json::Value =
            serde_json::from_str(&carry_out(&mut pool, "DRAIN a UNDRAIN b")).unwrap();
        assert_eq!(answer["instances"][0]["drained"], true);
        assert_eq!(answer["instances"][1]["drained"], false);
        assert!(pool.members()[0].is_drained());
        // Nothing of a request with a bad part is carried out.
        let answer: serde_json::Value =
            serde_json::from_str(&carry_out(&mut pool, "UNDRAIN a DRAIN zz")).unwrap();
        assert_eq!(answer["ok"], false);
        assert!(pool.members()[0].is_drained());
        carry_out(&mut pool, "UNDRAIN a");
        for bad in [
            "DRAIN zz",
            "DRAIN",
            "STATUS x",
            "HELLO",
            "",
            "DRAIN a UNDRAIN",
        ] {
            let answer: serde_json::Value =
                serde_json::from_str(&carry_out(&mut pool, bad)).unwrap();
            assert_eq!(answer["ok"], false, "{bad}");
        }
        assert!(!pool.members()[1].is_drained());
    }
}
