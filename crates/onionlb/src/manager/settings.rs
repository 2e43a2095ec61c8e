//! The balancer's view of the operator's configuration, and what the
//! agent listeners and the agents' onion service take from it.

use std::sync::Arc;

use onionlb_core::balancer::{Configuration, InstanceSpec, ServiceSpec};
use onionlb_core::{health, MasterKey};

use crate::config::Config;
use crate::manager::agents::AgentKeys;

/// The balancer's configuration from the operator's.
pub(super) fn configuration(config: &Config, keys: Vec<MasterKey>) -> Configuration {
    Configuration {
        services: config
            .services
            .iter()
            .zip(keys)
            .map(|(service, key)| ServiceSpec {
                key,
                instances: service
                    .instances
                    .iter()
                    .map(|i| InstanceSpec {
                        address: i.address,
                        name: i.name.clone(),
                        probe_port: i.probe_port.unwrap_or(config.probes.port),
                    })
                    .collect(),
                max_intro_points: service.intro_point_limit(config),
            })
            .collect(),
        fetch_interval: config.fetch_interval,
        health: health::Policy {
            heartbeat_timeout: config.agents.heartbeat_timeout,
            ..health::Policy::default()
        },
        probe: config.probes.policy,
    }
}

/// The agent key of every instance that has one.
pub(super) fn agent_keys(config: &Config) -> AgentKeys {
    Arc::new(
        config
            .services
            .iter()
            .flat_map(|s| &s.instances)
            .filter_map(|i| Some((i.address, i.agent_key?)))
            .collect(),
    )
}

/// The client keys of the agents that use the onion channel, sorted and
/// without repeats.
pub(super) fn agent_clients(config: &Config) -> Vec<String> {
    let mut clients: Vec<String> = config
        .services
        .iter()
        .flat_map(|s| &s.instances)
        .filter_map(|i| i.agent_client_auth.clone())
        .collect();
    clients.sort();
    clients.dedup();
    clients
}

/// A setting a reload changed that takes effect later, as the operator
/// is told: the status socket and the agent listeners are bound once, at
/// start; a new control timeout applies from the next connection to the
/// management tor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AppliedLater {
    StatusSocket,
    AgentListeners,
    ControlTimeout,
}

impl std::fmt::Display for AppliedLater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AppliedLater::StatusSocket => {
                "a new status-socket-location takes effect at the next start"
            }
            AppliedLater::AgentListeners => {
                "a new agents socket, listen or onion-key takes effect at the next start"
            }
            AppliedLater::ControlTimeout => {
                "a new control-timeout takes effect at the next connection to the management tor"
            }
        })
    }
}

/// Lists what a reload from `old` to `new` changes that takes effect
/// later.
pub(super) fn applied_later(old: &Config, new: &Config) -> Vec<AppliedLater> {
    let mut later = Vec::new();
    if crate::status::socket_location(new) != crate::status::socket_location(old) {
        later.push(AppliedLater::StatusSocket);
    }
    let (was, is) = (&old.agents, &new.agents);
    if (&was.socket, was.listen, &was.onion_key) != (&is.socket, is.listen, &is.onion_key) {
        later.push(AppliedLater::AgentListeners);
    }
    if new.control_timeout != old.control_timeout {
        later.push(AppliedLater::ControlTimeout);
    }
    later
}

#[cfg(test)]
mod test {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let text = format!(
            "{extra}services:\n- key: master.key\n  instances:\n  - address: 2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion\n"
        );
        Config::parse(Path::new("/etc/onionbalance/config.yaml"), &text).unwrap()
    }

    #[test]
    fn sockets_and_the_control_timeout_apply_later_and_the_rest_now() {
        let base = config("");
        assert!(applied_later(&base, &config("fetch-interval: 60\n")).is_empty());
        assert!(applied_later(&base, &base).is_empty());
        for (extra, expected) in [
            (
                "status-socket-location: /run/x/control\n",
                AppliedLater::StatusSocket,
            ),
            (
                "agents:\n  socket: /run/x/agents.sock\n",
                AppliedLater::AgentListeners,
            ),
            (
                "agents:\n  listen: 127.0.0.1:9999\n",
                AppliedLater::AgentListeners,
            ),
            ("control-timeout: 5\n", AppliedLater::ControlTimeout),
        ] {
            assert_eq!(applied_later(&base, &config(extra)), [expected], "{extra}");
        }
    }
}
