//! What clients see, read without trusting either balancer's own account:
//! the master descriptor as the HSDirs serve it, and an instance's intro
//! points as its own tor has them. Both tools are timed by the same eyes.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use onionlb_core::consensus::Consensus;
use onionlb_core::descriptor::{validate_instance_descriptor, DescriptorError, ReadError};
use onionlb_core::period::PeriodRules;
use onionlb_core::OnionAddress;
use tor_hscrypto::pk::HsIdKey;
use torctl::{Command, ControlAddr, Credentials, Event};

/// An intro point, named by its `auth-key` (the intro point's service id
/// key, which is new each time a tor creates the intro point).
pub type IntroId = [u8; 32];

/// Descriptors larger than this are not descriptors any tool publishes.
const MAX_SIZE: usize = 100_000;
/// How long one round of fetches may take.
const ROUND_TIMEOUT: Duration = Duration::from_secs(20);

/// Fetches descriptors through a client tor's control port (`HSFETCH`).
pub struct HsdirView {
    control: torctl::ControlClient,
    events: torctl::Events,
    rules: PeriodRules,
    /// Every relay with the HSDir flag, as `$FINGERPRINT`.
    hsdirs: Vec<String>,
}

/// What one round of fetches found: for each HSDir that had the
/// descriptor, its intro points.
#[derive(Debug, Default)]
pub struct Served {
    /// Intro points per HSDir fingerprint.
    pub by_hsdir: BTreeMap<String, HashSet<IntroId>>,
}

impl Served {
    /// Every intro point any HSDir serves.
    pub fn union(&self) -> HashSet<IntroId> {
        self.by_hsdir.values().flatten().copied().collect()
    }

    /// Whether some HSDir serves a descriptor with none of `intro_points`.
    pub fn some_without(&self, intro_points: &HashSet<IntroId>) -> bool {
        self.by_hsdir
            .values()
            .any(|ids| ids.is_disjoint(intro_points))
    }

    /// Whether every HSDir that has a descriptor serves one with none of
    /// `intro_points`.
    pub fn all_without(&self, intro_points: &HashSet<IntroId>) -> bool {
        !self.by_hsdir.is_empty()
            && self
                .by_hsdir
                .values()
                .all(|ids| ids.is_disjoint(intro_points))
    }

    /// Whether some HSDir serves a descriptor with one of `intro_points`.
    pub fn some_with(&self, intro_points: &HashSet<IntroId>) -> bool {
        self.by_hsdir
            .values()
            .any(|ids| !ids.is_disjoint(intro_points))
    }

    /// Whether every HSDir that has a descriptor serves one with one of
    /// `intro_points`.
    pub fn all_with(&self, intro_points: &HashSet<IntroId>) -> bool {
        !self.by_hsdir.is_empty()
            && self
                .by_hsdir
                .values()
                .all(|ids| !ids.is_disjoint(intro_points))
    }
}

impl HsdirView {
    /// Connects to the client tor at `addr` and reads its consensus.
    pub async fn connect(addr: &ControlAddr, credentials: Credentials) -> anyhow::Result<Self> {
        let control = torctl::Connector::new(addr.clone(), credentials)
            .subscribe(["HS_DESC", "HS_DESC_CONTENT"])
            .connect()
            .await
            .with_context(|| format!("connecting to the client tor at {addr}"))?;
        let events = control
            .take_events()
            .context("the client tor's events were taken")?;
        let text = control
            .getinfo("dir/status-vote/current/consensus-microdesc")
            .await
            .context("reading the client tor's consensus")?;
        let consensus = Consensus::parse(&text).context("parsing the client tor's consensus")?;
        let hsdirs = consensus
            .relays
            .iter()
            .filter(|r| r.hsdir_flag)
            .map(|r| format!("${}", r.rsa_id))
            .collect();
        Ok(HsdirView {
            control,
            events,
            rules: PeriodRules::new(&consensus, true),
            hsdirs,
        })
    }

    /// Asks every HSDir for `address`'s descriptor of the current time
    /// period, as a client would, and decodes what each serves.
    pub async fn fetch(&mut self, address: OnionAddress) -> anyhow::Result<Served> {
        while self.events.try_recv().is_some() {}
        let bare = address.without_suffix();
        let command = Command::new("HSFETCH")
            .arg(bare.clone())
            .args(self.hsdirs.iter().map(|fp| format!("SERVER={fp}")));
        self.control.request(&command).await.context("HSFETCH")?;
        let identity = identity_of(address)?;
        let mut answered = HashSet::new();
        let mut served = Served::default();
        let deadline = Instant::now() + ROUND_TIMEOUT;
        while answered.len() < self.hsdirs.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(reply)) = tokio::time::timeout(left, self.events.recv()).await else {
                break;
            };
            match Event::parse(&reply) {
                Event::HsDesc(event)
                    if event.address == bare && event.action == torctl::HsDescAction::Failed =>
                {
                    answered.insert(event.hsdir.unwrap_or_default());
                }
                Event::HsDescContent(content) if content.address == bare => {
                    let hsdir = content.hsdir.unwrap_or_default();
                    answered.insert(hsdir.clone());
                    if content.descriptor.trim().is_empty() {
                        continue;
                    }
                    match self.decode(&content.descriptor, &identity) {
                        Ok(ids) => {
                            served.by_hsdir.insert(hsdir, ids);
                        }
                        Err(e) => {
                            eprintln!("an HSDir served a descriptor that does not decode: {e}")
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(served)
    }

    /// Has the client fetch `address`'s descriptor as it would before
    /// connecting (`HSFETCH` without a server: tor picks one of the HSDirs
    /// clients fetch from), replacing the one it has cached. Returns the
    /// HSDir that served it, or `None` if the fetch failed.
    pub async fn fetch_as_client(
        &mut self,
        address: OnionAddress,
    ) -> anyhow::Result<Option<String>> {
        while self.events.try_recv().is_some() {}
        let bare = address.without_suffix();
        self.control
            .request(&Command::new("HSFETCH").arg(bare.clone()))
            .await
            .context("HSFETCH")?;
        let deadline = Instant::now() + ROUND_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(reply)) = tokio::time::timeout(left, self.events.recv()).await else {
                return Ok(None);
            };
            match Event::parse(&reply) {
                Event::HsDesc(event) if event.address == bare => match event.action {
                    torctl::HsDescAction::Received => {
                        return Ok(Some(event.hsdir.unwrap_or_default()))
                    }
                    torctl::HsDescAction::Failed => return Ok(None),
                    _ => {}
                },
                _ => {}
            }
        }
    }

    /// The intro points of the descriptor of `address` the client has
    /// cached: the one it picks an intro point from.
    pub async fn client_cached(&self, address: OnionAddress) -> anyhow::Result<HashSet<IntroId>> {
        let text = self
            .control
            .getinfo(&format!("hs/client/desc/id/{}", address.without_suffix()))
            .await
            .with_context(|| format!("reading the client's cached descriptor of {address}"))?;
        self.decode(&text, &identity_of(address)?)
            .with_context(|| format!("decoding the client's cached descriptor of {address}"))
    }

    /// The intro points of `text`, a descriptor of `identity`'s for a
    /// period around now.
    fn decode(&self, text: &str, identity: &HsIdKey) -> anyhow::Result<HashSet<IntroId>> {
        let now = SystemTime::now();
        let periods = self
            .rules
            .period_at(now)
            .and_then(|current| Some([current.prev()?, current, current.next()?]))
            .context("no time period at now")?;
        let descriptor =
            validate_instance_descriptor(&terminated(text), identity, &periods, now, MAX_SIZE)?;
        Ok(intro_ids(&descriptor.intro_points))
    }

    /// The intro points of the descriptor an instance's own tor has now
    /// (its current one; tor builds it afresh as it uploads): none while
    /// none of its intro circuits is open, as after a start.
    pub async fn instance_intro_points(
        &self,
        control_addr: &ControlAddr,
        address: OnionAddress,
    ) -> anyhow::Result<HashSet<IntroId>> {
        let control = torctl::Connector::new(control_addr.clone(), Credentials::Auto)
            .connect()
            .await
            .with_context(|| format!("connecting to {address}'s tor at {control_addr}"))?;
        let text = control
            .getinfo(&format!("hs/service/desc/id/{}", address.without_suffix()))
            .await
            .with_context(|| format!("reading {address}'s descriptor from its tor"))?;
        match self.decode(&text, &identity_of(address)?) {
            Err(e)
                if e.downcast_ref::<DescriptorError>()
                    == Some(&DescriptorError::Unreadable(ReadError::NoIntroPoints)) =>
            {
                Ok(HashSet::new())
            }
            decoded => decoded.with_context(|| format!("decoding {address}'s own descriptor")),
        }
    }
}

fn identity_of(address: OnionAddress) -> anyhow::Result<HsIdKey> {
    HsIdKey::try_from(address.hs_id())
        .map_err(|e| anyhow::anyhow!("{address} is not a valid key: {e}"))
}

/// The descriptor with its final newline, which the control port's
/// answers and events leave off.
fn terminated(text: &str) -> String {
    format!("{}\n", text.trim_end())
}

fn intro_ids(intro_points: &[onionlb_core::descriptor::IntroPoint]) -> HashSet<IntroId> {
    intro_points.iter().map(|ip| *ip.auth_key()).collect()
}
