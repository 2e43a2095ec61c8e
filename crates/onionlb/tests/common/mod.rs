//! Helpers shared by the integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use testnet::app::served_by;
use testnet::{Config, Testnet};

/// A network config in `target/tmp/<name>` whose instance apps are this
/// build's `onionlb testnet app`.
pub fn testnet_config(name: &str) -> Config {
    let app = vec![
        env!("CARGO_BIN_EXE_onionlb").into(),
        "testnet".into(),
        "app".into(),
    ];
    Config::new(tmp_dir(name), app)
}

/// `target/tmp/<name>`.
pub fn tmp_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Fetches `url` until the answer names `expected` (any instance if
/// `None`), for at most `bound`, sending NEWNYM between tries so the client
/// fetches descriptors again. Returns who answered.
pub async fn fetch_until_served(
    net: &Testnet,
    url: &str,
    expected: Option<&str>,
    bound: Duration,
) -> String {
    let deadline = Instant::now() + bound;
    loop {
        let result = net.fetch(url).await;
        if let Ok(response) = &result {
            if let Some(who) = served_by(&response.body) {
                if expected.is_none_or(|e| e == who) {
                    return who.to_owned();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered as expected ({expected:?}): {result:?}"
        );
        net.newnym().await.unwrap();
    }
}
