//! v3 onion addresses.

use std::fmt;
use std::str::FromStr;

use safelog::DisplayRedacted as _;
use thiserror::Error;
use tor_hscrypto::pk::HsId;

/// A v3 onion address: the identity of an onion service.
///
/// Parsed with or without the `.onion` suffix, in any letter case, and
/// checked (version byte and checksum) by Arti's [`HsId`] parser. Shown
/// in full, lower case, with `.onion`: these are public names, not secrets.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OnionAddress(HsId);

/// Why a string is not a v3 onion address.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{input:?} is not a v3 onion address: {reason}")]
pub struct AddressError {
    input: String,
    reason: String,
}

impl OnionAddress {
    /// The service's identity key, as Arti's type.
    pub fn hs_id(&self) -> HsId {
        self.0
    }

    /// The 56-character address without `.onion`, as tor's `HSFETCH`,
    /// `HSPOST HSADDRESS=` and `ob_config` want it.
    pub fn without_suffix(&self) -> String {
        let full = self.to_string();
        full.trim_end_matches(".onion").to_owned()
    }
}

impl From<HsId> for OnionAddress {
    fn from(id: HsId) -> Self {
        OnionAddress(id)
    }
}

impl FromStr for OnionAddress {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let lower = input.trim().to_ascii_lowercase();
        let full = if lower.ends_with(".onion") {
            lower
        } else {
            format!("{lower}.onion")
        };
        full.parse::<HsId>()
            .map(OnionAddress)
            .map_err(|e| AddressError {
                input: input.to_owned(),
                reason: e.to_string(),
            })
    }
}

impl fmt::Display for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display_unredacted())
    }
}

impl fmt::Debug for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnionAddress({self})")
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // A real address: the Tor Project's website.
    const ADDR: &str = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";

    #[test]
    fn parses_with_and_without_suffix() {
        let a: OnionAddress = ADDR.parse().unwrap();
        let b: OnionAddress = ADDR.trim_end_matches(".onion").parse().unwrap();
        let c: OnionAddress = ADDR.to_ascii_uppercase().parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.to_string(), ADDR);
        assert_eq!(a.without_suffix().len(), 56);
    }

    #[test]
    fn rejects_bad_checksum_and_junk() {
        let mut bad = ADDR.to_owned();
        bad.replace_range(0..1, "3");
        assert!(bad.parse::<OnionAddress>().is_err());
        assert!("example.onion".parse::<OnionAddress>().is_err());
        let err = "nope".parse::<OnionAddress>().unwrap_err();
        assert!(err.to_string().contains("\"nope\""));
    }
}
