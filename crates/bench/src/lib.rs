#![doc = include_str!("../README.md")]

pub mod micro;
pub mod simulator;
pub mod synthetic;
