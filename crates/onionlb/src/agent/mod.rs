//! `onionlb agent`: runs beside one backend instance, follows its tor and
//! its application, and tells the manager at once when either fails or
//! when tor has a new descriptor.
//!
//! Without an agent the manager learns of a dead instance only when its
//! descriptor expires on the HSDirs (hours on the real network), and of
//! new intro points at its next fetch. With one, both take seconds:
//!
//! * health: every heartbeat the agent says `HEALTH UP` or `HEALTH DOWN
//!   <why>`; it says DOWN at once when tor's control connection breaks or
//!   the application fails `--probe-failures` probes in a row. A manager
//!   that hears nothing for its heartbeat timeout counts the instance as
//!   down too, which covers the whole machine going away.
//! * descriptors: when tor uploads a descriptor (an `HS_DESC UPLOADED`
//!   event) and every heartbeat, the agent reads tor's current descriptor
//!   (`GETINFO hs/service/desc/id/<address>`) and pushes it if it changed.
//!   The manager checks it exactly as it checks a fetched one.
//! * tor's run: on connecting to tor the agent reads its pid and uptime,
//!   and tells the manager before its first push. A restarted tor has new
//!   intro points for both of its descriptors; told of a new run, the
//!   manager drops the old one's, including those of the descriptor the
//!   new tor has not uploaded yet.
//!
//! After tor (re)starts the agent says UP only once the manager has
//! accepted a descriptor from this tor. A freshly started tor already
//! answers the GETINFO with a descriptor that has no intro points yet; the
//! manager rejects that one, and an UP before the real one arrived would
//! bring the instance back with the intro points of the tor that died.

mod link;
mod probe;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use onionlb_core::agent::{AgentKey, Health, ToAgent, ToManager, TorProcess};
use onionlb_core::OnionAddress;
use tokio::sync::mpsc;
use torctl::{Backoff, Command, Connector, ControlAddr, ControlClient, Event, Reply};

use crate::cli::{AgentArgs, AgentCommand, KeygenArgs};
use link::{Link, ManagerAddr};
use probe::Probe;

/// The shortest time between two runs of the restart command.
const RESTART_COOLDOWN: Duration = Duration::from_secs(60);
/// Bound on reaching and logging in to the manager (an onion service
/// connection takes several round trips through tor).
const LINK_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the manager's answer to a pushed descriptor.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a descriptor the manager rejected waits before it is pushed
/// again (the rejection may have been the rate limit).
const REJECTED_RETRY: Duration = Duration::from_secs(30);

/// Runs `onionlb agent ...`.
pub async fn run(command: AgentCommand) -> anyhow::Result<()> {
    match command {
        AgentCommand::Keygen(args) => keygen(&args),
        AgentCommand::Run(args) => Agent::new(*args)?.run().await,
    }
}

/// Which run of tor `control` speaks to: its pid and, from its uptime,
/// when it started. `None`, said in the log, from a tor that does not
/// tell (before 0.3.5); the manager then cannot tell a restart apart.
async fn tor_process(control: &ControlClient) -> Option<TorProcess> {
    let read = async {
        let pid = control
            .getinfo("process/pid")
            .await
            .map_err(|e| e.to_string())?;
        let uptime = control.getinfo("uptime").await.map_err(|e| e.to_string())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let pid: u32 = pid.trim().parse().map_err(|_| format!("pid {pid:?}"))?;
        let uptime: u64 = uptime
            .trim()
            .parse()
            .map_err(|_| format!("uptime {uptime:?}"))?;
        Ok::<_, String>(TorProcess {
            pid,
            started: now.saturating_sub(uptime),
        })
    };
    match read.await {
        Ok(process) => Some(process),
        Err(e) => {
            tracing::warn!("tor does not say which process it is ({e}); the manager will not notice it restarting");
            None
        }
    }
}

/// Writes a new key, or reads the existing one, and prints what the
/// manager's configuration needs.
fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let key = if args.key.exists() {
        let key = read_key(&args.key)?;
        println!("{} exists; its public keys:", args.key.display());
        key
    } else {
        let key = AgentKey::generate(&mut rand::rng());
        crate::private_file::create(&args.key, key.to_file_text().as_bytes())
            .with_context(|| format!("writing {}", args.key.display()))?;
        println!("wrote the agent key {}", args.key.display());
        key
    };
    println!("In the manager's config.yaml, under this instance:");
    println!("    agent-key: {}", key.public());
    println!(
        "    agent-client-auth: {}   # only for agents reaching the manager's onion service",
        key.client_auth_public()
    );
    Ok(())
}

fn read_key(path: &Path) -> anyhow::Result<AgentKey> {
    let bytes = torctl::file::read_capped(path, crate::SMALL_FILE_MAX)
        .map(zeroize::Zeroizing::new)
        .context("reading the agent key")?;
    let text = std::str::from_utf8(&bytes)
        .with_context(|| format!("reading the agent key {}: not UTF-8 text", path.display()))?;
    AgentKey::from_file_text(text).with_context(|| format!("reading {}", path.display()))
}

/// The agent's state between events.
struct Agent {
    key: AgentKey,
    instance: OnionAddress,
    manager_addr: ManagerAddr,
    socks: std::net::SocketAddr,
    connector: Connector,
    heartbeat: Duration,
    probe: Option<Probe>,
    probe_failures_allowed: u32,
    restart_command: Option<String>,
    restart_after: u32,
    drain_file: Option<std::path::PathBuf>,

    tor: Option<ControlClient>,
    tor_events: Option<torctl::Events>,
    /// Which run of tor that is, if tor said, and whether the manager was
    /// told on this link.
    tor_process: Option<TorProcess>,
    tor_process_sent: bool,
    /// Why tor is not usable, if it is not.
    tor_problem: Option<String>,
    /// Failed probes in a row, and the last failure.
    probe_failures: u32,
    probe_problem: String,
    link: Option<Link>,
    link_backoff: Backoff,
    next_link_attempt: Instant,
    /// Whether the manager accepted a descriptor of this tor connection's.
    descriptor_accepted: bool,
    /// Why the manager rejected the last descriptor pushed, if it did.
    rejection: Option<String>,
    /// The health the manager last got on this link, and which descriptor
    /// (see [`descriptor_identity`]).
    sent_health: Option<Health>,
    sent_descriptor: Option<String>,
    /// When a rejected descriptor may be pushed again.
    retry_rejected_at: Option<Instant>,
    unhealthy_beats: u32,
    last_restart: Option<Instant>,
    /// How the manager last said the drain stands (`serving`,
    /// `draining`, `drained until ...`), on this link.
    drain_state: Option<String>,
}

impl Agent {
    fn new(args: AgentArgs) -> anyhow::Result<Self> {
        let key = read_key(&args.key)?;
        let instance = match (&args.address, &args.hidden_service_dir) {
            (Some(address), _) => *address,
            (None, Some(dir)) => {
                let hostname = dir.join("hostname");
                let bytes = torctl::file::read_capped(&hostname, crate::SMALL_FILE_MAX)?;
                String::from_utf8_lossy(&bytes)
                    .trim()
                    .parse()
                    .with_context(|| format!("reading {}", hostname.display()))?
            }
            (None, None) => bail!("give --address or --hidden-service-dir"),
        };
        let manager_addr: ManagerAddr = args
            .manager
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--manager {e}"))?;
        let probe = args
            .probe
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: String| anyhow::anyhow!("--probe {e}"))?;
        let control = match &args.control_socket {
            Some(path) => ControlAddr::Unix(path.clone()),
            None => ControlAddr::Tcp(args.control_port),
        };
        let credentials =
            crate::manager::password_file_credentials(args.control_password_file.as_deref())?;
        if args.heartbeat == 0 {
            bail!("--heartbeat must be at least 1 second");
        }
        Ok(Agent {
            key,
            instance,
            manager_addr,
            socks: args.socks,
            connector: Connector::new(control, credentials)
                .subscribe(["HS_DESC"])
                .with_options(torctl::Options {
                    command_timeout: Duration::from_secs(args.control_timeout),
                    ..torctl::Options::default()
                }),
            heartbeat: Duration::from_secs(args.heartbeat),
            probe,
            probe_failures_allowed: args.probe_failures.max(1),
            restart_command: args.restart_command,
            restart_after: args.restart_after.max(1),
            drain_file: args.drain_file,
            tor: None,
            tor_events: None,
            tor_process: None,
            tor_process_sent: false,
            tor_problem: Some("not connected to tor yet".into()),
            probe_failures: 0,
            probe_problem: String::new(),
            link: None,
            link_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            next_link_attempt: Instant::now(),
            descriptor_accepted: false,
            rejection: None,
            sent_health: None,
            sent_descriptor: None,
            retry_rejected_at: None,
            unhealthy_beats: 0,
            last_restart: None,
            drain_state: None,
        })
    }

    async fn run(mut self) -> anyhow::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT")?;
        let (probe_results, mut probes) = mpsc::channel(4);
        if let Some(probe) = self.probe.clone() {
            tokio::spawn(run_probes(probe, self.heartbeat, probe_results));
        }
        tracing::info!(
            "agent for {} reporting to {}",
            self.instance,
            self.manager_addr
        );
        let mut beat = tokio::time::interval(self.heartbeat);
        // A slow answer from the manager delays the beat; no burst after.
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = beat.tick() => self.on_heartbeat().await,
                reply = next_event(&mut self.tor_events) => match reply {
                    Some(reply) => self.on_tor_event(&reply).await,
                    None => self.tor_lost("tor closed the control connection".into()).await,
                },
                Some(result) = probes.recv() => self.on_probe(result).await,
                message = next_message(&mut self.link) => self.on_manager(message),
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        tracing::info!("stopping");
        Ok(())
    }

    /// Connects what is not connected, reads tor's descriptor, and sends
    /// the heartbeat.
    async fn on_heartbeat(&mut self) {
        if self.tor.is_none() {
            self.connect_tor().await;
        }
        if self.link.is_none() && Instant::now() >= self.next_link_attempt {
            self.connect_manager().await;
        }
        self.push_descriptor().await;
        self.follow_drain_file().await;
        let health = self.health();
        self.send(&ToManager::Health(health.clone())).await;
        self.sent_health = Some(health.clone());
        if let Health::Down(why) = health {
            self.unhealthy_beats += 1;
            self.maybe_restart(&why);
        } else {
            self.unhealthy_beats = 0;
        }
    }

    async fn connect_tor(&mut self) {
        match self.connector.connect().await {
            Ok(control) => {
                tracing::info!("connected to tor at {}", self.connector.addr());
                if let ManagerAddr::Onion(address, _) = &self.manager_addr {
                    let auth = Command::new("ONION_CLIENT_AUTH_ADD")
                        .arg(address.without_suffix())
                        .arg(self.key.client_auth_secret());
                    if let Err(e) = control.request(&auth).await {
                        tracing::error!("tor refused our client key for {address}: {e}");
                    }
                }
                self.tor_events = control.take_events();
                self.tor_process = tor_process(&control).await;
                self.tor_process_sent = false;
                self.tor = Some(control);
                self.tor_problem = None;
                self.descriptor_accepted = false;
                self.sent_descriptor = None;
                self.push_descriptor().await;
                self.report_if_changed().await;
            }
            Err(e) => {
                let problem = format!("tor's control port does not answer: {e}");
                if self.tor_problem.as_deref() != Some(problem.as_str()) {
                    tracing::warn!("{problem}");
                }
                self.tor_problem = Some(problem);
            }
        }
    }

    async fn tor_lost(&mut self, why: String) {
        tracing::warn!("lost tor: {why}");
        self.tor = None;
        self.tor_events = None;
        self.descriptor_accepted = false;
        self.tor_problem = Some(format!("lost tor's control connection: {why}"));
        self.report_if_changed().await;
    }

    async fn connect_manager(&mut self) {
        let attempt = Link::open(&self.manager_addr, self.socks, &self.key, self.instance);
        let result = match tokio::time::timeout(LINK_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!("no login within {LINK_TIMEOUT:?}")),
        };
        match result {
            Ok(link) => {
                tracing::info!("logged in to the manager at {}", self.manager_addr);
                self.link = Some(link);
                self.link_backoff.reset();
                self.sent_descriptor = None;
                self.sent_health = None;
                // A manager that restarted has forgotten the drain.
                self.drain_state = None;
                self.tor_process_sent = false;
            }
            Err(e) => {
                let delay = self.link_backoff.next_delay(&mut rand::rng());
                tracing::warn!("cannot reach the manager: {e}; trying again in {delay:.1?}");
                self.next_link_attempt = Instant::now() + delay;
            }
        }
    }

    /// Sends `message` if logged in; a failed send drops the link.
    async fn send(&mut self, message: &ToManager) {
        let Some(link) = &mut self.link else {
            return;
        };
        if let Err(e) = link.send(message).await {
            tracing::warn!("{e}; reconnecting");
            self.link = None;
        }
    }

    /// Reads tor's current descriptor and, if the manager does not have it
    /// yet, pushes it and waits for the manager's answer.
    async fn push_descriptor(&mut self) {
        if self.tor.is_none() || self.link.is_none() {
            return;
        }
        // The manager learns of a new tor before its first descriptor, so
        // it drops the old run's intro points first.
        if let (Some(process), false) = (self.tor_process, self.tor_process_sent) {
            self.send(&ToManager::Tor(process)).await;
            self.tor_process_sent = self.link.is_some();
        }
        let (Some(tor), Some(_)) = (&self.tor, &self.link) else {
            return;
        };
        let key = format!("hs/service/desc/id/{}", self.instance.without_suffix());
        let descriptor = match tor.getinfo(&key).await {
            Ok(descriptor) => descriptor,
            Err(e) => {
                tracing::debug!("no descriptor from tor yet: {e}");
                return;
            }
        };
        // tor encrypts the descriptor afresh for every GETINFO, so the
        // text differs each time; its revision says whether it is new.
        let identity = descriptor_identity(&descriptor);
        let retry_due = self
            .retry_rejected_at
            .is_some_and(|at| Instant::now() >= at);
        if identity.is_some() && self.sent_descriptor == identity && !retry_due {
            return;
        }
        self.send(&ToManager::Descriptor(descriptor)).await;
        let Some(link) = &mut self.link else {
            return;
        };
        self.sent_descriptor = identity;
        self.retry_rejected_at = None;
        let answer = match tokio::time::timeout(ANSWER_TIMEOUT, link.next()).await {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "no answer to a descriptor within {ANSWER_TIMEOUT:?}"
            )),
        };
        match answer {
            Ok(ToAgent::Accepted(what)) => {
                tracing::info!("pushed tor's current descriptor; the manager took it: {what}");
                self.descriptor_accepted = true;
                self.rejection = None;
            }
            Ok(ToAgent::Rejected(why)) => {
                // Expected once after every tor start: the descriptor tor
                // has before its intro points are up is incomplete.
                tracing::warn!("the manager rejected tor's current descriptor: {why}");
                self.retry_rejected_at = Some(Instant::now() + REJECTED_RETRY);
                self.rejection = Some(why);
            }
            Ok(other) => {
                tracing::warn!("unexpected answer to a descriptor: {other:?}; reconnecting");
                self.link = None;
            }
            Err(e) => {
                tracing::warn!("{e}; reconnecting");
                self.link = None;
            }
        }
        self.report_if_changed().await;
    }

    /// Asks the manager to drain the instance while the drain file exists
    /// (again each heartbeat until it is drained), and to let it back in
    /// once the file is gone; says when the manager's answer changes.
    async fn follow_drain_file(&mut self) {
        let Some(path) = self.drain_file.clone() else {
            return;
        };
        let wanted = path.exists();
        let settled = match self.drain_state.as_deref() {
            Some(state) if wanted => state.starts_with("drained"),
            Some(state) => state == "serving",
            // Nothing asked on this link yet: only a drain needs asking.
            None => !wanted,
        };
        if settled {
            return;
        }
        self.send(&ToManager::Drain(wanted)).await;
        let Some(link) = &mut self.link else {
            return;
        };
        let answer = match tokio::time::timeout(ANSWER_TIMEOUT, link.next()).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer to a drain within {ANSWER_TIMEOUT:?}")),
        };
        match answer {
            Ok(ToAgent::Accepted(state)) => {
                if self.drain_state.as_deref() != Some(state.as_str()) {
                    if state.starts_with("drained") {
                        tracing::info!(
                            "{}: every HSDir has a master descriptor without this instance: safe to stop (clients that fetched one before may still try it, {state})",
                            path.display()
                        );
                    } else {
                        tracing::info!("{}: the manager says {state}", path.display());
                    }
                }
                self.drain_state = Some(state);
            }
            Ok(ToAgent::Rejected(why)) => {
                if self.drain_state.as_deref() != Some(why.as_str()) {
                    tracing::warn!("{}: the manager refused to drain: {why}", path.display());
                }
                self.drain_state = Some(why);
            }
            Ok(other) => {
                tracing::warn!("unexpected answer to a drain: {other:?}; reconnecting");
                self.link = None;
            }
            Err(e) => {
                tracing::warn!("{e}; reconnecting");
                self.link = None;
            }
        }
    }

    async fn on_tor_event(&mut self, reply: &Reply) {
        if let Event::HsDesc(event) = Event::parse(reply) {
            if event.action == torctl::HsDescAction::Uploaded
                && event.address == self.instance.without_suffix()
            {
                self.push_descriptor().await;
            }
        }
    }

    async fn on_probe(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                if self.probe_failures >= self.probe_failures_allowed {
                    tracing::info!("the application answers again");
                }
                self.probe_failures = 0;
            }
            Err(why) => {
                self.probe_failures += 1;
                if self.probe_failures == self.probe_failures_allowed {
                    tracing::warn!(
                        "the application failed {} probe(s) in a row: {why}",
                        self.probe_failures
                    );
                }
                self.probe_problem = why;
            }
        }
        self.report_if_changed().await;
    }

    /// A message from the manager that answers nothing: the manager only
    /// ever answers, so this is a fault (or the connection's end).
    fn on_manager(&mut self, message: Result<ToAgent, String>) {
        match message {
            Ok(other) => tracing::debug!("unexpected message from the manager: {other:?}"),
            Err(e) => {
                tracing::warn!("{e}; reconnecting");
                self.link = None;
            }
        }
    }

    /// The instance's health as the agent sees it.
    fn health(&self) -> Health {
        if let Some(problem) = &self.tor_problem {
            return Health::Down(problem.clone());
        }
        if !self.descriptor_accepted {
            return Health::Down(match &self.rejection {
                Some(why) => format!("the manager rejected tor's descriptor: {why}"),
                None => "the manager has no descriptor from this tor yet".into(),
            });
        }
        if self.probe_failures >= self.probe_failures_allowed {
            return Health::Down(format!(
                "the application fails its probe: {}",
                self.probe_problem
            ));
        }
        Health::Up
    }

    /// Tells the manager at once when health changed, instead of at the
    /// next heartbeat.
    async fn report_if_changed(&mut self) {
        let health = self.health();
        if self.sent_health.as_ref() == Some(&health) {
            return;
        }
        match &health {
            Health::Up => tracing::info!("healthy"),
            Health::Down(why) => tracing::warn!("unhealthy: {why}"),
        }
        self.send(&ToManager::Health(health.clone())).await;
        self.sent_health = Some(health);
    }

    /// Runs the restart command after enough unhealthy heartbeats, at most
    /// once per [`RESTART_COOLDOWN`].
    fn maybe_restart(&mut self, why: &str) {
        let Some(command) = &self.restart_command else {
            return;
        };
        if self.unhealthy_beats < self.restart_after
            || self
                .last_restart
                .is_some_and(|at| at.elapsed() < RESTART_COOLDOWN)
        {
            return;
        }
        self.last_restart = Some(Instant::now());
        tracing::warn!(
            "unhealthy for {} heartbeats ({why}); running: {command}",
            self.unhealthy_beats
        );
        let command = command.clone();
        tokio::spawn(async move {
            match tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .status()
                .await
            {
                Ok(status) if status.success() => tracing::info!("restart command succeeded"),
                Ok(status) => tracing::error!("restart command failed: {status}"),
                Err(e) => tracing::error!("cannot run the restart command: {e}"),
            }
        });
    }
}

/// What tells two of tor's encodings of its descriptor apart: the blinded
/// key's certificate (the period) and the revision counter. The rest is
/// encrypted afresh each time.
fn descriptor_identity(descriptor: &str) -> Option<String> {
    let revision = descriptor
        .lines()
        .find(|l| l.starts_with("revision-counter "))?;
    let cert_start = descriptor.find("descriptor-signing-key-cert")?;
    let cert_end = descriptor[cert_start..].find("-----END")? + cert_start;
    Some(format!("{revision}\n{}", &descriptor[cert_start..cert_end]))
}

/// Probes every `every`, sending each result.
async fn run_probes(probe: Probe, every: Duration, results: mpsc::Sender<Result<(), String>>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if results.send(probe.check(every).await).await.is_err() {
            return;
        }
    }
}

/// The next event from tor, or `None` when the connection ended; waits
/// for ever when there is no connection.
async fn next_event(events: &mut Option<torctl::Events>) -> Option<Reply> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// The manager's next message; waits for ever when there is no link.
async fn next_message(link: &mut Option<Link>) -> Result<ToAgent, String> {
    match link {
        Some(link) => link.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn descriptor(revision: u64, cert: &str, body: &str) -> String {
        format!(
            "hs-descriptor 3\ndescriptor-lifetime 180\ndescriptor-signing-key-cert\n-----BEGIN ED25519 CERT-----\n{cert}\n-----END ED25519 CERT-----\nrevision-counter {revision}\nsuperencrypted\n-----BEGIN MESSAGE-----\n{body}\n-----END MESSAGE-----\nsignature x\n"
        )
    }

    #[test]
    fn re_encryptions_of_one_descriptor_are_one_descriptor() {
        let first = descriptor(7, "AAAA", "one encryption");
        let again = descriptor(7, "AAAA", "another encryption");
        assert_ne!(first, again);
        assert_eq!(descriptor_identity(&first), descriptor_identity(&again));
        assert!(descriptor_identity(&first).is_some());
        // A new revision, or the other period's certificate, is news.
        assert_ne!(
            descriptor_identity(&first),
            descriptor_identity(&descriptor(8, "AAAA", "x"))
        );
        assert_ne!(
            descriptor_identity(&first),
            descriptor_identity(&descriptor(7, "BBBB", "x"))
        );
        assert_eq!(descriptor_identity("not a descriptor"), None);
    }
}
