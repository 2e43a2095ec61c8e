#![doc = include_str!("../README.md")]

mod address;
mod key;

pub use address::{AddressError, OnionAddress};
pub use key::{KeyError, KeyFormat, MasterKey};
