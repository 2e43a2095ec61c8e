//! The network benchmark: the balancers, one after the other, on one
//! private Tor network, each with its own master key over the same
//! instances: first three of them, for the timings of an instance's death
//! and return; then 2, 3 and 6, for how evenly clients spread. Every time
//! and share is taken from what a client sees (a page fetched over the
//! master address, or the descriptor the HSDirs serve), never from a
//! balancer's own log.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use onionlb_core::{MasterKey, OnionAddress};
use serde::Serialize;
use testnet::app::served_by;
use testnet::Testnet;
use torctl::{ControlAddr, Credentials, Event};

use crate::observe::{HsdirView, IntroId};
use crate::tool::{self, InstanceSpec, Programs, Tool};

/// How long a tool has to get every instance onto every HSDir before the
/// kill.
const SETTLE_BOUND: Duration = Duration::from_secs(180);
/// Instances behind the master address for the kill and the restart.
const KILL_INSTANCES: usize = 3;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The tools, in the order they run.
    pub tools: Vec<Tool>,
    /// Where they are.
    pub programs: Programs,
    /// Where the network and the tools keep their files.
    pub dir: PathBuf,
    /// Bound on every wait.
    pub bound: Duration,
    /// Requests for each client spread, each over fresh circuits after a
    /// fresh descriptor fetch.
    pub spread_requests: usize,
    /// Instance counts whose client spread is measured.
    pub spread_instances: Vec<usize>,
    /// Relays besides the three authorities.
    pub relays: usize,
}

/// One tool's figures; `None` where the event did not happen within the
/// bound.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Which tool.
    pub tool: Tool,
    /// From starting the tool to a page fetched over the master address.
    pub start_to_reachable_s: Option<f64>,
    /// Whether every HSDir served a master descriptor with every instance
    /// before instance0 was killed.
    pub all_in_before_kill: bool,
    /// From killing instance0's tor to the first HSDir serving a master
    /// descriptor without its intro points.
    pub kill_to_first_hsdir_without_s: Option<f64>,
    /// ... to every HSDir serving one without them.
    pub kill_to_all_hsdirs_without_s: Option<f64>,
    /// From killing instance0's tor to 10 requests in a row succeeding.
    pub kill_to_ten_in_a_row_s: Option<f64>,
    /// Requests that failed before those 10.
    pub failed_requests_after_kill: usize,
    /// From the restarted instance0's tor uploading its descriptor (new
    /// intro points) to the first HSDir serving a master descriptor with
    /// one of them.
    pub upload_to_first_hsdir_with_s: Option<f64>,
    /// ... to every HSDir serving one with them.
    pub upload_to_all_hsdirs_with_s: Option<f64>,
    /// How clients spread over 2, 3, 6 instances (not measured for
    /// `onionlb-no-agents`: agents change nothing in it).
    pub spread: Vec<Spread>,
}

/// Which instance answered clients, each of which fetched the master
/// descriptor anew (from the HSDir tor picks, as a client does) and
/// connected over fresh circuits.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// Instances behind the master address.
    pub instances: usize,
    /// Whether every HSDir served a master descriptor of exactly these
    /// instances before the requests (within the settle bound).
    pub settled: bool,
    /// Answers per instance.
    pub share: BTreeMap<String, usize>,
    /// Requests that failed.
    pub failures: usize,
    /// Answers per instance expected from the descriptors the client
    /// held: for each answered request, the instance's share of the
    /// intro points in the master descriptor the client had just
    /// fetched. Where `share` strays from this, the client's choice of
    /// intro point did; where this strays from even, the descriptors did.
    pub expected: BTreeMap<String, f64>,
    /// Fetches per HSDir that served them, the intro points per instance
    /// (in `share`'s order) of what each served, and how many of its
    /// intro points belong to no instance the harness knows of (an
    /// instance's next-period intro points, which nothing shows before
    /// that period, or dead ones).
    pub fetched_from: BTreeMap<String, (usize, Vec<usize>, usize)>,
    /// Pearson's chi-square statistic against an even split.
    pub chi_square: Option<f64>,
    /// Its p-value: the chance of a split at least this uneven if clients
    /// spread evenly.
    pub p_value: Option<f64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Bound on every wait, in seconds.
    pub bound_s: f64,
    /// Instances behind each master address for the kill and the
    /// restart.
    pub instances: usize,
    /// Instances in the network.
    pub network_instances: usize,
    /// Relays in the network, authorities included.
    pub network_relays: usize,
    /// The figures, per tool.
    pub tools: Vec<Figures>,
}

/// Starts the network, runs every tool on it in turn, stops it.
pub async fn run(plan: &Plan) -> anyhow::Result<Report> {
    // The instances' app is a command of a testing build only; without
    // it every instance would answer with a refused stream.
    let has_app = std::process::Command::new(&plan.programs.onionlb)
        .args(["testnet", "app", "--help"])
        .output()
        .with_context(|| format!("running {}", plan.programs.onionlb.display()))?
        .status
        .success();
    anyhow::ensure!(
        has_app,
        "{} has no `testnet app` command: build it with `--features onionlb/testnet`",
        plan.programs.onionlb.display()
    );
    let keys: Vec<(MasterKey, String)> = plan
        .tools
        .iter()
        .map(|_| MasterKey::generate(&mut rand::rng()).context("generating a master key"))
        .collect::<anyhow::Result<_>>()?;
    let app: Vec<OsString> = vec![
        plan.programs.onionlb.clone().into(),
        "testnet".into(),
        "app".into(),
    ];
    let mut config = testnet::Config::new(plan.dir.join("net"), app);
    config.masters = keys.iter().map(|(key, _)| key.address()).collect();
    config.relays = plan.relays;
    config.instances = plan
        .spread_instances
        .iter()
        .copied()
        .chain([KILL_INSTANCES])
        .max()
        .unwrap_or(KILL_INSTANCES);
    // A client's one guard rules out every intro point on it, which
    // skews the spread for that client alone; without guards, each
    // circuit may use any relay.
    config.client_guards = false;
    eprintln!("starting the private network in {}", config.dir.display());
    let network_instances = config.instances;
    let mut net = Testnet::start(config)
        .await
        .context("starting the private network")?;

    let mut figures = Vec::new();
    for (tool, (key, pem)) in plan.tools.iter().zip(&keys) {
        eprintln!("== {tool:?}, master {}", key.address());
        let result = measure(&mut net, plan, *tool, key.address(), pem).await;
        match result {
            Ok(f) => {
                eprintln!("{f:?}");
                figures.push(f);
            }
            Err(e) => {
                net.stop();
                return Err(e.context(format!("measuring {tool:?}")));
            }
        }
    }
    net.stop();
    Ok(Report {
        bound_s: plan.bound.as_secs_f64(),
        instances: KILL_INSTANCES,
        network_instances,
        network_relays: plan.relays + 3,
        tools: figures,
    })
}

async fn measure(
    net: &mut Testnet,
    plan: &Plan,
    tool: Tool,
    master: OnionAddress,
    pem: &str,
) -> anyhow::Result<Figures> {
    let all: Vec<InstanceSpec> = net
        .layout()
        .instances()
        .zip(net.instance_addresses())
        .map(|(node, address)| {
            Ok(InstanceSpec {
                name: node.name.clone(),
                address: *address,
                control_port: node.control_port,
                app_port: node.app_port.context("an instance without an app")?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let instances = &all[..KILL_INSTANCES.min(all.len())];
    let control_port = match net.manager_control().addr {
        ControlAddr::Tcp(addr) => addr.port(),
        other => anyhow::bail!("the management tor listens on {other}, not TCP"),
    };
    let client = net.client_control();
    let mut view = HsdirView::connect(&client.addr, Credentials::CookieFile(client.cookie)).await?;
    let url = format!("http://{master}/");
    let dir = plan.dir.join(format!("{tool:?}").to_lowercase());
    let bound = plan.bound;

    // Start, and wait for the master address to answer.
    let started = Instant::now();
    let running = tool::start(tool, &plan.programs, &dir, pem, instances, control_port)?;
    let reachable = first_success(net, &url, started + bound).await;
    let start_to_reachable_s = reachable.map(|at| secs(at - started));
    eprintln!("reachable after {start_to_reachable_s:?} s");

    // Every instance in the master descriptor on every HSDir before the
    // kill, so the kill is the only change measured.
    let nodes: Vec<_> = net.layout().instances().cloned().collect();
    let mut all_ids = Vec::new();
    for (node, instance) in nodes.iter().zip(instances) {
        all_ids.push(intro_points_of(&mut view, node, instance.address).await?);
    }
    let all_in = poll(&mut view, master, Instant::now() + SETTLE_BOUND, |served| {
        all_ids.iter().all(|ids| served.all_with(ids))
    })
    .await?;
    let all_in_before_kill = all_in.first.is_some();
    if !all_in_before_kill {
        // Measured anyway: what is missing where is worth seeing.
        let served = view.fetch(master).await?;
        for (hsdir, ids) in &served.by_hsdir {
            let present: Vec<&str> = instances
                .iter()
                .zip(&all_ids)
                .filter(|(_, known)| !known.is_disjoint(ids))
                .map(|(i, _)| i.name.as_str())
                .collect();
            eprintln!(
                "  HSDir {hsdir}: {} intro points, of {present:?}",
                ids.len()
            );
        }
        eprintln!(
            "{tool:?} did not have all three instances on every HSDir within {SETTLE_BOUND:?}; see {}",
            running.log().display()
        );
    }

    // Kill instance0's tor. Its other descriptor's intro points are not
    // readable from its control port; whatever the HSDirs serve for it
    // from now until its restart is that dead run's too (at a time period
    // change, a balancer that fetches it would carry dead intro points
    // new to us), so the dead set grows with every poll.
    let mut dead = DeadRun {
        address: instances[0].address,
        intro_points: all_ids[0].clone(),
    };
    let killed = Instant::now();
    net.stop_instance(0).context("stopping instance0")?;
    let deadline = killed + bound;
    let (out, ten) = {
        let view = &mut view;
        let net_ref: &Testnet = net;
        tokio::join!(
            poll_out(view, master, &mut dead, deadline),
            ten_in_a_row(net_ref, &url, deadline),
        )
    };
    let out = out?;
    let kill_to_first_hsdir_without_s = out.first.map(|at| secs(at - killed));
    let kill_to_all_hsdirs_without_s = out.all.map(|at| secs(at - killed));
    let kill_to_ten_in_a_row_s = ten.done.map(|at| secs(at - killed));
    eprintln!(
        "kill: first HSDir without after {kill_to_first_hsdir_without_s:?} s, all after {kill_to_all_hsdirs_without_s:?} s, 10 in a row after {kill_to_ten_in_a_row_s:?} s"
    );

    // Restart it: new intro points.
    dead.learn(&mut view).await?;
    let node = &nodes[0];
    net.start_instance(0, Duration::from_secs(120))
        .await
        .context("restarting instance0")?;
    let uploaded = first_upload(&node.control_addr(), instances[0].address, bound).await?;
    let fresh = intro_points_of(&mut view, node, instances[0].address).await?;
    let fresh: HashSet<IntroId> = fresh.difference(&dead.intro_points).copied().collect();
    anyhow::ensure!(
        !fresh.is_empty(),
        "instance0 came back with its old intro points"
    );
    let back = poll_both(
        &mut view,
        master,
        uploaded + bound,
        |s| s.some_with(&fresh),
        |s| s.all_with(&fresh),
    )
    .await?;
    let upload_to_first_hsdir_with_s = back
        .first
        .map(|at| secs(at.saturating_duration_since(uploaded)));
    let upload_to_all_hsdirs_with_s = back
        .all
        .map(|at| secs(at.saturating_duration_since(uploaded)));
    eprintln!(
        "restart: first HSDir with new intro points after {upload_to_first_hsdir_with_s:?} s, all after {upload_to_all_hsdirs_with_s:?} s"
    );

    running.stop();

    let mut spread = Vec::new();
    if tool != Tool::OnionlbNoAgents {
        for &n in &plan.spread_instances {
            let dir = plan.dir.join(format!("{tool:?}-spread-{n}").to_lowercase());
            let measured = measure_spread(net, &mut view, plan, tool, master, pem, &all[..n], &dir)
                .await
                .with_context(|| format!("the spread over {n} instances"))?;
            eprintln!("spread over {n}: {measured:?}");
            spread.push(measured);
        }
    }

    Ok(Figures {
        tool,
        start_to_reachable_s,
        all_in_before_kill,
        kill_to_first_hsdir_without_s,
        kill_to_all_hsdirs_without_s,
        kill_to_ten_in_a_row_s,
        failed_requests_after_kill: ten.failures,
        upload_to_first_hsdir_with_s,
        upload_to_all_hsdirs_with_s,
        spread,
    })
}

/// Runs `tool` over `instances` (the network's first n) and sends
/// [`Plan::spread_requests`] clients to the master address: once every
/// HSDir serves a master descriptor with no other instance, and every one
/// of these on some HSDir, each client fetches the master descriptor
/// anew (tor picks the HSDir, as for any client) and connects over fresh
/// circuits.
#[allow(clippy::too_many_arguments)]
async fn measure_spread(
    net: &Testnet,
    view: &mut HsdirView,
    plan: &Plan,
    tool: Tool,
    master: OnionAddress,
    pem: &str,
    instances: &[InstanceSpec],
    dir: &std::path::Path,
) -> anyhow::Result<Spread> {
    let control_port = match net.manager_control().addr {
        ControlAddr::Tcp(addr) => addr.port(),
        other => anyhow::bail!("the management tor listens on {other}, not TCP"),
    };
    let nodes: Vec<_> = net.layout().instances().cloned().collect();
    let mut inside = HashSet::new();
    let mut each = Vec::new();
    for (node, instance) in nodes.iter().zip(instances) {
        let ids = intro_points_of(view, node, instance.address).await?;
        inside.extend(ids.iter().copied());
        each.push(ids);
    }
    let mut outside = HashSet::new();
    for (node, address) in nodes
        .iter()
        .zip(net.instance_addresses())
        .skip(instances.len())
    {
        outside.extend(intro_points_of(view, node, *address).await?);
    }
    let running = tool::start(tool, &plan.programs, dir, pem, instances, control_port)?;
    let settled = poll(view, master, Instant::now() + SETTLE_BOUND, |served| {
        let union = served.union();
        served.all_without(&outside) && each.iter().all(|ids| !ids.is_disjoint(&union))
    })
    .await?
    .all
    .is_some();
    let url = format!("http://{master}/");
    let mut share: BTreeMap<String, usize> =
        instances.iter().map(|i| (i.name.clone(), 0)).collect();
    let mut expected: BTreeMap<String, f64> =
        instances.iter().map(|i| (i.name.clone(), 0.0)).collect();
    let mut fetched_from = BTreeMap::new();
    let mut failures = 0;
    for _ in 0..plan.spread_requests {
        let Some(hsdir) = view.fetch_as_client(master).await? else {
            failures += 1;
            continue;
        };
        let held = view.client_cached(master).await?;
        let slots: Vec<usize> = each
            .iter()
            .map(|ids| ids.intersection(&held).count())
            .collect();
        let entry = fetched_from.entry(hsdir).or_insert((0, Vec::new(), 0));
        entry.0 += 1;
        entry.1.clone_from(&slots);
        entry.2 = held.len() - slots.iter().sum::<usize>();
        let who = match net.fetch(&url).await {
            Ok(response) => served_by(&response.body).map(str::to_owned),
            Err(_) => None,
        };
        let Some(who) = who else {
            failures += 1;
            continue;
        };
        *share.entry(who).or_default() += 1;
        let total: usize = slots.iter().sum();
        for (instance, n) in instances.iter().zip(&slots) {
            if total > 0 {
                *expected.entry(instance.name.clone()).or_default() += *n as f64 / total as f64;
            }
        }
    }
    running.stop();
    let counts: Vec<usize> = share.values().copied().collect();
    let test = crate::stats::chi_square_even(&counts);
    Ok(Spread {
        instances: instances.len(),
        settled,
        share,
        failures,
        expected,
        fetched_from,
        chi_square: test.map(|(statistic, _)| statistic),
        p_value: test.map(|(_, p)| p),
    })
}

/// Every intro point of an instance's that a master descriptor may carry:
/// those of the descriptor its tor has now and of those the HSDirs serve
/// (tor gives each of its two descriptors its own intro points, and only
/// the current one is readable from its control port).
async fn intro_points_of(
    view: &mut HsdirView,
    node: &testnet::layout::Node,
    address: OnionAddress,
) -> anyhow::Result<HashSet<IntroId>> {
    let mut ids = view
        .instance_intro_points(&node.control_addr(), address)
        .await?;
    ids.extend(view.fetch(address).await?.union());
    Ok(ids)
}

/// When something was first seen on some HSDir and on all of them.
struct Seen {
    first: Option<Instant>,
    all: Option<Instant>,
}

/// Every intro point known to belong to a dead instance's last run.
struct DeadRun {
    address: OnionAddress,
    intro_points: HashSet<IntroId>,
}

impl DeadRun {
    /// Adds what the HSDirs serve for the instance: while it is dead,
    /// that can only be its last run's.
    async fn learn(&mut self, view: &mut HsdirView) -> anyhow::Result<()> {
        let served = view.fetch(self.address).await?;
        self.intro_points.extend(served.union());
        Ok(())
    }
}

/// Polls the HSDirs until every one serves a master descriptor without
/// any intro point of `dead` (or `deadline`), noting when one first did;
/// learns more of `dead` at every poll.
async fn poll_out(
    view: &mut HsdirView,
    master: OnionAddress,
    dead: &mut DeadRun,
    deadline: Instant,
) -> anyhow::Result<Seen> {
    let mut seen = Seen {
        first: None,
        all: None,
    };
    while Instant::now() < deadline {
        dead.learn(view).await?;
        let served = view.fetch(master).await?;
        let now = Instant::now();
        if seen.first.is_none() && served.some_without(&dead.intro_points) {
            seen.first = Some(now);
        }
        if served.all_without(&dead.intro_points) {
            seen.first.get_or_insert(now);
            seen.all = Some(now);
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(seen)
}

/// Polls the HSDirs until `all` holds (or `deadline`), noting when `some`
/// first held.
async fn poll_both(
    view: &mut HsdirView,
    master: OnionAddress,
    deadline: Instant,
    some: impl Fn(&crate::observe::Served) -> bool,
    all: impl Fn(&crate::observe::Served) -> bool,
) -> anyhow::Result<Seen> {
    let mut seen = Seen {
        first: None,
        all: None,
    };
    let mut polls = 0u32;
    while Instant::now() < deadline {
        let served = view.fetch(master).await?;
        let now = Instant::now();
        polls += 1;
        if polls % 20 == 0 {
            eprintln!(
                "  still waiting: {} HSDir(s) serve the master descriptor",
                served.by_hsdir.len()
            );
        }
        if seen.first.is_none() && some(&served) {
            seen.first = Some(now);
        }
        if all(&served) {
            seen.first.get_or_insert(now);
            seen.all = Some(now);
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(seen)
}

/// Polls the HSDirs until `holds` (or `deadline`).
async fn poll(
    view: &mut HsdirView,
    master: OnionAddress,
    deadline: Instant,
    holds: impl Fn(&crate::observe::Served) -> bool,
) -> anyhow::Result<Seen> {
    poll_both(view, master, deadline, &holds, &holds).await
}

/// When `url` first answers (NEWNYM between tries, so the client fetches
/// the descriptor again).
async fn first_success(net: &Testnet, url: &str, deadline: Instant) -> Option<Instant> {
    while Instant::now() < deadline {
        if let Ok(response) = net.fetch(url).await {
            if served_by(&response.body).is_some() {
                return Some(Instant::now());
            }
        }
        let _ = net.newnym().await;
    }
    None
}

/// When 10 requests in a row succeeded, each on a fresh circuit; after a
/// failure the count starts again (with a NEWNYM, as a user would retry).
struct TenInARow {
    done: Option<Instant>,
    failures: usize,
}

async fn ten_in_a_row(net: &Testnet, url: &str, deadline: Instant) -> TenInARow {
    let mut in_a_row = 0;
    let mut failures = 0;
    while Instant::now() < deadline {
        let ok = matches!(net.fetch(url).await, Ok(r) if served_by(&r.body).is_some());
        if ok {
            in_a_row += 1;
            if in_a_row == 10 {
                return TenInARow {
                    done: Some(Instant::now()),
                    failures,
                };
            }
        } else {
            in_a_row = 0;
            failures += 1;
            let _ = net.newnym().await;
        }
    }
    TenInARow {
        done: None,
        failures,
    }
}

/// When the instance's tor next reports an uploaded descriptor of
/// `address`'s (an upload before we subscribed counts as now).
async fn first_upload(
    control_addr: &ControlAddr,
    address: OnionAddress,
    bound: Duration,
) -> anyhow::Result<Instant> {
    let control = torctl::Connector::new(control_addr.clone(), Credentials::Auto)
        .subscribe(["HS_DESC"])
        .connect()
        .await
        .context("following the restarted instance's tor")?;
    let mut events = control.take_events().context("no events")?;
    let deadline = Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = tokio::time::timeout(left, events.recv())
            .await
            .context("the restarted instance uploaded nothing in time")?
            .context("the restarted instance's tor went away")?;
        if let Event::HsDesc(event) = Event::parse(&reply) {
            if event.action == torctl::HsDescAction::Uploaded
                && event.address == address.without_suffix()
            {
                return Ok(Instant::now());
            }
        }
    }
}

fn secs(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10.0).round() / 10.0
}
