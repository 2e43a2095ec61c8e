#![doc = include_str!("../README.md")]

pub mod auth;
mod backoff;
mod client;
mod command;
mod connector;
mod error;
pub mod events;
pub mod file;
mod reply;
pub mod socks;

pub use auth::Credentials;
pub use backoff::Backoff;
pub use client::{ControlAddr, ControlClient, Events, Options};
pub use command::{quote, unquote, Command, CommandError};
pub use connector::Connector;
pub use error::Error;
pub use events::{CircEvent, Event, HsDescAction, HsDescContent, HsDescEvent};
pub use reply::{
    Limits, ProtocolError, Reply, ReplyLine, ReplyParser, EVENT_STATUS, LINE_OVERHEAD,
};
