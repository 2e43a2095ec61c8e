//! The macro benchmark: each tool against the control-port simulator, for
//! growing numbers of services, measured from outside the process (CPU
//! time and peak RSS from `/proc`, wall time from its start).
//!
//! One run is one full cycle: the tool starts, reads the consensus,
//! fetches every instance's descriptor and publishes; the run ends when
//! every responsible HSDir holds, for both time periods, a master
//! descriptor of every service with intro points of each of its
//! instances, or at the bound. With an idle window, a tool that finished
//! is then left running that long with nothing changing (the simulator
//! keeps answering fetches with the same descriptors), and the CPU it
//! uses meanwhile is its idle cost.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use onionlb_core::{KeyFormat, MasterKey};
use serde::Serialize;

use crate::tool::{self, Programs, ServiceConfig, Tool};
use onionlb_bench::simulator::server::Server;
use onionlb_bench::simulator::{self, Stats, World};
use onionlb_bench::synthetic;

/// What to run.
pub struct Plan {
    /// Which tools, in order.
    pub tools: Vec<Tool>,
    /// Where they are.
    pub programs: Programs,
    /// Directory for their configs, keys and logs.
    pub dir: PathBuf,
    /// Numbers of services, one run per number and tool.
    pub services: Vec<usize>,
    /// Instances per service.
    pub instances: usize,
    /// Intro points per instance descriptor (C tor's default is 3).
    pub intro_points: usize,
    /// HSDirs in the generated consensus.
    pub relays: usize,
    /// Longest a run may take.
    pub bound: Duration,
    /// How long to keep a tool running after it finished, to measure its
    /// idle cost (zero: not measured).
    pub idle: Duration,
}

/// The figures of one run.
#[derive(Debug, Serialize)]
pub struct Figures {
    /// Which tool.
    pub tool: Tool,
    /// Services in its config.
    pub services: usize,
    /// Whether it finished the cycle within the bound.
    pub finished: bool,
    /// Seconds from start to finished (or to the bound).
    pub seconds: f64,
    /// CPU seconds (user + system) the process used by then.
    pub cpu_seconds: f64,
    /// Its peak resident set by then, MiB.
    pub peak_rss_mib: f64,
    /// HSDir slots holding a complete descriptor, and how many must.
    pub complete: usize,
    /// See `complete`.
    pub expected: usize,
    /// What it sent the simulated tor.
    pub stats: Stats,
    /// Seconds it was kept running after finishing, with nothing
    /// changing.
    pub idle_seconds: f64,
    /// CPU seconds it used in that window (`None` when not measured: not
    /// finished, no window, or it exited).
    pub idle_cpu_seconds: Option<f64>,
}

/// Every run, and the setting.
#[derive(Debug, Serialize)]
pub struct Report {
    /// HSDirs in the consensus.
    pub relays: usize,
    /// Instances per service.
    pub instances: usize,
    /// Intro points per instance.
    pub intro_points: usize,
    /// The bound on each run, seconds.
    pub bound_seconds: u64,
    /// The runs, in order.
    pub runs: Vec<Figures>,
}

/// Runs the plan.
pub async fn run(plan: &Plan) -> anyhow::Result<Report> {
    let largest = plan.services.iter().copied().max().unwrap_or(0);
    let now = SystemTime::now();
    eprintln!(
        "generating {largest} services x {} instances and {} HSDirs",
        plan.instances, plan.relays
    );
    let inputs = Inputs::generate(largest, plan.instances, plan.intro_points, plan.relays, now)?;
    let mut runs = Vec::new();
    for &services in &plan.services {
        for &tool in &plan.tools {
            let figures = one_run(plan, &inputs, tool, services).await?;
            eprintln!(
                "{tool:?}, {services} services: {} in {:.1} s, {:.2} CPU s, {:.0} MiB peak ({}/{} HSDir slots){}",
                if figures.finished { "finished" } else { "NOT finished" },
                figures.seconds,
                figures.cpu_seconds,
                figures.peak_rss_mib,
                figures.complete,
                figures.expected,
                figures.idle_cpu_seconds.map_or_else(String::new, |cpu| format!(
                    "; idle {:.0} s: {cpu:.2} CPU s",
                    figures.idle_seconds
                )),
            );
            runs.push(figures);
        }
    }
    Ok(Report {
        relays: plan.relays,
        instances: plan.instances,
        intro_points: plan.intro_points,
        bound_seconds: plan.bound.as_secs(),
        runs,
    })
}

/// The generated network, keys and descriptors, shared by every run.
struct Inputs {
    consensus: String,
    microdescs: String,
    services: Vec<simulator::Service>,
    keys: Vec<String>,
}

impl Inputs {
    fn generate(
        services: usize,
        instances: usize,
        intro_points: usize,
        relays: usize,
        now: SystemTime,
    ) -> anyhow::Result<Self> {
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs();
        let hour = synthetic::VOTING_INTERVAL.as_secs();
        let valid_after =
            SystemTime::UNIX_EPOCH + Duration::from_secs(since_epoch - since_epoch % hour);
        let (consensus, microdescs) = synthetic::network(relays, valid_after);
        let mut rng = rand::rng();
        let mut all = Vec::with_capacity(services);
        let mut keys = Vec::with_capacity(services);
        for _ in 0..services {
            let (master, _) = MasterKey::generate(&mut rng).context("generating a master key")?;
            let pem = master
                .encode(KeyFormat::Pem)
                .context("encoding a master key")?;
            keys.push(String::from_utf8(pem).context("the PEM is not text")?);
            let mut members = Vec::with_capacity(instances);
            for i in 0..instances {
                let (key, _) =
                    MasterKey::generate(&mut rng).context("generating an instance key")?;
                let first_relay = (i * intro_points) % relays.max(1);
                let points = synthetic::intro_points(intro_points, first_relay)?;
                let revision = since_epoch;
                let descriptor = synthetic::instance_descriptor(&key, &points, now, revision)?;
                members.push(simulator::Instance {
                    address: key.address(),
                    descriptor: descriptor.into(),
                    intro_points: points.iter().map(|p| *p.auth_key()).collect(),
                });
            }
            all.push(simulator::Service {
                address: master.address(),
                instances: members,
            });
        }
        Ok(Inputs {
            consensus,
            microdescs,
            services: all,
            keys,
        })
    }
}

async fn one_run(
    plan: &Plan,
    inputs: &Inputs,
    tool: Tool,
    services: usize,
) -> anyhow::Result<Figures> {
    let chosen = &inputs.services[..services];
    let world = World::new(&inputs.consensus, &inputs.microdescs, chosen)?;
    let mut server = Server::start(world).await?;
    let dir = plan.dir.join(format!("{tool:?}-{services}").to_lowercase());
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let configs: Vec<ServiceConfig<'_>> = chosen
        .iter()
        .zip(&inputs.keys)
        .enumerate()
        .map(|(s, (service, key_pem))| ServiceConfig {
            key_pem,
            instances: service
                .instances
                .iter()
                .enumerate()
                .map(|(i, instance)| (format!("s{s}i{i}"), instance.address))
                .collect(),
        })
        .collect();
    let config = tool::write_config(&dir, &configs, "", |_, _| String::new())?;
    let started = Instant::now();
    let mut running = tool::start_plain(tool, &plan.programs, &dir, &config, server.port())?;
    let pid = running.pid().context("the tool has no process")?;
    let deadline = started + plan.bound;
    let finished = loop {
        if server.finished_within(Duration::from_millis(200)).await {
            break true;
        }
        if running.exited() {
            eprintln!(
                "{tool:?} exited before finishing; see {}",
                running.log().display()
            );
            break false;
        }
        if Instant::now() >= deadline {
            break false;
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let usage = Usage::of(pid).unwrap_or_default();
    let ((complete, expected), stats) = server.progress();
    let mut idle_cpu_seconds = None;
    if finished && !plan.idle.is_zero() {
        // The simulator serves from this process's runtime meanwhile.
        tokio::time::sleep(plan.idle).await;
        if !running.exited() {
            let after = Usage::of(pid).unwrap_or_default();
            idle_cpu_seconds = Some(after.cpu_seconds - usage.cpu_seconds);
        }
    }
    running.stop();
    Ok(Figures {
        tool,
        services,
        finished,
        seconds,
        cpu_seconds: usage.cpu_seconds,
        peak_rss_mib: usage.peak_rss_kib as f64 / 1024.0,
        complete,
        expected,
        stats,
        idle_seconds: if idle_cpu_seconds.is_some() {
            plan.idle.as_secs_f64()
        } else {
            0.0
        },
        idle_cpu_seconds,
    })
}

/// A process's use of the machine so far, from `/proc`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) cpu_seconds: f64,
    peak_rss_kib: u64,
}

impl Usage {
    pub(crate) fn of(pid: u32) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .context("no clock tick rate")?;
        Ok(Usage {
            cpu_seconds: cpu_ticks(&stat).context("reading CPU times")? as f64 / ticks as f64,
            peak_rss_kib: peak_rss_kib(&status).context("reading VmHWM")?,
        })
    }
}

/// `utime + stime` from `/proc/PID/stat` (fields 14 and 15; the command
/// name in field 2 may hold spaces, so count from its closing paren).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `VmHWM` from `/proc/PID/status`, in KiB.
fn peak_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cpu_and_memory_are_read_from_proc() {
        let stat = "4242 (tor (x)) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(stat), Some(200));
        let status = "Name:\tpython3\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(peak_rss_kib(status), Some(2048));
        let own = Usage::of(std::process::id()).unwrap();
        assert!(own.peak_rss_kib > 0);
    }
}
