//! What `onionlb bridge init` writes, decided without touching the disk:
//! each file's path, contents, mode and owner, from the operator's answers,
//! the shared keys and the transport's state.
//!
//! The plan follows Debian's multi-instance tor: tor N is `tor@NAME`, its
//! torrc `/etc/tor/instances/NAME/torrc`, its DataDirectory
//! `/var/lib/tor-instances/NAME` owned by `_tor-NAME` (made by
//! `tor-instance-create`), its runtime directory `/run/tor-instances/NAME`
//! (made by the unit, readable by all), where its ExtORPort cookie goes,
//! readable by its group so the balancer can read it. Addresses: tor N's
//! ExtORPort on 127.0.3.N and MetricsPort on 127.0.4.N, each at one fixed
//! port, so the balancer's arguments never change when a tor restarts.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// The group that may read the static cookie: the transport, the balancer
/// and (with HAProxy) the tors that launch the shims.
pub const COOKIE_GROUP: &str = "onionlb-bridge";
/// The user the transport runs as.
pub const PT_USER: &str = "onionlb-pt";
/// The user the balancer runs as.
pub const EXTOR_USER: &str = "onionlb-extor";
/// The key files every tor of the fleet shares, in `keys/`.
pub const SHARED_KEYS: [&str; 5] = [
    "secret_id_key",
    "ed25519_master_id_secret_key",
    "ed25519_master_id_public_key",
    "secret_onion_key",
    "secret_onion_key_ntor",
];

/// The operator's answers.
#[derive(Debug, Clone)]
pub struct Request {
    /// The tors' names, NICKNAME1...
    pub names: Vec<String>,
    /// Where everything is written; paths in the files are under it too.
    pub prefix: PathBuf,
    /// Where clients reach the transport.
    pub public: SocketAddr,
    /// Where the transport hands connections.
    pub extor_listen: SocketAddr,
    /// Every tor's ExtORPort port.
    pub extor_port: u16,
    /// Every tor's MetricsPort port.
    pub tor_metrics_port: u16,
    /// The balancer's metrics.
    pub metrics_listen: SocketAddr,
    /// HAProxy over compatibility shims instead of the balancer.
    pub haproxy: bool,
    /// `PublishServerDescriptor 0`.
    pub no_publish: bool,
    /// The tors' ContactInfo.
    pub contact_info: Option<String>,
}

/// Who owns a written file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The user.
    pub user: String,
    /// The group.
    pub group: String,
}

impl Owner {
    fn new(user: &str, group: &str) -> Option<Self> {
        Some(Owner {
            user: user.to_owned(),
            group: group.to_owned(),
        })
    }
}

/// What to do with a planned file that exists and differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it (after asking, or with --force).
    Replace,
    /// Keep it: a secret made once (the static cookie, a new transport
    /// state) must not change under a running fleet.
    Keep,
}

/// One file to write.
pub struct Planned {
    /// Its absolute path (under the prefix).
    pub path: PathBuf,
    /// What it holds.
    pub contents: Zeroizing<Vec<u8>>,
    /// Its mode.
    pub mode: u32,
    /// Its owner; `None` leaves it to whoever runs init (root, installed).
    pub owner: Option<Owner>,
    /// What to do when it exists and differs.
    pub existing: Existing,
}

/// One directory to make, with its mode and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDir {
    /// Its absolute path (under the prefix).
    pub path: PathBuf,
    /// Its mode when made.
    pub mode: u32,
    /// Its owner.
    pub owner: Option<Owner>,
}

/// The whole plan.
pub struct Plan {
    /// Directories, parents first.
    pub dirs: Vec<PlannedDir>,
    /// Files.
    pub files: Vec<Planned>,
    /// The line clients put in their torrc.
    pub bridge_line: String,
}

/// The secrets the plan places: the fleet's keys, its fingerprint, the
/// transport's state and the static cookie.
pub struct Secrets {
    /// The contents of each of [`SHARED_KEYS`], in that order.
    pub keys: Vec<Zeroizing<Vec<u8>>>,
    /// Whether the keys were given (`--keys-from`): they replace others.
    pub keys_given: bool,
    /// The bridge's fingerprint (40 hex digits).
    pub fingerprint: String,
    /// The transport's state.
    pub obfs4: super::obfs4::State,
    /// Whether the state was given (`--obfs4-state`): it replaces another.
    pub obfs4_given: bool,
    /// A static cookie's file, kept if one exists.
    pub static_cookie: Zeroizing<Vec<u8>>,
}

/// `path`, an absolute path as installed, under `prefix`.
pub fn under(prefix: &Path, path: &str) -> PathBuf {
    prefix.join(path.trim_start_matches('/'))
}

/// Decides every file and directory of the fleet.
pub fn plan(request: &Request, secrets: &Secrets) -> Plan {
    let p = |path: &str| under(&request.prefix, path);
    let mut dirs = vec![
        dir(p("/etc/onionlb/bridge"), 0o755, None),
        dir(p("/etc/systemd/system"), 0o755, None),
        dir(p("/etc/sysusers.d"), 0o755, None),
        dir(
            p("/var/lib/onionlb-bridge-pt"),
            0o700,
            Owner::new(PT_USER, PT_USER),
        ),
    ];
    let mut files = vec![
        file(
            p("/etc/onionlb/bridge/static_cookie"),
            secrets.static_cookie.to_vec(),
            0o640,
            Owner::new("root", COOKIE_GROUP),
            Existing::Keep,
        ),
        file(
            p("/var/lib/onionlb-bridge-pt/obfs4_state.json"),
            secrets.obfs4.to_json().into_bytes(),
            0o600,
            Owner::new(PT_USER, PT_USER),
            if secrets.obfs4_given {
                Existing::Replace
            } else {
                Existing::Keep
            },
        ),
        text_file(p("/etc/sysusers.d/onionlb-bridge.conf"), sysusers(request)),
        text_file(
            p("/etc/systemd/system/onionlb-bridge-pt.service"),
            pt_unit(request),
        ),
        text_file(
            p("/etc/systemd/system/onionlb-bridge-rotate.service"),
            rotate_unit(request),
        ),
        text_file(
            p("/etc/systemd/system/onionlb-bridge-rotate.timer"),
            ROTATE_TIMER.to_owned(),
        ),
    ];
    if request.haproxy {
        files.push(text_file(
            p("/etc/onionlb/bridge/haproxy.cfg"),
            haproxy_config(request),
        ));
        files.push(text_file(
            p("/etc/systemd/system/onionlb-bridge-metrics.service"),
            metrics_unit(request),
        ));
    } else {
        files.push(text_file(
            p("/etc/systemd/system/onionlb-bridge-extor.service"),
            extor_unit(request),
        ));
    }
    for (index, name) in request.names.iter().enumerate() {
        let owner = Owner::new(&format!("_tor-{name}"), &format!("_tor-{name}"));
        let data = p(&format!("/var/lib/tor-instances/{name}"));
        dirs.push(dir(p(&format!("/etc/tor/instances/{name}")), 0o755, None));
        dirs.push(dir(data.clone(), 0o2700, owner.clone()));
        dirs.push(dir(data.join("keys"), 0o700, owner.clone()));
        dirs.push(dir(
            p(&format!("/etc/systemd/system/tor@{name}.service.d")),
            0o755,
            None,
        ));
        files.push(text_file(
            p(&format!("/etc/tor/instances/{name}/torrc")),
            torrc(request, index),
        ));
        files.push(text_file(
            p(&format!(
                "/etc/systemd/system/tor@{name}.service.d/onionlb-bridge.conf"
            )),
            TOR_DROP_IN.to_owned(),
        ));
        for (key, contents) in SHARED_KEYS.iter().zip(&secrets.keys) {
            files.push(file(
                data.join("keys").join(key),
                contents.to_vec(),
                0o600,
                owner.clone(),
                if secrets.keys_given {
                    Existing::Replace
                } else {
                    Existing::Keep
                },
            ));
        }
    }
    files.push(text_file(
        p("/etc/onionlb/bridge/bridgeline.txt"),
        format!("{}\n", bridge_line(request, secrets)),
    ));
    Plan {
        dirs,
        files,
        bridge_line: bridge_line(request, secrets),
    }
}

fn dir(path: PathBuf, mode: u32, owner: Option<Owner>) -> PlannedDir {
    PlannedDir { path, mode, owner }
}

fn file(
    path: PathBuf,
    contents: Vec<u8>,
    mode: u32,
    owner: Option<Owner>,
    existing: Existing,
) -> Planned {
    Planned {
        path,
        contents: Zeroizing::new(contents),
        mode,
        owner,
        existing,
    }
}

fn text_file(path: PathBuf, text: String) -> Planned {
    file(path, text.into_bytes(), 0o644, None, Existing::Replace)
}

/// The line a client puts in its torrc (with `UseBridges 1` and obfs4proxy
/// as its `ClientTransportPlugin`).
fn bridge_line(request: &Request, secrets: &Secrets) -> String {
    let address = if request.public.ip().is_unspecified() {
        format!("<IP ADDRESS>:{}", request.public.port())
    } else {
        request.public.to_string()
    };
    format!(
        "Bridge obfs4 {address} {} cert={} iat-mode={}",
        secrets.fingerprint,
        secrets.obfs4.cert(),
        secrets.obfs4.iat_mode()
    )
}

/// Tor N's ExtORPort (N counted from 1).
pub fn extor_addr(request: &Request, index: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 3, host(index)], request.extor_port))
}

/// Tor N's MetricsPort.
pub fn tor_metrics_addr(request: &Request, index: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 4, host(index)], request.tor_metrics_port))
}

/// Where tor N's compatibility shim listens: the port after the frontend's
/// N-th.
pub fn shim_addr(request: &Request, index: usize) -> SocketAddr {
    let port = request
        .extor_listen
        .port()
        .saturating_add(host(index).into());
    SocketAddr::new(request.extor_listen.ip(), port)
}

/// The last octet of tor N's addresses (N is at most 64).
fn host(index: usize) -> u8 {
    u8::try_from(index + 1).unwrap_or(u8::MAX)
}

/// Tor N's ExtORPort cookie, in its runtime directory.
pub fn tor_cookie(request: &Request, name: &str) -> PathBuf {
    under(
        &request.prefix,
        &format!("/run/tor-instances/{name}/extor_cookie"),
    )
}

/// The balancer's admin socket, in its unit's RuntimeDirectory.
pub fn admin_socket(request: &Request) -> PathBuf {
    under(&request.prefix, "/run/onionlb-bridge/admin.sock")
}

fn static_cookie(request: &Request) -> PathBuf {
    under(&request.prefix, "/etc/onionlb/bridge/static_cookie")
}

/// Tor N's torrc.
pub fn torrc(request: &Request, index: usize) -> String {
    let name = &request.names[index];
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "# Bridge tor {} of {} sharing one identity, written by `onionlb bridge init`.\n\
         # Run by systemd as tor@{name}; its keys are the fleet's (do not let it make others).",
        index + 1,
        request.names.len()
    ));
    line(format!("Nickname {name}"));
    line("BridgeRelay 1".into());
    line("BridgeDistribution none".into());
    line("AssumeReachable 1".into());
    line("SocksPort 0".into());
    if request.no_publish {
        line("PublishServerDescriptor 0".into());
    }
    if let Some(contact) = &request.contact_info {
        line(format!("ContactInfo {contact}"));
    }
    line(format!(
        "DataDirectory {}",
        under(&request.prefix, &format!("/var/lib/tor-instances/{name}")).display()
    ));
    line("# Clients reach the bridge through the transport only.".into());
    line("ORPort 127.0.0.1:auto".into());
    line(format!("ExtORPort {}", extor_addr(request, index)));
    line(format!(
        "ExtORPortCookieAuthFile {}",
        tor_cookie(request, name).display()
    ));
    line("ExtORPortCookieAuthFileGroupReadable 1".into());
    line(format!("MetricsPort {}", tor_metrics_addr(request, index)));
    line("MetricsPortPolicy accept 127.0.0.0/8".into());
    if request.haproxy {
        line(format!(
            "ServerTransportPlugin extor_static_cookie exec /usr/bin/onionlb bridge extor --compat-shim --static-cookie {}",
            static_cookie(request).display()
        ));
        line(format!(
            "ServerTransportListenAddr extor_static_cookie {}",
            shim_addr(request, index)
        ));
    }
    out
}

/// Raises a tor@NAME's open files: a busy bridge tor holds a socket per
/// client and one per circuit's next hop.
const TOR_DROP_IN: &str = "# Written by `onionlb bridge init`.\n[Service]\nLimitNOFILE=1048576\n";

/// The users and group of the transport and the balancer
/// (sysusers.d(5)); with HAProxy the tors join the cookie's group too.
fn sysusers(request: &Request) -> String {
    let mut out = format!(
        "# Written by `onionlb bridge init`; apply with systemd-sysusers.\n\
         g {COOKIE_GROUP} -\n\
         u {PT_USER} - \"onionlb bridge transport\" /nonexistent /usr/sbin/nologin\n\
         m {PT_USER} {COOKIE_GROUP}\n\
         u {EXTOR_USER} - \"onionlb bridge balancer\" /nonexistent /usr/sbin/nologin\n\
         m {EXTOR_USER} {COOKIE_GROUP}\n"
    );
    if request.haproxy {
        for name in &request.names {
            let _ = writeln!(out, "m _tor-{name} {COOKIE_GROUP}");
        }
    }
    out
}

/// The end of both daemons' units: restarted on failure, many open
/// files (a socket per client), no new privileges, read-only system.
const DAEMON_TAIL: &str = "Restart=on-failure\n\
LimitNOFILE=1048576\n\
NoNewPrivileges=yes\n\
ProtectSystem=strict\n\
ProtectHome=yes\n\
PrivateTmp=yes\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n";

/// The transport (obfs4proxy) as its own daemon.
fn pt_unit(request: &Request) -> String {
    let state = under(&request.prefix, "/var/lib/onionlb-bridge-pt");
    let after = if request.haproxy {
        "haproxy.service".to_owned()
    } else {
        "onionlb-bridge-extor.service".to_owned()
    };
    format!(
        "# Written by `onionlb bridge init`.\n\
         [Unit]\n\
         Description=obfs4proxy in front of the bridge's tors\n\
         After=network-online.target {after}\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         User={PT_USER}\n\
         Group={PT_USER}\n\
         SupplementaryGroups={COOKIE_GROUP}\n\
         Environment=TOR_PT_MANAGED_TRANSPORT_VER=1\n\
         Environment=TOR_PT_SERVER_TRANSPORTS=obfs4\n\
         Environment=TOR_PT_SERVER_BINDADDR=obfs4-{public}\n\
         Environment=TOR_PT_ORPORT={front}\n\
         Environment=TOR_PT_EXTENDED_SERVER_PORT={front}\n\
         Environment=TOR_PT_AUTH_COOKIE_FILE={cookie}\n\
         Environment=TOR_PT_STATE_LOCATION={state}\n\
         Environment=TOR_PT_EXIT_ON_STDIN_CLOSE=0\n\
         ExecStart=/usr/bin/obfs4proxy\n\
         AmbientCapabilities=CAP_NET_BIND_SERVICE\n\
         CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n\
         ReadWritePaths={state}\n\
         {DAEMON_TAIL}",
        public = request.public,
        front = request.extor_listen,
        cookie = static_cookie(request).display(),
        state = state.display(),
    )
}

/// The balancer over every tor.
fn extor_unit(request: &Request) -> String {
    let tors: Vec<String> = request
        .names
        .iter()
        .map(|name| format!("tor@{name}.service"))
        .collect();
    let groups: Vec<String> = request
        .names
        .iter()
        .map(|name| format!("_tor-{name}"))
        .collect();
    let mut command = format!(
        "/usr/bin/onionlb bridge extor --listen {} --static-cookie {} --metrics-listen {} --admin-socket {}",
        request.extor_listen,
        static_cookie(request).display(),
        request.metrics_listen,
        admin_socket(request).display(),
    );
    for (index, name) in request.names.iter().enumerate() {
        let _ = write!(
            command,
            " --instance {name},{},{} --tor-metrics {name}={}",
            extor_addr(request, index),
            tor_cookie(request, name).display(),
            tor_metrics_addr(request, index)
        );
    }
    format!(
        "# Written by `onionlb bridge init`.\n\
         [Unit]\n\
         Description=onionlb bridge extor: the transport's connections over the bridge's tors\n\
         After=network.target {tors}\n\
         Wants={tors}\n\
         \n\
         [Service]\n\
         User={EXTOR_USER}\n\
         Group={EXTOR_USER}\n\
         SupplementaryGroups={COOKIE_GROUP} {groups}\n\
         RuntimeDirectory=onionlb-bridge\n\
         ExecStart={command}\n\
         {DAEMON_TAIL}",
        tors = tors.join(" "),
        groups = groups.join(" "),
    )
}

/// Without the balancer (HAProxy), the tors' metrics summed on its own
/// endpoint.
fn metrics_unit(request: &Request) -> String {
    let mut command = format!(
        "/usr/bin/onionlb bridge metrics --listen {}",
        request.metrics_listen
    );
    for (index, name) in request.names.iter().enumerate() {
        let _ = write!(
            command,
            " --tor-metrics {name}={}",
            tor_metrics_addr(request, index)
        );
    }
    format!(
        "# Written by `onionlb bridge init`.\n\
         [Unit]\n\
         Description=onionlb bridge metrics: the bridge's tors' metrics, per tor and summed\n\
         After=network.target\n\
         \n\
         [Service]\n\
         User={EXTOR_USER}\n\
         Group={EXTOR_USER}\n\
         ExecStart={command}\n\
         {DAEMON_TAIL}"
    )
}

/// `onionlb bridge keys rotate` over every tor, drained through the
/// balancer (or, with HAProxy, given time to come up).
fn rotate_unit(request: &Request) -> String {
    let mut command = "/usr/bin/onionlb bridge keys rotate".to_owned();
    for name in &request.names {
        let _ = write!(
            command,
            " --tor {name}={}",
            under(&request.prefix, &format!("/var/lib/tor-instances/{name}")).display()
        );
    }
    command.push_str(
        " --stop-command \"systemctl stop tor@{name}\" --start-command \"systemctl start tor@{name}\"",
    );
    if request.haproxy {
        command.push_str(" --settle 30");
    } else {
        let _ = write!(
            command,
            " --admin-socket {}",
            admin_socket(request).display()
        );
    }
    format!(
        "# Written by `onionlb bridge init`; started by onionlb-bridge-rotate.timer.\n\
         [Unit]\n\
         Description=onionlb bridge keys rotate: a rolling onion-key rotation of the bridge's tors\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={command}\n"
    )
}

/// Weekly: well within `onion-key-rotation-days` (28), so no tor rotates
/// on its own.
const ROTATE_TIMER: &str = "# Written by `onionlb bridge init`.\n\
[Unit]\n\
Description=Weekly rolling onion-key rotation of the bridge's tors\n\
\n\
[Timer]\n\
OnCalendar=weekly\n\
RandomizedDelaySec=6h\n\
Persistent=true\n\
\n\
[Install]\n\
WantedBy=timers.target\n";

/// HAProxy over the shims: unique server names (HAProxy 2.6 refuses
/// shared ones), fewest connections, checks every second.
fn haproxy_config(request: &Request) -> String {
    let mut out = format!(
        "# Written by `onionlb bridge init`: HAProxy over one compatibility shim per tor.\n\
         # Load it beside haproxy.cfg (haproxy -f /etc/haproxy/haproxy.cfg -f THIS).\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\
         frontend onionlb_bridge\n    bind {}\n    default_backend onionlb_bridge_tors\n\
         backend onionlb_bridge_tors\n    balance leastconn\n",
        request.extor_listen
    );
    for (index, name) in request.names.iter().enumerate() {
        let _ = writeln!(
            out,
            "    server {name} {} check inter 1s",
            shim_addr(request, index)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn request(haproxy: bool) -> Request {
        Request {
            names: vec!["b1".into(), "b2".into(), "b3".into()],
            prefix: PathBuf::from("/"),
            public: "203.0.113.5:443".parse().unwrap(),
            extor_listen: "127.0.0.1:10000".parse().unwrap(),
            extor_port: 9200,
            tor_metrics_port: 9035,
            metrics_listen: "127.0.0.1:9300".parse().unwrap(),
            haproxy,
            no_publish: false,
            contact_info: None,
        }
    }

    fn secrets() -> Secrets {
        Secrets {
            keys: SHARED_KEYS
                .iter()
                .map(|k| Zeroizing::new(k.as_bytes().to_vec()))
                .collect(),
            keys_given: false,
            fingerprint: "C800AD0B127493BD66F5A8EF700950A1445B4ABB".into(),
            obfs4: super::super::obfs4::State::from_random(&[7; super::super::obfs4::RANDOM_LEN]),
            obfs4_given: false,
            static_cookie: Zeroizing::new(vec![1; 64]),
        }
    }

    fn text<'a>(plan: &'a Plan, path: &str) -> &'a str {
        let file = plan
            .files
            .iter()
            .find(|f| f.path == Path::new(path))
            .unwrap_or_else(|| panic!("{path} is not planned"));
        std::str::from_utf8(&file.contents).unwrap()
    }

    #[test]
    fn every_tor_gets_its_own_addresses_and_the_shared_keys() {
        let plan = plan(&request(false), &secrets());
        let b2 = text(&plan, "/etc/tor/instances/b2/torrc");
        assert!(b2.contains("\nNickname b2\n"));
        assert!(b2.contains("\nExtORPort 127.0.3.2:9200\n"));
        assert!(b2.contains("\nMetricsPort 127.0.4.2:9035\n"));
        assert!(b2.contains("\nExtORPortCookieAuthFile /run/tor-instances/b2/extor_cookie\n"));
        assert!(!b2.contains("ServerTransportPlugin"));
        for name in ["b1", "b2", "b3"] {
            for key in SHARED_KEYS {
                let path = format!("/var/lib/tor-instances/{name}/keys/{key}");
                let file = plan
                    .files
                    .iter()
                    .find(|f| f.path == Path::new(&path))
                    .unwrap();
                assert_eq!(file.mode, 0o600);
                assert_eq!(file.owner.as_ref().unwrap().user, format!("_tor-{name}"));
            }
        }
    }

    #[test]
    fn the_balancer_names_every_tor_and_can_read_its_cookie() {
        let plan = plan(&request(false), &secrets());
        let unit = text(&plan, "/etc/systemd/system/onionlb-bridge-extor.service");
        assert!(unit.contains(
            " --instance b3,127.0.3.3:9200,/run/tor-instances/b3/extor_cookie --tor-metrics b3=127.0.4.3:9035"
        ));
        assert!(unit.contains("SupplementaryGroups=onionlb-bridge _tor-b1 _tor-b2 _tor-b3\n"));
        let rotate = text(&plan, "/etc/systemd/system/onionlb-bridge-rotate.service");
        assert!(rotate.contains("--tor b1=/var/lib/tor-instances/b1 "));
        assert!(rotate.contains("--admin-socket /run/onionlb-bridge/admin.sock"));
        assert!(!plan.files.iter().any(|f| f.path.ends_with("haproxy.cfg")));
    }

    #[test]
    fn with_haproxy_each_tor_launches_a_shim_and_haproxy_names_each_once() {
        let plan = plan(&request(true), &secrets());
        let b3 = text(&plan, "/etc/tor/instances/b3/torrc");
        assert!(b3.contains("\nServerTransportListenAddr extor_static_cookie 127.0.0.1:10003\n"));
        let config = text(&plan, "/etc/onionlb/bridge/haproxy.cfg");
        for (name, port) in [("b1", 10001), ("b2", 10002), ("b3", 10003)] {
            assert_eq!(
                config
                    .matches(&format!("server {name} 127.0.0.1:{port} check"))
                    .count(),
                1
            );
        }
        assert!(text(&plan, "/etc/sysusers.d/onionlb-bridge.conf")
            .contains("m _tor-b2 onionlb-bridge\n"));
        assert!(
            text(&plan, "/etc/systemd/system/onionlb-bridge-metrics.service").contains(
                " --tor-metrics b1=127.0.4.1:9035 --tor-metrics b2=127.0.4.2:9035 --tor-metrics b3=127.0.4.3:9035\n"
            )
        );
        assert!(!plan
            .files
            .iter()
            .any(|f| f.path.ends_with("onionlb-bridge-extor.service")));
    }

    #[test]
    fn a_prefix_moves_every_path_in_every_file() {
        let mut request = request(false);
        request.prefix = PathBuf::from("/tmp/fleet");
        let plan = plan(&request, &secrets());
        for file in &plan.files {
            assert!(
                file.path.starts_with("/tmp/fleet/"),
                "{}",
                file.path.display()
            );
        }
        let unit = text(
            &plan,
            "/tmp/fleet/etc/systemd/system/onionlb-bridge-pt.service",
        );
        assert!(
            unit.contains("TOR_PT_AUTH_COOKIE_FILE=/tmp/fleet/etc/onionlb/bridge/static_cookie\n")
        );
        assert!(unit.contains("TOR_PT_STATE_LOCATION=/tmp/fleet/var/lib/onionlb-bridge-pt\n"));
        assert!(text(&plan, "/tmp/fleet/etc/tor/instances/b1/torrc")
            .contains("\nDataDirectory /tmp/fleet/var/lib/tor-instances/b1\n"));
    }

    #[test]
    fn the_bridge_line_has_the_public_address_fingerprint_and_cert() {
        let secrets = secrets();
        let plan = plan(&request(false), &secrets);
        assert_eq!(
            plan.bridge_line,
            format!(
                "Bridge obfs4 203.0.113.5:443 C800AD0B127493BD66F5A8EF700950A1445B4ABB cert={} iat-mode=0",
                secrets.obfs4.cert()
            )
        );
        let mut request = request(false);
        request.public = "0.0.0.0:443".parse().unwrap();
        assert!(super::plan(&request, &secrets)
            .bridge_line
            .starts_with("Bridge obfs4 <IP ADDRESS>:443 "));
    }
}
