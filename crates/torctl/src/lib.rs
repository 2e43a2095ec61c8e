#![doc = include_str!("../README.md")]

pub mod auth;
mod backoff;
mod client;
mod command;
mod connector;
mod error;
pub mod events;
mod reply;
pub mod socks;

pub use auth::Credentials;
pub use backoff::Backoff;
pub use client::{ControlAddr, ControlClient};
pub use command::{quote, unquote, Command, CommandError};
pub use connector::Connector;
pub use error::Error;
pub use events::{Event, HsDescContent, HsDescEvent};
pub use reply::{ProtocolError, Reply, ReplyLine, ReplyParser, EVENT_STATUS};
