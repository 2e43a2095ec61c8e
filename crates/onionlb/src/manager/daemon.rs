//! The manager's event loop: fetch instance descriptors, check them,
//! publish master descriptors, follow the results.
//!
//! All protocol rules live in `onionlb-core`; this is the tokio shell that
//! feeds them tor's events and the clock, and sends what they decide.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use onionlb_core::allocation::plan;
use onionlb_core::consensus::RsaId;
use onionlb_core::descriptor::{
    build_master_descriptor, default_flow_control, validate_instance_descriptor,
    InstanceDescriptor, IntroPointDesc, MasterDescriptorPlan, MAX_INTRO_POINTS,
};
use onionlb_core::period::DescriptorSlot;
use onionlb_core::revision::next_revision;
use onionlb_core::{MasterKey, OnionAddress};
use tor_hscrypto::pk::{HsBlindId, HsIdKey};
use torctl::{Command, ControlClient, Event, HsDescContent, HsDescEvent};

use crate::config::{Config, InstanceConfig};
use crate::manager::network::{NetworkView, ViewError};

/// Republish a descriptor at least this often.
const REPUBLISH_AFTER: Duration = Duration::from_secs(3600);
/// How often the loop looks at what is due.
const TICK: Duration = Duration::from_secs(1);
/// First retry delay after an upload to an HSDir failed; doubles up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How long to wait for a consensus before asking again.
const CONSENSUS_POLL: Duration = Duration::from_secs(5);

/// One balanced service and what has been published for it.
struct Service {
    key: MasterKey,
    address: OnionAddress,
    instances: Vec<Instance>,
    /// What was last published for each slot (first, second).
    published: [Option<Published>; 2],
    /// Last revision published per blinded key.
    revisions: HashMap<HsBlindId, u64>,
    /// Set once "no live instance" has been said, until one is back.
    warned_empty: bool,
}

/// One backend instance and its last good descriptor.
struct Instance {
    config: InstanceConfig,
    identity: HsIdKey,
    descriptor: Option<InstanceDescriptor>,
    /// Highest revision seen per blinded key: a lower one is a replay.
    revisions: HashMap<HsBlindId, u64>,
    /// Why it is unusable, as last reported (so it is said once).
    problem: Option<String>,
}

/// A master descriptor that was sent to HSDirs.
struct Published {
    period: u64,
    /// Each descriptor's intro point keys (sorted) and HSDirs.
    layout: Vec<(Vec<[u8; 32]>, Vec<RsaId>)>,
    at: SystemTime,
    /// The descriptor each HSDir was sent.
    texts: BTreeMap<RsaId, String>,
    /// HSDirs whose upload failed, with the attempt count and next try.
    retries: BTreeMap<RsaId, (u32, Instant)>,
}

/// The running manager.
pub struct Daemon {
    control: ControlClient,
    config: Config,
    services: Vec<Service>,
    testing_network: bool,
    view: NetworkView,
    next_fetch: Instant,
}

impl Daemon {
    /// Subscribes to events, waits for a consensus (saying so), and is
    /// ready to run.
    pub async fn start(
        control: ControlClient,
        config: Config,
        keys: Vec<MasterKey>,
    ) -> anyhow::Result<Self> {
        control
            .request(&Command::setevents([
                "HS_DESC",
                "HS_DESC_CONTENT",
                "STATUS_CLIENT",
            ]))
            .await
            .context("subscribing to events")?;
        let testing = control
            .request(&Command::getconf(["TestingTorNetwork"]))
            .await
            .context("asking whether tor runs a testing network")?;
        let testing_network = testing.value("TestingTorNetwork") == Some("1");
        if testing_network {
            tracing::info!(
                "the management tor runs on a testing network: time periods are one SRV run long"
            );
        }
        let view = wait_for_view(&control, testing_network).await?;
        let services = config
            .services
            .iter()
            .zip(keys)
            .map(|(service, key)| Service {
                address: key.address(),
                key,
                instances: service
                    .instances
                    .iter()
                    .filter_map(|instance| {
                        Some(Instance {
                            identity: HsIdKey::try_from(instance.address.hs_id()).ok()?,
                            config: instance.clone(),
                            descriptor: None,
                            revisions: HashMap::new(),
                            problem: None,
                        })
                    })
                    .collect(),
                published: [None, None],
                revisions: HashMap::new(),
                warned_empty: false,
            })
            .collect();
        Ok(Daemon {
            control,
            config,
            services,
            testing_network,
            view,
            next_fetch: Instant::now(),
        })
    }

    /// Runs until SIGINT or SIGTERM, or until the control connection ends.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut events = self
            .control
            .take_events()
            .context("the control connection's events were already taken")?;
        let mut tick = tokio::time::interval(TICK);
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
        for service in &self.services {
            tracing::info!(
                "balancing {} over {} instance(s)",
                service.address,
                service.instances.len()
            );
        }
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else {
                        anyhow::bail!("the management tor closed the control connection");
                    };
                    self.handle_event(Event::parse(&event)).await;
                }
                _ = tick.tick() => self.on_tick().await,
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
            }
        }
        tracing::info!("stopping");
        Ok(())
    }

    async fn on_tick(&mut self) {
        if Instant::now() >= self.next_fetch {
            self.next_fetch = Instant::now() + self.config.fetch_interval;
            self.fetch_all().await;
        }
        let now = SystemTime::now();
        for index in 0..self.services.len() {
            for slot in 0..2 {
                self.publish_if_due(index, slot, now).await;
                self.retry_failed(index, slot).await;
            }
        }
    }

    async fn handle_event(&mut self, event: Event) {
        match event {
            Event::HsDescContent(content) => self.on_descriptor(content),
            Event::HsDesc(event) => self.on_hs_desc(&event),
            Event::StatusClient { action } if action == "CONSENSUS_ARRIVED" => {
                match NetworkView::load(&self.control, self.testing_network).await {
                    Ok(view) => {
                        let period = |v: &NetworkView| v.rings[v.fetch_slot].slot().period;
                        if period(&view) != period(&self.view) {
                            // Clients now fetch another period's descriptors,
                            // with the instances' new intro points: fetch them.
                            self.next_fetch = Instant::now();
                        }
                        self.view = view;
                    }
                    Err(e) => tracing::warn!("keeping the previous consensus: {e}"),
                }
            }
            _ => {}
        }
    }

    /// Asks the HSDirs clients use now for every instance's descriptor.
    async fn fetch_all(&self) {
        let ring = &self.view.rings[self.view.fetch_slot];
        let mut asked = Vec::new();
        for instance in self.services.iter().flat_map(|s| &s.instances) {
            let address = instance.config.address;
            if asked.contains(&address) {
                continue;
            }
            asked.push(address);
            let Ok((blinded, _)) = instance.identity.compute_blinded_key(ring.slot().period) else {
                continue;
            };
            let servers = ring.responsible(
                &blinded.id(),
                self.view.params.n_replicas,
                self.view.params.spread_fetch,
            );
            let command = Command::new("HSFETCH")
                .arg(address.without_suffix())
                .args(servers.iter().map(|fp| format!("SERVER=${fp}")));
            if let Err(e) = self.control.request(&command).await {
                tracing::warn!("{}: HSFETCH failed: {e}", instance.config.label());
            }
        }
    }

    /// Checks a fetched descriptor against every instance with its address.
    fn on_descriptor(&mut self, content: HsDescContent) {
        if content.descriptor.trim().is_empty() {
            return;
        }
        let mut text = content.descriptor;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let now = SystemTime::now();
        // Only the period clients fetch now, which is what HSFETCH asked
        // for: one blinded key per instance at a time keeps the revision
        // check meaningful (an old descriptor of the other period would
        // otherwise pass it).
        let periods = [self.view.rings[self.view.fetch_slot].slot().period];
        let max_size = self.view.max_descriptor_size;
        for instance in self.services.iter_mut().flat_map(|s| &mut s.instances) {
            if instance.config.address.without_suffix() != content.address {
                continue;
            }
            let label = instance.config.label();
            match validate_instance_descriptor(&text, &instance.identity, &periods, now, max_size) {
                Ok(descriptor) => {
                    let highest = instance
                        .revisions
                        .get(&descriptor.blinded)
                        .copied()
                        .unwrap_or(0);
                    if descriptor.revision < highest {
                        instance.report(format!(
                            "rejected a descriptor with revision {} below {highest} already seen (a replay)",
                            descriptor.revision
                        ));
                        continue;
                    }
                    instance
                        .revisions
                        .insert(descriptor.blinded, descriptor.revision);
                    if instance.problem.take().is_some() || instance.descriptor.is_none() {
                        tracing::info!(
                            "{label}: usable, {} intro point(s), revision {}",
                            descriptor.intro_points.len(),
                            descriptor.revision
                        );
                    }
                    instance.descriptor = Some(descriptor);
                }
                Err(e) => instance.report(format!("rejected a descriptor: {e}")),
            }
        }
    }

    /// Follows uploads of our master descriptors.
    fn on_hs_desc(&mut self, event: &HsDescEvent) {
        let Some(service) = self
            .services
            .iter_mut()
            .find(|s| s.address.without_suffix() == event.address)
        else {
            return;
        };
        let Some(hsdir) = event.hsdir.as_deref() else {
            return;
        };
        for published in service.published.iter_mut().flatten() {
            let Some(&dir) = published.texts.keys().find(|d| d.to_string() == hsdir) else {
                continue;
            };
            match event.action.as_str() {
                "UPLOADED" => {
                    published.retries.remove(&dir);
                    tracing::debug!("{}: descriptor accepted by HSDir {hsdir}", service.address);
                }
                "FAILED" => {
                    let attempts = published.retries.get(&dir).map_or(0, |(n, _)| *n) + 1;
                    let delay = (FIRST_RETRY * 2u32.saturating_pow(attempts - 1)).min(MAX_RETRY);
                    tracing::warn!(
                        "{}: HSDir {hsdir} refused the descriptor ({}); retrying in {delay:?}",
                        service.address,
                        event.reason.as_deref().unwrap_or("no reason given")
                    );
                    published
                        .retries
                        .insert(dir, (attempts, Instant::now() + delay));
                }
                _ => {}
            }
        }
    }

    /// Builds and uploads the descriptor for `slot` if anything calls for
    /// it: none yet for this period, a changed intro point set or HSDir
    /// set, or age.
    async fn publish_if_due(&mut self, index: usize, slot: usize, now: SystemTime) {
        let ring = self.view.rings[slot].clone();
        let period = ring.slot().period;
        let params = self.view.params;
        let service = &mut self.services[index];
        let live: Vec<Vec<_>> = service
            .instances
            .iter_mut()
            .filter_map(|instance| instance.live_intro_points(now))
            .collect();
        if live.iter().all(Vec::is_empty) {
            if !service.warned_empty && service.published.iter().any(Option::is_some) {
                tracing::error!(
                    "{}: no instance is usable; keeping the last published descriptors",
                    service.address
                );
                service.warned_empty = true;
            }
            return;
        }
        service.warned_empty = false;
        let Ok((blinded, _)) = HsIdKey::from(service.key.keypair()).compute_blinded_key(period)
        else {
            return;
        };
        let store = ring.responsible(&blinded.id(), params.n_replicas, params.spread_store);
        let fetchable = ring.responsible(&blinded.id(), params.n_replicas, params.spread_fetch);
        // The two slots start the round-robin at different instances, so
        // the spare slots do not always fall to the same ones.
        let planned = plan(&live, &fetchable, &store, MAX_INTRO_POINTS, slot);
        let layout: Vec<(Vec<[u8; 32]>, Vec<RsaId>)> = planned
            .iter()
            .map(|descriptor| {
                let mut keys: Vec<[u8; 32]> = descriptor
                    .intro_points
                    .iter()
                    .map(|ip| ip.ipt_sid_key().to_bytes())
                    .collect();
                keys.sort_unstable();
                (keys, descriptor.hsdirs.clone())
            })
            .collect();
        let reason = match &service.published[slot] {
            None => "first publication",
            Some(p) if p.period != period.interval_num() => "new time period",
            Some(p)
                if p.layout
                    .iter()
                    .map(|(k, _)| k)
                    .ne(layout.iter().map(|(k, _)| k)) =>
            {
                "intro points changed"
            }
            Some(p) if p.layout != layout => "HSDir set changed",
            Some(p) if now.duration_since(p.at).unwrap_or_default() >= REPUBLISH_AFTER => "age",
            Some(_) => return,
        };
        let descriptor_slot = if slot == 0 {
            DescriptorSlot::First
        } else {
            DescriptorSlot::Second
        };
        let computed =
            service
                .key
                .revision_key()
                .counter(descriptor_slot, now, self.view.rules.run_length);
        let revision = next_revision(computed, service.revisions.get(&blinded.id()).copied());
        let mut texts = BTreeMap::new();
        for descriptor in &planned {
            let plan = MasterDescriptorPlan {
                period,
                revision,
                intro_points: &descriptor.intro_points,
                flow_control: default_flow_control(self.view.sendme_inc),
                now,
                max_size: self.view.max_descriptor_size,
            };
            match build_master_descriptor(&service.key, &plan, &mut rand::rng()) {
                Ok(built) => {
                    for hsdir in &descriptor.hsdirs {
                        texts.insert(*hsdir, built.text.clone());
                    }
                }
                Err(e) => {
                    tracing::error!("{}: cannot build a descriptor: {e}", service.address);
                    return;
                }
            }
        }
        service.revisions.insert(blinded.id(), revision);
        tracing::info!(
            "{}: publishing {} descriptor ({reason}): {} distinct, {} intro point slots from {} instance(s), revision {revision}, to {} HSDirs",
            service.address,
            if slot == 0 { "first" } else { "second" },
            planned.len(),
            planned.iter().map(|d| d.intro_points.len()).sum::<usize>(),
            live.iter().filter(|l| !l.is_empty()).count(),
            store.len()
        );
        let address = service.address;
        for descriptor in &planned {
            if let Some(text) = descriptor.hsdirs.first().and_then(|dir| texts.get(dir)) {
                upload(&self.control, address, text, &descriptor.hsdirs).await;
            }
        }
        service.published[slot] = Some(Published {
            period: period.interval_num(),
            layout,
            at: now,
            texts,
            retries: BTreeMap::new(),
        });
    }

    /// Uploads again to HSDirs whose upload failed, when their time comes.
    async fn retry_failed(&mut self, index: usize, slot: usize) {
        let service = &mut self.services[index];
        let address = service.address;
        let Some(published) = &mut service.published[slot] else {
            return;
        };
        let now = Instant::now();
        let due: Vec<RsaId> = published
            .retries
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(dir, _)| *dir)
            .collect();
        if due.is_empty() {
            return;
        }
        for dir in &due {
            if let Some(entry) = published.retries.get_mut(dir) {
                // Wait for this attempt's result before trying again.
                entry.1 = now + MAX_RETRY;
            }
            if let Some(text) = published.texts.get(dir) {
                upload(&self.control, address, text, std::slice::from_ref(dir)).await;
            }
        }
    }
}

impl Instance {
    /// Its intro points, if its last good descriptor is still valid; says
    /// once why not.
    fn live_intro_points(&mut self, now: SystemTime) -> Option<Vec<IntroPointDesc>> {
        let descriptor = self.descriptor.as_ref()?;
        if descriptor.valid_until.is_some_and(|end| end <= now) {
            self.report("its descriptor expired".into());
            self.descriptor = None;
            return None;
        }
        Some(descriptor.intro_points.clone())
    }

    /// Logs why it is unusable, once per distinct reason.
    fn report(&mut self, problem: String) {
        if self.problem.as_deref() != Some(problem.as_str()) {
            tracing::warn!("{}: {problem}", self.config.label());
            self.problem = Some(problem);
        }
    }
}

/// `+HSPOST SERVER=$fp... HSADDRESS=addr` with the descriptor.
async fn upload(control: &ControlClient, address: OnionAddress, text: &str, hsdirs: &[RsaId]) {
    let command = Command::new("HSPOST")
        .args(hsdirs.iter().map(|fp| format!("SERVER=${fp}")))
        .arg(format!("HSADDRESS={}", address.without_suffix()))
        .data(text);
    if let Err(e) = control.request(&command).await {
        tracing::error!("{address}: HSPOST failed: {e}");
    }
}

/// Loads the network view, waiting (and saying so once) while tor has no
/// consensus.
async fn wait_for_view(
    control: &ControlClient,
    testing_network: bool,
) -> anyhow::Result<NetworkView> {
    let mut said = false;
    loop {
        match NetworkView::load(control, testing_network).await {
            Ok(view) => return Ok(view),
            Err(ViewError::NoConsensus) => {
                if !said {
                    tracing::warn!("the management tor has no consensus yet; waiting for one");
                    said = true;
                }
            }
            Err(ViewError::Unusable(reason)) => {
                if !said {
                    tracing::warn!("waiting for usable directory information: {reason}");
                    said = true;
                }
            }
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(CONSENSUS_POLL).await;
    }
}
