#![doc = include_str!("../README.md")]

pub mod auth;
mod client;
mod command;
mod error;
pub mod events;
mod reply;

pub use auth::Credentials;
pub use client::{ControlAddr, ControlClient};
pub use command::{quote, unquote, Command, CommandError};
pub use error::Error;
pub use events::{Event, HsDescContent, HsDescEvent};
pub use reply::{ProtocolError, Reply, ReplyLine, ReplyParser, EVENT_STATUS};
