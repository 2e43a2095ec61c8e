//! Reading the management tor's directory information: the consensus and
//! microdescs, which `onionlb-core` turns into a [`NetworkView`].

use onionlb_core::network::{self, NetworkView};
use torctl::ControlClient;

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
    #[error("the management tor's consensus is unusable")]
    Unusable(#[source] network::ViewError),
}

/// Reads the consensus and microdescriptors from tor.
pub async fn load_view(
    control: &ControlClient,
    testing_network: bool,
) -> Result<NetworkView, ViewError> {
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
    NetworkView::from_documents(&consensus, &microdescs, testing_network)
        .map_err(ViewError::Unusable)
}
