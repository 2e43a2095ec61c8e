//! What the management tor's directory information says, in the form the
//! balancer uses: the time period layout, the HSDir ring of each
//! descriptor slot, and the consensus parameters that bound descriptors.
//!
//! Built from the text of the microdesc consensus and of every
//! microdescriptor (`GETINFO dir/status-vote/current/consensus-microdesc`
//! and `GETINFO md/all`); fetching those is the caller's business.

use std::fmt;

use crate::consensus::{Consensus, NetdocError};
use crate::hsdir::{hsdirs, Ring, RingParams};
use crate::period::{PeriodRules, SlotPeriod};

/// Default and bounds of `HSV3MaxDescriptorSize`.
const MAX_DESCRIPTOR_SIZE: (i32, i32, i32) = (50_000, 1, i32::MAX);
/// Default and bounds of `cc_sendme_inc`.
const SENDME_INC: (i32, i32, i32) = (31, 1, 254);

/// The network as one consensus describes it.
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

/// Why a consensus gives no usable view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// The consensus could not be read.
    #[error("reading the consensus")]
    Consensus(#[source] NetdocError),
    /// Its valid-after falls in no time period the rules allow.
    #[error("cannot place its valid-after in a time period")]
    NoPeriod,
    /// No relay is an HSDir with a known microdescriptor.
    #[error("no usable HSDirs")]
    NoHsDirs,
}

impl NetworkView {
    /// Builds the view from the documents' text. `testing_network` is the
    /// management tor's `TestingTorNetwork` setting, which changes the
    /// period length.
    pub fn from_documents(
        consensus: &str,
        microdescs: &str,
        testing_network: bool,
    ) -> Result<Self, ViewError> {
        let consensus = Consensus::parse(consensus).map_err(ViewError::Consensus)?;
        let rules = PeriodRules::new(&consensus, testing_network);
        let slots = rules.slots_for(&consensus).ok_or(ViewError::NoPeriod)?;
        let dirs = hsdirs(&consensus, microdescs);
        if dirs.is_empty() {
            return Err(ViewError::NoHsDirs);
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

    /// The time period clients fetch descriptors for now.
    pub fn fetch_period(&self) -> tor_hscrypto::time::TimePeriod {
        self.rings[self.fetch_slot].slot().period
    }
}

impl fmt::Display for NetworkView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} HSDirs, periods {} and {}",
            self.rings[0].len(),
            self.rings[0].slot().period.interval_num(),
            self.rings[1].slot().period.interval_num()
        )
    }
}
