#![doc = include_str!("../README.md")]

mod auth;
mod client;
mod cookie;
mod error;
mod frame;
pub mod pt;
mod server;

pub use auth::{client_hash, server_hash, NONCE_LEN, SAFE_COOKIE};
pub use client::{ClientHandshake, Outcome};
pub use cookie::{Cookie, CookieError, COOKIE_FILE_LEN, COOKIE_HEADER};
pub use error::Error;
pub use frame::{code, Frame, MAX_BODY, MAX_COMMANDS};
pub use server::{Request, ServerHandshake};
