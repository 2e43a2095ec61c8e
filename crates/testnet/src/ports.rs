//! Which port each process of the network listens on.
//!
//! Every tor gets a block of four consecutive ports (OR, Dir, Control,
//! SOCKS; unused ones stay unbound), in node order, and the instance apps
//! follow. One base port thus describes the whole network, which keeps
//! several networks on one machine apart.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Ports reserved per tor.
const PORTS_PER_NODE: u16 = 4;

/// Lowest base port accepted: below it are privileged ports.
pub const MIN_BASE_PORT: u16 = 1024;

/// What a tor's port is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// `ORPort`, for relays and authorities.
    Or = 0,
    /// `DirPort`, for relays and authorities.
    Dir = 1,
    /// `ControlPort`, for every tor.
    Control = 2,
    /// `SocksPort`, for the client.
    Socks = 3,
}

/// The ports of one network: `nodes` tors, then `apps` HTTP apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPlan {
    base: u16,
    nodes: u16,
    apps: u16,
}

impl PortPlan {
    /// Lays out ports from `base`, failing if they do not fit below 65536.
    pub fn new(base: u16, nodes: usize, apps: usize) -> Result<Self, Error> {
        let needed = nodes * usize::from(PORTS_PER_NODE) + apps;
        let fits = usize::from(base) + needed <= usize::from(u16::MAX) + 1;
        if base < MIN_BASE_PORT || !fits {
            return Err(Error::PortRange { base, needed });
        }
        // Both fit in u16 because `needed` does.
        let nodes = u16::try_from(nodes).map_err(|_| Error::PortRange { base, needed })?;
        let apps = u16::try_from(apps).map_err(|_| Error::PortRange { base, needed })?;
        Ok(PortPlan { base, nodes, apps })
    }

    /// The port of kind `kind` of the tor at `node` (in network order).
    pub fn node(&self, node: usize, kind: PortKind) -> u16 {
        debug_assert!(node < usize::from(self.nodes));
        self.base + node as u16 * PORTS_PER_NODE + kind as u16
    }

    /// The port of the HTTP app of instance `app`.
    pub fn app(&self, app: usize) -> u16 {
        debug_assert!(app < usize::from(self.apps));
        self.base + self.nodes * PORTS_PER_NODE + app as u16
    }

    /// The first port of the plan.
    pub fn base(&self) -> u16 {
        self.base
    }

    /// How many ports the plan holds.
    pub fn len(&self) -> usize {
        usize::from(self.nodes * PORTS_PER_NODE + self.apps)
    }

    /// Whether the plan holds no port at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every port of the plan, in order.
    pub fn all(&self) -> impl Iterator<Item = u16> {
        self.base..self.base + self.nodes * PORTS_PER_NODE + self.apps
    }

    /// Checks that nothing listens on any port of the plan yet, so a tor
    /// does not fail late and obscurely on a port another program holds.
    pub fn check_free(&self) -> Result<(), Error> {
        match self.all().find(|&port| !is_free(port)) {
            Some(port) => Err(Error::PortInUse { port }),
            None => Ok(()),
        }
    }

    /// The first plan at or after `start`, stepping by the plan's size,
    /// whose ports are all free.
    pub fn first_free(start: u16, nodes: usize, apps: usize) -> Result<Self, Error> {
        let mut plan = PortPlan::new(start, nodes, apps)?;
        loop {
            if plan.check_free().is_ok() {
                return Ok(plan);
            }
            let size = plan.len().max(1);
            let next = usize::from(plan.base) + size;
            let next = u16::try_from(next).map_err(|_| Error::PortRange {
                base: start,
                needed: size,
            })?;
            plan = PortPlan::new(next, nodes, apps)?;
        }
    }
}

fn is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_ok()
}

#[cfg(test)]
mod test {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn layout_is_dense_and_disjoint() {
        let plan = PortPlan::new(20000, 3, 2).unwrap();
        assert_eq!(plan.node(0, PortKind::Or), 20000);
        assert_eq!(plan.node(0, PortKind::Socks), 20003);
        assert_eq!(plan.node(2, PortKind::Control), 20010);
        assert_eq!(plan.app(0), 20012);
        assert_eq!(plan.app(1), 20013);

        let mut seen = HashSet::new();
        for node in 0..3 {
            for kind in [
                PortKind::Or,
                PortKind::Dir,
                PortKind::Control,
                PortKind::Socks,
            ] {
                assert!(seen.insert(plan.node(node, kind)));
            }
        }
        for app in 0..2 {
            assert!(seen.insert(plan.app(app)));
        }
        assert_eq!(seen, plan.all().collect());
    }

    #[test]
    fn plan_must_fit() {
        assert!(PortPlan::new(65535 - 13, 3, 2).is_ok());
        assert!(matches!(
            PortPlan::new(65535 - 12, 3, 2),
            Err(Error::PortRange { needed: 14, .. })
        ));
        assert!(PortPlan::new(80, 1, 0).is_err());
        assert!(PortPlan::new(60000, 100_000, 0).is_err());
    }

    #[test]
    fn busy_ports_are_found_and_skipped() {
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let Ok(plan) = PortPlan::new(port - 1, 1, 0) else {
            return; // An ephemeral port this low cannot carry a plan.
        };
        assert!(matches!(plan.check_free(), Err(Error::PortInUse { port: p }) if p == port));
        let free = PortPlan::first_free(port - 1, 1, 0).unwrap();
        assert!(free.all().all(|p| p != port));
        assert!(free.base > port - 1);
    }
}
