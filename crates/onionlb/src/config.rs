//! The configuration file: Python Onionbalance v3's `config.yaml`, read
//! unchanged, plus optional keys of our own.
//!
//! ```yaml
//! status-socket-location: /run/onionbalance/control   # optional
//! admin-socket-location: /run/onionlb/admin            # ours; default: the status socket's path + .admin
//! fetch-interval: 300                                  # ours, seconds
//! control-timeout: 30                                  # ours, seconds
//! metrics-listen: 127.0.0.1:9851                       # ours, loopback only
//! max-intro-points: 20                                 # ours, per descriptor, 1 to 20
//! agents:                                              # ours, all optional
//!   socket: /run/onionlb/agents.sock   # agents on this machine
//!   listen: 127.0.0.1:9852             # remote agents (loopback only) ...
//!   onion-key: agents-onion.key        # ... reached through this onion service
//!   heartbeat-timeout: 8               # seconds of agent silence = down
//! probes:                                              # ours, all optional
//!   interval: 10             # seconds between probes of an instance; 0: off
//!   timeout: 15              # seconds a probe may take
//!   failures: 2              # failed probes in a row = down
//!   per-second: 10           # probes started per second, at most
//!   port: 80                 # the virtual port probed
//! services:
//! - key: master.key          # relative to this file; tor or PEM format
//!   max-intro-points: 12     # ours: this service's own limit
//!   instances:
//!   - address: 2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion
//!     name: web1             # optional
//!     agent-key: <base64>    # ours: the public key of its agent
//!     agent-client-auth: <base32>  # ours: its agent's onion client key
//!     probe-port: 443        # ours: the virtual port its probes use
//! ```
//!
//! Every error names the file, the line and the key, so an operator can go
//! straight to it. Keys we do not know are reported (once, with their line)
//! and otherwise ignored, as Python Onionbalance ignores them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use onionlb_core::agent::AgentPublicKey;
use onionlb_core::OnionAddress;
use saphyr::{LoadableYamlNode as _, MarkedYaml, Scalar, YamlData};
use thiserror::Error;

/// Default time between fetches of every instance's descriptor.
pub const DEFAULT_FETCH_INTERVAL: Duration = Duration::from_secs(300);
/// Default agent silence after which its instance counts as down.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(8);
/// Default time the management tor has to answer a control command.
pub const DEFAULT_CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the configuration file: ten thousand services of five
/// instances each take about 4 MB.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;
/// HSDirs a client may fetch a descriptor from (`hsdir_spread_fetch`, 3,
/// for each of the `hsdir_n_replicas`, 2, with the consensus defaults):
/// each can hold a different descriptor, so clients can get at most this
/// many times a descriptor's intro points of one service, and an
/// instance beyond that many never gets a share.
const FETCHABLE_HSDIRS: usize = 6;
/// Tor's limit on intro points in one descriptor, and the default.
pub const MAX_INTRO_POINTS: usize = onionlb_core::descriptor::MAX_INTRO_POINTS;

/// The allowed range of each duration setting, in seconds.
const FETCH_INTERVAL_RANGE: (u64, u64) = (1, 10_800);
const CONTROL_TIMEOUT_RANGE: (u64, u64) = (1, 3_600);
const HEARTBEAT_TIMEOUT_RANGE: (u64, u64) = (1, 3_600);
const PROBE_INTERVAL_RANGE: (u64, u64) = (0, 3_600);
const PROBE_TIMEOUT_RANGE: (u64, u64) = (1, 600);
const PROBE_FAILURES_RANGE: (u64, u64) = (1, 100);
const PROBE_RATE_RANGE: (u64, u64) = (1, 1_000);
/// The virtual port probed unless configured: the web's.
pub const DEFAULT_PROBE_PORT: u16 = 80;

/// A loaded configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// The balanced services.
    pub services: Vec<ServiceConfig>,
    /// Where to serve the status socket, if anywhere.
    pub status_socket: Option<PathBuf>,
    /// Where to serve the admin socket (drain), if not next to the
    /// status socket.
    pub admin_socket: Option<PathBuf>,
    /// Time between scheduled fetches of instance descriptors.
    pub fetch_interval: Duration,
    /// Time the management tor has to answer a control command.
    pub control_timeout: Duration,
    /// Where to serve Prometheus metrics (loopback), if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where and how agents reach the manager.
    pub agents: AgentsConfig,
    /// How instances without an agent are probed through Tor.
    pub probes: ProbesConfig,
    /// The most intro points in one master descriptor, for services that
    /// do not set their own.
    pub max_intro_points: usize,
    /// Keys we did not recognise, with their lines, for a warning.
    pub unknown_keys: Vec<(usize, String)>,
    /// Settings that work but are unlikely to do what was meant.
    pub warnings: Vec<ConfigWarning>,
}

/// A setting that is accepted but probably not what the operator meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The 1-based line.
    pub line: usize,
    /// The key, as a path.
    pub key: String,
    /// What is likely wrong.
    pub problem: String,
}

/// The agent channel: where agents connect, and when their silence means
/// their instance is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentsConfig {
    /// A Unix socket for agents on this machine.
    pub socket: Option<PathBuf>,
    /// A loopback TCP port for remote agents, published through an onion
    /// service of the management tor.
    pub listen: Option<std::net::SocketAddr>,
    /// That onion service's key (created at first start when missing).
    pub onion_key: Option<PathBuf>,
    /// Agent silence after which its instance is down.
    pub heartbeat_timeout: Duration,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            socket: None,
            listen: None,
            onion_key: None,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
        }
    }
}

/// Probing instances without an agent through the management tor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbesConfig {
    /// The schedule and thresholds; `None` when probing is off
    /// (`interval: 0`).
    pub policy: Option<onionlb_core::probe::Policy>,
    /// The virtual port probed unless an instance names its own.
    pub port: u16,
}

impl Default for ProbesConfig {
    fn default() -> Self {
        ProbesConfig {
            policy: Some(onionlb_core::probe::Policy::default()),
            port: DEFAULT_PROBE_PORT,
        }
    }
}

/// One balanced service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Its master key file, made absolute.
    pub key: PathBuf,
    /// The line of its `key:` entry, for errors about the key file.
    pub key_line: usize,
    /// Its instances, in file order.
    pub instances: Vec<InstanceConfig>,
    /// The line of its `instances:` entry.
    pub instances_line: usize,
    /// Its own limit on intro points per descriptor, if it sets one.
    pub max_intro_points: Option<usize>,
}

impl ServiceConfig {
    /// The most intro points in one of its descriptors under `config`.
    pub fn intro_point_limit(&self, config: &Config) -> usize {
        self.max_intro_points.unwrap_or(config.max_intro_points)
    }
}

/// One backend instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    /// Its onion address.
    pub address: OnionAddress,
    /// The line of its `address:` entry, for errors about it.
    pub line: usize,
    /// An operator's name for it, for logs and status.
    pub name: Option<String>,
    /// The public key its agent proves, if it has one.
    pub agent_key: Option<AgentPublicKey>,
    /// Its agent's client authorization key for the onion channel
    /// (x25519, base32).
    pub agent_client_auth: Option<String>,
    /// The virtual port its probes use, if not `probes.port`.
    pub probe_port: Option<u16>,
}

impl InstanceConfig {
    /// The name to show: the configured one, or the address.
    pub fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.address.to_string())
    }
}

/// A configuration that cannot be used, and where.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{}:{line}: {key}: {problem}", file.display())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The 1-based line (0 when the file could not be read at all).
    pub line: usize,
    /// The key, as a path: `services[0].instances[2].address`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(path, &Self::read_text(path)?)
    }

    /// The text of the file at `path`, within [`MAX_CONFIG_BYTES`], as
    /// UTF-8.
    pub fn read_text(path: &Path) -> Result<String, ConfigError> {
        let unreadable = |problem: String| ConfigError {
            file: path.to_owned(),
            line: 0,
            key: "(file)".into(),
            problem,
        };
        let bytes = torctl::file::read_capped(path, MAX_CONFIG_BYTES)
            .map_err(|e| unreadable(onionlb_core::error_chain(&e)))?;
        String::from_utf8(bytes).map_err(|_| unreadable("not UTF-8 text".into()))
    }

    /// Checks `text` as the contents of the file at `path`; relative key
    /// paths are taken relative to that file's directory.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::read(path, text, true)
    }

    /// Checks `text` as [`Config::parse`] does, but takes a file with no
    /// service yet (empty, all comments, or `services: []`): what `onionlb
    /// config --add-service` may start from.
    pub fn parse_unfinished(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::read(path, text, false)
    }

    fn read(path: &Path, text: &str, need_services: bool) -> Result<Self, ConfigError> {
        let reader = Reader { file: path };
        let docs = MarkedYaml::load_from_str(text).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: e.marker().line(),
            key: "(syntax)".into(),
            problem: e.info().to_owned(),
        })?;
        let mut config = Config {
            path: path.to_owned(),
            services: Vec::new(),
            status_socket: None,
            admin_socket: None,
            fetch_interval: DEFAULT_FETCH_INTERVAL,
            control_timeout: DEFAULT_CONTROL_TIMEOUT,
            metrics_listen: None,
            agents: AgentsConfig::default(),
            probes: ProbesConfig::default(),
            max_intro_points: MAX_INTRO_POINTS,
            unknown_keys: Vec::new(),
            warnings: Vec::new(),
        };
        let Some(root) = docs.first() else {
            if !need_services {
                return Ok(config);
            }
            return Err(reader.error(1, "services", "the file is empty; it needs a services list"));
        };
        let top = reader.mapping(root, "(top level)")?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut saw_services = false;
        for (key, value) in top {
            match key.as_str() {
                "services" => {
                    saw_services = true;
                    for (i, service) in reader.sequence(value, "services")?.iter().enumerate() {
                        config.services.push(reader.service(
                            service,
                            &format!("services[{i}]"),
                            base,
                            &mut config.unknown_keys,
                        )?);
                    }
                }
                "status-socket-location" => {
                    config.status_socket = Some(PathBuf::from(reader.string(value, &key)?));
                }
                "admin-socket-location" => {
                    config.admin_socket = Some(PathBuf::from(reader.string(value, &key)?));
                }
                "fetch-interval" => {
                    config.fetch_interval = reader.seconds(value, &key, FETCH_INTERVAL_RANGE)?;
                }
                "control-timeout" => {
                    config.control_timeout = reader.seconds(value, &key, CONTROL_TIMEOUT_RANGE)?;
                }
                "metrics-listen" => {
                    config.metrics_listen = Some(reader.loopback(value, &key, "metrics")?);
                }
                "agents" => {
                    config.agents = reader.agents(value, &key, base, &mut config.unknown_keys)?;
                }
                "probes" => {
                    config.probes = reader.probes(value, &key, &mut config.unknown_keys)?;
                }
                "max-intro-points" => config.max_intro_points = reader.intro_points(value, &key)?,
                _ => config.unknown_keys.push((line(value), key)),
            }
        }
        if need_services && (!saw_services || config.services.is_empty()) {
            return Err(reader.error(line(root), "services", "needs at least one service"));
        }
        config.warn_of_unreachable_instances();
        Ok(config)
    }
}

impl Config {
    /// Warns of every service with more instances than its clients can
    /// reach: intro points per descriptor times the six HSDirs clients
    /// fetch from.
    fn warn_of_unreachable_instances(&mut self) {
        for (i, service) in self.services.iter().enumerate() {
            let limit = service.intro_point_limit(self);
            let reachable = FETCHABLE_HSDIRS * limit;
            let listed = service.instances.len();
            if listed <= reachable {
                continue;
            }
            self.warnings.push(ConfigWarning {
                line: service.instances_line,
                key: format!("services[{i}].instances"),
                problem: format!(
                    "{listed} instances, but clients can get at most {reachable} intro points of one service ({limit} per descriptor, {FETCHABLE_HSDIRS} HSDirs); at least {} instance(s) will get no clients",
                    listed - reachable
                ),
            });
        }
    }
}

/// Walks the YAML tree, producing errors that name file, line and key.
struct Reader<'a> {
    file: &'a Path,
}

impl Reader<'_> {
    fn error(&self, line: usize, key: &str, problem: &str) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line,
            key: key.to_owned(),
            problem: problem.to_owned(),
        }
    }

    fn loopback(
        &self,
        node: &MarkedYaml<'_>,
        at: &str,
        what: &str,
    ) -> Result<std::net::SocketAddr, ConfigError> {
        let text = self.string(node, at)?;
        let addr: std::net::SocketAddr = text.parse().map_err(|_| {
            self.error(
                line(node),
                at,
                &format!("{text:?} is not an address:port such as 127.0.0.1:9851"),
            )
        })?;
        if !addr.ip().is_loopback() {
            return Err(self.error(
                line(node),
                at,
                &format!("{addr} is not a loopback address; {what} are served on loopback only"),
            ));
        }
        Ok(addr)
    }

    fn agents(
        &self,
        node: &MarkedYaml<'_>,
        at: &str,
        base: &Path,
        unknown: &mut Vec<(usize, String)>,
    ) -> Result<AgentsConfig, ConfigError> {
        let mut agents = AgentsConfig::default();
        for (key, value) in self.mapping(node, at)? {
            let path = format!("{at}.{key}");
            match key.as_str() {
                "socket" => agents.socket = Some(base.join(self.string(value, &path)?)),
                "listen" => agents.listen = Some(self.loopback(value, &path, "agents")?),
                "onion-key" => agents.onion_key = Some(base.join(self.string(value, &path)?)),
                "heartbeat-timeout" => {
                    agents.heartbeat_timeout =
                        self.seconds(value, &path, HEARTBEAT_TIMEOUT_RANGE)?;
                }
                _ => unknown.push((line(value), path)),
            }
        }
        if agents.onion_key.is_some() && agents.listen.is_none() {
            return Err(self.error(
                line(node),
                &format!("{at}.onion-key"),
                "needs agents.listen: the onion service forwards to that port",
            ));
        }
        Ok(agents)
    }

    fn probes(
        &self,
        node: &MarkedYaml<'_>,
        at: &str,
        unknown: &mut Vec<(usize, String)>,
    ) -> Result<ProbesConfig, ConfigError> {
        let mut policy = onionlb_core::probe::Policy::default();
        let mut port = DEFAULT_PROBE_PORT;
        for (key, value) in self.mapping(node, at)? {
            let path = format!("{at}.{key}");
            match key.as_str() {
                "interval" => policy.interval = self.seconds(value, &path, PROBE_INTERVAL_RANGE)?,
                "timeout" => policy.timeout = self.seconds(value, &path, PROBE_TIMEOUT_RANGE)?,
                "failures" => policy.failures = self.count(value, &path, PROBE_FAILURES_RANGE)?,
                "per-second" => policy.per_second = self.count(value, &path, PROBE_RATE_RANGE)?,
                "port" => port = self.port(value, &path)?,
                _ => unknown.push((line(value), path)),
            }
        }
        Ok(ProbesConfig {
            policy: (!policy.interval.is_zero()).then_some(policy),
            port,
        })
    }

    fn service(
        &self,
        node: &MarkedYaml<'_>,
        at: &str,
        base: &Path,
        unknown: &mut Vec<(usize, String)>,
    ) -> Result<ServiceConfig, ConfigError> {
        let mut key = None;
        let mut instances = None;
        let mut instances_line = line(node);
        let mut max_intro_points = None;
        for (name, value) in self.mapping(node, at)? {
            let path = format!("{at}.{name}");
            match name.as_str() {
                "key" => key = Some((base.join(self.string(value, &path)?), line(value))),
                "instances" => {
                    let mut list: Vec<InstanceConfig> = Vec::new();
                    let mut seen: std::collections::HashMap<OnionAddress, usize> =
                        std::collections::HashMap::new();
                    for (i, instance) in self.sequence(value, &path)?.iter().enumerate() {
                        let at = format!("{path}[{i}]");
                        let instance = self.instance(instance, &at, unknown)?;
                        if let Some(&first) = seen.get(&instance.address) {
                            return Err(self.error(
                                instance.line,
                                &format!("{at}.address"),
                                &format!(
                                    "{} is already {path}[{first}] (line {}); list each instance once",
                                    instance.address, list[first].line
                                ),
                            ));
                        }
                        seen.insert(instance.address, i);
                        list.push(instance);
                    }
                    if list.is_empty() {
                        return Err(self.error(line(value), &path, "needs at least one instance"));
                    }
                    instances_line = line(value);
                    instances = Some(list);
                }
                "max-intro-points" => max_intro_points = Some(self.intro_points(value, &path)?),
                _ => unknown.push((line(value), path)),
            }
        }
        let (key, key_line) = key.ok_or_else(|| {
            self.error(
                line(node),
                &format!("{at}.key"),
                "missing: the path of the master key",
            )
        })?;
        let instances = instances.ok_or_else(|| {
            self.error(
                line(node),
                &format!("{at}.instances"),
                "missing: the list of instances",
            )
        })?;
        Ok(ServiceConfig {
            key,
            key_line,
            instances,
            instances_line,
            max_intro_points,
        })
    }

    fn instance(
        &self,
        node: &MarkedYaml<'_>,
        at: &str,
        unknown: &mut Vec<(usize, String)>,
    ) -> Result<InstanceConfig, ConfigError> {
        let mut address = None;
        let mut address_line = line(node);
        let mut name = None;
        let mut agent_key = None;
        let mut agent_client_auth = None;
        let mut probe_port = None;
        for (key, value) in self.mapping(node, at)? {
            let path = format!("{at}.{key}");
            match key.as_str() {
                "address" => {
                    let text = self.string(value, &path)?;
                    let parsed = text
                        .parse::<OnionAddress>()
                        .map_err(|e| self.error(line(value), &path, &e.to_string()))?;
                    address = Some(parsed);
                    address_line = line(value);
                }
                "name" => name = Some(self.string(value, &path)?),
                "agent-key" => {
                    let text = self.string(value, &path)?;
                    let key = text
                        .parse::<AgentPublicKey>()
                        .map_err(|e| self.error(line(value), &path, &e.to_string()))?;
                    agent_key = Some(key);
                }
                "agent-client-auth" => {
                    let text = self.string(value, &path)?;
                    let valid = data_encoding::BASE32_NOPAD
                        .decode(text.to_ascii_uppercase().as_bytes())
                        .is_ok_and(|bytes| bytes.len() == 32);
                    if !valid {
                        return Err(self.error(
                            line(value),
                            &path,
                            "expected an x25519 public key in base32 (52 characters), as `onionlb agent keygen` prints it",
                        ));
                    }
                    agent_client_auth = Some(text.to_ascii_uppercase());
                }
                "probe-port" => probe_port = Some(self.port(value, &path)?),
                _ => unknown.push((line(value), path)),
            }
        }
        let address = address.ok_or_else(|| {
            self.error(
                line(node),
                &format!("{at}.address"),
                "missing: the instance's onion address",
            )
        })?;
        Ok(InstanceConfig {
            address,
            line: address_line,
            name,
            agent_key,
            agent_client_auth,
            probe_port,
        })
    }

    /// The entries of a mapping with string keys, in file order.
    fn mapping<'n, 'i>(
        &self,
        node: &'n MarkedYaml<'i>,
        at: &str,
    ) -> Result<Vec<(String, &'n MarkedYaml<'i>)>, ConfigError> {
        let YamlData::Mapping(map) = &node.data else {
            return Err(self.error(line(node), at, "expected a mapping of `key: value` entries"));
        };
        map.iter()
            .map(|(key, value)| match &key.data {
                YamlData::Value(Scalar::String(name)) => Ok((name.to_string(), value)),
                _ => Err(self.error(line(key), at, "keys must be plain names")),
            })
            .collect()
    }

    fn sequence<'n, 'i>(
        &self,
        node: &'n MarkedYaml<'i>,
        at: &str,
    ) -> Result<&'n [MarkedYaml<'i>], ConfigError> {
        match &node.data {
            YamlData::Sequence(items) => Ok(items),
            _ => Err(self.error(line(node), at, "expected a list of `- ` entries")),
        }
    }

    /// A scalar as text. Numbers and booleans are taken as written, as
    /// Python Onionbalance takes them (`name: 42`).
    fn string(&self, node: &MarkedYaml<'_>, at: &str) -> Result<String, ConfigError> {
        let text = match &node.data {
            YamlData::Value(Scalar::String(text)) => text.to_string(),
            YamlData::Value(Scalar::Integer(n)) => n.to_string(),
            YamlData::Value(Scalar::FloatingPoint(x)) => x.to_string(),
            YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
            _ => String::new(),
        };
        if text.is_empty() {
            return Err(self.error(line(node), at, "expected a non-empty text value"));
        }
        Ok(text)
    }

    /// A whole number within `(min, max)`; `unit` names what it counts in
    /// the error ("" for plain numbers).
    fn whole(
        &self,
        node: &MarkedYaml<'_>,
        at: &str,
        (min, max): (u64, u64),
        unit: &str,
    ) -> Result<u64, ConfigError> {
        match &node.data {
            YamlData::Value(Scalar::Integer(n)) => u64::try_from(*n).ok(),
            _ => None,
        }
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            self.error(
                line(node),
                at,
                &format!("expected a whole number{unit} from {min} to {max}"),
            )
        })
    }

    /// A whole number within `(min, max)` (at most `u32::MAX`).
    fn count(
        &self,
        node: &MarkedYaml<'_>,
        at: &str,
        range: (u64, u64),
    ) -> Result<u32, ConfigError> {
        let n = self.whole(node, at, range, "")?;
        u32::try_from(n).map_err(|_| self.error(line(node), at, "out of range"))
    }

    /// A limit on intro points per descriptor, 1 to tor's 20.
    fn intro_points(&self, node: &MarkedYaml<'_>, at: &str) -> Result<usize, ConfigError> {
        let n = self.whole(node, at, (1, MAX_INTRO_POINTS as u64), " (intro points)")?;
        usize::try_from(n).map_err(|_| self.error(line(node), at, "out of range"))
    }

    /// A TCP port, 1 to 65535.
    fn port(&self, node: &MarkedYaml<'_>, at: &str) -> Result<u16, ConfigError> {
        let n = self.whole(node, at, (1, 65_535), " (a port)")?;
        u16::try_from(n).map_err(|_| self.error(line(node), at, "out of range"))
    }

    /// A whole number of seconds within `(min, max)`.
    fn seconds(
        &self,
        node: &MarkedYaml<'_>,
        at: &str,
        range: (u64, u64),
    ) -> Result<Duration, ConfigError> {
        self.whole(node, at, range, " of seconds")
            .map(Duration::from_secs)
    }
}

fn line(node: &MarkedYaml<'_>) -> usize {
    node.span.start.line()
}

#[cfg(test)]
mod test {
    use super::*;

    const A: &str = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";
    const B: &str = "aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4bqead";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/onionbalance/config.yaml"), text)
    }

    #[test]
    fn python_onionbalance_config_is_read_unchanged() {
        // As `onionbalance-config` writes it.
        let text = format!("services:\n- instances:\n  - address: {A}\n    name: node1\n  - address: {B}\n    name: node2\n  key: KZXJ3PX.key\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.services.len(), 1);
        let service = &config.services[0];
        assert_eq!(service.key, Path::new("/etc/onionbalance/KZXJ3PX.key"));
        assert_eq!(service.key_line, 7);
        assert_eq!(service.instances[0].address.to_string(), A);
        assert_eq!(
            service.instances[1].address.to_string(),
            format!("{B}.onion")
        );
        assert_eq!(service.instances[1].label(), "node2");
        assert_eq!(config.status_socket, None);
        assert_eq!(config.fetch_interval, DEFAULT_FETCH_INTERVAL);
        assert!(config.unknown_keys.is_empty());
    }

    #[test]
    fn several_services_absolute_keys_and_our_extensions() {
        let text = format!(
            "status-socket-location: /run/ob.sock\nfetch-interval: 60\nservices:\n  - key: /keys/a.pem\n    instances:\n      - address: {A}\n  - key: b.key\n    instances:\n      - address: {A}\n"
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.services.len(), 2);
        assert_eq!(config.services[0].key, Path::new("/keys/a.pem"));
        assert_eq!(config.services[1].instances[0].label(), A);
        assert_eq!(
            config.status_socket.as_deref(),
            Some(Path::new("/run/ob.sock"))
        );
        assert_eq!(config.fetch_interval, Duration::from_secs(60));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let text = format!(
            "services:\n- key: a.key\n  instances:\n  - address: {A}\n  - address: notanonion\n"
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line, 5);
        assert_eq!(err.key, "services[0].instances[1].address");
        let shown = err.to_string();
        assert!(
            shown
                .starts_with("/etc/onionbalance/config.yaml:5: services[0].instances[1].address: "),
            "{shown}"
        );

        let err = parse("services:\n- instances:\n  - name: x\n").unwrap_err();
        assert_eq!(err.key, "services[0].instances[0].address");
        assert_eq!(err.line, 3);

        let err = parse(&format!("services:\n- instances:\n  - address: {A}\n")).unwrap_err();
        assert_eq!(err.key, "services[0].key");

        let err = parse("services:\n- key: a.key\n  instances: []\n").unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (3, "services[0].instances"));

        let err = parse("fetch-interval: soon\nservices: []\n").unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (1, "fetch-interval"));
        for bad in ["metrics-listen: 0.0.0.0:9851", "metrics-listen: localhost"] {
            let err = parse(&format!("{bad}\nservices: []\n")).unwrap_err();
            assert_eq!((err.line, err.key.as_str()), (1, "metrics-listen"), "{err}");
        }
        let err = parse("agents:\n  listen: 192.0.2.1:9852\nservices: []\n").unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (2, "agents.listen"), "{err}");
        let err = parse("agents:\n  onion-key: a.key\nservices: []\n").unwrap_err();
        assert_eq!(err.key, "agents.onion-key", "{err}");
        let err = parse(&format!(
            "services:\n- key: a.key\n  instances:\n  - address: {A}\n    agent-key: nonsense\n"
        ))
        .unwrap_err();
        assert_eq!(
            (err.line, err.key.as_str()),
            (5, "services[0].instances[0].agent-key")
        );

        let err = parse("services: [\n").unwrap_err();
        assert_eq!(err.key, "(syntax)");
        assert!(err.line >= 1);

        assert_eq!(parse("").unwrap_err().key, "services");
        assert_eq!(parse("other: 1\n").unwrap_err().key, "services");
    }

    #[test]
    fn probes_are_on_by_default_tunable_and_off_with_a_zero_interval() {
        let service = format!("services:\n- key: a.key\n  instances:\n  - address: {A}\n");
        let config = parse(&service).unwrap();
        assert_eq!(config.probes, ProbesConfig::default());
        assert!(config.probes.policy.is_some());
        let text = format!(
            "probes:\n  interval: 30\n  timeout: 5\n  failures: 3\n  per-second: 2\n  port: 8080\n{service}    probe-port: 443\n"
        );
        let config = parse(&text).unwrap();
        let policy = config.probes.policy.unwrap();
        assert_eq!(policy.interval, Duration::from_secs(30));
        assert_eq!(policy.timeout, Duration::from_secs(5));
        assert_eq!((policy.failures, policy.per_second), (3, 2));
        assert_eq!(config.probes.port, 8080);
        assert_eq!(config.services[0].instances[0].probe_port, Some(443));
        let off = parse(&format!("probes:\n  interval: 0\n{service}")).unwrap();
        assert_eq!(off.probes.policy, None);
        for (body, line, key) in [
            ("probes:\n  failures: 0\n", 2, "probes.failures"),
            ("probes:\n  per-second: 5000\n", 2, "probes.per-second"),
            ("probes:\n  port: 70000\n", 2, "probes.port"),
            ("probes:\n  timeout: 0\n", 2, "probes.timeout"),
            ("probes: 10\n", 1, "probes"),
        ] {
            let err = parse(&format!("{body}{service}")).unwrap_err();
            assert_eq!((err.line, err.key.as_str()), (line, key), "{err}");
        }
        let err = parse(&format!("{service}    probe-port: http\n")).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_str()),
            (5, "services[0].instances[0].probe-port")
        );
    }

    #[test]
    fn durations_outside_their_range_are_refused_naming_the_range() {
        for (key, bad) in [
            ("fetch-interval", "9223372036854775807"),
            ("fetch-interval", "0"),
            ("fetch-interval", "-5"),
            ("fetch-interval", "10801"),
            ("control-timeout", "0"),
            ("control-timeout", "3601"),
        ] {
            let err = parse(&format!("{key}: {bad}\nservices: []\n")).unwrap_err();
            assert_eq!((err.line, err.key.as_str()), (1, key), "{bad}: {err}");
            assert!(err.problem.contains("seconds from 1 to"), "{err}");
        }
        let err = parse("agents:\n  heartbeat-timeout: 99999999999\nservices: []\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_str()),
            (2, "agents.heartbeat-timeout")
        );
        let config = parse(&format!(
            "control-timeout: 5\nfetch-interval: 10800\nservices:\n- key: a.key\n  instances:\n  - address: {A}\n"
        ))
        .unwrap();
        assert_eq!(config.control_timeout, Duration::from_secs(5));
        assert_eq!(config.fetch_interval, Duration::from_secs(10_800));
    }

    #[test]
    fn an_instance_listed_twice_in_a_service_is_refused_at_its_second_line() {
        let text = format!(
            "services:\n- key: a.key\n  instances:\n  - address: {A}\n  - address: {B}\n  - address: {A}\n"
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_str()),
            (6, "services[0].instances[2].address")
        );
        assert!(
            err.problem.contains("services[0].instances[0] (line 4)"),
            "{err}"
        );
        // In two services it is sharing, not a mistake.
        let shared = format!(
            "services:\n- key: a.key\n  instances:\n  - address: {A}\n- key: b.key\n  instances:\n  - address: {A}\n"
        );
        assert!(parse(&shared).is_ok());
    }

    #[test]
    fn more_instances_than_clients_can_reach_is_a_warning_naming_the_list() {
        let mut text = "services:\n- key: a.key\n  instances:\n".to_owned();
        for _ in 0..=FETCHABLE_HSDIRS * MAX_INTRO_POINTS {
            let (key, _) = onionlb_core::MasterKey::generate(&mut rand::rng()).unwrap();
            text.push_str(&format!("  - address: {}\n", key.address()));
        }
        let config = parse(&text).unwrap();
        assert_eq!(config.warnings.len(), 1);
        let warning = &config.warnings[0];
        assert_eq!(
            (warning.line, warning.key.as_str()),
            (4, "services[0].instances")
        );
        assert!(warning.problem.contains("121 instances"), "{warning:?}");
    }

    #[test]
    fn intro_point_limits_are_per_service_over_a_default_and_narrow_the_reachable_instances() {
        let mut text = "max-intro-points: 2\nservices:\n- key: a.key\n  instances:\n".to_owned();
        for _ in 0..13 {
            let (key, _) = onionlb_core::MasterKey::generate(&mut rand::rng()).unwrap();
            text.push_str(&format!("  - address: {}\n", key.address()));
        }
        text.push_str(&format!(
            "- key: b.key\n  max-intro-points: 12\n  instances:\n  - address: {A}\n"
        ));
        let config = parse(&text).unwrap();
        assert_eq!(config.max_intro_points, 2);
        let limits: Vec<usize> = config
            .services
            .iter()
            .map(|s| s.intro_point_limit(&config))
            .collect();
        assert_eq!(limits, [2, 12]);
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        let warning = &config.warnings[0];
        assert_eq!(
            (warning.line, warning.key.as_str()),
            (5, "services[0].instances")
        );
        assert!(
            warning.problem.contains("at most 12 intro points"),
            "{warning:?}"
        );
        assert_eq!(
            parse(&format!(
                "services:\n- key: a.key\n  instances:\n  - address: {A}\n"
            ))
            .unwrap()
            .max_intro_points,
            20
        );
        for (text, at, key) in [
            ("max-intro-points: 21\n".to_owned(), 1, "max-intro-points"),
            ("max-intro-points: 0\n".to_owned(), 1, "max-intro-points"),
            ("max-intro-points: many\n".to_owned(), 1, "max-intro-points"),
        ] {
            let err = parse(&format!(
                "{text}services:\n- key: a.key\n  instances:\n  - address: {A}\n"
            ))
            .unwrap_err();
            assert_eq!((err.line, err.key.as_str()), (at, key), "{err}");
        }
        let err = parse(&format!(
            "services:\n- key: a.key\n  max-intro-points: 30\n  instances:\n  - address: {A}\n"
        ))
        .unwrap_err();
        assert_eq!(
            (err.line, err.key.as_str()),
            (3, "services[0].max-intro-points")
        );
    }

    #[test]
    fn loosely_typed_values_are_taken_as_python_onionbalance_takes_them() {
        let text =
            format!("services:\n- key: 1234\n  instances:\n  - address: {A}\n    name: 42\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.services[0].instances[0].label(), "42");
        assert_eq!(config.services[0].key, Path::new("/etc/onionbalance/1234"));
        let err = parse(&format!(
            "services:\n- key: a.key\n  instances:\n  - address: {A}\n    name:\n"
        ))
        .unwrap_err();
        assert_eq!(err.key, "services[0].instances[0].name");
    }

    #[test]
    fn a_config_that_is_not_a_regular_file_or_too_large_is_refused() {
        let err = Config::load(Path::new("/dev/zero")).unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (0, "(file)"));
        assert!(err.problem.contains("not a regular file"), "{err}");
        let big = std::env::temp_dir().join(format!("onionlb-big-config-{}", std::process::id()));
        let file = std::fs::File::create(&big).unwrap();
        // Sparse: the size is what counts.
        file.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        let err = Config::load(&big).unwrap_err();
        std::fs::remove_file(&big).unwrap();
        assert_eq!((err.line, err.key.as_str()), (0, "(file)"));
        assert!(
            err.problem.contains("is larger than 16777216 bytes"),
            "{err}"
        );
    }

    #[test]
    fn agents_and_their_keys() {
        let agent = onionlb_core::agent::AgentKey::from_seed([1; 32]);
        let text = format!(
            "agents:\n  socket: agents.sock\n  listen: 127.0.0.1:9852\n  onion-key: onion.key\n  heartbeat-timeout: 5\nservices:\n- key: a.key\n  instances:\n  - address: {A}\n    agent-key: {}\n    agent-client-auth: {}\n  - address: {B}\n",
            agent.public(),
            agent.client_auth_public().to_ascii_lowercase(),
        );
        let config = parse(&text).unwrap();
        assert_eq!(
            config.agents,
            AgentsConfig {
                socket: Some("/etc/onionbalance/agents.sock".into()),
                listen: Some("127.0.0.1:9852".parse().unwrap()),
                onion_key: Some("/etc/onionbalance/onion.key".into()),
                heartbeat_timeout: Duration::from_secs(5),
            }
        );
        let instances = &config.services[0].instances;
        assert_eq!(instances[0].agent_key, Some(agent.public()));
        assert_eq!(
            instances[0].agent_client_auth.as_deref(),
            Some(agent.client_auth_public().as_str())
        );
        assert_eq!(instances[1].agent_key, None);
    }

    #[test]
    fn unknown_keys_are_kept_for_a_warning() {
        let text = format!("LOG_LEVEL: debug\nservices:\n- key: a.key\n  instances:\n  - address: {A}\n    weight: 3\n");
        let config = parse(&text).unwrap();
        assert_eq!(
            config.unknown_keys,
            vec![
                (1, "LOG_LEVEL".to_owned()),
                (6, "services[0].instances[0].weight".to_owned())
            ]
        );
    }
}
