//! A running network: bringing it up, using it from tests, taking it down.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use onionlb_core::OnionAddress;
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use torctl::{ControlAddr, ControlClient, Credentials};

use crate::app::served_by;
use crate::error::Error;
use crate::fetch::{self, Response};
use crate::keys::{self, Programs};
use crate::layout::{loopback, Layout, Node, Role, AUTHORITIES};
use crate::ports::PortPlan;
use crate::process::{self, log_tail, Process, ProcessRecord, StopOutcome, STOP_GRACE};
use crate::state::State;
use crate::torrc::{self, Authority};

/// Where the search for free ports starts when no base port is given.
pub const DEFAULT_BASE_PORT: u16 = 15000;

/// Tor allows one NEWNYM per this long; sooner ones are ignored.
const NEWNYM_INTERVAL: Duration = Duration::from_secs(10);

/// Bound on one HTTP fetch through the client.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// How often waits look again.
const POLL: Duration = Duration::from_millis(500);

/// Where a tor's own output goes, beside its logs.
const STDOUT_LOG: &str = "stdout.log";

/// Lines of log shown when a tor fails.
const TAIL_LINES: usize = 25;

/// What network to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory for all keys, torrcs, data and logs. Created if missing;
    /// an earlier network's node directories in it are replaced.
    pub dir: PathBuf,
    /// Relays besides the three authorities.
    pub relays: usize,
    /// Onion service instances.
    pub instances: usize,
    /// First port; `None` picks the first free block from
    /// [`DEFAULT_BASE_PORT`].
    pub base_port: Option<u16>,
    /// Masters the instances serve as balancer instances; empty for plain
    /// onion services.
    pub masters: Vec<OnionAddress>,
    /// Whether the client tor uses entry guards (see
    /// [`torrc::Options::client_guards`]).
    pub client_guards: bool,
    /// The tor programs.
    pub programs: Programs,
    /// Program and leading arguments that run the instance app; the
    /// network appends `--name NAME --listen ADDR`.
    pub app_command: Vec<OsString>,
    /// Bound on bootstrapping (every tor at 100 %, every relay an HSDir).
    pub bootstrap_timeout: Duration,
    /// Bound on every instance answering over its onion address, after
    /// bootstrap.
    pub reachable_timeout: Duration,
    /// On failure, leave every process running (recorded in the state
    /// file, for `stop_recorded_network`) instead of stopping them, so the
    /// failure can be examined live.
    pub keep_on_failure: bool,
}

impl Config {
    /// The default network (6 relays, 3 instances) in `dir`.
    pub fn new(dir: impl Into<PathBuf>, app_command: Vec<OsString>) -> Self {
        Config {
            dir: dir.into(),
            relays: 6,
            instances: 3,
            base_port: None,
            masters: Vec::new(),
            client_guards: true,
            programs: Programs::default(),
            app_command,
            bootstrap_timeout: Duration::from_secs(180),
            reachable_timeout: Duration::from_secs(180),
            keep_on_failure: false,
        }
    }
}

/// Where and how a balancer reaches the management tor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlEndpoint {
    /// The control port.
    pub addr: ControlAddr,
    /// Its authentication cookie.
    pub cookie: PathBuf,
}

/// A running private Tor network. Dropping it stops every process it
/// started.
#[derive(Debug)]
pub struct Testnet {
    layout: Layout,
    authorities: Vec<Authority>,
    masters: Vec<OnionAddress>,
    instance_addresses: Vec<OnionAddress>,
    programs: Programs,
    app_command: Vec<OsString>,
    defaults_torrc: PathBuf,
    tors: BTreeMap<String, Process>,
    apps: BTreeMap<String, Process>,
    client: Option<ControlClient>,
    started: Instant,
    isolation: AtomicU64,
    last_newnym: Mutex<Option<Instant>>,
}

impl Testnet {
    /// Starts a network and returns once the client has every relay as an
    /// HSDir and each instance has answered over its onion address.
    ///
    /// On failure, every process started is stopped again (unless
    /// [`Config::keep_on_failure`]) and the error names the tor that
    /// failed, with the tail of its log.
    pub async fn start(config: Config) -> Result<Self, Error> {
        let started = Instant::now();
        let version = config.programs.check().await?;
        progress(started, &format!("using {version}"));
        refuse_running_network(&config.dir)?;

        let nodes = Layout::node_count(config.relays, config.instances);
        let ports = match config.base_port {
            Some(base) => {
                let plan = PortPlan::new(base, nodes, config.instances)?;
                plan.check_free()?;
                plan
            }
            None => PortPlan::first_free(DEFAULT_BASE_PORT, nodes, config.instances)?,
        };
        let dir = absolute(&config.dir)?;
        let layout = Layout::new(&dir, ports, config.relays, config.instances)?;
        let defaults_torrc = prepare_directories(&layout)?;
        progress(
            started,
            &format!(
                "{} authorities, {} relays, {} instances, manager and client; ports {}-{}",
                AUTHORITIES,
                config.relays,
                config.instances,
                ports.base(),
                usize::from(ports.base()) + ports.len() - 1
            ),
        );

        let authorities = make_keys(&config.programs, &layout, &defaults_torrc).await?;
        progress(started, "authority and relay keys made");
        let options = torrc::Options {
            masters: config.masters.clone(),
            client_guards: config.client_guards,
        };
        for node in &layout.nodes {
            write_config(node, &authorities, &options)?;
        }

        let mut net = Testnet {
            layout,
            authorities,
            masters: config.masters,
            instance_addresses: Vec::new(),
            programs: config.programs,
            app_command: config.app_command,
            defaults_torrc,
            tors: BTreeMap::new(),
            apps: BTreeMap::new(),
            client: None,
            started,
            isolation: AtomicU64::new(0),
            last_newnym: Mutex::new(None),
        };
        let bounds = (config.bootstrap_timeout, config.reachable_timeout);
        match net.bring_up(bounds).await {
            Ok(()) => Ok(net),
            Err(e) if config.keep_on_failure => {
                // Detaching records every PID, so `down` can stop them later.
                let _ = net.detach();
                Err(e)
            }
            // Dropping `net` stops everything started so far.
            Err(e) => Err(e),
        }
    }

    /// Starts every process and waits, within the `(bootstrap, reachable)`
    /// bounds, until the network is usable.
    async fn bring_up(
        &mut self,
        (bootstrap, reachable): (Duration, Duration),
    ) -> Result<(), Error> {
        for node in self.layout.nodes.clone() {
            self.spawn_tor(&node)?;
            if node.role == Role::Instance {
                self.spawn_app(&node)?;
            }
        }
        self.write_state()?;
        progress(self.started, &format!("started {} tors", self.tors.len()));

        let deadline = Instant::now() + bootstrap;
        let mut controls = self.connect_all(deadline).await?;
        self.wait_for_bootstrap(&controls, deadline).await?;
        self.wait_for_hsdirs(&controls, deadline).await?;
        self.client = controls
            .remove(&self.layout.client().name)
            .map(|(control, _)| control);

        let deadline = Instant::now() + reachable;
        self.instance_addresses = self.read_instance_addresses(deadline).await?;
        self.write_state()?;
        self.wait_for_instances(deadline).await?;
        progress(
            self.started,
            &format!(
                "network up in {:.1} s",
                self.started.elapsed().as_secs_f64()
            ),
        );
        Ok(())
    }

    /// The network's tors, ports and directories.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The client's SOCKS port.
    pub fn socks_addr(&self) -> SocketAddr {
        loopback(self.layout.client().socks_port.unwrap_or_default())
    }

    /// Each instance's own onion address, in instance order.
    pub fn instance_addresses(&self) -> &[OnionAddress] {
        &self.instance_addresses
    }

    /// The management tor's control port, for a balancer.
    pub fn manager_control(&self) -> ControlEndpoint {
        let manager = self.layout.manager();
        ControlEndpoint {
            addr: manager.control_addr(),
            cookie: manager.cookie_path(),
        }
    }

    /// The client tor's control port.
    pub fn client_control(&self) -> ControlEndpoint {
        let client = self.layout.client();
        ControlEndpoint {
            addr: client.control_addr(),
            cookie: client.cookie_path(),
        }
    }

    /// What a later process needs to use or stop this network.
    pub fn state(&self) -> State {
        State {
            layout: self.layout.clone(),
            authorities: self.authorities.clone(),
            masters: self.masters.iter().map(ToString::to_string).collect(),
            instance_addresses: self
                .instance_addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
            processes: self
                .tors
                .values()
                .chain(self.apps.values())
                .map(|p| p.record().clone())
                .collect(),
        }
    }

    /// GETs `url` through the client tor on a circuit no earlier fetch used.
    pub async fn fetch(&self, url: &str) -> Result<Response, Error> {
        let isolation = format!(
            "onionlb-testnet-{}",
            self.isolation.fetch_add(1, Ordering::Relaxed)
        );
        fetch::get(self.socks_addr(), url, &isolation, FETCH_TIMEOUT)
            .await
            .map_err(|detail| Error::Fetch {
                url: url.to_owned(),
                detail,
            })
    }

    /// Sends NEWNYM to the client, which also forgets cached onion service
    /// descriptors. Waits first if the last one was under 10 s ago, since
    /// tor ignores NEWNYMs sent sooner.
    pub async fn newnym(&self) -> Result<(), Error> {
        let mut last = self.last_newnym.lock().await;
        if let Some(at) = *last {
            let ready = at + NEWNYM_INTERVAL;
            tokio::time::sleep_until(ready.into()).await;
        }
        let client = self.client.as_ref().ok_or_else(|| {
            Error::Usage("the client tor's control connection is not open".into())
        })?;
        client
            .signal("NEWNYM")
            .await
            .map_err(|source| Error::Control {
                node: "client".into(),
                source,
            })?;
        *last = Some(Instant::now());
        Ok(())
    }

    /// Stops instance `index`'s tor (its app keeps running), as a crash or
    /// seizure would.
    pub fn stop_instance(&mut self, index: usize) -> Result<(), Error> {
        let node = self.instance(index)?.clone();
        self.stop_tor(&node);
        Ok(())
    }

    /// Starts instance `index`'s tor again, with its keys, and waits until
    /// it has bootstrapped.
    pub async fn start_instance(&mut self, index: usize, timeout: Duration) -> Result<(), Error> {
        let node = self.instance(index)?.clone();
        self.start_tor(&node, timeout).await
    }

    /// Stops the management tor, as a restart or crash would; whatever is
    /// connected to its control port loses the connection.
    pub fn stop_manager(&mut self) {
        let node = self.layout.manager().clone();
        self.stop_tor(&node);
    }

    /// Starts the management tor again (same data directory, so it comes
    /// back with its cached consensus) and waits until it has bootstrapped.
    pub async fn start_manager(&mut self, timeout: Duration) -> Result<(), Error> {
        let node = self.layout.manager().clone();
        self.start_tor(&node, timeout).await
    }

    /// Freezes the management tor (SIGSTOP, `paused`) or lets it go on
    /// (SIGCONT): its control port still accepts connections, as the
    /// kernel does for it, but nothing answers.
    pub fn pause_manager(&mut self, paused: bool) {
        let name = self.layout.manager().name.clone();
        if let Some(tor) = self.tors.get_mut(&name) {
            tor.pause(paused);
        }
    }

    fn stop_tor(&mut self, node: &Node) {
        if let Some(mut tor) = self.tors.remove(&node.name) {
            tor.stop(STOP_GRACE);
        }
    }

    async fn start_tor(&mut self, node: &Node, timeout: Duration) -> Result<(), Error> {
        if self.tors.contains_key(&node.name) {
            return Err(Error::Usage(format!("{} is already running", node.name)));
        }
        self.spawn_tor(node)?;
        self.write_state()?;
        let deadline = Instant::now() + timeout;
        let control = self.connect(node, deadline).await?;
        let mut controls = HashMap::new();
        controls.insert(node.name.clone(), (control, node.clone()));
        self.wait_for_bootstrap(&controls, deadline).await
    }

    /// Starts a tor that joins the network as a client and is otherwise
    /// configured by `extra_torrc` (for instance an onion service's
    /// `HiddenServiceDir` lines, as an operator would write them), and
    /// waits until it has bootstrapped. Its directory is `DIR/name`; it
    /// stops with the network.
    pub async fn start_guest(
        &mut self,
        name: &str,
        extra_torrc: &str,
        timeout: Duration,
    ) -> Result<ControlEndpoint, Error> {
        let node = self.guest_node(name, free_port()?, None)?;
        self.start_guest_node(node, extra_torrc, timeout).await
    }

    /// Starts a guest tor as [`Testnet::start_guest`] does, with a SOCKS
    /// port of its own (for a client configured otherwise than the
    /// network's, such as a bridge user), and returns that port's address
    /// beside its control endpoint.
    pub async fn start_guest_client(
        &mut self,
        name: &str,
        extra_torrc: &str,
        timeout: Duration,
    ) -> Result<(ControlEndpoint, SocketAddr), Error> {
        let mut node = self.guest_node(name, free_port()?, None)?;
        let socks = free_port()?;
        node.socks_port = Some(socks);
        let control = self.start_guest_node(node, extra_torrc, timeout).await?;
        Ok((control, loopback(socks)))
    }

    /// Writes `node`'s torrc (the network's lines, then `extra_torrc`),
    /// starts it and waits until it has bootstrapped.
    async fn start_guest_node(
        &mut self,
        node: Node,
        extra_torrc: &str,
        timeout: Duration,
    ) -> Result<ControlEndpoint, Error> {
        let name = &node.name;
        if self.tors.contains_key(name) || self.layout.nodes.iter().any(|n| &n.name == name) {
            return Err(Error::Usage(format!(
                "{name} is already a tor of this network"
            )));
        }
        forget_earlier_network(&node.data_dir)?;
        let mut text = torrc::torrc(&node, &self.authorities, &torrc::Options::default());
        text.push_str(extra_torrc);
        let path = node.torrc_path();
        std::fs::write(&path, text).map_err(Error::io("writing", &path))?;
        self.spawn_tor(&node)?;
        self.write_state()?;
        let deadline = Instant::now() + timeout;
        let control = self.connect(&node, deadline).await?;
        let mut controls = HashMap::new();
        controls.insert(node.name.clone(), (control, node.clone()));
        self.wait_for_bootstrap(&controls, deadline).await?;
        Ok(ControlEndpoint {
            addr: node.control_addr(),
            cookie: node.cookie_path(),
        })
    }

    /// Stops the guest tor `name` (by its PID) if it runs and starts it
    /// again from its torrc as it is now, as `systemctl restart tor` would, and waits
    /// until it has bootstrapped. `control` is what [`Testnet::start_guest`]
    /// returned; it stays valid.
    pub async fn restart_guest(
        &mut self,
        name: &str,
        control: &ControlEndpoint,
        timeout: Duration,
    ) -> Result<(), Error> {
        let torctl::ControlAddr::Tcp(addr) = &control.addr else {
            return Err(Error::Usage(format!(
                "{name}'s control port is not a TCP port"
            )));
        };
        let node = self.guest_node(name, addr.port(), None)?;
        self.stop_tor(&node);
        self.start_tor(&node, timeout).await
    }

    /// Stops the guest tor `name` by its PID, as a crash or `systemctl
    /// stop` would; [`Testnet::restart_guest`] starts it again.
    pub fn stop_guest(&mut self, name: &str) -> Result<(), Error> {
        let Some(mut tor) = self.tors.remove(name) else {
            return Err(Error::Usage(format!("{name} is not a running guest")));
        };
        tor.stop(STOP_GRACE);
        self.write_state()
    }

    /// A guest node named `name`, with its directory `DIR/name` created.
    fn guest_node(
        &self,
        name: &str,
        control_port: u16,
        app_port: Option<u16>,
    ) -> Result<Node, Error> {
        let data_dir = self.layout.dir.join(name);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&data_dir)
            .map_err(Error::io("creating", &data_dir))?;
        Ok(Node {
            name: name.to_owned(),
            role: Role::Guest,
            data_dir,
            control_port,
            relay_ports: None,
            socks_port: None,
            app_port,
        })
    }

    /// Starts an HTTP app that answers with `name` on a free loopback
    /// port, and returns the port; it stops with the network.
    pub fn start_guest_app(&mut self, name: &str) -> Result<u16, Error> {
        let port = free_port()?;
        let node = self.guest_node(name, 0, Some(port))?;
        self.spawn_app(&node)?;
        self.write_state()?;
        Ok(port)
    }

    /// Stops instance `index`'s HTTP app (its tor keeps running), as an
    /// application crash would.
    pub fn stop_app(&mut self, index: usize) -> Result<(), Error> {
        let name = self.instance(index)?.name.clone();
        if let Some(mut app) = self.apps.remove(&name) {
            app.stop(STOP_GRACE);
        }
        Ok(())
    }

    /// Starts instance `index`'s HTTP app again.
    pub fn start_app(&mut self, index: usize) -> Result<(), Error> {
        let node = self.instance(index)?.clone();
        if !self.apps.contains_key(&node.name) {
            self.spawn_app(&node)?;
        }
        self.write_state()
    }

    /// Leaves the network running after this value is gone, and returns
    /// the state a later [`stop_recorded_network`] needs.
    pub fn detach(mut self) -> Result<State, Error> {
        let state = self.state();
        state.write()?;
        let tors = std::mem::take(&mut self.tors);
        let apps = std::mem::take(&mut self.apps);
        for process in tors.into_values().chain(apps.into_values()) {
            process.detach();
        }
        Ok(state)
    }

    /// Stops every process, apps first.
    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if self.tors.is_empty() && self.apps.is_empty() {
            // Nothing started yet, or detached: the state file stays.
            return;
        }
        for (_, mut app) in std::mem::take(&mut self.apps) {
            app.stop(STOP_GRACE);
        }
        for (_, mut tor) in std::mem::take(&mut self.tors) {
            tor.stop(STOP_GRACE);
        }
        let path = State::path(&self.layout.dir);
        let _ = std::fs::remove_file(path);
    }

    fn instance(&self, index: usize) -> Result<&Node, Error> {
        self.layout
            .instances()
            .nth(index)
            .ok_or_else(|| Error::Usage(format!("there is no instance {index}")))
    }

    fn write_state(&self) -> Result<(), Error> {
        self.state().write()
    }

    fn spawn_tor(&mut self, node: &Node) -> Result<(), Error> {
        let torrc = node.torrc_path();
        let mut command = std::process::Command::new(&self.programs.tor);
        command
            .arg("--defaults-torrc")
            .arg(&self.defaults_torrc)
            .arg("-f")
            .arg(&torrc);
        let log = node.data_dir.join(STDOUT_LOG);
        let marker = torrc.display().to_string();
        let process = Process::spawn(&node.name, &marker, command, &log)?;
        self.tors.insert(node.name.clone(), process);
        Ok(())
    }

    fn spawn_app(&mut self, node: &Node) -> Result<(), Error> {
        let Some((program, args)) = self.app_command.split_first() else {
            return Err(Error::Usage("no command given for the instance app".into()));
        };
        let listen = loopback(node.app_port.unwrap_or_default()).to_string();
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .args(["--name", &node.name, "--listen", &listen]);
        let process = Process::spawn(
            &format!("{}-app", node.name),
            &listen,
            command,
            &node.app_log(),
        )?;
        self.apps.insert(node.name.clone(), process);
        Ok(())
    }

    /// Fails if `node`'s tor has exited, with the tail of its log.
    fn check_alive(&mut self, node: &Node, doing: &str) -> Result<(), Error> {
        let Some(tor) = self.tors.get_mut(&node.name) else {
            return Ok(());
        };
        match tor.exit_status() {
            None => Ok(()),
            Some(status) => Err(Error::Exited {
                node: node.name.clone(),
                status,
                doing: doing.to_owned(),
                log_tail: failure_log(node),
            }),
        }
    }

    /// Fails if `node`'s HTTP app has exited (a wrong app command exits at
    /// once), with the tail of its log.
    fn check_app_alive(&mut self, node: &Node) -> Result<(), Error> {
        let Some(app) = self.apps.get_mut(&node.name) else {
            return Ok(());
        };
        match app.exit_status() {
            None => Ok(()),
            Some(status) => Err(Error::Exited {
                node: format!("{}-app", node.name),
                status,
                doing: "waiting for its onion service to answer".to_owned(),
                log_tail: log_tail(&node.app_log(), TAIL_LINES),
            }),
        }
    }

    /// Opens an authenticated control connection to `node`, retrying until
    /// tor listens.
    async fn connect(&mut self, node: &Node, deadline: Instant) -> Result<ControlClient, Error> {
        let credentials = Credentials::CookieFile(node.cookie_path());
        loop {
            self.check_alive(node, "opening its control port")?;
            match ControlClient::connect_authenticated(&node.control_addr(), &credentials).await {
                Ok(client) => return Ok(client),
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::Control {
                        node: node.name.clone(),
                        source: e,
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn connect_all(&mut self, deadline: Instant) -> Result<Controls, Error> {
        let mut controls = HashMap::new();
        for node in self.layout.nodes.clone() {
            let control = self.connect(&node, deadline).await?;
            controls.insert(node.name.clone(), (control, node));
        }
        Ok(controls)
    }

    /// Waits until every tor in `controls` that is not a relay has
    /// bootstrapped to 100 %, reporting each tor's progress as it changes.
    async fn wait_for_bootstrap(
        &mut self,
        controls: &Controls,
        deadline: Instant,
    ) -> Result<(), Error> {
        let mut seen: HashMap<String, u8> = HashMap::new();
        loop {
            let mut waiting = Vec::new();
            for (control, node) in controls.values() {
                self.check_alive(node, "bootstrapping")?;
                let phase = getinfo(control, node, "status/bootstrap-phase").await?;
                let (percent, summary) = parse_bootstrap(&phase);
                if seen.insert(node.name.clone(), percent) != Some(percent) {
                    progress(
                        self.started,
                        &format!("{}: bootstrapped {percent}% ({summary})", node.name),
                    );
                }
                if percent < 100 && !node.role.is_relay() {
                    waiting.push(node);
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let names: Vec<_> = waiting.iter().map(|n| n.name.as_str()).collect();
                return Err(self.timeout(&format!("bootstrap of {}", names.join(", ")), waiting[0]));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the client and the manager have a consensus in which
    /// every relay and authority is an HSDir.
    async fn wait_for_hsdirs(
        &mut self,
        controls: &Controls,
        deadline: Instant,
    ) -> Result<(), Error> {
        let expected = self
            .layout
            .nodes
            .iter()
            .filter(|n| n.role.is_relay())
            .count();
        for role in [Role::Client, Role::Manager] {
            let Some((control, node)) = controls.values().find(|(_, n)| n.role == role) else {
                continue;
            };
            let mut last = None;
            loop {
                self.check_alive(node, "waiting for HSDirs")?;
                let statuses = getinfo(control, node, "ns/all").await?;
                let count = count_hsdirs(&statuses);
                if last != Some(count) {
                    progress(
                        self.started,
                        &format!("{}: {count} of {expected} relays are HSDirs", node.name),
                    );
                    last = Some(count);
                }
                if count >= expected {
                    break;
                }
                if Instant::now() >= deadline {
                    let what = format!("{} to see {expected} HSDirs (has {count})", node.name);
                    return Err(self.timeout(&what, node));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// Reads each instance's onion address from its `hostname` file.
    async fn read_instance_addresses(
        &mut self,
        deadline: Instant,
    ) -> Result<Vec<OnionAddress>, Error> {
        let mut addresses = Vec::new();
        for node in self.layout.instances().cloned().collect::<Vec<_>>() {
            let path = node.hs_dir().join("hostname");
            let address = loop {
                self.check_alive(&node, "creating its onion service keys")?;
                if let Ok(text) = std::fs::read_to_string(&path) {
                    if let Ok(address) = text.trim().parse::<OnionAddress>() {
                        break address;
                    }
                }
                if Instant::now() >= deadline {
                    return Err(
                        self.timeout(&format!("{} to write {}", node.name, path.display()), &node)
                    );
                }
                tokio::time::sleep(POLL).await;
            };
            progress(self.started, &format!("{}: {address}", node.name));
            addresses.push(address);
        }
        Ok(addresses)
    }

    /// Fetches a page from every instance over its own onion address,
    /// retrying (with NEWNYM, so the client asks the HSDirs again) until
    /// each has answered with its own name.
    async fn wait_for_instances(&mut self, deadline: Instant) -> Result<(), Error> {
        let mut pending: Vec<(Node, OnionAddress)> = self
            .layout
            .instances()
            .cloned()
            .zip(self.instance_addresses.iter().copied())
            .collect();
        let mut last_error: HashMap<String, String> = HashMap::new();
        while !pending.is_empty() {
            for (node, _) in &pending {
                self.check_alive(node, "waiting for its onion service to answer")?;
                self.check_app_alive(node)?;
            }
            let this = &*self;
            let attempts = pending.drain(..).map(|(node, address)| async move {
                let result = this.fetch(&format!("http://{address}/")).await;
                (node, address, result)
            });
            for (node, address, result) in join_all(attempts).await {
                let failure = match result {
                    Ok(response) if served_by(&response.body) == Some(node.name.as_str()) => {
                        progress(
                            self.started,
                            &format!("{}: answered over {address}", node.name),
                        );
                        continue;
                    }
                    Ok(response) => format!("unexpected answer {:?}", response.body),
                    Err(e) => e.to_string(),
                };
                if last_error.get(&node.name) != Some(&failure) {
                    progress(
                        self.started,
                        &format!("{}: not reachable yet: {failure}", node.name),
                    );
                }
                last_error.insert(node.name.clone(), failure);
                pending.push((node, address));
            }
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let (node, _) = &pending[0];
                let what = format!(
                    "{} to answer over its onion address (last error: {})",
                    node.name,
                    last_error
                        .get(&node.name)
                        .map(String::as_str)
                        .unwrap_or("none")
                );
                return Err(self.timeout(&what, node));
            }
            // The client remembers which HSDirs it asked; NEWNYM makes it
            // ask again for a descriptor that may have arrived since.
            self.newnym().await?;
        }
        Ok(())
    }

    fn timeout(&self, what: &str, node: &Node) -> Error {
        Error::Timeout {
            what: what.to_owned(),
            waited: self.started.elapsed(),
            log_tail: failure_log(node),
        }
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// `GETINFO key` on `node`'s control connection.
async fn getinfo(control: &ControlClient, node: &Node, key: &str) -> Result<String, Error> {
    control.getinfo(key).await.map_err(|source| Error::Control {
        node: node.name.clone(),
        source,
    })
}

/// Control connections by node name.
type Controls = HashMap<String, (ControlClient, Node)>;

/// Removes what a tor kept in `data_dir` from an earlier network: its
/// `state` (guards of relays that no longer exist, which it would wait for
/// until its bootstrap times out) and its cached directory documents. A
/// guest's directory, unlike a node's, is not replaced on start, since the
/// caller may keep its own files there.
fn forget_earlier_network(data_dir: &Path) -> Result<(), Error> {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "state" || name.starts_with("cached-") {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(Error::io("removing", &path))?;
        }
    }
    Ok(())
}

/// Stops the network recorded in `dir` by an earlier, detached run.
pub fn stop_recorded_network(dir: &Path) -> Result<Vec<(ProcessRecord, StopOutcome)>, Error> {
    let state = State::read(dir)?;
    let outcomes = state
        .processes
        .iter()
        .map(|record| (record.clone(), process::stop_recorded(record, STOP_GRACE)))
        .collect();
    let path = State::path(dir);
    std::fs::remove_file(&path).map_err(Error::io("removing", &path))?;
    Ok(outcomes)
}

/// The end of what `node`'s tor said: its notice log, or, when tor failed
/// before opening it (a bad option, a port in use), what it printed.
fn failure_log(node: &Node) -> String {
    let notice = node.notice_log();
    let has_notice = std::fs::metadata(&notice).is_ok_and(|m| m.len() > 0);
    if has_notice {
        log_tail(&notice, TAIL_LINES)
    } else {
        log_tail(&node.data_dir.join(STDOUT_LOG), TAIL_LINES)
    }
}

/// Reports one step of progress, with the time since start.
fn progress(started: Instant, message: &str) {
    tracing::info!("[{:6.1}s] {message}", started.elapsed().as_secs_f64());
}

/// Refuses to reuse a directory whose network still runs.
fn refuse_running_network(dir: &Path) -> Result<(), Error> {
    let Ok(state) = State::read(dir) else {
        return Ok(());
    };
    if state.processes.iter().any(process::is_running) {
        return Err(Error::AlreadyRunning {
            dir: dir.to_owned(),
        });
    }
    Ok(())
}

fn absolute(dir: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    dir.canonicalize().map_err(Error::io("resolving", dir))
}

/// Makes fresh, private node directories (tor insists on mode 0700) and
/// the empty defaults torrc that keeps /etc/tor out. Returns its path.
fn prepare_directories(layout: &Layout) -> Result<PathBuf, Error> {
    for node in &layout.nodes {
        if node.data_dir.exists() {
            std::fs::remove_dir_all(&node.data_dir)
                .map_err(Error::io("removing", &node.data_dir))?;
        }
        let mut dirs = vec![node.data_dir.clone()];
        if node.role == Role::Authority {
            dirs.push(node.data_dir.join("keys"));
        }
        for dir in dirs {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(Error::io("creating", &dir))?;
        }
    }
    let defaults = layout.dir.join("torrc.defaults");
    std::fs::write(&defaults, "").map_err(Error::io("writing", &defaults))?;
    Ok(defaults)
}

/// Makes every authority's keys and every relay's identity, in parallel.
async fn make_keys(
    programs: &Programs,
    layout: &Layout,
    defaults: &Path,
) -> Result<Vec<Authority>, Error> {
    let mut tasks = JoinSet::new();
    for node in layout.nodes.iter().filter(|n| n.role.is_relay()).cloned() {
        let programs = programs.clone();
        let defaults = defaults.to_owned();
        tasks.spawn(async move {
            let v3ident = match node.role {
                Role::Authority => Some(keys::make_authority_keys(&programs, &node).await?),
                _ => None,
            };
            let fingerprint = keys::make_relay_identity(&programs, &node, &defaults).await?;
            Ok::<_, Error>((node, v3ident, fingerprint))
        });
    }
    let mut authorities = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (node, v3ident, fingerprint) =
            joined.map_err(|e| Error::Usage(format!("key task failed: {e}")))??;
        if let (Some(v3ident), Some((or_port, dir_port))) = (v3ident, node.relay_ports) {
            authorities.push(Authority {
                nickname: node.name.clone(),
                or_port,
                dir_port,
                v3ident,
                fingerprint,
            });
        }
    }
    authorities.sort_by(|a, b| a.nickname.cmp(&b.nickname));
    Ok(authorities)
}

/// A loopback port nothing listens on now. Another program could take it
/// before the caller does; on a test machine that is rare enough.
fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(Error::io("finding a free port on", Path::new("127.0.0.1")))?;
    let addr = listener
        .local_addr()
        .map_err(Error::io("finding a free port on", Path::new("127.0.0.1")))?;
    Ok(addr.port())
}

/// Writes `node`'s torrc, and an instance's `ob_config`.
fn write_config(
    node: &Node,
    authorities: &[Authority],
    options: &torrc::Options,
) -> Result<(), Error> {
    let path = node.torrc_path();
    std::fs::write(&path, torrc::torrc(node, authorities, options))
        .map_err(Error::io("writing", &path))?;
    let masters = &options.masters;
    if node.role == Role::Instance && !masters.is_empty() {
        let hs_dir = node.hs_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&hs_dir)
            .map_err(Error::io("creating", &hs_dir))?;
        let ob_config = hs_dir.join("ob_config");
        std::fs::write(&ob_config, torrc::ob_config(masters))
            .map_err(Error::io("writing", &ob_config))?;
    }
    Ok(())
}

/// Reads `PROGRESS=` and `SUMMARY=` from a bootstrap status line.
pub fn parse_bootstrap(phase: &str) -> (u8, String) {
    let percent = phase
        .split(' ')
        .find_map(|field| field.strip_prefix("PROGRESS="))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let summary = phase
        .find("SUMMARY=")
        .and_then(|i| torctl::unquote(&phase[i + "SUMMARY=".len()..]))
        .map(|(summary, _)| summary)
        .unwrap_or_default();
    (percent, summary)
}

/// Counts relays with the HSDir flag in `GETINFO ns/all` output.
pub fn count_hsdirs(statuses: &str) -> usize {
    statuses
        .lines()
        .filter_map(|line| line.strip_prefix("s "))
        .filter(|flags| flags.split(' ').any(|flag| flag == "HSDir"))
        .count()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_guest_forgets_only_the_earlier_network() {
        let dir = std::env::temp_dir().join(format!("testnet-forget-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("hs")).unwrap();
        for file in [
            "state",
            "cached-certs",
            "cached-microdescs.new",
            "app.log",
            "hs/hostname",
        ] {
            std::fs::write(dir.join(file), "x").unwrap();
        }
        forget_earlier_network(&dir).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["app.log", "hs"]);
        assert!(dir.join("hs/hostname").exists());
        std::fs::remove_dir_all(&dir).unwrap();
        // A directory that does not exist yet has nothing to forget.
        forget_earlier_network(&dir).unwrap();
    }

    #[test]
    fn bootstrap_status() {
        let (percent, summary) = parse_bootstrap(
            "NOTICE BOOTSTRAP PROGRESS=75 TAG=enough_dirinfo SUMMARY=\"Loaded enough directory info to build circuits\"",
        );
        assert_eq!(percent, 75);
        assert_eq!(summary, "Loaded enough directory info to build circuits");
        assert_eq!(parse_bootstrap("garbage"), (0, String::new()));
    }

    #[test]
    fn hsdir_count() {
        let ns = "r auth0 AAA BBB 2026-11-21 15:00:00 127.0.0.1 5000 0\ns Authority Fast HSDir Running V2Dir Valid\nr relay0 CCC DDD 2026-11-21 15:00:00 127.0.0.1 5004 0\ns Fast Running V2Dir Valid\nr relay1 x y z\ns HSDir\n";
        assert_eq!(count_hsdirs(ns), 2);
        assert_eq!(count_hsdirs(""), 0);
    }
}
