//! Failover in seconds, on a private Tor network: each instance has an
//! `onionlb agent` beside it (two on the manager's Unix socket, one through
//! the manager's onion service with client authorization), and the manager
//! fetches only every 5 minutes, so everything fast here comes from the
//! agents.
//!
//! * an instance's tor is killed: within 10 s a master descriptor without
//!   it is uploaded, and 10 requests in a row succeed;
//! * only an instance's application stops: the same;
//! * an instance comes back with new intro points: within 10 s of its tor
//!   uploading its descriptor, a master descriptor carries them;
//! * a replayed, a foreign and a tampered descriptor pushed through the
//!   channel are rejected and logged, and change nothing;
//! * an instance is drained through its agent's drain file: out of every
//!   HSDir's master descriptor, and back when the file goes;
//! * an agent dies: within 10 s its instance is out (the heartbeat
//!   timeout is 8 s).
//!
//! The timings are printed (`cargo test -p onionlb --test failover --
//! --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{manager_port, ten_requests_in_a_row, testnet_config, tmp_dir, Manager};
use onionlb_core::agent::{AgentKey, Decoder, ToAgent, ToManager};
use onionlb_core::{KeyFormat, MasterKey, OnionAddress};
use testnet::app::served_by;
use testnet::Testnet;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use torctl::{Connector, Credentials, Event};

/// The bound on every reaction measured here.
const BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn agents_take_dead_instances_out_and_new_intro_points_in_within_seconds() {
    let (key, pem) = MasterKey::generate(&mut rand::rng()).unwrap();
    let master = key.address();
    let mut config = testnet_config("failover-test");
    config.masters = vec![master];
    let mut net = Testnet::start(config).await.unwrap();
    let dir = tmp_dir("failover-test-onionlb");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("agents.sock");
    let status_socket = dir.join("status.sock");
    let listen = free_port();
    // The agents' onion service key, made here so the test knows its
    // address; the manager would create it otherwise.
    let (onion_key, _) = MasterKey::generate(&mut rand::rng()).unwrap();
    common::write_private(
        &dir.join("agents-onion.key"),
        &onion_key.encode(KeyFormat::Tor).unwrap(),
    );
    let agent_keys: Vec<AgentKey> = (0..3)
        .map(|_| AgentKey::generate(&mut rand::rng()))
        .collect();
    let manager = Manager::start_with(
        &dir,
        &net,
        &pem,
        manager_port(&net),
        &format!(
            "fetch-interval: 300\nstatus-socket-location: {}\nagents:\n  socket: {}\n  listen: 127.0.0.1:{listen}\n  onion-key: agents-onion.key\n",
            status_socket.display(),
            socket.display()
        ),
        |i| {
            format!(
                "    agent-key: {}\n    agent-client-auth: {}\n",
                agent_keys[i].public(),
                agent_keys[i].client_auth_public()
            )
        },
    );
    // Up: its status socket answers (agents that come early retry).
    manager.wait_for_status(Duration::from_secs(30), |_| true);

    let nodes: Vec<_> = net.layout().instances().cloned().collect();
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let addresses: Vec<OnionAddress> = net.instance_addresses().to_vec();
    let restarted = dir.join("instance1.restarted");
    let _ = std::fs::remove_file(&restarted);
    let drain_file = dir.join("instance1.drain");
    let _ = std::fs::remove_file(&drain_file);
    let mut agents = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let key_file = dir.join(format!("{}.agent.key", node.name));
        common::write_private(&key_file, agent_keys[i].to_file_text().as_bytes());
        let manager_addr = if i == 2 {
            format!("onion:{}:{listen}", onion_key.address())
        } else {
            format!("unix:{}", socket.display())
        };
        let mut extra = Vec::new();
        if i == 1 {
            // The restart command runs once the instance has been unhealthy
            // for 2 heartbeats (it stands in for `systemctl restart`).
            extra = vec![
                "--restart-command".into(),
                format!("touch {}", restarted.display()),
                "--restart-after".into(),
                "2".into(),
                "--drain-file".into(),
                drain_file.display().to_string(),
            ];
        }
        agents.push(AgentProcess::spawn(
            &dir,
            &node.name,
            &[
                "--key".into(),
                key_file.display().to_string(),
                "--address".into(),
                addresses[i].to_string(),
                "--control-port".into(),
                format!("127.0.0.1:{}", node.control_port),
                "--socks".into(),
                format!("127.0.0.1:{}", node.socks_port.unwrap()),
                "--probe".into(),
                format!("http://127.0.0.1:{}/", node.app_port.unwrap()),
                "--manager".into(),
                manager_addr,
            ]
            .into_iter()
            .chain(extra)
            .collect::<Vec<String>>(),
        ));
    }

    // Every agent logs in, the remote one through the onion service.
    manager.wait_for_status(Duration::from_secs(120), |s| {
        let instances = &s["services"][0]["instances"];
        (0..2).all(|i| instances[i]["agent"] == "connected (the agent socket)")
            && instances[2]["agent"]
                .as_str()
                .is_some_and(|a| a.starts_with("connected (127.0.0.1:"))
    });
    let url = format!("http://{master}/");
    common::fetch_until_served(&net, &url, None, Duration::from_secs(180)).await;
    manager.wait_for_status(Duration::from_secs(60), |s| {
        common::both_descriptors_carry(&s["services"][0], 3)
    });
    let old_descriptor = instance_descriptor(&nodes[0]).await;

    // 1. instance0's tor dies.
    let killed = Instant::now();
    net.stop_instance(0).unwrap();
    let (out, published) = wait_out_and_republished(&manager, 0, killed, 2);
    // Its agent says why: tor's control connection was lost, or, polled
    // a little later, cannot be made again.
    assert!(out.contains("tor's control"), "{out}");
    wait_until_uploads_accepted(&status_socket, Duration::from_secs(30)).await;
    let ten_ok =
        ten_requests_in_a_row(&net, &url, &names[0], killed, Duration::from_secs(90)).await;
    println!(
        "tor killed: out of the master descriptor (upload sent) after {:.1} s; 10 requests in a row succeeded {:.1} s after the kill",
        published.as_secs_f64(),
        ten_ok.as_secs_f64()
    );

    // 2. Only instance1's application stops; its tor stays up.
    let stopped = Instant::now();
    net.stop_app(1).unwrap();
    let (out, published) = wait_out_and_republished(&manager, 1, stopped, 1);
    assert!(out.contains("probe"), "{out}");
    wait_until_uploads_accepted(&status_socket, Duration::from_secs(30)).await;
    let ten_ok =
        ten_requests_in_a_row(&net, &url, &names[1], stopped, Duration::from_secs(90)).await;
    println!(
        "application stopped: out after {:.1} s; 10 requests in a row succeeded {:.1} s after the stop",
        published.as_secs_f64(),
        ten_ok.as_secs_f64()
    );
    assert!(restarted.exists(), "the restart command did not run");
    net.start_app(1).unwrap();
    manager.wait_for_status(Duration::from_secs(20), |s| {
        s["services"][0]["instances"][1]["live"] == true
    });

    // 3. instance0 comes back with new intro points.
    net.start_instance(0, Duration::from_secs(60))
        .await
        .unwrap();
    let uploaded = first_upload(&nodes[0], addresses[0]).await;
    // Its agent tells the manager of the new tor before pushing, and every
    // intro point of the old run goes, so only the new run's first
    // descriptor (most often the one its agent pushes, sometimes one the
    // manager fetched a moment before) makes it live again; then both
    // master descriptors carry all three instances.
    manager.wait_for_status(
        (uploaded + BOUND).saturating_duration_since(Instant::now()),
        |s| {
            let service = &s["services"][0];
            let instance = &service["instances"][0];
            instance["live"] == true && common::both_descriptors_carry(service, 3)
        },
    );
    let carried = Instant::now();
    println!(
        "new intro points: in a master descriptor {:.1} s after the instance's upload",
        carried.saturating_duration_since(uploaded).as_secs_f64()
    );
    served_within(&net, &url, &names[0], Duration::from_secs(120)).await;

    // 4. Pushed descriptors that must not be used. (Should a descriptor of
    // the restarted tor have just rotated out, the manager fetches the
    // other at once: wait for it.)
    let revision_before = wait_for_revision(&status_socket, 0).await;
    let current0 = instance_descriptor(&nodes[0]).await;
    let current1 = instance_descriptor(&nodes[1]).await;
    let mut forger = TestAgent::login(&socket, &agent_keys[0], addresses[0]).await;
    let tampered = tamper(&current0);
    for (what, text) in [
        (
            "a replay of the instance's old descriptor",
            old_descriptor.as_str(),
        ),
        ("another instance's descriptor", current1.as_str()),
        ("a tampered descriptor", tampered.as_str()),
    ] {
        let answer = forger.push(text).await;
        assert!(
            matches!(&answer, ToAgent::Rejected(why) if why.starts_with("rejected a descriptor")),
            "{what} was not rejected by the checks: {answer:?}"
        );
        println!("{what}: {answer:?}");
    }
    // Its agent may push a newer genuine revision meanwhile; none of the
    // rejected ones may be in use.
    let revision_after = wait_for_revision(&status_socket, 0).await;
    assert!(revision_after >= revision_before);
    assert_ne!(revision_after, revision_of(&tampered));
    // The genuine current descriptor still passes on the same channel.
    let answer = forger.push(&current0).await;
    assert!(matches!(answer, ToAgent::Accepted(_)), "{answer:?}");

    // 5. instance1's operator drains it through its agent (the drain
    // file): it leaves both master descriptors, and the status says it is
    // drained once every HSDir acknowledged them; the file gone, it is
    // back.
    std::fs::write(&drain_file, b"").unwrap();
    let drained = Instant::now();
    manager.wait_for_status(Duration::from_secs(60), |s| {
        let service = &s["services"][0];
        service["instances"][1]["drain"] == "drained"
            && common::both_descriptors_carry(service, 2)
            && common::every_upload_accepted(service)
    });
    println!(
        "drained through its agent: every HSDir acknowledged after {:.1} s",
        drained.elapsed().as_secs_f64()
    );
    std::fs::remove_file(&drain_file).unwrap();
    manager.wait_for_status(Duration::from_secs(30), |s| {
        let service = &s["services"][0];
        service["instances"][1]["drain"].is_null()
            && service["instances"][1]["live"] == true
            && common::both_descriptors_carry(service, 3)
    });

    // 6. instance2's agent dies (SIGKILL, as with its machine): its
    // heartbeats stop, and the manager takes instance2 out.
    let silenced = Instant::now();
    agents[2].kill();
    let status =
        manager.wait_for_status(BOUND, |s| s["services"][0]["instances"][2]["live"] == false);
    let out = &status["services"][0]["instances"][2]["problem"];
    assert!(
        out.as_str().is_some_and(|p| p.contains("silent")),
        "{status}"
    );
    println!(
        "agent killed: instance out after {:.1} s of silence",
        silenced.elapsed().as_secs_f64()
    );

    drop(agents);
    manager.stop();

    // No agent secret in any log of the run, at debug level: not an
    // agent's seed nor its onion client key, not the agents' onion
    // service key, in the manager's log or any agent's.
    let onion_secret = onion_key.encode(KeyFormat::Tor).unwrap()[32..].to_vec();
    let mut logs = vec![std::fs::read(dir.join("onionlb.log")).unwrap()];
    for name in &names {
        logs.push(std::fs::read(dir.join(format!("{name}.agent.log"))).unwrap());
    }
    for key in &agent_keys {
        let text = key.to_file_text();
        let seed = data_encoding::BASE64
            .decode(text.split_whitespace().nth(1).unwrap().as_bytes())
            .unwrap();
        let auth = data_encoding::BASE64
            .decode(
                key.client_auth_secret()
                    .trim_start_matches("x25519:")
                    .as_bytes(),
            )
            .unwrap();
        for log in &logs {
            common::assert_no_secret(log, &seed, "a log (agent seed)");
            common::assert_no_secret(log, &auth, "a log (agent client key)");
            common::assert_no_secret(log, &onion_secret, "a log (agents' onion key)");
        }
    }
    net.stop();
}

/// Waits until instance `index` is out of the master descriptors, which
/// are then published with the `remaining` others, within [`BOUND`] of
/// `since`. Returns why it is out (the status's `problem`) and the time
/// from `since` until the status said so.
fn wait_out_and_republished(
    manager: &Manager,
    index: usize,
    since: Instant,
    remaining: usize,
) -> (String, Duration) {
    let status = manager.wait_for_status(
        (since + BOUND).saturating_duration_since(Instant::now()),
        |s| {
            let service = &s["services"][0];
            service["instances"][index]["live"] == false
                && common::both_descriptors_carry(service, remaining)
        },
    );
    let published = since.elapsed();
    let problem = status["services"][0]["instances"][index]["problem"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (problem, published)
}

/// Fetches the master's descriptor afresh, then makes up to 30 requests
/// on fresh circuits (each picks an intro point at random) until `name`
/// answers; again with a fresh descriptor until `bound`.
async fn served_within(net: &Testnet, url: &str, name: &str, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        net.newnym().await.unwrap();
        for _ in 0..30 {
            let response = net.fetch(url).await;
            if response.as_ref().ok().and_then(|r| served_by(&r.body)) == Some(name) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never answered: {response:?}"
            );
        }
    }
}

/// Waits until every HSDir has accepted the newest master descriptors, so
/// a client fetches the new one wherever it asks.
async fn wait_until_uploads_accepted(status_socket: &Path, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        let status = read_status(status_socket).await;
        let states: Vec<String> = status["services"][0]["descriptors"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["hsdirs"].as_array().unwrap().clone())
            .map(|h| h["state"].as_str().unwrap().to_owned())
            .collect();
        if !states.is_empty() && states.iter().all(|s| s == "accepted") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "uploads not all accepted: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn read_status(status_socket: &Path) -> serde_json::Value {
    let mut stream = tokio::net::UnixStream::connect(status_socket)
        .await
        .unwrap();
    let mut json = String::new();
    stream.read_to_string(&mut json).await.unwrap();
    serde_json::from_str(&json).unwrap()
}

/// The revision of instance `index`'s descriptor in use, waiting up to
/// 60 s for it to have one.
async fn wait_for_revision(status_socket: &Path, index: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = read_status(status_socket).await;
        if let Some(revision) = status["services"][0]["instances"][index]["revision"].as_u64() {
            return revision;
        }
        assert!(
            Instant::now() < deadline,
            "instance {index} has no descriptor in use: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The instance tor's current descriptor, as its agent reads it.
async fn instance_descriptor(node: &testnet::layout::Node) -> String {
    let control = Connector::new(node.control_addr(), Credentials::Auto)
        .connect()
        .await
        .unwrap();
    let address = std::fs::read_to_string(node.hs_dir().join("hostname")).unwrap();
    let key = format!(
        "hs/service/desc/id/{}",
        address.trim().trim_end_matches(".onion")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match control.getinfo(&key).await {
            Ok(text) => return text,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no descriptor from {}: {e}",
                node.name
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// When the instance's tor first reports an uploaded descriptor, following
/// its events from now on (an upload before we subscribed counts as now).
async fn first_upload(node: &testnet::layout::Node, address: OnionAddress) -> Instant {
    let control = Connector::new(node.control_addr(), Credentials::Auto)
        .subscribe(["HS_DESC"])
        .connect()
        .await
        .unwrap();
    let mut events = control.take_events().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.recv())
            .await
            .expect("no descriptor upload within 60 s")
            .expect("the instance tor went away");
        if let Event::HsDesc(event) = Event::parse(&event) {
            if event.action == torctl::HsDescAction::Uploaded
                && event.address == address.without_suffix()
            {
                return Instant::now();
            }
        }
    }
}

/// The descriptor with its revision counter changed: the signature no
/// longer matches.
fn tamper(descriptor: &str) -> String {
    let revision = revision_of(descriptor);
    descriptor.replacen(
        &format!("revision-counter {revision}\n"),
        &format!("revision-counter {}\n", revision + 1000),
        1,
    )
}

/// A descriptor's revision counter.
fn revision_of(descriptor: &str) -> u64 {
    descriptor
        .lines()
        .find_map(|l| l.strip_prefix("revision-counter "))
        .unwrap()
        .parse()
        .unwrap()
}

/// The test speaking the agent protocol itself, as a compromised agent
/// holding an instance's key would.
struct TestAgent {
    stream: tokio::net::UnixStream,
    decoder: Decoder<ToAgent>,
}

impl TestAgent {
    async fn login(socket: &Path, key: &AgentKey, instance: OnionAddress) -> Self {
        let mut agent = TestAgent {
            stream: tokio::net::UnixStream::connect(socket).await.unwrap(),
            decoder: Decoder::default(),
        };
        let ToAgent::Challenge(challenge) = agent.next().await else {
            panic!("no challenge");
        };
        agent
            .stream
            .write_all(&key.hello(&challenge, instance).encode())
            .await
            .unwrap();
        assert_eq!(agent.next().await, ToAgent::Welcome);
        agent
    }

    /// Pushes `text` and returns the manager's answer. The per-instance
    /// descriptor budget is shared with the instance's real agent: when its
    /// pushes used it up, waits for a token (one per 10 s) and tries again.
    async fn push(&mut self, text: &str) -> ToAgent {
        for _ in 0..3 {
            self.stream
                .write_all(&ToManager::Descriptor(text.to_owned()).encode())
                .await
                .unwrap();
            let answer = self.next().await;
            if answer != ToAgent::Rejected("rate limited; try later".into()) {
                return answer;
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        panic!("still rate limited after 20 s");
    }

    async fn next(&mut self) -> ToAgent {
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(message) = self.decoder.next_message().unwrap() {
                return message;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buffer))
                .await
                .expect("the manager did not answer within 10 s")
                .unwrap();
            assert!(n > 0, "the manager closed the connection");
            self.decoder.push(&buffer[..n]);
        }
    }
}

/// An `onionlb agent run` child, killed when dropped.
struct AgentProcess {
    child: Child,
}

impl AgentProcess {
    fn spawn(dir: &Path, name: &str, args: &[String]) -> Self {
        let log = std::fs::File::create(dir.join(format!("{name}.agent.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_onionlb"))
            .args(["agent", "run", "-v", "debug"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        AgentProcess { child }
    }
}

impl AgentProcess {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
