//! One bridge identity over two tor processes, on the private network:
//! real obfs4proxy as the transport daemon -> `onionlb bridge extor` ->
//! two bridge tors sharing identity and onion keys, and tor clients with
//! `UseBridges 1` and an obfs4 bridge line that bootstrap through it and
//! fetch an onion service's page.
//!
//! What a bridge operator needs to be true, each checked on what clients
//! see and on the balancer's metrics:
//! - both tors carry clients, and the balancer's metrics carry the tors'
//!   own, per tor and summed;
//! - a transport with a wrong static cookie is refused (status 0);
//! - a restarted tor (a new ExtORPort cookie) takes connections again
//!   without the transport being touched, and new clients bootstrap;
//! - a drained tor takes no new connection while clients still bootstrap;
//! - a tor whose cookie file is corrupt is taken out, and one that dies
//!   is failed over, with new clients bootstrapping throughout;
//! - `onionlb bridge keys rotate` rotates both tors' onion keys while new
//!   clients keep bootstrapping (none fails) and leaves them alike, with
//!   new current keys and the old ones as previous; `keys check` finds
//!   them the same, and after one tor rotates on its own, not;
//! - the fleets `onionlb bridge init` writes run as their files say, the
//!   balancer way and the HAProxy way (tors that launch `onionlb bridge
//!   extor --compat-shim` as their managed transport, HAProxy over the
//!   shims): clients bootstrap with the bridge line init printed, and
//!   every tor carries some.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, testnet_config};
use testnet::Testnet;

/// Bound on a guest tor's bootstrap.
const BOOTSTRAP: Duration = Duration::from_secs(120);
/// Bound on a page fetched through a bridge client.
const FETCH: Duration = Duration::from_secs(120);
/// How long a client holding another tor's onion keys must fail to fetch
/// to count as stalled (on this network a client otherwise fetches within
/// a few seconds; the stall seen here lasted about 90 s).
const STALL: Duration = Duration::from_secs(20);

/// A process this test started; killed by its PID when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `ready` holds, polling, for at most `bound`.
fn wait_until(bound: Duration, what: &str, mut ready: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// The balancer's metrics text, or "" while it does not answer.
fn scrape(port: u16) -> String {
    http_get(port, "/metrics")
}

/// The answer to `GET path` on a loopback port, or "" while nothing
/// answers there.
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// The value of the sample `name{labels}` in `text`, 0 when absent.
fn sample(text: &str, name: &str, labels: &str) -> u64 {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.trim().parse().unwrap())
}

fn connections(metrics: u16, instance: &str) -> u64 {
    sample(
        &scrape(metrics),
        "onionlb_bridge_connections_total",
        &format!("instance=\"{instance}\""),
    )
}

/// The torrc lines of bridge tor `name`.
fn bridge_torrc(dir: &Path, name: &str, or_port: u16, ext_or_port: u16) -> String {
    format!(
        "Nickname {name}\nBridgeRelay 1\nBridgeDistribution none\nPublishServerDescriptor 0\n\
         ORPort 127.0.0.1:{or_port}\nExtORPort 127.0.0.1:{ext_or_port}\n\
         ExtORPortCookieAuthFile {}\n",
        dir.join(name).join("extor_cookie").display()
    )
}

/// The lines giving a tor a MetricsPort on loopback.
fn metrics_port_torrc(port: u16) -> String {
    format!("MetricsPort 127.0.0.1:{port}\nMetricsPortPolicy accept 127.0.0.1\n")
}

/// Copies the identity and onion keys of `from`'s data directory into
/// `to`'s, made with tor's modes, before `to` first starts.
fn share_keys(from: &Path, to: &Path) {
    use std::os::unix::fs::DirBuilderExt as _;
    let keys = to.join("keys");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&keys)
        .unwrap();
    for file in [
        "secret_id_key",
        "ed25519_master_id_secret_key",
        "ed25519_master_id_public_key",
        "secret_onion_key",
        "secret_onion_key_ntor",
    ] {
        let target = keys.join(file);
        std::fs::copy(from.join("keys").join(file), &target).unwrap();
    }
}

/// Starts a bridge client `name` with `torrc`, which must bootstrap, and
/// fetches `url` through it.
async fn bootstrap_and_fetch(net: &mut Testnet, name: &str, torrc: &str, url: &str) {
    bootstrap_and_fetch_socks(net, name, torrc, url).await;
}

/// As [`bootstrap_and_fetch`], returning the client's SOCKS address.
async fn bootstrap_and_fetch_socks(
    net: &mut Testnet,
    name: &str,
    torrc: &str,
    url: &str,
) -> SocketAddr {
    let (_, socks) = net
        .start_guest_client(name, torrc, BOOTSTRAP)
        .await
        .unwrap_or_else(|e| panic!("{name} did not bootstrap through the bridge: {e}"));
    let page = testnet::fetch::get(socks, url, name, FETCH)
        .await
        .unwrap_or_else(|e| panic!("{name} could not fetch {url}: {e}"));
    assert!(
        testnet::app::served_by(&page.body).is_some(),
        "{name}: {}",
        page.body
    );
    socks
}

/// Starts obfs4proxy as its own daemon with its state in `dir/state`,
/// handing connections to the Extended ORPort at `ext_port` with
/// `cookie`; returns it with the port it listens on, and the `cert=`
/// argument of its bridge line.
fn start_obfs4proxy(
    dir: &Path,
    state: &str,
    ext_port: u16,
    cookie: &Path,
) -> ((Started, u16), String) {
    let port = free_port();
    let state = dir.join(state);
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).unwrap();
    let log = std::fs::File::create(state.with_extension("log")).unwrap();
    let pt = Started(
        Command::new("obfs4proxy")
            .env("TOR_PT_MANAGED_TRANSPORT_VER", "1")
            .env("TOR_PT_STATE_LOCATION", &state)
            .env("TOR_PT_SERVER_TRANSPORTS", "obfs4")
            .env("TOR_PT_SERVER_BINDADDR", format!("obfs4-127.0.0.1:{port}"))
            .env("TOR_PT_ORPORT", "127.0.0.1:1")
            .env(
                "TOR_PT_EXTENDED_SERVER_PORT",
                format!("127.0.0.1:{ext_port}"),
            )
            .env("TOR_PT_AUTH_COOKIE_FILE", cookie)
            .env("TOR_PT_EXIT_ON_STDIN_CLOSE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("obfs4proxy runs (scripts/ensure-tor installs it)"),
    );
    let bridgeline = state.join("obfs4_bridgeline.txt");
    wait_until(Duration::from_secs(30), "obfs4proxy listening", || {
        bridgeline.exists() && TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let cert = std::fs::read_to_string(&bridgeline)
        .unwrap()
        .split_whitespace()
        .find(|word| word.starts_with("cert="))
        .expect("a cert in obfs4_bridgeline.txt")
        .to_owned();
    ((pt, port), cert)
}

/// Tors started by the launcher script, stopped by the PID in their
/// PidFile when dropped (only while that PID still runs this test's tor).
struct Daemons(Vec<PathBuf>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for dir in &self.0 {
            let Ok(pid) = std::fs::read_to_string(dir.join("tor.pid")) else {
                continue;
            };
            let pid = pid.trim();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours =
                String::from_utf8_lossy(&cmdline).contains(&*dir.join("torrc").to_string_lossy());
            if ours {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
}

/// Writes the test's stand-in for `systemctl start|stop tor@NAME`:
/// `launcher start DATADIR` runs tor from DATADIR/torrc as a daemon;
/// `launcher stop DATADIR` sends SIGTERM to the PID in its PidFile and
/// waits (at most 20 s, then SIGKILL) until it has exited.
fn write_launcher(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("launch-tor");
    let script = format!(
        "#!/bin/sh\n\
         set -e\n\
         case \"$1\" in\n\
         start) exec tor --defaults-torrc {defaults} -f \"$2/torrc\" --RunAsDaemon 1 >/dev/null ;;\n\
         stop) pid=$(cat \"$2/tor.pid\"); kill \"$pid\"; i=0\n\
           while kill -0 \"$pid\" 2>/dev/null; do\n\
             i=$((i + 1)); if [ $i -gt 200 ]; then kill -9 \"$pid\" 2>/dev/null || true; fi\n\
             if [ $i -gt 250 ]; then exit 1; fi; sleep 0.1\n\
           done ;;\n\
         *) exit 2 ;;\n\
         esac\n",
        defaults = dir.join("torrc.defaults").display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Plays a transport with the wrong static cookie: the balancer must
/// answer its client hash with status 0.
fn wrong_cookie_status(balancer: SocketAddr) -> u8 {
    let mut stream = TcpStream::connect(balancer).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut types = [0u8; 2];
    stream.read_exact(&mut types).unwrap();
    assert_eq!(types, [1, 0]);
    let client_nonce = [0x11u8; 32];
    stream.write_all(&[1]).unwrap();
    stream.write_all(&client_nonce).unwrap();
    let mut answer = [0u8; 64];
    stream.read_exact(&mut answer).unwrap();
    let server_nonce: [u8; 32] = answer[32..].try_into().unwrap();
    let wrong = extorport::Cookie::from_secret([0x99; 32]);
    let hash = extorport::client_hash(&wrong, &client_nonce, &server_nonce);
    stream.write_all(&hash).unwrap();
    let mut status = [0u8; 1];
    stream.read_exact(&mut status).unwrap();
    status[0]
}

#[tokio::test(flavor = "multi_thread")]
async fn obfs4_clients_bootstrap_through_onionlb_bridge_extor_over_two_tors() {
    let mut config = testnet_config("bridge-test");
    config.instances = 1;
    let mut net = Testnet::start(config).await.unwrap();
    let dir: PathBuf = net.layout().dir.clone();
    // Guests of an earlier run left their directories (keys included).
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("bridge") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let url = format!("http://{}/", net.instance_addresses()[0]);

    // Two bridge tors with one identity: bridge0 makes the keys, bridge1
    // starts from a copy.
    let ext_or: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let tor_metrics: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let mut controls = Vec::new();
    for (i, &port) in ext_or.iter().enumerate() {
        let name = format!("bridge{i}");
        if i > 0 {
            share_keys(&dir.join("bridge0"), &dir.join(&name));
        }
        let torrc =
            bridge_torrc(&dir, &name, free_port(), port) + &metrics_port_torrc(tor_metrics[i]);
        controls.push(net.start_guest(&name, &torrc, BOOTSTRAP).await.unwrap());
    }
    let fingerprint = |name: &str| {
        let text = std::fs::read_to_string(dir.join(name).join("fingerprint")).unwrap();
        testnet::keys::parse_fingerprint_file(&text).unwrap()
    };
    assert_eq!(
        fingerprint("bridge0"),
        fingerprint("bridge1"),
        "one identity"
    );

    // The balancer, with a static cookie from `onionlb bridge cookie`.
    let static_cookie = dir.join("static_cookie");
    let _ = std::fs::remove_file(&static_cookie);
    let made = Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(["bridge", "cookie"])
        .arg(&static_cookie)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let again = Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(["bridge", "cookie"])
        .arg(&static_cookie)
        .output()
        .unwrap();
    assert!(!again.status.success(), "an existing cookie is overwritten");
    let balancer: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics = free_port();
    let admin = dir.join("bridge-admin.sock");
    let mut command = Command::new(env!("CARGO_BIN_EXE_onionlb"));
    command
        .args(["bridge", "extor", "--listen", &balancer.to_string()])
        .arg("--static-cookie")
        .arg(&static_cookie)
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .arg("--admin-socket")
        .arg(&admin);
    for (i, port) in tor_metrics.iter().enumerate() {
        command
            .arg("--tor-metrics")
            .arg(format!("bridge{i}=127.0.0.1:{port}"));
    }
    for (i, port) in ext_or.iter().enumerate() {
        let cookie = dir.join(format!("bridge{i}")).join("extor_cookie");
        command
            .arg("--instance")
            .arg(format!("bridge{i},127.0.0.1:{port},{}", cookie.display()));
    }
    let log = std::fs::File::create(dir.join("bridge-extor.log")).unwrap();
    let _balancer = Started(
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(30), "the balancer's metrics", || {
        scrape(metrics).contains("onionlb_bridge_instance_up")
    });

    // obfs4proxy as its own daemon in front of the balancer.
    let ((_pt, pt_port), cert) =
        start_obfs4proxy(&dir, "obfs4-state", balancer.port(), &static_cookie);
    let client_torrc = format!(
        "UseBridges 1\nClientTransportPlugin obfs4 exec /usr/bin/obfs4proxy\n\
         Bridge obfs4 127.0.0.1:{pt_port} {} {cert} iat-mode=0\n",
        fingerprint("bridge0")
    );
    let mut clients = 0;
    let mut new_client = || {
        clients += 1;
        format!("bridge-client{clients}")
    };
    // Two clients: one on each tor (fewest connections first).
    bootstrap_and_fetch(&mut net, &new_client(), &client_torrc, &url).await;
    bootstrap_and_fetch(&mut net, &new_client(), &client_torrc, &url).await;
    let text = scrape(metrics);
    for name in ["bridge0", "bridge1"] {
        assert!(
            connections(metrics, name) >= 1,
            "{name} carries no client:\n{text}"
        );
    }

    // The tors' own metrics come with the balancer's: per tor and summed.
    let text = scrape(metrics);
    for tor in ["bridge0", "bridge1", "all"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("tor_") && l.contains(&format!("tor=\"{tor}\""))),
            "no tor metric for {tor}:\n{text}"
        );
    }
    for tor in ["bridge0", "bridge1"] {
        assert_eq!(
            sample(
                &text,
                "onionlb_bridge_tor_metrics_unreachable",
                &format!("tor=\"{tor}\"")
            ),
            0
        );
    }

    // A transport with another cookie gets status 0, and is counted.
    assert_eq!(wrong_cookie_status(balancer), 0);
    wait_until(Duration::from_secs(10), "the refusal counted", || {
        sample(
            &scrape(metrics),
            "onionlb_bridge_transport_handshake_failures_total",
            "reason=\"wrong_cookie\"",
        ) == 1
    });

    // bridge1 restarts with a new cookie: its clients come back to it
    // (the fewest connections) with nothing done to obfs4proxy, and a
    // new client bootstraps.
    let old_cookie = std::fs::read(dir.join("bridge1/extor_cookie")).unwrap();
    let before = connections(metrics, "bridge1");
    net.restart_guest("bridge1", &controls[1], BOOTSTRAP)
        .await
        .unwrap();
    assert_ne!(
        std::fs::read(dir.join("bridge1/extor_cookie")).unwrap(),
        old_cookie,
        "tor wrote a new cookie"
    );
    bootstrap_and_fetch(&mut net, &new_client(), &client_torrc, &url).await;
    wait_until(Duration::from_secs(60), "bridge1 serving again", || {
        connections(metrics, "bridge1") > before
    });

    // bridge1 drained: no new connection reaches it, clients still
    // bootstrap.
    let drain = Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(["bridge", "drain", "bridge1", "--admin-socket"])
        .arg(&admin)
        .output()
        .unwrap();
    assert!(drain.status.success(), "{drain:?}");
    let answer: serde_json::Value = serde_json::from_slice(&drain.stdout).unwrap();
    assert_eq!(answer["instances"][1]["drained"], true, "{answer}");
    let drained_at = connections(metrics, "bridge1");
    let bridge0_at = connections(metrics, "bridge0");
    bootstrap_and_fetch(&mut net, &new_client(), &client_torrc, &url).await;
    assert_eq!(connections(metrics, "bridge1"), drained_at);
    assert!(connections(metrics, "bridge0") > bridge0_at);
    let undrain = Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(["bridge", "undrain", "bridge1", "--admin-socket"])
        .arg(&admin)
        .output()
        .unwrap();
    assert!(undrain.status.success(), "{undrain:?}");
    let missing = Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(["bridge", "drain", "bridge9", "--admin-socket"])
        .arg(&admin)
        .output()
        .unwrap();
    assert!(!missing.status.success(), "draining an unknown instance");

    // bridge0's cookie file corrupted (tor keeps running): its checks
    // fail, it is taken out, and clients bootstrap through bridge1.
    let up = |name: &str| {
        sample(
            &scrape(metrics),
            "onionlb_bridge_instance_up",
            &format!("instance=\"{name}\""),
        )
    };
    std::fs::write(dir.join("bridge0/extor_cookie"), [b'x'; 64]).unwrap();
    let took = wait_until(Duration::from_secs(10), "bridge0 down", || {
        up("bridge0") == 0
    });
    println!(
        "corrupt cookie: bridge0 out {:.1} s after",
        took.as_secs_f64()
    );
    bootstrap_and_fetch(&mut net, &new_client(), &client_torrc, &url).await;

    // bridge0 restarted (a good cookie again), then bridge1 killed: it is
    // taken out and new clients bootstrap through bridge0.
    net.restart_guest("bridge0", &controls[0], BOOTSTRAP)
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "bridge0 up", || up("bridge0") == 1);
    net.stop_guest("bridge1").unwrap();
    let took = wait_until(Duration::from_secs(10), "bridge1 down", || {
        up("bridge1") == 0
    });
    println!("stopped tor: bridge1 out {:.1} s after", took.as_secs_f64());
    bootstrap_and_fetch(&mut net, &new_client(), &client_torrc, &url).await;

    // Onion keys. The two tors are handed to a launcher script (the
    // `systemctl` of this test: tor daemonized with its PidFile, stopped
    // by that PID) so `onionlb bridge keys rotate` can stop and start
    // them as it would through systemd.
    let keys_check = || {
        Command::new(env!("CARGO_BIN_EXE_onionlb"))
            .args(["bridge", "keys", "check"])
            .arg(dir.join("bridge0"))
            .arg(dir.join("bridge1"))
            .output()
            .unwrap()
    };
    let same = keys_check();
    assert!(same.status.success(), "{same:?}");
    let launcher = write_launcher(&dir);
    let _daemons = Daemons(vec![dir.join("bridge0"), dir.join("bridge1")]);
    let launch = |verb: &str, name: &str| {
        let status = Command::new(&launcher)
            .arg(verb)
            .arg(dir.join(name))
            .status()
            .unwrap();
        assert!(status.success(), "{verb} {name}");
    };
    launch("start", "bridge1");
    wait_until(Duration::from_secs(30), "bridge1 up", || up("bridge1") == 1);
    net.stop_guest("bridge0").unwrap();
    launch("start", "bridge0");
    wait_until(Duration::from_secs(30), "bridge0 up", || up("bridge0") == 1);

    // A rolling rotation while new clients keep bootstrapping: none fails,
    // and the tors end alike with new current keys and the old as
    // previous.
    let ntor =
        |name: &str, file: &str| std::fs::read(dir.join(name).join("keys").join(file)).unwrap();
    let old_key = ntor("bridge0", "secret_onion_key_ntor");
    let mut rotate = Command::new(env!("CARGO_BIN_EXE_onionlb"))
        .args(["bridge", "keys", "rotate"])
        .arg("--tor")
        .arg(format!("bridge0={}", dir.join("bridge0").display()))
        .arg("--tor")
        .arg(format!("bridge1={}", dir.join("bridge1").display()))
        .arg("--stop-command")
        .arg(format!("{} stop {{datadir}}", launcher.display()))
        .arg("--start-command")
        .arg(format!("{} start {{datadir}}", launcher.display()))
        .arg("--admin-socket")
        .arg(&admin)
        .stdout(std::fs::File::create(dir.join("rotate.log")).unwrap())
        .spawn()
        .unwrap();
    let mut during = 0;
    let rotated = loop {
        if let Some(status) = rotate.try_wait().unwrap() {
            break status;
        }
        bootstrap_and_fetch(&mut net, &new_client(), &client_torrc, &url).await;
        during += 1;
    };
    let said = std::fs::read_to_string(dir.join("rotate.log")).unwrap();
    assert!(rotated.success(), "keys rotate: {rotated}\n{said}");
    println!("rotation: {during} clients bootstrapped while it ran, none failed");
    assert!(during >= 1, "no client bootstrapped during the rotation");
    let after = keys_check();
    assert!(after.status.success(), "{after:?}");
    let new_key = ntor("bridge0", "secret_onion_key_ntor");
    assert_ne!(new_key, old_key, "the onion key did not change");
    for name in ["bridge0", "bridge1"] {
        assert_eq!(ntor(name, "secret_onion_key_ntor"), new_key, "{name}");
        assert_eq!(ntor(name, "secret_onion_key_ntor.old"), old_key, "{name}");
    }
    bootstrap_and_fetch(&mut net, &new_client(), &client_torrc, &url).await;

    // bridge1 left to rotate on its own (its rotation time long ago, as
    // tor's schedule would have it): `keys check` finds the keys differ.
    launch("stop", "bridge1");
    let state = dir.join("bridge1/state");
    let text = std::fs::read_to_string(&state).unwrap();
    let long_ago = text
        .lines()
        .map(|line| {
            if line.starts_with("LastRotatedOnionKey ") {
                "LastRotatedOnionKey 2000-01-01 00:00:00".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&state, long_ago + "\n").unwrap();
    launch("start", "bridge1");
    wait_until(Duration::from_secs(30), "bridge1 rotating", || {
        ntor("bridge1", "secret_onion_key_ntor") != new_key
    });
    let differs = keys_check();
    let said = String::from_utf8_lossy(&differs.stdout);
    assert_eq!(differs.status.code(), Some(1), "{said}");
    assert!(said.contains("onion key (ntor): DIFFERS"), "{said}");
    assert!(said.contains("identity (ed25519): the same"), "{said}");

    let text = scrape(metrics);
    assert_eq!(
        sample(&text, "onionlb_bridge_refused_total", ""),
        0,
        "a transport connection went unserved:\n{text}"
    );

    // The stall this divergence causes: a client that learned bridge1's
    // new keys (bridge0 drained while it bootstraps) and then lands on
    // bridge0 (bridge1 drained and restarted, which closes its
    // connections) cannot build a circuit, while a new client, which
    // learns bridge0's keys, bootstraps through bridge0 at once.
    let admin_cli = |verb: &str, name: &str| {
        let done = Command::new(env!("CARGO_BIN_EXE_onionlb"))
            .args(["bridge", verb, name, "--admin-socket"])
            .arg(&admin)
            .output()
            .unwrap();
        assert!(done.status.success(), "{verb} {name}: {done:?}");
    };
    admin_cli("drain", "bridge0");
    let stuck = new_client();
    let stuck_socks = bootstrap_and_fetch_socks(&mut net, &stuck, &client_torrc, &url).await;
    admin_cli("undrain", "bridge0");
    admin_cli("drain", "bridge1");
    launch("stop", "bridge1");
    launch("start", "bridge1");
    let fetched = testnet::fetch::get(stuck_socks, &url, &stuck, STALL).await;
    assert!(
        fetched.is_err(),
        "{stuck} fetched through bridge0 with bridge1's onion keys: no stall reproduced"
    );
    bootstrap_and_fetch(&mut net, &new_client(), &client_torrc, &url).await;
    net.stop_guest(&stuck).unwrap();
    admin_cli("undrain", "bridge1");

    // The fleets `onionlb bridge init` writes, run on the same network as
    // their files say (the units' commands and environment, the tors'
    // torrcs), from bridge0's keys: the balancer way, then the HAProxy
    // way over compatibility shims. Clients bootstrap with the bridge line
    // init printed, and every tor carries some.
    // The first keeps the first obfs4proxy's state, as a migrated single
    // bridge would: its bridge line keeps its cert.
    let first_state = dir.join("obfs4-state/obfs4_state.json");
    for (haproxy, state) in [(false, Some((&*first_state, &*cert))), (true, None)] {
        run_init_fleet(&mut net, &dir, haproxy, state, &url, &mut new_client).await;
    }
    net.stop();
}

/// Writes a two-tor fleet with `onionlb bridge init` under `dir/fleet`
/// (or `dir/compat`, with HAProxy), from bridge0's keys and, if given, an
/// obfs4 state whose cert its bridge line must keep; starts what its
/// units would start, and has two clients bootstrap with its bridge line
/// and fetch `url`; each tor must carry one.
async fn run_init_fleet(
    net: &mut Testnet,
    dir: &Path,
    haproxy: bool,
    obfs4_state: Option<(&Path, &str)>,
    url: &str,
    new_client: &mut impl FnMut() -> String,
) {
    let name = if haproxy { "compat" } else { "fleet" };
    let prefix = dir.join(name);
    let _ = std::fs::remove_dir_all(&prefix);
    let public = free_port();
    let front = free_port();
    let metrics = free_port();
    let mut init = Command::new(env!("CARGO_BIN_EXE_onionlb"));
    init.args(["bridge", "init", "--instances", "2", "--nickname", name])
        .args(["--public", &format!("127.0.0.1:{public}")])
        .args(["--extor-listen", &format!("127.0.0.1:{front}")])
        .args(["--extor-port", &free_port().to_string()])
        .args(["--tor-metrics-port", &free_port().to_string()])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .arg("--no-publish")
        .arg("--prefix")
        .arg(&prefix)
        .arg("--keys-from")
        .arg(dir.join("bridge0"));
    if haproxy {
        init.arg("--haproxy");
    }
    if let Some((state, _)) = obfs4_state {
        init.arg("--obfs4-state").arg(state);
    }
    let made = init.stdin(Stdio::null()).output().unwrap();
    assert!(made.status.success(), "bridge init: {made:?}");
    let bridge_line = String::from_utf8_lossy(&made.stdout)
        .lines()
        .find(|line| line.starts_with("Bridge obfs4 "))
        .expect("init prints the bridge line")
        .to_owned();
    if let Some((_, cert)) = obfs4_state {
        assert!(
            bridge_line.contains(&format!(" {cert} ")),
            "the migrated cert is not in {bridge_line}"
        );
    }
    let tors = [format!("{name}1"), format!("{name}2")];

    // The tors, each from its torrc as tor@NAME runs it (its runtime
    // directory made as the unit makes it; the shim is this build's).
    for tor in &tors {
        std::fs::create_dir_all(prefix.join("run/tor-instances").join(tor)).unwrap();
        let torrc =
            std::fs::read_to_string(prefix.join("etc/tor/instances").join(tor).join("torrc"))
                .unwrap()
                .replace("/usr/bin/onionlb", env!("CARGO_BIN_EXE_onionlb"));
        net.start_guest(tor, &torrc, BOOTSTRAP).await.unwrap();
    }

    // The middle tier as its unit or config says.
    let mut middle = Vec::new();
    let stats = free_port();
    // The balancer's unit (or, with HAProxy, the metrics unit) runs `onionlb`.
    let onionlb_unit = |unit: &str| {
        let command = unit_line(&prefix, unit, "ExecStart=");
        let mut words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        assert_eq!(words.remove(0), "/usr/bin/onionlb");
        let log = std::fs::File::create(prefix.join(format!("{unit}.log"))).unwrap();
        Started(
            Command::new(env!("CARGO_BIN_EXE_onionlb"))
                .args(words)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    if haproxy {
        middle.push(onionlb_unit("onionlb-bridge-metrics.service"));
        let stats_cfg = prefix.join("stats.cfg");
        std::fs::write(
            &stats_cfg,
            format!(
                "listen stats\n    bind 127.0.0.1:{stats}\n    mode http\n    stats enable\n    stats uri /stats\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(prefix.join("haproxy.log")).unwrap();
        middle.push(Started(
            Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(prefix.join("etc/onionlb/bridge/haproxy.cfg"))
                .arg("-f")
                .arg(&stats_cfg)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("haproxy runs (scripts/ensure-tor installs it)"),
        ));
    } else {
        std::fs::create_dir_all(prefix.join("run/onionlb-bridge")).unwrap();
        middle.push(onionlb_unit("onionlb-bridge-extor.service"));
    }
    wait_until(Duration::from_secs(30), "the middle tier listening", || {
        TcpStream::connect(("127.0.0.1", front)).is_ok()
    });

    // The transport with its unit's environment and the state init wrote.
    let environment: Vec<(String, String)> =
        unit_lines(&prefix, "onionlb-bridge-pt.service", "Environment=")
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
    let log = std::fs::File::create(prefix.join("obfs4proxy.log")).unwrap();
    let _pt = Started(
        Command::new("obfs4proxy")
            .env_clear()
            .envs(environment)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("obfs4proxy runs"),
    );
    wait_until(Duration::from_secs(30), "obfs4proxy listening", || {
        TcpStream::connect(("127.0.0.1", public)).is_ok()
    });

    let client_torrc = format!(
        "UseBridges 1\nClientTransportPlugin obfs4 exec /usr/bin/obfs4proxy\n{bridge_line}\n"
    );
    for _ in 0..2 {
        bootstrap_and_fetch(net, &new_client(), &client_torrc, url).await;
    }
    for tor in &tors {
        let carried = if haproxy {
            haproxy_sessions(stats, tor)
        } else {
            connections(metrics, tor)
        };
        assert!(carried >= 1, "{tor} carries no client");
    }
    // The tors' own metrics, per tor and summed: on the balancer's
    // endpoint, or with HAProxy on `onionlb bridge metrics`'.
    let text = scrape(metrics);
    for tor in tors.iter().map(String::as_str).chain(["all"]) {
        assert!(
            text.lines()
                .any(|l| l.starts_with("tor_") && l.contains(&format!("tor=\"{tor}\""))),
            "no metrics of {tor}'s MetricsPort:\n{text}"
        );
    }
    for tor in &tors {
        net.stop_guest(tor).unwrap();
    }
}

/// The values of the lines `key...` of an installed unit under `prefix`.
fn unit_lines(prefix: &Path, unit: &str, key: &str) -> Vec<String> {
    std::fs::read_to_string(prefix.join("etc/systemd/system").join(unit))
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix(key))
        .map(str::to_owned)
        .collect()
}

fn unit_line(prefix: &Path, unit: &str, key: &str) -> String {
    let lines = unit_lines(prefix, unit, key);
    assert_eq!(lines.len(), 1, "{unit}: {key}");
    lines[0].clone()
}

/// The sessions HAProxy's statistics (on `stats`) count for `server`.
fn haproxy_sessions(stats: u16, server: &str) -> u64 {
    // HAProxy's CSV: pxname,svname,qcur,qmax,scur,smax,slim,stot,...
    http_get(stats, "/stats;csv")
        .lines()
        .map(|line| line.split(',').collect::<Vec<_>>())
        .find(|f| f.len() > 7 && f[1] == server)
        .map_or(0, |f| f[7].parse().unwrap_or(0))
}
