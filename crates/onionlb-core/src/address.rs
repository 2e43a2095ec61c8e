//! v3 onion addresses.

use std::fmt;
use std::str::FromStr;

use safelog::DisplayRedacted as _;
use thiserror::Error;
use tor_hscrypto::pk::{HsId, HsIdParseError};

/// A v3 onion address: the identity of an onion service.
///
/// Parsed with or without the `.onion` suffix, in any letter case, and
/// checked (version byte and checksum) by Arti's [`HsId`] parser. Shown
/// in full, lower case, with `.onion`: these are public names, not secrets.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OnionAddress(HsId);

/// Why a string is not a v3 onion address.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{input:?} is not a v3 onion address: {problem}")]
pub struct AddressError {
    input: String,
    problem: AddressProblem,
}

/// What is wrong with a string that is not a v3 onion address.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressProblem {
    /// A label before the address (`www.<address>.onion`).
    #[error("it has a subdomain")]
    Subdomain,
    /// Not base32, or not of a length base32 can have.
    #[error("it is not base32")]
    NotBase32,
    /// Base32 of another length than an address's 35 bytes.
    #[error("it is not 56 characters of base32")]
    WrongLength,
    /// Another version than 3.
    #[error("its version is {0}, not 3")]
    Version(u8),
    /// Its checksum does not match: mistyped or corrupted.
    #[error("its checksum does not match (mistyped?)")]
    Checksum,
    /// Anything else Arti's parser refuses.
    #[error("Arti's parser refuses it")]
    Other,
}

impl AddressError {
    /// What is wrong with it.
    pub fn problem(&self) -> AddressProblem {
        self.problem
    }
}

impl From<&HsIdParseError> for AddressProblem {
    fn from(error: &HsIdParseError) -> Self {
        match error {
            HsIdParseError::HsIdContainsSubdomain => AddressProblem::Subdomain,
            HsIdParseError::InvalidBase32(_) => AddressProblem::NotBase32,
            HsIdParseError::InvalidData(_) => AddressProblem::WrongLength,
            HsIdParseError::UnsupportedVersion(v) => AddressProblem::Version(*v),
            HsIdParseError::WrongChecksum => AddressProblem::Checksum,
            _ => AddressProblem::Other,
        }
    }
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
                problem: AddressProblem::from(&e),
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
    fn each_kind_of_bad_address_says_what_is_wrong() {
        let problem = |text: &str| text.parse::<OnionAddress>().unwrap_err().problem();
        let mut mistyped = ADDR.to_owned();
        mistyped.replace_range(0..1, "3");
        assert_eq!(problem(&mistyped), AddressProblem::Checksum);
        assert_eq!(problem(&"a".repeat(48)), AddressProblem::WrongLength);
        assert_eq!(problem(&"a".repeat(56)), AddressProblem::Version(0));
        assert_eq!(problem("example.onion"), AddressProblem::NotBase32);
        assert_eq!(problem(&format!("www.{ADDR}")), AddressProblem::Subdomain);
        assert_eq!(problem(&ADDR.replace('2', "1")), AddressProblem::NotBase32);
        let err = "nope".parse::<OnionAddress>().unwrap_err();
        assert!(err.to_string().contains("\"nope\""));
    }
}
