#![doc = include_str!("../README.md")]

mod address;
pub mod allocation;
pub mod consensus;
pub mod descriptor;
pub mod hsdir;
mod key;
pub mod period;
pub mod revision;

pub use address::{AddressError, OnionAddress};
pub use key::{KeyError, KeyFormat, MasterKey};
