//! The state file a running network leaves in its directory, so that
//! `onionlb testnet down|status|env` in a later process know what runs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::layout::{Layout, Role};
use crate::process::ProcessRecord;
use crate::torrc::Authority;

/// Name of the state file inside the network's directory.
pub const STATE_FILE: &str = "testnet.json";

/// Everything a later process needs to use or stop a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The tors and their ports.
    pub layout: Layout,
    /// The directory authorities.
    pub authorities: Vec<Authority>,
    /// Master addresses the instances serve, if any.
    pub masters: Vec<String>,
    /// Each instance's own onion address, in instance order.
    pub instance_addresses: Vec<String>,
    /// Every process started, tors and apps.
    pub processes: Vec<ProcessRecord>,
}

impl State {
    /// Where the state of the network in `dir` is kept.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Reads the state of the network in `dir`.
    pub fn read(dir: &Path) -> Result<Self, Error> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::State {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| Error::State {
            path,
            detail: e.to_string(),
        })
    }

    /// Writes it, replacing the file atomically.
    pub fn write(&self) -> Result<(), Error> {
        let path = Self::path(&self.layout.dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::State {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        std::fs::write(&tmp, text).map_err(Error::io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io("replacing", &path))
    }

    /// Shell `export` lines describing the network, for scripts:
    /// `eval "$(onionlb testnet env --dir DIR)"`.
    pub fn env_exports(&self) -> String {
        let mut out = String::new();
        let mut export = |name: &str, value: &str| {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "export ONIONLB_TESTNET_{name}='{}'",
                value.replace('\'', "'\\''")
            );
        };
        let layout = &self.layout;
        export("DIR", &layout.dir.display().to_string());
        if let Some(port) = layout.client().socks_port {
            export("SOCKS", &format!("127.0.0.1:{port}"));
        }
        for (prefix, node) in [("CLIENT", layout.client()), ("MANAGER", layout.manager())] {
            export(
                &format!("{prefix}_CONTROL"),
                &format!("127.0.0.1:{}", node.control_port),
            );
            export(
                &format!("{prefix}_COOKIE"),
                &node.cookie_path().display().to_string(),
            );
        }
        export("INSTANCES", &self.instance_addresses.join(" "));
        for (i, (node, address)) in layout
            .with_role(Role::Instance)
            .zip(&self.instance_addresses)
            .enumerate()
        {
            export(&format!("INSTANCE{i}"), address);
            export(
                &format!("INSTANCE{i}_CONTROL"),
                &format!("127.0.0.1:{}", node.control_port),
            );
            export(
                &format!("INSTANCE{i}_COOKIE"),
                &node.cookie_path().display().to_string(),
            );
        }
        export("MASTERS", &self.masters.join(" "));
        out
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::ports::PortPlan;

    fn state(dir: &Path) -> State {
        let ports = PortPlan::new(41000, Layout::node_count(1, 2), 2).unwrap();
        State {
            layout: Layout::new(dir, ports, 1, 2).unwrap(),
            authorities: Vec::new(),
            masters: vec!["m.onion".into()],
            instance_addresses: vec!["a.onion".into(), "b.onion".into()],
            processes: vec![ProcessRecord {
                name: "auth0".into(),
                pid: 42,
                marker: "/x/torrc".into(),
            }],
        }
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = std::env::temp_dir().join(format!("onionlb-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let original = state(&dir);
        original.write().unwrap();
        assert_eq!(State::read(&dir).unwrap(), original);
        assert!(matches!(
            State::read(&dir.join("nowhere")),
            Err(Error::State { .. })
        ));
    }

    #[test]
    fn exports_name_every_endpoint() {
        let state = state(Path::new("/n"));
        let env = state.env_exports();
        let socks = state.layout.client().socks_port.unwrap();
        assert!(env.contains(&format!(
            "export ONIONLB_TESTNET_SOCKS='127.0.0.1:{socks}'\n"
        )));
        assert!(env
            .contains("export ONIONLB_TESTNET_MANAGER_COOKIE='/n/manager/control_auth_cookie'\n"));
        assert!(env.contains("export ONIONLB_TESTNET_INSTANCES='a.onion b.onion'\n"));
        assert!(env.contains("export ONIONLB_TESTNET_INSTANCE1='b.onion'\n"));
        assert!(env.contains("export ONIONLB_TESTNET_MASTERS='m.onion'\n"));
        let control = state.layout.instances().next().unwrap().control_port;
        assert!(env.contains(&format!(
            "export ONIONLB_TESTNET_INSTANCE0_CONTROL='127.0.0.1:{control}'\n"
        )));
    }
}
