//! onionlb against control ports that are not tor, or a tor gone wrong:
//! each case is a fake control port written for it, and each asserts what
//! the operator gets (a clear error within a bound, or a stop on SIGTERM),
//! that memory stays bounded, and that no secret reaches the peer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onionlb_core::MasterKey;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The most memory any onionlb run here may reach, whatever the peer
/// sends (measured peaks: see the note of the commit that added this).
const MAX_RSS_KIB: i64 = 160 * 1024;

/// What a fake control port does with a connection.
#[derive(Debug, Clone)]
enum Script {
    /// Accepts, then says nothing.
    Silent,
    /// Answers the first line with something that is not the protocol.
    Garbage,
    /// Starts a reply line and never ends it.
    EndlessLine,
    /// Sends one 100 MB line.
    HugeLine,
    /// Answers with `250-` lines for ever.
    EndlessReply,
    /// Authenticates, then sends events for ever.
    EventFlood,
    /// Authenticates, answers like a tor without a consensus once, then
    /// answers nothing more.
    StopsAnswering,
    /// Offers cookie authentication with this file as the cookie.
    Cookie(PathBuf),
    /// Answers PROTOCOLINFO, then hangs up.
    CloseAfterProtocolInfo,
    /// Plays a tor with a consensus (onionlb-core's test data) that
    /// answers every command, until `turn` says to flood events or to go
    /// silent.
    Running(tokio::sync::watch::Receiver<Turn>),
}

/// What a [`Script::Running`] fake does from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Answer like tor.
    Answer,
    /// Send events as fast as the connection takes them.
    Flood,
    /// Read, never answer.
    Silent,
}

/// A fake control port: the script it plays, and every byte it received.
struct FakeTor {
    port: u16,
    received: Arc<Mutex<Vec<u8>>>,
    /// Bytes of flood that onionlb has taken.
    flooded: Arc<AtomicUsize>,
    connections: mpsc::UnboundedReceiver<()>,
}

impl FakeTor {
    async fn start(script: Script) -> FakeTor {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (connected, connections) = mpsc::unbounded_channel();
        let seen = Arc::clone(&received);
        let flooded = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&flooded);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = connected.send(());
                let peer = Peer::new(stream, Arc::clone(&seen), Arc::clone(&counter));
                tokio::spawn(play(peer, script.clone()));
            }
        });
        FakeTor {
            port,
            received,
            flooded,
            connections,
        }
    }

    /// Waits up to 30 s for the next connection.
    async fn next_connection(&mut self) {
        tokio::time::timeout(Duration::from_secs(30), self.connections.recv())
            .await
            .expect("onionlb connected within 30 s")
            .unwrap();
    }

    fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

/// Plays `script` on one connection.
async fn play(mut peer: Peer, script: Script) {
    match script {
        Script::Silent => while peer.line().await.is_some() {},
        Script::Garbage => {
            peer.line().await;
            peer.send(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
        Script::EndlessLine => {
            peer.line().await;
            peer.send(b"250-").await;
            while peer.send(&[b'x'; 4096]).await {}
        }
        Script::HugeLine => {
            peer.line().await;
            peer.send(b"250 ").await;
            peer.send(&vec![b'x'; 100 * 1024 * 1024]).await;
            peer.send(b"\r\n").await;
        }
        Script::EndlessReply => {
            peer.line().await;
            let chunk = "250-x\r\n".repeat(1000);
            while peer.send(chunk.as_bytes()).await {}
        }
        Script::EventFlood => {
            peer.handshake().await;
            let chunk = "650 STATUS_CLIENT NOTICE CONSENSUS_ARRIVED\r\n".repeat(1000);
            while peer.send(chunk.as_bytes()).await {}
        }
        Script::StopsAnswering => {
            peer.handshake().await;
            peer.line().await;
            peer.send(b"551 No consensus yet\r\n").await;
            while peer.line().await.is_some() {}
        }
        Script::Cookie(path) => {
            peer.line().await;
            let offer = format!(
                "250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE=\"{}\"\r\n250-VERSION Tor=\"0.4.9.11\"\r\n250 OK\r\n",
                path.display()
            );
            peer.send(offer.as_bytes()).await;
            while let Some(line) = peer.line().await {
                let answer: &[u8] = if line.starts_with("AUTHCHALLENGE") {
                    b"250 AUTHCHALLENGE SERVERHASH=00 SERVERNONCE=00\r\n"
                } else {
                    b"515 Authentication failed: Wrong length on authentication cookie.\r\n"
                };
                peer.send(answer).await;
            }
        }
        Script::Running(turn) => peer.run(turn).await,
        Script::CloseAfterProtocolInfo => {
            peer.line().await;
            peer.send(b"250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250 OK\r\n")
                .await;
            // Read AUTHENTICATE, so that the close is a clean one.
            peer.line().await;
        }
    }
}

/// One connection from onionlb, as the fake sees it.
struct Peer {
    stream: TcpStream,
    buffer: Vec<u8>,
    seen: Arc<Mutex<Vec<u8>>>,
    flooded: Arc<AtomicUsize>,
}

impl Peer {
    fn new(stream: TcpStream, seen: Arc<Mutex<Vec<u8>>>, flooded: Arc<AtomicUsize>) -> Peer {
        Peer {
            stream,
            buffer: Vec::new(),
            seen,
            flooded,
        }
    }

    /// The next line onionlb sent, or `None` once it hung up.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Some(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.seen.lock().unwrap().extend_from_slice(&chunk[..n]);
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Writes `bytes`; false once onionlb hung up.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Answers every command as a tor with a consensus would, until
    /// `turn` changes.
    async fn run(&mut self, mut turn: tokio::sync::watch::Receiver<Turn>) {
        let testdata = concat!(env!("CARGO_MANIFEST_DIR"), "/../onionlb-core/testdata/");
        let consensus =
            std::fs::read_to_string(format!("{testdata}consensus-microdesc.txt")).unwrap();
        let microdescs = std::fs::read_to_string(format!("{testdata}microdescs.txt")).unwrap();
        loop {
            if *turn.borrow() != Turn::Answer {
                break;
            }
            let line = tokio::select! {
                line = self.line() => line,
                _ = turn.changed() => continue,
            };
            let Some(line) = line else {
                return;
            };
            let answer = if line.starts_with("PROTOCOLINFO") {
                "250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250-VERSION Tor=\"0.4.9.11\"\r\n250 OK\r\n".to_owned()
            } else if line.starts_with("GETCONF") {
                "250 TestingTorNetwork=1\r\n".to_owned()
            } else if line.starts_with("GETINFO dir/status-vote/current/consensus-microdesc") {
                data_reply("dir/status-vote/current/consensus-microdesc", &consensus)
            } else if line.starts_with("GETINFO md/all") {
                data_reply("md/all", &microdescs)
            } else if line.starts_with('+') {
                // A data command (HSPOST): read it to its end.
                while let Some(data) = self.line().await {
                    if data == "." {
                        break;
                    }
                }
                "250 OK\r\n".to_owned()
            } else {
                "250 OK\r\n".to_owned()
            };
            if !self.send(answer.as_bytes()).await {
                return;
            }
        }
        if *turn.borrow() == Turn::Flood {
            let chunk = "650 HS_DESC REQUESTED aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4bqead NO_AUTH $5128386E9AA8505DD855A33B7146A708115E14E0 descid\r\n".repeat(1000);
            while self.send(chunk.as_bytes()).await {
                self.flooded.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        } else {
            while self.line().await.is_some() {}
        }
    }

    /// Answers PROTOCOLINFO (no authentication), AUTHENTICATE, SETEVENTS
    /// and GETCONF as tor would.
    async fn handshake(&mut self) {
        for _ in 0..4 {
            let Some(line) = self.line().await else {
                return;
            };
            let answer: &[u8] = if line.starts_with("PROTOCOLINFO") {
                b"250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250-VERSION Tor=\"0.4.9.11\"\r\n250 OK\r\n"
            } else if line.starts_with("GETCONF") {
                b"250 TestingTorNetwork=1\r\n"
            } else {
                b"250 OK\r\n"
            };
            self.send(answer).await;
        }
    }
}

/// `250+key=` with `data` as its data block, then `250 OK`.
fn data_reply(key: &str, data: &str) -> String {
    let reply = torctl::Reply {
        lines: vec![
            torctl::ReplyLine {
                status: 250,
                text: format!("{key}="),
                data: Some(data.trim_end_matches('\n').to_owned()),
            },
            torctl::ReplyLine {
                status: 250,
                text: "OK".into(),
                data: None,
            },
        ],
    };
    String::from_utf8(reply.to_bytes()).unwrap()
}

/// A config and master key for onionlb, in a directory of the test's own.
struct Setup {
    dir: PathBuf,
    key_file: PathBuf,
    key_bytes: Vec<u8>,
}

impl Setup {
    /// `{dir}` in `extra_yaml` stands for the directory.
    fn new(name: &str, extra_yaml: &str) -> Setup {
        let dir = common::tmp_dir(&format!("hostile-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (key, _) = MasterKey::generate(&mut rand::rng()).unwrap();
        let key_bytes = key.encode(onionlb_core::KeyFormat::Tor).unwrap();
        let key_file = dir.join("master.key");
        common::write_private(&key_file, &key_bytes);
        let (instance, _) = MasterKey::generate(&mut rand::rng()).unwrap();
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "{}services:\n- key: master.key\n  instances:\n  - address: {}\n",
                extra_yaml.replace("{dir}", &dir.display().to_string()),
                instance.address()
            ),
        )
        .unwrap();
        Setup {
            dir,
            key_file,
            key_bytes,
        }
    }

    /// The secret part of the key file (after tor's public header).
    fn secret(&self) -> &[u8] {
        &self.key_bytes[32..]
    }

    /// Starts the manager against `port`, logging at debug level.
    fn manager(&self, port: u16) -> Run {
        let log = self.dir.join("onionlb.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_onionlb"))
            .args(["-v", "debug", "-p", &port.to_string(), "-c"])
            .arg(self.dir.join("config.yaml"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Run { child, log }
    }
}

/// A running onionlb process.
struct Run {
    child: Child,
    log: PathBuf,
}

impl Run {
    /// Waits up to `bound` for it to exit.
    async fn exit_within(&mut self, bound: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (
                    status,
                    std::fs::read_to_string(&self.log).unwrap_or_default(),
                );
            }
            assert!(
                Instant::now() < deadline,
                "onionlb still running after {bound:?}:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The highest peak RSS of any child this test process has waited for.
fn children_peak_rss_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss()
}

/// Runs the manager against `script` with a short control timeout; it
/// must exit with an error within `bound` whose log says `expected`, and
/// stay within [`MAX_RSS_KIB`] (the children's peak so far: the cases
/// that cost memory run one after the other in one test, so a peak that
/// rises is the case's own).
async fn must_fail(name: &str, script: Script, bound: Duration, expected: &str) -> String {
    let setup = Setup::new(name, "control-timeout: 3\n");
    let mut fake = FakeTor::start(script).await;
    let mut run = setup.manager(fake.port);
    fake.next_connection().await;
    let started = Instant::now();
    let (status, log) = run.exit_within(bound).await;
    assert!(!status.success(), "{name}: exited {status}:\n{log}");
    assert!(log.contains(expected), "{name}: no {expected:?} in:\n{log}");
    let peak = children_peak_rss_kib();
    assert!(peak < MAX_RSS_KIB, "{name}: peak RSS {peak} KiB");
    println!(
        "{name}: refused after {:.1} s; children's peak RSS so far {} MiB",
        started.elapsed().as_secs_f64(),
        peak / 1024
    );
    assert_never_received(&fake.received(), setup.secret(), name);
    log
}

/// Fails if `secret` appears in `received` raw, in hex or in base64.
fn assert_never_received(received: &[u8], secret: &[u8], what: &str) {
    common::assert_no_secret(received, secret, what);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_control_port_is_reported_and_the_start_fails_at_the_timeout() {
    must_fail(
        "silent",
        Script::Silent,
        Duration::from_secs(15),
        "no answer from tor to PROTOCOLINFO within 3s",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_honoured_while_waiting_for_a_silent_tor() {
    let setup = Setup::new("silent-sigterm", "");
    let mut fake = FakeTor::start(Script::Silent).await;
    let mut run = setup.manager(fake.port);
    fake.next_connection().await;
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = run.exit_within(Duration::from_secs(2)).await;
    assert!(status.success(), "{status}:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_is_a_protocol_error() {
    must_fail(
        "garbage",
        Script::Garbage,
        Duration::from_secs(10),
        "malformed reply line",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn floods_are_cut_at_their_bounds_in_bounded_memory() {
    let cases = [
        (
            "endless-line",
            Script::EndlessLine,
            "reply line longer than 1048576 bytes",
        ),
        (
            "huge-line",
            Script::HugeLine,
            "reply line longer than 1048576 bytes",
        ),
        (
            "endless-reply",
            Script::EndlessReply,
            "reply longer than 67108864 bytes",
        ),
        (
            "event-flood",
            Script::EventFlood,
            "bytes of unread events from tor",
        ),
    ];
    for (name, script, expected) in cases {
        must_fail(name, script, Duration::from_secs(60), expected).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tor_that_stops_answering_is_given_up_on_at_the_timeout() {
    must_fail(
        "stops-answering",
        Script::StopsAnswering,
        Duration::from_secs(20),
        "no answer from tor to GETINFO within 3s",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_control_port_that_hangs_up_after_protocolinfo_is_an_error() {
    must_fail(
        "close-after-protocolinfo",
        Script::CloseAfterProtocolInfo,
        Duration::from_secs(10),
        "tor closed the control connection",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cookiefile_naming_the_master_key_is_refused_and_the_key_never_sent() {
    // The manager's own key, named by the fake as its cookie.
    let setup = Setup::new("cookie-is-key", "control-timeout: 3\n");
    let mut fake = FakeTor::start(Script::Cookie(setup.key_file.clone())).await;
    let mut run = setup.manager(fake.port);
    fake.next_connection().await;
    let (status, log) = run.exit_within(Duration::from_secs(10)).await;
    assert!(!status.success(), "{status}:\n{log}");
    let expected = format!(
        "{} has 96 bytes, expected exactly 32",
        setup.key_file.display()
    );
    assert!(log.contains(&expected), "no {expected:?} in:\n{log}");
    let received = fake.received();
    assert_eq!(String::from_utf8_lossy(&received), "PROTOCOLINFO 1\r\n");
    assert_never_received(&received, setup.secret(), "cookie-is-key");
    common::assert_no_secret(log.as_bytes(), setup.secret(), "the manager's log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cookie_of_the_wrong_size_or_kind_is_refused() {
    for (name, cookie) in [
        ("cookie-31", Some(31)),
        ("cookie-33", Some(33)),
        ("cookie-dev-zero", None),
    ] {
        let setup = Setup::new(name, "control-timeout: 3\n");
        let path = match cookie {
            Some(len) => {
                let path = setup.dir.join("control_auth_cookie");
                std::fs::write(&path, vec![7u8; len]).unwrap();
                path
            }
            None => PathBuf::from("/dev/zero"),
        };
        let mut fake = FakeTor::start(Script::Cookie(path.clone())).await;
        let mut run = setup.manager(fake.port);
        fake.next_connection().await;
        let (status, log) = run.exit_within(Duration::from_secs(10)).await;
        assert!(!status.success(), "{name}: {status}:\n{log}");
        assert!(
            log.contains("refusing the control-port cookie")
                && log.contains(&path.display().to_string()),
            "{name}:\n{log}"
        );
        assert_eq!(
            String::from_utf8_lossy(&fake.received()),
            "PROTOCOLINFO 1\r\n",
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_never_sends_its_key_to_a_cookiefile_naming_it() {
    let dir = common::tmp_dir("hostile-agent-cookie");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("agent.key");
    let _ = std::fs::remove_file(&key);
    let keygen = Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(["agent", "keygen", "--key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let key_bytes = std::fs::read(&key).unwrap();
    let mut fake = FakeTor::start(Script::Cookie(key.clone())).await;
    let (instance, _) = MasterKey::generate(&mut rand::rng()).unwrap();
    let log = dir.join("agent.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(["agent", "run", "--key"])
        .arg(&key)
        .args(["--manager", "unix:/nonexistent/agents.sock", "--address"])
        .arg(instance.address().to_string())
        .args(["--control-port", &format!("127.0.0.1:{}", fake.port)])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut run = Run { child, log };
    // It keeps trying, as it should with a tor that may come back; two
    // attempts are enough to see what it sends.
    fake.next_connection().await;
    fake.next_connection().await;
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (_, log) = run.exit_within(Duration::from_secs(5)).await;
    assert!(log.contains("refusing the control-port cookie"), "{log}");
    let received = fake.received();
    assert!(
        !received.windows(12).any(|w| w == b"AUTHENTICATE"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    assert_never_received(&received, &key_bytes, "agent");
}

/// `onionlb status --json` for `setup`'s config.
fn status(setup: &Setup) -> Option<serde_json::Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(["status", "--json", "-c"])
        .arg(setup.dir.join("config.yaml"))
        .output()
        .unwrap();
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

/// Polls the status until `ready` holds of it, for at most `bound`.
async fn wait_for_status(
    setup: &Setup,
    bound: Duration,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = status(setup) {
            if ready(&status) {
                return status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "status not as awaited within {bound:?}: {:?}",
            status(setup)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A manager with a status socket (and `extra_yaml`), running against a
/// [`Script::Running`] fake, and the switch of what the fake does next.
async fn running_manager(
    name: &str,
    extra_yaml: &str,
) -> (tokio::sync::watch::Sender<Turn>, Setup, FakeTor, Run) {
    let (turn, turns) = tokio::sync::watch::channel(Turn::Answer);
    let setup = Setup::new(
        name,
        &format!("status-socket-location: {{dir}}/status.sock\n{extra_yaml}"),
    );
    let mut fake = FakeTor::start(Script::Running(turns)).await;
    let run = setup.manager(fake.port);
    fake.next_connection().await;
    wait_for_status(&setup, Duration::from_secs(30), |s| {
        s["manager"]["controlConnected"] == true
    })
    .await;
    (turn, setup, fake, run)
}

/// A running manager whose tor starts flooding it with events: it keeps
/// up or drops the connection, stays within its memory bound, and stops
/// within 2 s of SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_honoured_within_2_s_during_an_event_flood_mid_run() {
    let (turn, setup, fake, mut run) = running_manager("flood-mid-run", "").await;
    turn.send(Turn::Flood).unwrap();
    // Until the manager has taken 100 MB of events (it reads them, or
    // drops the connection at the bound and reconnects to more).
    let deadline = Instant::now() + Duration::from_secs(60);
    while fake.flooded.load(Ordering::Relaxed) < 100 * 1024 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the flood was not taken within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = run.exit_within(Duration::from_secs(2)).await;
    assert!(status.success(), "{status}:\n{log:.2000}");
    let peak = children_peak_rss_kib();
    assert!(peak < MAX_RSS_KIB, "peak RSS {peak} KiB");
    assert_never_received(&fake.received(), setup.secret(), "flood-mid-run");
}

/// A running manager whose tor stops answering: within the control
/// timeout of its next command the status says the connection is down and
/// why; it keeps trying, and SIGTERM stops it within 2 s meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_tor_that_stops_answering_mid_run_shows_in_status_and_sigterm_still_works() {
    let (turn, setup, mut fake, mut run) =
        running_manager("silent-mid-run", "control-timeout: 2\nfetch-interval: 1\n").await;
    turn.send(Turn::Silent).unwrap();
    let down = wait_for_status(&setup, Duration::from_secs(10), |s| {
        s["manager"]["controlConnected"] == false
    })
    .await;
    let why = down["manager"]["controlDownBecause"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("within 2s"), "{down}");
    // It tries again (and the fake, silent, lets the attempt hang).
    fake.next_connection().await;
    run.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = run.exit_within(Duration::from_secs(2)).await;
    assert!(status.success(), "{status}:\n{log}");
}

/// The config loader refuses what breaks the service, the same way for
/// `--check` as for a start.
#[test]
fn check_and_start_refuse_the_same_configs() {
    let setup = Setup::new("configs", "");
    let config = setup.dir.join("config.yaml");
    let original = std::fs::read_to_string(&config).unwrap();
    let (other, _) = MasterKey::generate(&mut rand::rng()).unwrap();
    let master = MasterKey::from_bytes(&setup.key_bytes).unwrap().address();
    std::fs::copy(&setup.key_file, setup.dir.join("copy.key")).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            format!("fetch-interval: 9223372036854775807\n{original}"),
            "config.yaml:1: fetch-interval: expected a whole number of seconds from 1 to 10800",
        ),
        (
            format!(
                "{original}  - address: {}\n  - address: {}\n",
                other.address(),
                other.address()
            ),
            "config.yaml:6: services[0].instances[2].address",
        ),
        (
            format!(
                "{original}- key: copy.key\n  instances:\n  - address: {}\n",
                other.address()
            ),
            "config.yaml:5: services[1].key",
        ),
        (
            format!("{original}  - address: {master}\n"),
            "config.yaml:5: services[0].instances[1].address",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&config, &text).unwrap();
        for check in [true, false] {
            let mut command = Command::new(env!("CARGO_BIN_EXE_onionlb"));
            // Port 9 (discard) on loopback: nothing listens, and nothing
            // may be reached before the config is refused.
            command.args(["-p", "9", "-c"]).arg(&config);
            if check {
                command.arg("--check");
            }
            let output = command.output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{text}\n{stderr}");
            assert!(
                stderr.contains(expected),
                "check={check}: no {expected:?} in:\n{stderr}"
            );
        }
    }
}

/// The agent's numeric flags are range-checked before it does anything:
/// a heartbeat of `u64::MAX` seconds used to reach the timer arithmetic.
#[test]
fn the_agent_refuses_numbers_out_of_range() {
    let (instance, _) = MasterKey::generate(&mut rand::rng()).unwrap();
    for (flag, value) in [
        ("--heartbeat", "0"),
        ("--heartbeat", "18446744073709551615"),
        ("--control-timeout", "0"),
        ("--probe-failures", "100000"),
        ("--restart-after", "0"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_onionlb"))
            .args(["agent", "run", "--key", "/nonexistent/agent.key"])
            .args(["--manager", "unix:/nonexistent/agents.sock", "--address"])
            .arg(instance.address().to_string())
            .args([flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}
