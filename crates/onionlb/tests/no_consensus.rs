//! A management tor without a consensus yet: onionlb says so once, waits,
//! and goes on when one arrives (Python Onionbalance crashes here).
//!
//! The tor is a fake on a loopback port that answers the consensus GETINFO
//! with 551, as C tor does before it has a consensus, for its first few
//! asks, then with a consensus a private network produced.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{tmp_dir, Manager};
use onionlb_core::MasterKey;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

const REFUSALS: usize = 2;

fn testdata(name: &str) -> String {
    let path = format!(
        "{}/../onionlb-core/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

/// A `250+key=` data reply, dot-escaped.
fn data_reply(key: &str, text: &str) -> String {
    let mut reply = format!("250+{key}=\r\n");
    for line in text.lines() {
        if line.starts_with('.') {
            reply.push('.');
        }
        reply.push_str(line);
        reply.push_str("\r\n");
    }
    reply.push_str(".\r\n250 OK\r\n");
    reply
}

/// Serves one control connection like a tor that has no consensus for
/// its first `REFUSALS` asks.
async fn fake_tor(listener: TcpListener) {
    let (stream, _) = listener.accept().await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut asked = 0;
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = if line.starts_with("PROTOCOLINFO") {
            "250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250-VERSION Tor=\"0.4.9.0\"\r\n250 OK\r\n"
                .to_owned()
        } else if line.starts_with("GETCONF TestingTorNetwork") {
            "250 TestingTorNetwork=1\r\n".to_owned()
        } else if line.starts_with("GETINFO dir/status-vote/current/consensus-microdesc") {
            asked += 1;
            if asked <= REFUSALS {
                "551 Could not open cached consensus\r\n".to_owned()
            } else {
                data_reply(
                    "dir/status-vote/current/consensus-microdesc",
                    &testdata("consensus-microdesc.txt"),
                )
            }
        } else if line.starts_with("GETINFO md/all") {
            data_reply("md/all", &testdata("microdescs.txt"))
        } else {
            // AUTHENTICATE, SETEVENTS, HSFETCH, ...
            "250 OK\r\n".to_owned()
        };
        if write.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn waits_for_a_consensus_and_says_so_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(fake_tor(listener));

    let dir = tmp_dir("no-consensus");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (key, pem) = MasterKey::generate(&mut rand::rng()).unwrap();
    let (instance, _) = MasterKey::generate(&mut rand::rng()).unwrap();
    let key_path = dir.join("master.key");
    std::fs::write(&key_path, pem).unwrap();
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "services:\n- key: master.key\n  instances:\n  - address: {}\n",
            instance.address()
        ),
    )
    .unwrap();
    let manager = Manager::spawn(&dir.join("config.yaml"), port);

    // onionlb asks every 5 s: the consensus comes with the third ask.
    let balancing = format!("balancing {} over 1 instance(s)", key.address());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !manager.log().contains(&balancing) {
        assert!(
            Instant::now() < deadline,
            "never went on after the consensus arrived:\n{}",
            manager.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = manager.log();
    let waiting = "the management tor has no consensus yet; waiting for one";
    assert_eq!(log.matches(waiting).count(), 1, "{log}");
    assert!(log.find(waiting) < log.find(&balancing), "{log}");
    manager.stop();
}
