//! The remote agent channel: an onion service of the management tor, with
//! client authorization, forwarding to the manager's loopback agent port.
//!
//! Remote agents must reach the manager without the manager's address
//! being public, and without a port open to the world. An onion service
//! gives both: its address is known only to the agents, only agents whose
//! client key is configured can even read its descriptor, and the manager
//! needs no inbound port. The service is added with `ADD_ONION` on the
//! control connection, so it lives exactly as long as the manager's
//! connection to tor, and comes back on every reconnect.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use onionlb_core::{KeyFormat, MasterKey, OnionAddress};
use torctl::{Command, ControlClient};

/// The agents' onion service: its key and where it forwards to.
pub(super) struct AgentOnion {
    key: MasterKey,
    target: SocketAddr,
}

impl AgentOnion {
    /// Reads the service's key from `path`, or creates it there (mode
    /// 0600, tor's format) at first start, so its address stays the same.
    pub(super) fn load_or_create(path: &Path, target: SocketAddr) -> anyhow::Result<Self> {
        let key = match torctl::file::read_capped(path, crate::SMALL_FILE_MAX) {
            Ok(bytes) => MasterKey::from_bytes(&zeroize::Zeroizing::new(bytes))
                .with_context(|| format!("reading the agents' onion key {}", path.display()))?,
            Err(torctl::file::FileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let (key, _) = MasterKey::generate(&mut rand::rng())
                    .context("generating the agents' onion key")?;
                let bytes = key
                    .encode(KeyFormat::Tor)
                    .context("encoding the agents' onion key")?;
                crate::private_file::create(path, &bytes)
                    .with_context(|| format!("writing the agents' onion key {}", path.display()))?;
                tracing::info!("created the agents' onion key {}", path.display());
                key
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the agents' onion key {}", path.display()))
            }
        };
        Ok(AgentOnion { key, target })
    }

    /// The address agents connect to.
    pub(super) fn address(&self) -> OnionAddress {
        self.key.address()
    }

    /// Adds the service to tor on `control`, open to the agents whose
    /// client keys are `clients` (x25519, base32). With no client key,
    /// adds nothing: an onion service without client authorization would
    /// let anyone who learns its address knock.
    pub(super) async fn publish(
        &self,
        control: &ControlClient,
        clients: &[String],
    ) -> anyhow::Result<()> {
        if clients.is_empty() {
            tracing::warn!(
                "agents.onion-key is set but no instance has an agent-client-auth key; not publishing the agents' onion service"
            );
            return Ok(());
        }
        let port = self.target.port();
        // Gone with a previous connection, or still there after a reload:
        // replace it either way.
        let _ = control
            .request(&Command::new("DEL_ONION").arg(self.address().without_suffix()))
            .await;
        let command = Command::new("ADD_ONION")
            .arg(self.key.add_onion_key())
            .arg("Flags=V3Auth")
            .arg(format!("Port={port},{}", self.target))
            .args(clients.iter().map(|c| format!("ClientAuthV3={c}")));
        control
            .request(&command)
            .await
            .context("adding the agents' onion service (ADD_ONION)")?;
        tracing::info!(
            "agents may connect through {}:{port} ({} authorized client(s))",
            self.address(),
            clients.len()
        );
        Ok(())
    }
}
