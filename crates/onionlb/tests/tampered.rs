//! Bad instance descriptors reaching the manager are rejected, counted by
//! reason, and change nothing: the daemon keeps publishing from what it had.
//!
//! HSDirs check signatures and revisions themselves, so a real network
//! never hands the manager such descriptors. Here a proxy on the control
//! connection between onionlb and the management tor injects
//! `HS_DESC_CONTENT` events carrying them, as a compromised or buggy path
//! would; everything else is the real private network.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fetch_until_served, free_port, scrape, testnet_config, tmp_dir, Manager};
use onionlb_core::MasterKey;
use testnet::Testnet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use torctl::{ControlAddr, Event, Reply, ReplyParser};

/// The descriptors tor delivered to onionlb, as events.
type Seen = Arc<Mutex<Vec<Reply>>>;

/// Forwards one control connection, recording the `HS_DESC_CONTENT`
/// events tor sends and letting the test slip events in between replies.
async fn injecting_proxy(upstream: SocketAddr) -> (u16, mpsc::UnboundedSender<Vec<u8>>, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (inject, mut injected) = mpsc::unbounded_channel::<Vec<u8>>();
    let seen = Seen::default();
    let recorded = Arc::clone(&seen);
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(upstream).await.unwrap();
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_tor, mut to_tor) = server.into_split();
        tokio::spawn(async move { tokio::io::copy(&mut from_client, &mut to_tor).await });
        let mut parser = ReplyParser::default();
        let mut buf = vec![0u8; 65536];
        loop {
            tokio::select! {
                read = from_tor.read(&mut buf) => {
                    let n = read.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    parser.feed(&buf[..n]);
                    while let Some(reply) = parser.next_reply().unwrap() {
                        to_client.write_all(&reply.to_bytes()).await.unwrap();
                        if reply.event_keyword() == Some("HS_DESC_CONTENT") {
                            recorded.lock().unwrap().push(reply);
                        }
                    }
                }
                Some(event) = injected.recv() => to_client.write_all(&event).await.unwrap(),
            }
        }
    });
    (port, inject, seen)
}

/// The descriptors tor delivered for `address`, oldest first.
fn delivered(seen: &Seen, address: &str) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|reply| {
            let content = match Event::parse(reply) {
                Event::HsDescContent(content) => content,
                _ => return None,
            };
            (content.address == address && !content.descriptor.is_empty())
                .then_some(content.descriptor)
        })
        .collect()
}

/// The first descriptor tor delivered for `address`.
fn first_delivered(seen: &Seen, address: &str) -> String {
    delivered(seen, address).into_iter().next().unwrap()
}

/// The descriptor tor delivered last for `address`.
fn last_delivered(seen: &Seen, address: &str) -> String {
    delivered(seen, address).pop().unwrap()
}

/// `descriptor` with one character of its outer signature changed.
fn with_bad_signature(descriptor: &str) -> String {
    let at = descriptor.rfind("signature ").unwrap() + "signature ".len();
    let flipped = if &descriptor[at..=at] == "A" {
        "B"
    } else {
        "A"
    };
    let mut tampered = descriptor.to_owned();
    tampered.replace_range(at..=at, flipped);
    tampered
}

/// An `HS_DESC_CONTENT` event delivering `descriptor` for `address`.
fn content_event(address: &str, descriptor: &str) -> Vec<u8> {
    let mut event = format!("650+HS_DESC_CONTENT {address} x UNKNOWN\r\n");
    for line in descriptor.trim_end().split('\n') {
        if line.starts_with('.') {
            event.push('.');
        }
        event.push_str(line);
        event.push_str("\r\n");
    }
    event.push_str(".\r\n650 OK\r\n");
    event.into_bytes()
}

/// `onionlb_descriptors_refused_total` of `instance`, by reason.
fn refusals(port: u16, instance: &str) -> BTreeMap<String, u64> {
    let prefix = format!("onionlb_descriptors_refused_total{{instance=\"{instance}\",reason=\"");
    scrape(port)
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (reason, count) = rest.split_once("\"} ")?;
            Some((reason.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

/// Sends `event`, then waits up to 30 s for the manager to count more
/// refusals of `instance`'s descriptors; returns the reasons counted.
async fn refused_after(
    port: u16,
    instance: &str,
    inject: &mpsc::UnboundedSender<Vec<u8>>,
    event: Vec<u8>,
) -> Vec<String> {
    let before = refusals(port, instance);
    inject.send(event).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = refusals(port, instance);
        let more: Vec<String> = now
            .iter()
            .filter(|(reason, n)| before.get(*reason).copied().unwrap_or(0) < **n)
            .map(|(reason, _)| reason.clone())
            .collect();
        if !more.is_empty() {
            return more;
        }
        assert!(
            Instant::now() < deadline,
            "not refused within 30 s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_foreign_and_replayed_descriptors_are_rejected_and_publishing_goes_on() {
    let (key, pem) = MasterKey::generate(&mut rand::rng()).unwrap();
    let master = key.address();
    let mut config = testnet_config("tampered-test");
    config.masters = vec![master];
    let mut net = Testnet::start(config).await.unwrap();
    let ControlAddr::Tcp(upstream) = net.manager_control().addr else {
        panic!("the testnet's management tor listens on TCP");
    };
    let (proxy_port, inject, seen) = injecting_proxy(upstream).await;
    let metrics_port = free_port();
    let manager = Manager::start(
        &tmp_dir("tampered-test-onionlb"),
        &net,
        &pem,
        proxy_port,
        &format!("fetch-interval: 5\nmetrics-listen: 127.0.0.1:{metrics_port}\n"),
    );
    let url = format!("http://{master}/");
    fetch_until_served(&net, &url, None, Duration::from_secs(180)).await;

    let instance1 = net.instance_addresses()[1].without_suffix();
    let old = first_delivered(&seen, &instance1);
    let other = first_delivered(&seen, &net.instance_addresses()[2].without_suffix());

    // A bad signature on the descriptor tor delivered last. A period can
    // end (they are 8 minutes here) between that delivery and the
    // injection; the manager then no longer takes that period's key and
    // counts `wrong_key` before looking at the signature. So that case is
    // tried again with the newer descriptor tor has delivered since, and
    // only that case.
    let mut refused = Vec::new();
    for _ in 0..3 {
        let current = last_delivered(&seen, &instance1);
        refused = refused_after(
            metrics_port,
            "instance1",
            &inject,
            content_event(&instance1, &with_bad_signature(&current)),
        )
        .await;
        if refused != ["wrong_key"] || last_delivered(&seen, &instance1) == current {
            break;
        }
    }
    assert_eq!(refused, ["invalid"]);

    // Another service's descriptor, delivered as instance1's.
    let refused = refused_after(
        metrics_port,
        "instance1",
        &inject,
        content_event(&instance1, &other),
    )
    .await;
    assert_eq!(refused, ["wrong_key"]);

    // A replay: instance1 restarts with new intro points and a higher
    // revision; once the manager has taken them in, the old descriptor is
    // sent again.
    let modified =
        |s: &serde_json::Value| s["services"][0]["instances"][1]["introSetModified"].clone();
    let before = modified(&manager.wait_for_status(Duration::from_secs(10), |_| true));
    net.stop_instance(1).unwrap();
    net.start_instance(1, Duration::from_secs(120))
        .await
        .unwrap();
    // Taken in (its publication may count as a new period's, should the
    // 8-minute period end meanwhile).
    manager.wait_for_status(Duration::from_secs(180), |s| {
        modified(s) != before && s["services"][0]["instances"][1]["live"] == true
    });
    // Refused as a replay, or, once clients fetch the next period's
    // descriptors (a period is 8 minutes here), as another period's key.
    let refused = refused_after(
        metrics_port,
        "instance1",
        &inject,
        content_event(&instance1, &old),
    )
    .await;
    assert!(
        refused.iter().all(|r| r == "replay" || r == "wrong_key"),
        "{refused:?}"
    );

    // None of it disturbed the service: the daemon runs and the master
    // address still answers.
    fetch_until_served(&net, &url, None, Duration::from_secs(120)).await;
    let log = manager.log();
    assert!(!log.contains("ERROR"), "{log}");
    manager.stop();
    net.stop();
}
