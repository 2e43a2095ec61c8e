//! The two balancers under test, started the way an operator would start
//! them, from one config file they both read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use onionlb_core::agent::AgentKey;
use onionlb_core::OnionAddress;
use serde::Serialize;

/// Which balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    /// This project (with an agent beside each instance in the network run).
    Onionlb,
    /// This project without agents, as a new operator starts it: the
    /// manager probes the instances through its tor (the network run; the
    /// same as `onionlb` against the simulator).
    #[serde(rename = "onionlb-no-agents")]
    OnionlbNoAgents,
    /// Python Onionbalance (0.2.4 from PyPI).
    Onionbalance,
}

/// Where the programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The `onionlb` binary.
    pub onionlb: PathBuf,
    /// The `onionbalance` script in its venv.
    pub onionbalance: PathBuf,
}

/// One instance, as the balancer and its agent need it.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Its name (what its app answers with).
    pub name: String,
    /// Its onion address.
    pub address: OnionAddress,
    /// Its tor's control port.
    pub control_port: u16,
    /// Its application's port.
    pub app_port: u16,
}

/// A started balancer (and, for onionlb, its agents). Stopped on drop.
pub struct Running {
    children: Vec<(String, Child)>,
    log: PathBuf,
}

/// One service in a config file: its master key and its instances'
/// `(name, address)`.
pub struct ServiceConfig<'a> {
    /// The master key, PEM.
    pub key_pem: &'a str,
    /// Its instances.
    pub instances: Vec<(String, OnionAddress)>,
}

/// Writes the config both tools read, in Python Onionbalance's format: a
/// key file per service and the instances, plus `top` lines before
/// `services:` and `extra(service, instance)` lines per instance.
pub fn write_config(
    dir: &Path,
    services: &[ServiceConfig<'_>],
    top: &str,
    extra: impl Fn(usize, usize) -> String,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut yaml = format!("{top}services:\n");
    for (s, service) in services.iter().enumerate() {
        let key_file = if services.len() == 1 {
            "master.key".to_owned()
        } else {
            format!("master{s}.key")
        };
        write_private(&dir.join(&key_file), service.key_pem.as_bytes())?;
        yaml.push_str(&format!("- key: {key_file}\n  instances:\n"));
        for (i, (name, address)) in service.instances.iter().enumerate() {
            yaml.push_str(&format!(
                "  - address: {address}\n    name: {name}\n{}",
                extra(s, i)
            ));
        }
    }
    let config = dir.join("config.yaml");
    std::fs::write(&config, yaml).with_context(|| format!("writing {}", config.display()))?;
    Ok(config)
}

/// The one service of the network benchmark.
fn network_service<'a>(key_pem: &'a str, instances: &[InstanceSpec]) -> [ServiceConfig<'a>; 1] {
    [ServiceConfig {
        key_pem,
        instances: instances
            .iter()
            .map(|i| (i.name.clone(), i.address))
            .collect(),
    }]
}

/// Starts `tool` with `config` against the control port `control_port`,
/// as an operator would with no options beyond the defaults: each tool
/// logs at its own default level. No agents.
pub fn start_plain(
    tool: Tool,
    programs: &Programs,
    dir: &Path,
    config: &Path,
    control_port: u16,
) -> anyhow::Result<Running> {
    let (name, child, log) = spawn_balancer(tool, programs, dir, config, control_port, &[])?;
    Ok(Running {
        children: vec![(name, child)],
        log,
    })
}

/// Starts `tool` in `dir` against the management tor's control port, at
/// its most verbose useful level: Python Onionbalance with
/// `--is-testnet`, onionlb with an agent beside each instance (or, as
/// `onionlb-no-agents`, without).
pub fn start(
    tool: Tool,
    programs: &Programs,
    dir: &Path,
    key_pem: &str,
    instances: &[InstanceSpec],
    control_port: u16,
) -> anyhow::Result<Running> {
    let service = network_service(key_pem, instances);
    if tool == Tool::Onionbalance {
        let config = write_config(dir, &service, "", |_, _| String::new())?;
        let options = ["--is-testnet", "-v", "info"];
        let (name, child, log) =
            spawn_balancer(tool, programs, dir, &config, control_port, &options)?;
        return Ok(Running {
            children: vec![(name, child)],
            log,
        });
    }
    if tool == Tool::OnionlbNoAgents {
        let config = write_config(dir, &service, "", |_, _| String::new())?;
        let (name, child, log) =
            spawn_balancer(tool, programs, dir, &config, control_port, &["-v", "debug"])?;
        return Ok(Running {
            children: vec![(name, child)],
            log,
        });
    }
    let socket = dir.join("agents.sock");
    let keys: Vec<AgentKey> = instances
        .iter()
        .map(|_| AgentKey::generate(&mut rand::rng()))
        .collect();
    let top = format!("agents:\n  socket: {}\n", socket.display());
    let config = write_config(dir, &service, &top, |_, i| {
        format!("    agent-key: {}\n", keys[i].public())
    })?;
    let (name, manager, log) =
        spawn_balancer(tool, programs, dir, &config, control_port, &["-v", "debug"])?;
    let mut children = vec![(name, manager)];
    wait_for_path(&socket, Duration::from_secs(30))?;
    for (instance, key) in instances.iter().zip(&keys) {
        let key_file = dir.join(format!("{}.agent.key", instance.name));
        write_private(&key_file, key.to_file_text().as_bytes())?;
        let agent = spawn_logged(
            Command::new(&programs.onionlb)
                .args(["agent", "run", "--key"])
                .arg(&key_file)
                .args(["--address", &instance.address.to_string()])
                .args([
                    "--control-port",
                    &format!("127.0.0.1:{}", instance.control_port),
                ])
                .args([
                    "--probe",
                    &format!("http://127.0.0.1:{}/", instance.app_port),
                ])
                .arg("--manager")
                .arg(format!("unix:{}", socket.display())),
            &dir.join(format!("{}.agent.log", instance.name)),
        )?;
        children.push((format!("{} agent", instance.name), agent));
    }
    Ok(Running { children, log })
}

/// Starts the balancer itself with `options` before its control port and
/// config arguments, logging to `dir`; returns its name, process and log.
fn spawn_balancer(
    tool: Tool,
    programs: &Programs,
    dir: &Path,
    config: &Path,
    control_port: u16,
    options: &[&str],
) -> anyhow::Result<(String, Child, PathBuf)> {
    let port = control_port.to_string();
    let (name, program, address): (&str, _, &[&str]) = match tool {
        Tool::Onionbalance => ("onionbalance", &programs.onionbalance, &["-i", "127.0.0.1"]),
        Tool::Onionlb | Tool::OnionlbNoAgents => ("onionlb", &programs.onionlb, &[]),
    };
    let log = dir.join(format!("{name}.log"));
    let child = spawn_logged(
        Command::new(program)
            .args(options)
            .args(address)
            .args(["-p", &port, "-c"])
            .arg(config),
        &log,
    )?;
    Ok((name.to_owned(), child, log))
}

impl Running {
    /// The balancer's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The balancer's process id.
    pub fn pid(&self) -> Option<u32> {
        self.children.first().map(|(_, child)| child.id())
    }

    /// Whether the balancer has exited.
    pub fn exited(&mut self) -> bool {
        self.children
            .first_mut()
            .is_some_and(|(_, child)| !matches!(child.try_wait(), Ok(None)))
    }

    /// Stops every process it started (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        for (name, child) in self.children.iter_mut().rev() {
            let Ok(pid) = i32::try_from(child.id()) else {
                continue;
            };
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("{name} did not stop within 10 s of SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.children.clear();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn spawn_logged(command: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone().context("duplicating a log file handle")?;
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))
}

fn wait_for_path(path: &Path, bound: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + bound;
    while !path.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not appear within {bound:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// [`testnet::keys::write_private`], with the path in the error.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    testnet::keys::write_private(path, bytes).with_context(|| format!("writing {}", path.display()))
}
