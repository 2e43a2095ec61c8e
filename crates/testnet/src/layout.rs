//! The shape of a network: which tors it has, their names, directories and
//! ports. Pure: building a [`Layout`] touches nothing.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use torctl::ControlAddr;

use crate::error::Error;
use crate::ports::{PortKind, PortPlan};

/// Directory authorities in every network: the fewest that still vote a
/// consensus with a majority when one is slow.
pub const AUTHORITIES: usize = 3;

/// What a tor does in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A directory authority, also a relay.
    Authority,
    /// A relay with the HSDir flag; never an exit.
    Relay,
    /// An onion service instance (a balancer backend) with its HTTP app.
    Instance,
    /// The management tor a balancer controls: control port, no SOCKS.
    Manager,
    /// The client tor: SOCKS and control port.
    Client,
    /// A tor started later and configured by the caller (say, an
    /// operator's onion service set up as a guide says): control port,
    /// no SOCKS, the caller's own torrc lines.
    Guest,
}

impl Role {
    /// Whether this tor relays traffic and so has an ORPort.
    pub fn is_relay(self) -> bool {
        matches!(self, Role::Authority | Role::Relay)
    }
}

/// One tor of the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Short name, also the relay nickname: `auth0`, `relay3`, `instance1`,
    /// `manager`, `client`.
    pub name: String,
    /// What it does.
    pub role: Role,
    /// Its `DataDirectory`; its torrc and logs live there too.
    pub data_dir: PathBuf,
    /// Its control port.
    pub control_port: u16,
    /// ORPort and DirPort, for relays and authorities.
    pub relay_ports: Option<(u16, u16)>,
    /// SOCKS port, for the client, and for instances (an agent beside one
    /// reaches a remote manager through it).
    pub socks_port: Option<u16>,
    /// Port of the HTTP app behind an instance's onion service.
    pub app_port: Option<u16>,
}

impl Node {
    /// The torrc we write for it.
    pub fn torrc_path(&self) -> PathBuf {
        self.data_dir.join("torrc")
    }

    /// Tor's control-port cookie.
    pub fn cookie_path(&self) -> PathBuf {
        self.data_dir.join("control_auth_cookie")
    }

    /// The notice-level log, short enough to show on failure.
    pub fn notice_log(&self) -> PathBuf {
        self.data_dir.join("notice.log")
    }

    /// The info-level log, which explains most failures.
    pub fn info_log(&self) -> PathBuf {
        self.data_dir.join("info.log")
    }

    /// The onion service directory of an instance.
    pub fn hs_dir(&self) -> PathBuf {
        self.data_dir.join("hs")
    }

    /// Where an instance's HTTP app logs.
    pub fn app_log(&self) -> PathBuf {
        self.data_dir.join("app.log")
    }

    /// Where to reach its control port.
    pub fn control_addr(&self) -> ControlAddr {
        ControlAddr::Tcp(loopback(self.control_port))
    }
}

/// Every tor of one network, in a fixed order: authorities, relays,
/// instances, the manager, the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The directory everything lives under.
    pub dir: PathBuf,
    /// The ports.
    pub ports: PortPlan,
    /// The tors.
    pub nodes: Vec<Node>,
}

impl Layout {
    /// How many tors a network with `relays` relays and `instances`
    /// instances has.
    pub fn node_count(relays: usize, instances: usize) -> usize {
        AUTHORITIES + relays + instances + 2
    }

    /// Lays out a network in `dir` on the ports of `ports`, which must have
    /// room for [`Layout::node_count`] tors and `instances` apps.
    pub fn new(
        dir: &Path,
        ports: PortPlan,
        relays: usize,
        instances: usize,
    ) -> Result<Self, Error> {
        let expected = PortPlan::new(ports.base(), Self::node_count(relays, instances), instances)?;
        if expected != ports {
            return Err(Error::PortRange {
                base: ports.base(),
                needed: expected.len(),
            });
        }
        let roles = std::iter::repeat_n((Role::Authority, "auth"), AUTHORITIES)
            .chain(std::iter::repeat_n((Role::Relay, "relay"), relays))
            .chain(std::iter::repeat_n((Role::Instance, "instance"), instances))
            .chain([(Role::Manager, "manager"), (Role::Client, "client")]);

        let mut nodes = Vec::new();
        let mut per_role = [0usize; 5];
        for (index, (role, prefix)) in roles.enumerate() {
            let nth = &mut per_role[role as usize];
            let name = match role {
                Role::Manager | Role::Client => prefix.to_owned(),
                _ => format!("{prefix}{nth}"),
            };
            let app_port = (role == Role::Instance).then(|| ports.app(*nth));
            *nth += 1;
            nodes.push(Node {
                data_dir: dir.join(&name),
                name,
                role,
                control_port: ports.node(index, PortKind::Control),
                relay_ports: role.is_relay().then(|| {
                    (
                        ports.node(index, PortKind::Or),
                        ports.node(index, PortKind::Dir),
                    )
                }),
                // The manager's probes instances through its SOCKS port.
                socks_port: matches!(role, Role::Client | Role::Instance | Role::Manager)
                    .then(|| ports.node(index, PortKind::Socks)),
                app_port,
            });
        }
        Ok(Layout {
            dir: dir.to_owned(),
            ports,
            nodes,
        })
    }

    /// The tors with `role`, in order.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.role == role)
    }

    /// The tor named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The client tor.
    pub fn client(&self) -> &Node {
        self.only(Role::Client)
    }

    /// The management tor.
    pub fn manager(&self) -> &Node {
        self.only(Role::Manager)
    }

    /// The instance tors.
    pub fn instances(&self) -> impl Iterator<Item = &Node> {
        self.with_role(Role::Instance)
    }

    fn only(&self, role: Role) -> &Node {
        // `Layout::new` always creates exactly one manager and one client.
        self.nodes
            .iter()
            .find(|n| n.role == role)
            .unwrap_or_else(|| unreachable!("every layout has one {role:?}"))
    }
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[cfg(test)]
mod test {
    use super::*;

    fn layout() -> Layout {
        let ports = PortPlan::new(30000, Layout::node_count(2, 2), 2).unwrap();
        Layout::new(Path::new("/tmp/net"), ports, 2, 2).unwrap()
    }

    #[test]
    fn nodes_in_order_with_their_ports() {
        let layout = layout();
        let names: Vec<_> = layout.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "auth0",
                "auth1",
                "auth2",
                "relay0",
                "relay1",
                "instance0",
                "instance1",
                "manager",
                "client"
            ]
        );
        let auth1 = layout.node("auth1").unwrap();
        assert_eq!(auth1.relay_ports, Some((30004, 30005)));
        assert_eq!(auth1.control_port, 30006);
        assert_eq!(auth1.socks_port, None);
        assert_eq!(auth1.data_dir, Path::new("/tmp/net/auth1"));

        let client = layout.client();
        assert_eq!(client.socks_port, Some(30000 + 8 * 4 + 3));
        assert_eq!(client.relay_ports, None);
        assert!(layout.manager().socks_port.is_some());

        let apps: Vec<_> = layout.instances().map(|n| n.app_port.unwrap()).collect();
        assert_eq!(apps, [30036, 30037]);
        assert!(layout.with_role(Role::Relay).all(|n| n.app_port.is_none()));
    }

    #[test]
    fn plan_must_match_the_shape() {
        let small = PortPlan::new(30000, 5, 0).unwrap();
        assert!(Layout::new(Path::new("/tmp/net"), small, 2, 2).is_err());
    }
}
