#![doc = include_str!("../README.md")]

mod address;

pub use address::{AddressError, OnionAddress};
