#![doc = include_str!("../README.md")]

mod address;
pub mod agent;
pub mod allocation;
pub mod balancer;
mod blind;
pub mod bridge;
pub mod coalesce;
pub mod consensus;
pub mod descriptor;
pub mod fetch;
pub mod health;
mod hsdesc;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use hsdesc::{fuzz_layers, fuzz_plaintexts};
pub mod hsdir;
pub mod instance;
pub mod intro;
mod key;
pub mod network;
pub mod period;
pub mod probe;
pub mod publish;
pub mod ratelimit;
pub mod revision;
mod sign;
pub mod upload;

#[cfg(test)]
mod test_support;

pub use address::{AddressError, OnionAddress};
pub use key::{KeyError, KeyFormat, MasterKey, TorKeyFiles};

/// An error and its causes on one line (`what: why: deeper why`), for
/// logs and operator messages.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
