#![doc = include_str!("../README.md")]

pub mod app;
mod error;
pub mod fetch;
pub mod keys;
pub mod layout;
mod network;
pub mod ports;
pub mod process;
mod state;
pub mod torrc;

pub use error::Error;
pub use network::{
    parse_bootstrap, stop_recorded_network, Config, ControlEndpoint, Testnet, DEFAULT_BASE_PORT,
};
pub use state::State;
