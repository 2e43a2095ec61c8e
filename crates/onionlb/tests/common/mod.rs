//! Helpers shared by the integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// The management tor's control port (the testnet's tors listen on TCP).
pub fn manager_port(net: &Testnet) -> u16 {
    match net.manager_control().addr {
        torctl::ControlAddr::Tcp(addr) => addr.port(),
        other => panic!("the management tor listens on {other}, not TCP"),
    }
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

/// After a fresh descriptor fetch, 10 requests in a row must succeed
/// within `bound`, none answered by `dead`; returns the time from `since`
/// to the tenth.
///
/// A failed request starts the count again, after a fresh descriptor
/// fetch. Near a time period boundary of this 8-minute-period network a
/// client sometimes asks an HSDir that has no descriptor yet (404), and
/// NEWNYM lets it ask the others again. And C tor relays have been seen
/// to acknowledge an introduction on a dead instance's intro point 15 s
/// after its tor exited (no INTRODUCE2 reached any live instance): the
/// client then waits for a rendezvous that never comes, and no balancer
/// can prevent that. An answer from the dead instance fails at once.
pub async fn ten_requests_in_a_row(
    net: &Testnet,
    url: &str,
    dead: &str,
    since: Instant,
    bound: Duration,
) -> Duration {
    let deadline = Instant::now() + bound;
    'again: loop {
        net.newnym().await.unwrap();
        for request in 0..10 {
            let response = match net.fetch(url).await {
                Ok(response) => response,
                Err(e) => {
                    println!("request {request} failed, counting again: {e}");
                    assert!(
                        Instant::now() < deadline,
                        "no 10 requests in a row within {bound:?}"
                    );
                    continue 'again;
                }
            };
            let who = served_by(&response.body).unwrap();
            assert_ne!(who, dead, "request {request} was answered by {dead}");
        }
        return since.elapsed();
    }
}

/// Writes a key file (mode 0600, replacing any).
pub fn write_private(path: &Path, bytes: &[u8]) {
    testnet::keys::write_private(path, bytes).unwrap();
}

/// onionlb running against the network's management tor.
pub struct Manager {
    child: Child,
    log: std::path::PathBuf,
}

impl Manager {
    /// Writes `key_pem` and a config listing `net`'s instances (plus
    /// `extra_yaml` at the top level) to `dir`, and starts onionlb against
    /// the control port `control_port` on 127.0.0.1.
    pub fn start(
        dir: &Path,
        net: &Testnet,
        key_pem: &str,
        control_port: u16,
        extra_yaml: &str,
    ) -> Manager {
        Manager::start_with(dir, net, key_pem, control_port, extra_yaml, |_| {
            String::new()
        })
    }

    /// As [`Manager::start`], with `instance_yaml(i)` added to instance
    /// `i`'s entry (indented keys such as `    agent-key: ...\n`).
    pub fn start_with(
        dir: &Path,
        net: &Testnet,
        key_pem: &str,
        control_port: u16,
        extra_yaml: &str,
        instance_yaml: impl Fn(usize) -> String,
    ) -> Manager {
        std::fs::create_dir_all(dir).unwrap();
        write_private(&dir.join("master.key"), key_pem.as_bytes());

        let mut yaml = format!("{extra_yaml}services:\n- key: master.key\n  instances:\n");
        for (index, (node, address)) in net
            .layout()
            .instances()
            .zip(net.instance_addresses())
            .enumerate()
        {
            yaml.push_str(&format!(
                "  - address: {address}\n    name: {}\n{}",
                node.name,
                instance_yaml(index)
            ));
        }
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).unwrap();

        Manager::spawn(&config, control_port)
    }

    /// Starts onionlb with `config` against the control port
    /// `control_port` on 127.0.0.1, logging at debug level to
    /// `onionlb.log` beside the config, with its status socket
    /// `status.sock` there (by the environment, as Python Onionbalance
    /// reads it, unless the config names the same).
    pub fn spawn(config: &Path, control_port: u16) -> Manager {
        let port = control_port.to_string();
        let log = config.with_file_name("onionlb.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_onionlb"))
            .env(
                "ONIONBALANCE_STATUS_SOCKET_LOCATION",
                config.with_file_name("status.sock"),
            )
            .args(["-v", "debug", "-p", &port, "-c"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Manager { child, log }
    }

    /// Starts onionlb as the packaged unit (contrib/systemd/onionlb.service)
    /// does, from its `Environment=` settings, with `/etc/onionlb/` moved to
    /// `dir` and the status socket to `dir/status.sock`. The unit's control
    /// socket is Debian tor's `/run/tor/control`; the private network's
    /// tors listen on TCP, so it is given `-p control_port` instead.
    pub fn spawn_packaged(dir: &Path, control_port: u16) -> Manager {
        let unit = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../contrib/systemd/onionlb.service"
        ))
        .unwrap();
        let log = dir.join("onionlb.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_onionlb"));
        let mut settings = 0;
        for line in unit.lines() {
            let Some((name, value)) = line
                .strip_prefix("Environment=")
                .and_then(|s| s.split_once('='))
            else {
                continue;
            };
            settings += 1;
            if name == "ONIONBALANCE_TOR_CONTROL_SOCKET" {
                assert_eq!(value, "/run/tor/control");
                continue;
            }
            let value = value
                .replace("/etc/onionlb/", &format!("{}/", dir.display()))
                .replace(
                    "/run/onionlb/control",
                    &dir.join("status.sock").display().to_string(),
                );
            command.env(name, value);
        }
        assert!(settings >= 3, "the unit's settings moved:\n{unit}");
        let child = command
            .args(["-v", "debug", "-p", &control_port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Manager { child, log }
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `bound` until the log has a line containing `needle`
    /// after the first line containing `after`; returns that line.
    pub fn wait_for_log(&self, after: &str, needle: &str, bound: Duration) -> String {
        self.wait_for_line(after, |l| l.contains(needle), Instant::now() + bound)
    }

    /// Waits until `deadline` for a line that `matches` after the first
    /// line containing `after`; returns that line.
    pub fn wait_for_line(
        &self,
        after: &str,
        matches: impl Fn(&str) -> bool,
        deadline: Instant,
    ) -> String {
        loop {
            let log = self.log();
            if let Some(start) = log.find(after) {
                if let Some(line) = log[start..].lines().find(|l| matches(l)) {
                    return line.to_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no matching line after {after:?} in time:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends it `signal`.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Its status socket.
    pub fn status_socket(&self) -> PathBuf {
        self.log.with_file_name("status.sock")
    }

    /// Waits up to `bound` for its status report to be `ready`; returns
    /// it.
    pub fn wait_for_status(
        &self,
        bound: Duration,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + bound;
        loop {
            let report = status(&self.status_socket());
            if report.as_ref().is_some_and(&ready) {
                return report.unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "status not as awaited within {bound:?}: {report:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The config file it runs with.
    pub fn config(&self) -> PathBuf {
        self.log.with_file_name("config.yaml")
    }

    /// SIGTERM, and it must exit cleanly within 10 s.
    pub fn stop(self) {
        self.stop_within(Duration::from_secs(10));
    }

    /// SIGTERM, and it must exit cleanly within `bound`.
    pub fn stop_within(mut self, bound: Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "onionlb exited with {status}:\n{}",
                    self.log()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!(
            "onionlb did not exit within {bound:?} of SIGTERM:\n{}",
            self.log()
        );
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether both of `service`'s descriptors (in a status report) are
/// published with intro points of `instances` instances.
pub fn both_descriptors_carry(service: &serde_json::Value, instances: usize) -> bool {
    service["descriptors"]
        .as_array()
        .is_some_and(|descriptors| {
            descriptors.len() == 2 && descriptors.iter().all(|d| d["instances"] == instances)
        })
}

/// The status report read from the socket at `socket`; `None` while
/// nothing listens there yet.
pub fn status(socket: &Path) -> Option<serde_json::Value> {
    use std::io::Read as _;
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut json = String::new();
    stream.read_to_string(&mut json).unwrap();
    Some(serde_json::from_str(&json).unwrap())
}

/// GET /metrics from a manager's metrics endpoint on `port`.
pub fn scrape(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.0 200 OK\r\n"), "{response}");
    response
}

/// A port on 127.0.0.1 free now, for a manager's metrics.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fails if `secret` appears in `haystack` raw, in hex (either case), in
/// base64 or in base32 (either case), or if any 16-byte piece of it does
/// raw or in hex.
pub fn assert_no_secret(haystack: &[u8], secret: &[u8], what: &str) {
    let text = String::from_utf8_lossy(haystack);
    let lower = text.to_ascii_lowercase();
    let encodings = [
        data_encoding::HEXLOWER.encode(secret),
        data_encoding::BASE64.encode(secret),
        data_encoding::BASE64_NOPAD.encode(secret),
        data_encoding::BASE32_NOPAD
            .encode(secret)
            .to_ascii_lowercase(),
    ];
    for encoded in &encodings {
        let found = if encoded.bytes().any(|b| b.is_ascii_uppercase()) {
            text.contains(encoded.as_str())
        } else {
            lower.contains(encoded.as_str())
        };
        assert!(
            !found,
            "{what} holds a secret in the encoding {encoded:.12}..."
        );
    }
    for piece in secret.chunks(16).filter(|p| p.len() == 16) {
        assert!(
            !haystack.windows(16).any(|w| w == piece),
            "{what} holds 16 raw bytes of a secret"
        );
        assert!(
            !lower.contains(&data_encoding::HEXLOWER.encode(piece)),
            "{what} holds 16 bytes of a secret in hex"
        );
    }
}

/// Whether every upload of both of `service`'s descriptors (in a status
/// report) was accepted by its HSDir.
pub fn every_upload_accepted(service: &serde_json::Value) -> bool {
    service["descriptors"]
        .as_array()
        .is_some_and(|descriptors| {
            descriptors.len() == 2
                && descriptors.iter().all(|d| {
                    d["hsdirs"].as_array().is_some_and(|h| {
                        !h.is_empty() && h.iter().all(|u| u["state"] == "accepted")
                    })
                })
        })
}

/// The fingerprints of the network's relays and authorities: its HSDirs.
pub fn relay_fingerprints(net: &Testnet) -> Vec<String> {
    use testnet::layout::Role;
    net.layout()
        .nodes
        .iter()
        .filter(|n| matches!(n.role, Role::Authority | Role::Relay))
        .map(|n| {
            let text = std::fs::read_to_string(n.data_dir.join("fingerprint")).unwrap();
            text.split_whitespace().nth(1).unwrap().to_owned()
        })
        .collect()
}

/// The private network's time period: one SRV run of 24 voting intervals.
fn period_length() -> Duration {
    Duration::from_secs(u64::from(testnet::torrc::VOTING_INTERVAL_SECS) * 24)
}

/// A control connection to `node`'s tor, authenticated with its cookie.
pub async fn control_of(node: &testnet::layout::Node) -> torctl::ControlClient {
    torctl::ControlClient::connect_authenticated(
        &node.control_addr(),
        &torctl::Credentials::CookieFile(node.cookie_path()),
    )
    .await
    .unwrap()
}

/// The time periods a testing network may be publishing for now.
pub fn periods_now() -> Vec<tor_hscrypto::time::TimePeriod> {
    use tor_hscrypto::time::TimePeriod;
    let run = period_length();
    let current = TimePeriod::new(run, std::time::SystemTime::now(), run / 2).unwrap();
    vec![current.prev().unwrap(), current, current.next().unwrap()]
}

/// The time period the client fetches descriptors for: the one its
/// consensus's valid-after falls in (as C tor's
/// `hs_get_time_period_num(0)`), which lags the manager's right after a
/// period starts.
pub async fn client_period(net: &Testnet) -> u64 {
    let node = net.layout().client();
    let client = control_of(node).await;
    let text = client.getinfo("consensus/valid-after").await.unwrap();
    let valid_after = onionlb_core::consensus::parse_time(text.trim()).unwrap();
    let run = period_length();
    tor_hscrypto::time::TimePeriod::new(run, valid_after, run / 2)
        .unwrap()
        .interval_num()
}

/// The intro points of a descriptor of `identity`, decrypted: each one's
/// service key and the relay it is on.
pub fn intro_points(
    text: &str,
    identity: &tor_hscrypto::pk::HsIdKey,
) -> Option<std::collections::BTreeMap<[u8; 32], Option<[u8; 20]>>> {
    use onionlb_core::descriptor::validate_instance_descriptor;
    let text = if text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    };
    let descriptor = validate_instance_descriptor(
        &text,
        identity,
        &periods_now(),
        std::time::SystemTime::now(),
        50_000,
    )
    .ok()?;
    Some(
        descriptor
            .intro_points
            .iter()
            .map(|ip| (*ip.auth_key(), ip.relay()))
            .collect(),
    )
}

/// What the network's client gets of `master`'s descriptor from every
/// HSDir that has one: each one's intro point keys, by HSDir. Asks every
/// relay and waits up to `bound` for their answers.
pub async fn master_keys_on_hsdirs(
    net: &Testnet,
    master: &onionlb_core::MasterKey,
    bound: Duration,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<[u8; 32]>> {
    let identity = tor_hscrypto::pk::HsIdKey::from(master.keypair());
    keys_on_hsdirs(net, master.address(), &identity, bound).await
}

/// Every intro point key of instance `index` that a master descriptor
/// may carry: those of the descriptor its tor has now (the only one it
/// shows) and of those the HSDirs serve.
pub async fn instance_keys(net: &Testnet, index: usize) -> std::collections::BTreeSet<[u8; 32]> {
    let address = net.instance_addresses()[index];
    let identity = tor_hscrypto::pk::HsIdKey::try_from(address.hs_id()).unwrap();
    let mut keys: std::collections::BTreeSet<[u8; 32]> =
        keys_on_hsdirs(net, address, &identity, Duration::from_secs(60))
            .await
            .into_values()
            .flatten()
            .collect();
    let node = net.layout().instances().nth(index).unwrap();
    let control = control_of(node).await;
    let own = control
        .getinfo(&format!("hs/service/desc/id/{}", address.without_suffix()))
        .await
        .unwrap();
    keys.extend(
        intro_points(&own, &identity)
            .unwrap_or_default()
            .into_keys(),
    );
    keys
}

/// What the network's client gets of `address`'s descriptor (decrypted
/// with `identity`) from every HSDir that has one: each one's intro point
/// keys, by HSDir.
async fn keys_on_hsdirs(
    net: &Testnet,
    address: onionlb_core::OnionAddress,
    identity: &tor_hscrypto::pk::HsIdKey,
    bound: Duration,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<[u8; 32]>> {
    use torctl::{Command as Ctl, Event, HsDescAction};
    let node = net.layout().client();
    let client = control_of(node).await;
    let mut events = client.take_events().unwrap();
    client
        .request(&Ctl::setevents(["HS_DESC", "HS_DESC_CONTENT"]))
        .await
        .unwrap();
    let relays = relay_fingerprints(net);
    let fetch = Ctl::new("HSFETCH")
        .arg(address.without_suffix())
        .args(relays.iter().map(|fp| format!("SERVER=${fp}")));
    client.request(&fetch).await.unwrap();
    let mut held = std::collections::BTreeMap::new();
    let mut answered = std::collections::BTreeSet::new();
    let deadline = Instant::now() + bound;
    while answered.len() < relays.len() && Instant::now() < deadline {
        let Ok(Some(reply)) = tokio::time::timeout(Duration::from_secs(5), events.recv()).await
        else {
            continue;
        };
        match Event::parse(&reply) {
            Event::HsDescContent(content) if content.address == address.without_suffix() => {
                if let (Some(hsdir), Some(points)) =
                    (content.hsdir, intro_points(&content.descriptor, identity))
                {
                    answered.insert(hsdir.clone());
                    held.insert(hsdir, points.into_keys().collect());
                }
            }
            Event::HsDesc(event) if event.action == HsDescAction::Failed => {
                if let Some(hsdir) = event.hsdir {
                    answered.insert(hsdir);
                }
            }
            _ => {}
        }
    }
    held
}
