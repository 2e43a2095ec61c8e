#![doc = include_str!("../README.md")]

mod address;
pub mod agent;
pub mod allocation;
pub mod coalesce;
pub mod consensus;
pub mod descriptor;
pub mod fetch;
pub mod health;
pub mod hsdir;
pub mod instance;
mod key;
pub mod period;
pub mod publish;
pub mod ratelimit;
pub mod revision;
pub mod upload;

#[cfg(test)]
mod test_support;

pub use address::{AddressError, OnionAddress};
pub use key::{KeyError, KeyFormat, MasterKey, TorKeyFiles};
