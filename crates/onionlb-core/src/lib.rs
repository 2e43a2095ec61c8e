#![doc = include_str!("../README.md")]

mod address;
pub mod consensus;
mod key;

pub use address::{AddressError, OnionAddress};
pub use key::{KeyError, KeyFormat, MasterKey};
