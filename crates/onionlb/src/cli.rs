//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use onionlb_core::OnionAddress;

/// onionlb's version and the commit it was built from (see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ONIONLB_COMMIT"),
    ")"
);

/// Load balancer and high-availability manager for Tor v3 onion services.
///
/// Without a subcommand, runs the manager: reads the configuration (the
/// same `config.yaml` and key files as Python Onionbalance v3) and
/// publishes master descriptors through the management tor.
#[derive(Debug, Parser)]
#[command(name = "onionlb", version = VERSION, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Log level: debug, info, warning, error or critical. RUST_LOG
    /// overrides it.
    #[arg(
        short = 'v',
        long = "verbosity",
        global = true,
        env = "ONIONBALANCE_LOG_LEVEL"
    )]
    pub verbosity: Option<String>,
    /// What to do instead of running the manager.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How to run the manager.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Where the configuration is and how to reach the management tor, with
/// Python Onionbalance's flags and environment variables.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(
        short,
        long,
        env = "ONIONBALANCE_CONFIG",
        default_value = "config.yaml"
    )]
    pub config: PathBuf,
    /// Address of the management tor's control port.
    #[arg(short = 'i', long = "ip", default_value = "127.0.0.1")]
    pub ip: std::net::IpAddr,
    /// The management tor's control port.
    #[arg(short = 'p', long = "port", default_value_t = 9051)]
    pub port: u16,
    /// The management tor's control socket; preferred over the port when
    /// given, or when the default socket exists.
    #[arg(
        short = 's',
        long = "socket",
        visible_alias = "control-socket",
        env = "ONIONBALANCE_TOR_CONTROL_SOCKET"
    )]
    pub socket: Option<PathBuf>,
    /// File holding the control-port password, for tors that use
    /// HashedControlPassword (never give the password itself on the
    /// command line).
    #[arg(long, value_name = "FILE")]
    pub control_password_file: Option<PathBuf>,
    /// Accept master key files that group or others may read.
    #[arg(long)]
    pub allow_shared_key_file: bool,
    /// Check the configuration and keys, print what would be balanced, and
    /// exit.
    #[arg(long)]
    pub check: bool,
    /// Python Onionbalance's choice of onion service version: only v3
    /// exists (tor dropped v2 in 0.4.6), so this changes nothing.
    #[arg(long = "hs-version", value_name = "VERSION", value_parser = ["v3"])]
    pub hs_version: Option<String>,
    /// Python Onionbalance's switch for testing networks: onionlb asks the
    /// management tor instead (TestingTorNetwork) and says at start-up
    /// what it found, so this changes nothing.
    #[arg(long = "is-testnet")]
    pub is_testnet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A private Tor network on loopback, for trying onionlb and testing it
    /// (built with the `testnet` feature only).
    #[cfg(feature = "testnet")]
    #[command(subcommand)]
    Testnet(TestnetCommand),
    /// Brings up a private network, runs onionlb on it, and shows a client's
    /// requests to the master address spread over the instances (built with
    /// the `testnet` feature only).
    #[cfg(feature = "testnet")]
    Demo(DemoArgs),
    /// Shows what the running manager is doing, from its status socket.
    Status(StatusArgs),
    /// Takes an instance out of new master descriptors and waits until
    /// every HSDir has one without it: then it is safe to stop.
    Drain(DrainArgs),
    /// Lets a drained instance back into the master descriptors.
    Undrain(DrainArgs),
    /// Writes a master key, config.yaml, and each instance's keys, torrc
    /// lines and ob_config. Asks questions unless --no-interactive.
    Config(Box<ConfigArgs>),
    /// The agent beside an instance: follows its tor and application and
    /// pushes its health and fresh descriptors to the manager.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// One bridge identity over several tor processes: the Extended
    /// ORPort balancer between a pluggable transport and the tors.
    #[command(subcommand)]
    Bridge(BridgeCommand),
    /// Prints a completion script for a shell: bash, zsh, fish, elvish or
    /// powershell (`onionlb completions bash > /etc/bash_completion.d/onionlb`).
    Completions(CompletionsArgs),
    /// Writes a man page for onionlb and one for each subcommand into DIR
    /// (for packagers).
    #[command(hide = true)]
    ManPages(ManPagesArgs),
}

/// `onionlb completions`
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `onionlb man-pages`
#[derive(Debug, Args)]
pub struct ManPagesArgs {
    /// The directory to write onionlb.1, onionlb-status.1, ... into.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `onionlb bridge ...`
#[derive(Debug, Subcommand)]
pub enum BridgeCommand {
    /// Runs the Extended ORPort balancer: the transport (obfs4proxy,
    /// snowflake-server) authenticates with a static cookie, and each of
    /// its connections goes to one tor's ExtORPort, authenticated with
    /// that tor's current cookie.
    Extor(Box<ExtorArgs>),
    /// Writes a new static cookie file (the format tor writes, mode 0600)
    /// for the transport's TOR_PT_AUTH_COOKIE_FILE; refuses to overwrite.
    Cookie(CookieArgs),
    /// Sends an instance no new connections (those it has go on), through
    /// the balancer's admin socket; prints every instance's state.
    Drain(BridgeDrainArgs),
    /// Lets a drained instance take new connections again.
    Undrain(BridgeDrainArgs),
    /// Prints every instance's state: open connections, up, drained.
    Status(BridgeStatusArgs),
    /// The identity and onion keys of the fleet's tors.
    #[command(subcommand)]
    Keys(BridgeKeysCommand),
    /// Writes a bridge fleet: N tors sharing one identity (Debian's
    /// tor@NAME instances), the transport and the balancer (or HAProxy
    /// over compatibility shims) as systemd units, a weekly onion-key
    /// rotation, and prints the bridge line. Run again, it changes only
    /// what differs; it never replaces a file without asking.
    Init(Box<BridgeInitArgs>),
    /// Serves every tor's MetricsPort on one endpoint, per tor and summed
    /// (what `bridge extor --tor-metrics` adds to the balancer's), for a
    /// fleet behind HAProxy.
    Metrics(BridgeMetricsArgs),
}

/// `onionlb bridge metrics`
#[derive(Debug, Args)]
pub struct BridgeMetricsArgs {
    /// Where to serve them (loopback).
    #[arg(long, value_name = "127.0.0.1:PORT", value_parser = parse_loopback)]
    pub listen: std::net::SocketAddr,
    /// A tor's MetricsPort, NAME=ADDR:PORT (loopback). Once per tor.
    #[arg(long = "tor-metrics", value_name = "NAME=ADDR:PORT", required = true, value_parser = parse_tor_metrics)]
    pub tors: Vec<(String, std::net::SocketAddr)>,
}

fn parse_loopback(text: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an ADDR:PORT"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address"));
    }
    Ok(addr)
}

/// `onionlb bridge init`
#[derive(Debug, Args)]
pub struct BridgeInitArgs {
    /// How many tors share the bridge's identity.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=64))]
    pub instances: u8,
    /// Where clients reach the transport (its TOR_PT_SERVER_BINDADDR and
    /// the bridge line's address), e.g. 203.0.113.5:443.
    #[arg(long, value_name = "ADDR:PORT")]
    pub public: std::net::SocketAddr,
    /// The tors are named NICKNAME1, NICKNAME2, ... (their Nickname, their
    /// tor@NAME instance and their name in the balancer).
    #[arg(long, value_name = "PREFIX", default_value = "bridge", value_parser = parse_nickname_prefix)]
    pub nickname: String,
    /// The identity and onion keys to share: an existing bridge's
    /// DataDirectory (or its keys/ directory). Without it the fleet keeps
    /// the keys its first tor has, or new ones are made with tor.
    #[arg(long, value_name = "DIR")]
    pub keys_from: Option<PathBuf>,
    /// An existing obfs4_state.json (a single bridge's pt_state/), so the
    /// bridge line its users have keeps working. Without it the fleet
    /// keeps the state it has, or a new one is made.
    #[arg(long, value_name = "FILE")]
    pub obfs4_state: Option<PathBuf>,
    /// HAProxy over one compatibility shim per tor (`onionlb bridge
    /// extor --compat-shim`) instead of `onionlb bridge extor`.
    #[arg(long)]
    pub haproxy: bool,
    /// Where the transport hands its connections (the balancer, or
    /// HAProxy's frontend; shims take the next ports).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:10000")]
    pub extor_listen: std::net::SocketAddr,
    /// The port of every tor's ExtORPort (tor N listens on 127.0.3.N).
    #[arg(long, value_name = "PORT", default_value_t = 9200)]
    pub extor_port: u16,
    /// The port of every tor's MetricsPort (tor N listens on 127.0.4.N).
    #[arg(long, value_name = "PORT", default_value_t = 9035)]
    pub tor_metrics_port: u16,
    /// The balancer's metrics (loopback).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9300")]
    pub metrics_listen: std::net::SocketAddr,
    /// The tors do not publish their descriptor (PublishServerDescriptor 0),
    /// as on a network without a bridge authority.
    #[arg(long)]
    pub no_publish: bool,
    /// The tors' ContactInfo.
    #[arg(long, value_name = "TEXT")]
    pub contact_info: Option<String>,
    /// Everything is written under DIR, and the files name paths under it
    /// (to try a fleet out as an ordinary user; not for an installed one).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub prefix: PathBuf,
    /// The tor used to make keys and compute the fingerprint.
    #[arg(long, value_name = "PATH", default_value = "tor")]
    pub tor: PathBuf,
    /// Prints what would be created, changed or kept, and writes nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replaces files that differ without asking.
    #[arg(long)]
    pub force: bool,
}

/// A nickname prefix: the tors' names add 1 to 2 digits, and a tor
/// nickname is 1 to 19 letters and digits.
fn parse_nickname_prefix(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 17 || !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "{text:?}: 1 to 17 letters and digits (a tor nickname is at most 19, and the tors add a number)"
        ));
    }
    Ok(text.to_owned())
}

/// `onionlb bridge keys ...`
#[derive(Debug, Subcommand)]
pub enum BridgeKeysCommand {
    /// Compares the identity and onion keys (current and previous) of
    /// every tor's DataDirectory, says which differ and when each tor
    /// rotated its onion keys; exits 1 if any key differs or is missing.
    Check(BridgeKeysCheckArgs),
    /// Rotates the fleet's onion keys so that every tor can always use the
    /// keys any tor published: the first tor rotates while drained, the
    /// others take its new keys as previous, then as current. Each tor is
    /// drained (with --admin-socket), stopped, changed and started in
    /// turn. Run it from a timer more often than onion-key-rotation-days
    /// (28 by default), and no tor rotates on its own.
    Rotate(BridgeKeysRotateArgs),
}

/// `onionlb bridge keys rotate`
#[derive(Debug, Args)]
pub struct BridgeKeysRotateArgs {
    /// A tor: its name (as the balancer's --instance names it) and its
    /// DataDirectory. The first one given leads. At least two.
    #[arg(long = "tor", value_name = "NAME=DATADIR", required = true, num_args = 1, value_parser = parse_tor)]
    pub tors: Vec<(String, PathBuf)>,
    /// Stops a tor and returns once it has exited; {name} and {datadir}
    /// are replaced (e.g. "systemctl stop tor@{name}").
    #[arg(long, value_name = "COMMAND")]
    pub stop_command: String,
    /// Starts a tor; {name} and {datadir} are replaced (e.g. "systemctl
    /// start tor@{name}").
    #[arg(long, value_name = "COMMAND")]
    pub start_command: String,
    /// The balancer's admin socket: each tor is drained before it stops,
    /// and the next step waits until the balancer sees it up again.
    #[arg(long, value_name = "PATH", env = "ONIONLB_BRIDGE_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,
    /// Without --admin-socket, seconds to wait after starting a tor.
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub settle: u64,
}

fn parse_tor_metrics(text: &str) -> Result<(String, std::net::SocketAddr), String> {
    let (name, dir) = parse_tor(text)?;
    let addr: std::net::SocketAddr = dir
        .to_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("{} is not an ADDR:PORT", dir.display()))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: a MetricsPort is read on loopback only"
        ));
    }
    Ok((name, addr))
}

/// A bridge tor's name (in metrics, logs and commands run with it): 1 to
/// 64 letters, digits, `-`, `_` or `.`.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        return Ok(());
    }
    Err(format!(
        "{what} name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"
    ))
}

fn parse_tor(text: &str) -> Result<(String, PathBuf), String> {
    let Some((name, dir)) = text.split_once('=') else {
        return Err("expected NAME=DATADIR".into());
    };
    check_name("tor", name)?;
    if dir.is_empty() {
        return Err("the DataDirectory is missing".into());
    }
    Ok((name.to_owned(), PathBuf::from(dir)))
}

/// `onionlb bridge keys check`
#[derive(Debug, Args)]
pub struct BridgeKeysCheckArgs {
    /// Each tor's DataDirectory (its keys/ and state are read).
    #[arg(value_name = "DATADIR", required = true, num_args = 2..)]
    pub data_dirs: Vec<PathBuf>,
}

/// `onionlb bridge drain` and `undrain`
#[derive(Debug, Args)]
pub struct BridgeDrainArgs {
    /// The instance's name (as in --instance).
    #[arg(value_name = "NAME")]
    pub instance: String,
    /// The balancer's admin socket.
    #[arg(long, value_name = "PATH", env = "ONIONLB_BRIDGE_ADMIN_SOCKET")]
    pub admin_socket: PathBuf,
}

/// `onionlb bridge status`
#[derive(Debug, Args)]
pub struct BridgeStatusArgs {
    /// The balancer's admin socket.
    #[arg(long, value_name = "PATH", env = "ONIONLB_BRIDGE_ADMIN_SOCKET")]
    pub admin_socket: PathBuf,
}

/// `onionlb bridge extor`
#[derive(Debug, Args)]
pub struct ExtorArgs {
    /// Where the transport connects: its TOR_PT_EXTENDED_SERVER_PORT.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        env = "ONIONLB_BRIDGE_LISTEN",
        required_unless_present = "compat_shim"
    )]
    pub listen: Option<std::net::SocketAddr>,
    /// The static cookie the transport is given (TOR_PT_AUTH_COOKIE_FILE);
    /// make one with `onionlb bridge cookie`.
    #[arg(long, value_name = "FILE", env = "ONIONLB_BRIDGE_STATIC_COOKIE")]
    pub static_cookie: PathBuf,
    /// A tor instance: NAME,ADDR:PORT,COOKIE_FILE (its ExtORPort and its
    /// ExtORPortCookieAuthFile). Once per instance.
    #[arg(long = "instance", value_name = "NAME,ADDR:PORT,COOKIE_FILE", required_unless_present = "compat_shim", conflicts_with = "compat_shim", value_parser = parse_instance)]
    pub instances: Vec<InstanceArg>,
    /// Run as extor-static-cookie does: launched by one tor as a managed
    /// transport (`ServerTransportPlugin extor_static_cookie exec onionlb
    /// bridge extor --compat-shim --static-cookie FILE`), in front of that
    /// tor's ExtORPort, for a TCP balancer such as HAProxy to spread the
    /// transport's connections over such shims.
    #[arg(long, conflicts_with_all = ["listen", "metrics_listen", "admin_socket", "tor_metrics"])]
    pub compat_shim: bool,
    /// How an instance is chosen: fewest open connections, or the same
    /// instance per client address while it serves.
    #[arg(long, value_enum, default_value = "least-connections")]
    pub strategy: StrategyArg,
    /// Serve Prometheus metrics here (loopback only).
    #[arg(
        long,
        value_name = "127.0.0.1:PORT",
        env = "ONIONLB_BRIDGE_METRICS_LISTEN"
    )]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The admin socket (`onionlb bridge drain` talks to it).
    #[arg(long, value_name = "PATH", env = "ONIONLB_BRIDGE_ADMIN_SOCKET")]
    pub admin_socket: Option<PathBuf>,
    /// A tor's MetricsPort, NAME=ADDR:PORT (loopback): its metrics are
    /// served with the balancer's, per tor and summed. Once per tor.
    #[arg(long = "tor-metrics", value_name = "NAME=ADDR:PORT", requires = "metrics_listen", value_parser = parse_tor_metrics)]
    pub tor_metrics: Vec<(String, std::net::SocketAddr)>,
    /// How bytes are relayed: `splice` moves bulk between the sockets in
    /// the kernel (Linux) and small writes through a buffer, `copy`
    /// everything through a buffer.
    #[arg(long, value_enum, default_value = "splice")]
    pub relay: RelayArg,
    /// The most transport connections open at once; more are closed at
    /// once.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
}

/// One `--instance` of `onionlb bridge extor`.
#[derive(Debug, Clone)]
pub struct InstanceArg {
    /// Its name, in logs and metrics.
    pub name: String,
    /// Its ExtORPort.
    pub addr: std::net::SocketAddr,
    /// Its ExtORPortCookieAuthFile.
    pub cookie: PathBuf,
}

fn parse_instance(text: &str) -> Result<InstanceArg, String> {
    let mut parts = text.splitn(3, ',');
    let (Some(name), Some(addr), Some(cookie)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected NAME,ADDR:PORT,COOKIE_FILE".into());
    };
    check_name("instance", name)?;
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an ADDR:PORT"))?;
    if cookie.is_empty() {
        return Err("the cookie file is missing".into());
    }
    Ok(InstanceArg {
        name: name.to_owned(),
        addr,
        cookie: PathBuf::from(cookie),
    })
}

/// `--relay`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RelayArg {
    /// splice(2) through a pipe for bulk, which stays in the kernel; small
    /// writes through a buffer.
    Splice,
    /// read and write through a buffer.
    Copy,
}

/// `--strategy`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyArg {
    /// The instance with the fewest open connections.
    LeastConnections,
    /// The same instance for a client address (from USERADDR) while it
    /// serves.
    UserAddress,
}

/// `onionlb bridge cookie`
#[derive(Debug, Args)]
pub struct CookieArgs {
    /// The file to write.
    #[arg(value_name = "FILE")]
    pub path: PathBuf,
}

/// `onionlb agent ...`
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Runs the agent.
    Run(Box<AgentArgs>),
    /// Writes an agent key (or reads an existing one) and prints the lines
    /// for the manager's config.yaml.
    Keygen(KeygenArgs),
}

/// `onionlb agent run`
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent's key file (from `onionlb agent keygen`).
    #[arg(long, value_name = "FILE", env = "ONIONLB_AGENT_KEY")]
    pub key: PathBuf,
    /// Where the manager listens: unix:PATH, tcp:127.0.0.1:PORT, or
    /// onion:ADDRESS.onion:PORT (through the instance tor's SOCKS port,
    /// with client authorization).
    #[arg(long, value_name = "WHERE", env = "ONIONLB_AGENT_MANAGER")]
    pub manager: String,
    /// The instance's onion address (else read from
    /// --hidden-service-dir's hostname file).
    #[arg(
        long,
        value_name = "ADDRESS",
        required_unless_present = "hidden_service_dir",
        env = "ONIONLB_AGENT_ADDRESS"
    )]
    pub address: Option<OnionAddress>,
    /// The instance's HiddenServiceDir, to read its address from.
    #[arg(long, value_name = "DIR", env = "ONIONLB_AGENT_HIDDEN_SERVICE_DIR")]
    pub hidden_service_dir: Option<PathBuf>,
    /// The instance tor's control port.
    #[arg(
        long,
        default_value = "127.0.0.1:9051",
        env = "ONIONLB_AGENT_CONTROL_PORT"
    )]
    pub control_port: std::net::SocketAddr,
    /// The instance tor's control socket (instead of the port).
    #[arg(long, value_name = "PATH", env = "ONIONLB_AGENT_CONTROL_SOCKET")]
    pub control_socket: Option<PathBuf>,
    /// File holding the control-port password, for HashedControlPassword.
    #[arg(long, value_name = "FILE", env = "ONIONLB_AGENT_CONTROL_PASSWORD_FILE")]
    pub control_password_file: Option<PathBuf>,
    /// Seconds the instance tor has to answer a control command before
    /// the agent drops the connection and reconnects.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), env = "ONIONLB_AGENT_CONTROL_TIMEOUT")]
    pub control_timeout: u64,
    /// The instance tor's SOCKS port, for an onion: manager.
    #[arg(long, default_value = "127.0.0.1:9050", env = "ONIONLB_AGENT_SOCKS")]
    pub socks: std::net::SocketAddr,
    /// How to check the application: tcp:HOST:PORT, or an http:// URL
    /// that must answer 2xx or 3xx. Without it, only tor is checked.
    #[arg(long, value_name = "PROBE", env = "ONIONLB_AGENT_PROBE")]
    pub probe: Option<String>,
    /// Seconds between heartbeats and probes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600), env = "ONIONLB_AGENT_HEARTBEAT")]
    pub heartbeat: u64,
    /// Failed probes in a row that make the instance unhealthy.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000), env = "ONIONLB_AGENT_PROBE_FAILURES")]
    pub probe_failures: u32,
    /// A command (run with sh -c) that restarts the instance after
    /// --restart-after unhealthy heartbeats in a row; at most once a
    /// minute.
    #[arg(long, value_name = "COMMAND", env = "ONIONLB_AGENT_RESTART_COMMAND")]
    pub restart_command: Option<String>,
    /// Unhealthy heartbeats in a row before --restart-command runs.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000), env = "ONIONLB_AGENT_RESTART_AFTER")]
    pub restart_after: u32,
    /// While this file exists, the instance is drained: the manager takes
    /// it out of the master descriptors, and the agent logs when every
    /// HSDir has one without it (safe to stop). Removing the file lets it
    /// back in.
    #[arg(long, value_name = "PATH", env = "ONIONLB_AGENT_DRAIN_FILE")]
    pub drain_file: Option<PathBuf>,
}

/// `onionlb agent keygen`
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key (mode 0600). If it exists, it is read and
    /// its lines printed again.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
}

/// `onionlb status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The configuration whose status-socket-location to read.
    #[arg(
        short,
        long,
        env = "ONIONBALANCE_CONFIG",
        default_value = "config.yaml"
    )]
    pub config: PathBuf,
    /// The status socket (instead of the configuration's).
    #[arg(long = "status-socket", alias = "socket", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `onionlb drain` and `onionlb undrain`
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The instance: its `name:` in the configuration, or its onion
    /// address.
    pub instance: String,
    /// The configuration whose admin socket to use.
    #[arg(
        short,
        long,
        env = "ONIONBALANCE_CONFIG",
        default_value = "config.yaml"
    )]
    pub config: PathBuf,
    /// The manager's admin socket (instead of the configuration's).
    #[arg(long = "admin-socket", alias = "socket", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Return once the manager has taken it out, without waiting for the
    /// HSDirs.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for every HSDir.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
}

/// `onionlb config`
///
/// Also takes onionbalance-config's flags: --key, -n, -t/--tag,
/// --service-virtual-port, --service-target, --hs-version v3; -s 1; and -p,
/// which is refused (onionlb writes no password-protected keys).
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Run from the flags alone, asking nothing.
    #[arg(long)]
    pub no_interactive: bool,
    /// Directory to write to.
    #[arg(long, default_value = "onionlb-config")]
    pub output: PathBuf,
    /// Use this master key (tor's hs_ed25519_secret_key or PEM) instead of
    /// generating one, keeping the service's address.
    #[arg(long, alias = "key", value_name = "FILE")]
    pub import_key: Option<PathBuf>,
    /// How to store the master key (default: tor for a new key, the
    /// imported key's own format otherwise).
    #[arg(long, value_enum)]
    pub key_format: Option<KeyFormatArg>,
    /// An instance that already runs (repeatable): it gets an ob_config
    /// and torrc lines, no keys. The default way: each instance's own tor
    /// makes its keys, on its own machine.
    #[arg(long = "instance", value_name = "ADDRESS")]
    pub instances: Vec<OnionAddress>,
    /// New instances to generate keys for (default: 2 when no --instance
    /// is given, else 0). Their keys must then be moved to their machines
    /// and removed from this one.
    #[arg(short = 'n', long, alias = "num-instances", value_name = "N")]
    pub new_instances: Option<usize>,
    /// Prefix of the instances' names: TAG1, TAG2, ...
    #[arg(short = 't', long, default_value = "instance")]
    pub tag: String,
    /// Port clients connect to on the onion address.
    #[arg(long, alias = "service-virtual-port", default_value_t = 80)]
    pub virtual_port: u16,
    /// Where each instance's tor forwards connections.
    #[arg(long, alias = "service-target", default_value = "127.0.0.1:80")]
    pub target: String,
    /// Where new instances' HiddenServiceDirs will live on their machines
    /// (BASE/NAME); by default, where they are written.
    #[arg(long, value_name = "BASE")]
    pub hs_dir_base: Option<PathBuf>,
    /// Replace files that exist.
    #[arg(long)]
    pub force: bool,
    /// Add the service to the existing configuration (--config) instead of
    /// writing a new one: its key and instance files go beside it, and the
    /// file keeps its comments and order.
    #[arg(long, conflicts_with = "add_instance")]
    pub add_service: bool,
    /// Add an instance (its onion address) to the service whose master
    /// address is SERVICE in the existing configuration (--config), and
    /// print the lines the instance's tor needs.
    #[arg(
        long,
        num_args = 2,
        value_names = ["SERVICE", "ADDRESS"],
        conflicts_with_all = ["import_key", "new_instances", "instances"]
    )]
    pub add_instance: Option<Vec<String>>,
    /// The configuration --add-service and --add-instance edit (default:
    /// OUTPUT/config.yaml).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Give the written master key to this user (the one the manager runs
    /// as, `onionlb` with the package); needs root.
    #[arg(long, value_name = "USER")]
    pub key_owner: Option<String>,
    /// onionbalance-config's number of services: only 1 (add more with
    /// --add-service).
    #[arg(
        short = 's',
        long = "num-services",
        value_name = "N",
        default_value_t = 1
    )]
    pub num_services: u32,
    /// onionbalance-config's key password: refused, as onionlb writes no
    /// encrypted keys (protect the key by its file mode, or keep it offline).
    #[arg(short = 'p', long = "password", value_name = "PASSWORD", hide = true)]
    pub password: Option<String>,
    /// onionbalance-config's onion service version: only v3, which changes
    /// nothing.
    #[arg(long = "hs-version", value_name = "VERSION", value_parser = ["v3"])]
    pub hs_version: Option<String>,
}

/// A master key file format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyFormatArg {
    /// tor's hs_ed25519_secret_key.
    Tor,
    /// PKCS#8 PEM, as onionbalance-config writes it.
    Pem,
}

/// `onionlb testnet ...`
#[cfg(feature = "testnet")]
#[derive(Debug, Subcommand)]
pub enum TestnetCommand {
    /// Starts a network and returns once every instance answers over its
    /// onion address; it keeps running until `down`.
    Up(UpArgs),
    /// Stops every process `up` started in DIR, by PID.
    Down(DirArg),
    /// Shows which processes of the network in DIR run and how far each
    /// tor has bootstrapped.
    Status(DirArg),
    /// Prints shell exports describing the network in DIR:
    /// eval "$(onionlb testnet env --dir DIR)"
    Env(DirArg),
    /// Runs one instance's HTTP app (started by `up`).
    #[command(hide = true)]
    App(AppArgs),
}

/// The network's directory.
#[cfg(feature = "testnet")]
#[derive(Debug, Args)]
pub struct DirArg {
    /// Directory holding the network's keys, configs, data and logs.
    #[arg(long, default_value = ".testnet")]
    pub dir: PathBuf,
}

/// `onionlb testnet up`
#[cfg(feature = "testnet")]
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The network's directory and its shape.
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Leave every process running when `up` fails, for debugging.
    #[arg(long)]
    pub keep_on_failure: bool,
}

/// The shape of a network, shared by `up` and `demo`.
#[cfg(feature = "testnet")]
#[derive(Debug, Args)]
pub struct ShapeArgs {
    /// Directory holding the network's keys, configs, data and logs.
    #[arg(long, default_value = ".testnet")]
    pub dir: PathBuf,
    /// Relays besides the 3 directory authorities.
    #[arg(long, default_value_t = 6)]
    pub relays: usize,
    /// Onion service instances, each with its own HTTP app.
    #[arg(long, default_value_t = 3)]
    pub instances: usize,
    /// First of the consecutive loopback ports to use (default: the first
    /// free block from 15000).
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Start the instances as balancer instances of this master address
    /// (repeatable).
    #[arg(long = "master", value_name = "ADDR")]
    pub masters: Vec<OnionAddress>,
    /// Bound on bootstrap, in seconds.
    #[arg(long, default_value_t = 180)]
    pub bootstrap_timeout: u64,
    /// Bound on every instance answering, after bootstrap, in seconds.
    #[arg(long, default_value_t = 180)]
    pub reachable_timeout: u64,
}

/// `onionlb demo`
#[cfg(feature = "testnet")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The network's directory and its shape.
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Requests the client makes to the master address.
    #[arg(long, default_value_t = 12)]
    pub requests: usize,
}

/// `onionlb testnet app`
#[cfg(feature = "testnet")]
#[derive(Debug, Args)]
pub struct AppArgs {
    /// The instance's name, sent in every answer.
    #[arg(long)]
    pub name: String,
    /// Where to listen.
    #[arg(long)]
    pub listen: std::net::SocketAddr,
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn python_onionbalance_command_lines_are_accepted() {
        let cli = Cli::try_parse_from([
            "onionbalance",
            "-c",
            "/etc/onionbalance/config.yaml",
            "--hs-version",
            "v3",
            "--is-testnet",
            "-i",
            "127.0.0.1",
            "-p",
            "9051",
            "-v",
            "info",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.hs_version.as_deref(), Some("v3"));
        assert!(cli.run.is_testnet);
        let err = Cli::try_parse_from(["onionbalance", "--hs-version", "v2"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(err.to_string().contains("possible values: v3"), "{err}");
    }
}
