//! The manager's view of the Tor network: the consensus and microdescs
//! from the management tor, turned into time periods and HSDir rings.

use onionlb_core::consensus::Consensus;
use onionlb_core::hsdir::{hsdirs, Ring, RingParams};
use onionlb_core::period::{PeriodRules, SlotPeriod};
use torctl::ControlClient;

/// Default and bounds of `HSV3MaxDescriptorSize`.
const MAX_DESCRIPTOR_SIZE: (i32, i32, i32) = (50_000, 1, i32::MAX);
/// Default and bounds of `cc_sendme_inc`.
const SENDME_INC: (i32, i32, i32) = (31, 1, 254);

/// What the management tor's directory information says.
#[derive(Debug, Clone)]
pub struct NetworkView {
    /// Time period layout.
    pub rules: PeriodRules,
    /// The ring of each descriptor slot (first, second).
    pub rings: [Ring; 2],
    /// Replicas and spreads.
    pub params: RingParams,
    /// Largest descriptor HSDirs accept.
    pub max_descriptor_size: usize,
    /// `cc_sendme_inc`, for the flow-control line.
    pub sendme_inc: u8,
    /// Which ring clients fetch from now (index into `rings`).
    pub fetch_slot: usize,
}

/// Why the view could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// tor has no usable consensus yet (`551`): wait for one.
    #[error("the management tor has no consensus yet")]
    NoConsensus,
    /// Talking to tor failed.
    #[error("reading directory information from the management tor")]
    Control(#[source] torctl::Error),
    /// tor's answer was not understood.
    #[error("the management tor's consensus is unusable: {0}")]
    Unusable(String),
}

impl NetworkView {
    /// Reads the consensus and microdescriptors from tor.
    pub async fn load(control: &ControlClient, testing_network: bool) -> Result<Self, ViewError> {
        let consensus = match control
            .getinfo("dir/status-vote/current/consensus-microdesc")
            .await
        {
            Ok(text) => text,
            Err(torctl::Error::Refused {
                status: 551 | 552, ..
            }) => return Err(ViewError::NoConsensus),
            Err(e) => return Err(ViewError::Control(e)),
        };
        let microdescs = control
            .getinfo("md/all")
            .await
            .map_err(ViewError::Control)?;
        Self::from_documents(&consensus, &microdescs, testing_network)
    }

    /// Builds the view from the documents' text.
    pub fn from_documents(
        consensus: &str,
        microdescs: &str,
        testing_network: bool,
    ) -> Result<Self, ViewError> {
        let consensus =
            Consensus::parse(consensus).map_err(|e| ViewError::Unusable(e.to_string()))?;
        let rules = PeriodRules::new(&consensus, testing_network);
        let slots = rules.slots_for(&consensus).ok_or_else(|| {
            ViewError::Unusable("cannot place its valid-after in a time period".into())
        })?;
        let dirs = hsdirs(&consensus, microdescs);
        if dirs.is_empty() {
            return Err(ViewError::Unusable("no usable HSDirs".into()));
        }
        let current = rules.period_at(consensus.valid_after);
        let fetch_slot = slots
            .iter()
            .position(|s| Some(s.period) == current)
            .unwrap_or(0);
        let (default, min, max) = MAX_DESCRIPTOR_SIZE;
        let max_descriptor_size = consensus.param("HSV3MaxDescriptorSize", default, min, max);
        let (default, min, max) = SENDME_INC;
        let sendme_inc = consensus.param("cc_sendme_inc", default, min, max);
        Ok(NetworkView {
            rules,
            rings: slots.map(|slot: SlotPeriod| Ring::new(&dirs, slot)),
            params: RingParams::new(&consensus),
            max_descriptor_size: usize::try_from(max_descriptor_size).unwrap_or(50_000),
            sendme_inc: u8::try_from(sendme_inc).unwrap_or(31),
            fetch_slot,
        })
    }
}
