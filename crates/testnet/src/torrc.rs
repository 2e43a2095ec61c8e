//! What each tor is told: its torrc, and an instance's `ob_config`.
//!
//! Pure text generation; see TESTNET-NOTES.md in the shared design folder
//! for why each option is here.

use std::fmt::Write as _;

use onionlb_core::OnionAddress;
use serde::{Deserialize, Serialize};

use crate::layout::{Node, Role};

/// Seconds between consensus votes. Short, so a network bootstraps in
/// well under a minute; it also sets the onion service time period on a
/// testing network (24 voting intervals).
pub const VOTING_INTERVAL_SECS: u32 = 20;

/// Seconds authorities wait for votes, and for signatures.
const VOTE_DELAY_SECS: u32 = 4;

/// What every tor must know about one directory authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authority {
    /// Its nickname.
    pub nickname: String,
    /// Its ORPort on 127.0.0.1.
    pub or_port: u16,
    /// Its DirPort on 127.0.0.1.
    pub dir_port: u16,
    /// Fingerprint of its authority identity key (from `tor-gencert`).
    pub v3ident: String,
    /// Fingerprint of its relay identity key.
    pub fingerprint: String,
}

impl Authority {
    /// The `DirAuthority` line naming it.
    pub fn dir_authority_line(&self) -> String {
        format!(
            "DirAuthority {} orport={} no-v2 v3ident={} 127.0.0.1:{} {}",
            self.nickname, self.or_port, self.v3ident, self.dir_port, self.fingerprint
        )
    }
}

/// Choices about the network that are not its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Masters the instances serve (empty: plain onion services).
    pub masters: Vec<OnionAddress>,
    /// Whether the client tor uses entry guards. Real clients do; a test
    /// measuring how clients spread over instances may turn them off, since
    /// on a network of a few relays one guard rules out every intro point
    /// that sits on it.
    pub client_guards: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            masters: Vec::new(),
            client_guards: true,
        }
    }
}

/// The torrc of `node`, given the network's authorities and options.
pub fn torrc(node: &Node, authorities: &[Authority], options: &Options) -> String {
    let masters = &options.masters;
    let mut out = String::new();
    let dir = node.data_dir.display();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "# {} ({:?}), written by onionlb's testnet",
        node.name, node.role
    ));
    line("TestingTorNetwork 1".into());
    for authority in authorities {
        line(authority.dir_authority_line());
    }
    for fixed in [
        "UseDefaultFallbackDirs 0",
        "Address 127.0.0.1",
        "OutboundBindAddress 127.0.0.1",
        "ClientUseIPv6 0",
        "RunAsDaemon 0",
        "SafeLogging 0",
        "ShutdownWaitLength 0",
        "CookieAuthentication 1",
        "PathsNeededToBuildCircuits 0.67",
        "TestingDirAuthVoteGuard *",
        "TestingDirAuthVoteHSDir *",
        "V3AuthNIntervalsValid 2",
        "AssumeReachable 1",
    ] {
        line(fixed.into());
    }
    line(format!("DataDirectory {dir}"));
    line(format!("PidFile {dir}/tor.pid"));
    // Named, not derived from DataDirectory: a guest's own lines may move
    // its DataDirectory (a bridge fleet's torrc names its own).
    line(format!("CookieAuthFile {dir}/control_auth_cookie"));
    line(format!("Log notice file {}", node.notice_log().display()));
    line(format!("Log info file {}", node.info_log().display()));
    line(format!("ControlPort 127.0.0.1:{}", node.control_port));
    match node.socks_port {
        // ExtendedErrors: onion service failures get their own SOCKS codes.
        Some(port) => line(format!("SocksPort 127.0.0.1:{port} ExtendedErrors")),
        None => line("SocksPort 0".into()),
    }

    if let Some((or_port, dir_port)) = node.relay_ports {
        line(format!("Nickname {}", node.name));
        line(format!("ORPort 127.0.0.1:{or_port}"));
        line(format!("DirPort 127.0.0.1:{dir_port}"));
        for fixed in ["ExitRelay 0", "ExitPolicy reject *:*", "DirCache 1"] {
            line(fixed.into());
        }
        line(format!("ContactInfo {}@onionlb-testnet.invalid", node.name));
    }

    if node.role == Role::Authority {
        for fixed in ["AuthoritativeDirectory 1", "V3AuthoritativeDirectory 1"] {
            line(fixed.into());
        }
        for option in ["V3AuthVotingInterval", "TestingV3AuthInitialVotingInterval"] {
            line(format!("{option} {VOTING_INTERVAL_SECS}"));
        }
        for option in [
            "V3AuthVoteDelay",
            "V3AuthDistDelay",
            "TestingV3AuthInitialVoteDelay",
            "TestingV3AuthInitialDistDelay",
        ] {
            line(format!("{option} {VOTE_DELAY_SECS}"));
        }
    }

    if node.role == Role::Client && !options.client_guards {
        line("UseEntryGuards 0".into());
    }

    if let Some(app_port) = node.app_port {
        line(format!("HiddenServiceDir {}", node.hs_dir().display()));
        line(format!("HiddenServicePort 80 127.0.0.1:{app_port}"));
        if !masters.is_empty() {
            line("HiddenServiceOnionbalanceInstance 1".into());
        }
    }
    out
}

/// The `ob_config` an instance of `masters` keeps in its
/// `HiddenServiceDir`: one `MasterOnionAddress` line per master.
pub fn ob_config(masters: &[OnionAddress]) -> String {
    let mut out = String::new();
    for master in masters {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "MasterOnionAddress {master}");
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::layout::Layout;
    use crate::ports::PortPlan;
    use std::path::Path;

    const MASTER: &str = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";

    fn layout() -> Layout {
        let ports = PortPlan::new(40000, Layout::node_count(1, 1), 1).unwrap();
        Layout::new(Path::new("/n"), ports, 1, 1).unwrap()
    }

    fn authorities() -> Vec<Authority> {
        vec![Authority {
            nickname: "auth0".into(),
            or_port: 40000,
            dir_port: 40001,
            v3ident: "A".repeat(40),
            fingerprint: "B".repeat(40),
        }]
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn every_tor_stays_on_the_private_loopback_network() {
        let layout = layout();
        for node in &layout.nodes {
            let text = torrc(node, &authorities(), &Options::default());
            let lines = lines(&text);
            for required in [
                "TestingTorNetwork 1",
                "UseDefaultFallbackDirs 0",
                "Address 127.0.0.1",
                "OutboundBindAddress 127.0.0.1",
                "CookieAuthentication 1",
                "RunAsDaemon 0",
            ] {
                assert!(
                    lines.contains(&required),
                    "{}: missing {required}",
                    node.name
                );
            }
            let expected_authority = format!(
                "DirAuthority auth0 orport=40000 no-v2 v3ident={} 127.0.0.1:40001 {}",
                "A".repeat(40),
                "B".repeat(40)
            );
            assert!(lines.contains(&expected_authority.as_str()));
            for line in &lines {
                if line.ends_with("Port 0")
                    || !line.contains("Port ")
                    || line.starts_with("HiddenServicePort")
                {
                    continue;
                }
                assert!(
                    line.contains(" 127.0.0.1:"),
                    "{}: {line} not on loopback",
                    node.name
                );
            }
            assert!(!text.contains("ExitPolicy accept"));
        }
    }

    #[test]
    fn roles_get_their_options() {
        let layout = layout();
        let auth = torrc(
            layout.node("auth0").unwrap(),
            &authorities(),
            &Options::default(),
        );
        assert!(lines(&auth).contains(&"V3AuthoritativeDirectory 1"));
        assert!(lines(&auth).contains(&"V3AuthVotingInterval 20"));
        assert!(lines(&auth).contains(&"ORPort 127.0.0.1:40000"));
        assert!(lines(&auth).contains(&"SocksPort 0"));

        let relay = torrc(
            layout.node("relay0").unwrap(),
            &authorities(),
            &Options::default(),
        );
        assert!(lines(&relay).contains(&"ExitPolicy reject *:*"));
        assert!(lines(&relay).contains(&"Nickname relay0"));
        assert!(!relay.contains("Authoritative"));

        let client = torrc(layout.client(), &authorities(), &Options::default());
        let socks = format!(
            "SocksPort 127.0.0.1:{} ExtendedErrors",
            layout.client().socks_port.unwrap()
        );
        assert!(lines(&client).contains(&socks.as_str()));
        assert!(!client.contains("ORPort"));

        let manager = torrc(layout.manager(), &authorities(), &Options::default());
        assert!(manager.contains("SocksPort 127.0.0.1:"));
        assert!(!manager.contains("HiddenService"));
    }

    #[test]
    fn instances_serve_their_app_and_masters() {
        let layout = layout();
        let instance = layout.instances().next().unwrap();
        let plain = torrc(instance, &authorities(), &Options::default());
        assert!(lines(&plain).contains(&"HiddenServiceDir /n/instance0/hs"));
        let port_line = format!(
            "HiddenServicePort 80 127.0.0.1:{}",
            instance.app_port.unwrap()
        );
        assert!(lines(&plain).contains(&port_line.as_str()));
        assert!(!plain.contains("HiddenServiceOnionbalanceInstance"));

        let master: OnionAddress = MASTER.parse().unwrap();
        let options = Options {
            masters: vec![master],
            ..Options::default()
        };
        let balanced = torrc(instance, &authorities(), &options);
        assert!(lines(&balanced).contains(&"HiddenServiceOnionbalanceInstance 1"));
    }

    #[test]
    fn client_guards_can_be_turned_off() {
        let layout = layout();
        let guarded = torrc(layout.client(), &authorities(), &Options::default());
        assert!(!guarded.contains("UseEntryGuards"));
        let options = Options {
            client_guards: false,
            ..Options::default()
        };
        assert!(
            lines(&torrc(layout.client(), &authorities(), &options)).contains(&"UseEntryGuards 0")
        );
        assert!(!torrc(layout.manager(), &authorities(), &options).contains("UseEntryGuards"));
    }

    #[test]
    fn ob_config_lists_every_master() {
        let a: OnionAddress = MASTER.parse().unwrap();
        assert_eq!(
            ob_config(&[a, a]),
            format!("MasterOnionAddress {MASTER}\nMasterOnionAddress {MASTER}\n")
        );
        assert_eq!(ob_config(&[]), "");
    }
}
