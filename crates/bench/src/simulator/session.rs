//! One control connection, as C tor answers it: a command in, a reply and
//! the events it causes out. No I/O here; [`super::server`] moves the
//! bytes.
//!
//! Only what a balancer sends is played: `PROTOCOLINFO`, `AUTHENTICATE`
//! (no authentication is configured), `GETINFO`, `GETCONF`, `SETEVENTS`,
//! `SIGNAL`, `HSFETCH` and `+HSPOST`. Anything else gets tor's `510` and
//! is counted, so a run shows what it did not play.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::SystemTime;

use onionlb_core::consensus::RsaId;

use super::{PostOutcome, World};

/// The version the simulated tor claims: recent enough for every command
/// both balancers use.
pub const TOR_VERSION: &str = "0.4.8.12";

/// A command as read off the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The first line, without `+` and line ending.
    pub line: String,
    /// For `+` commands, the data that followed, dot-unescaped, with `\n`
    /// line endings.
    pub data: Option<String>,
}

/// What goes back: the reply, then events (each a whole `650` reply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The reply to the command.
    pub reply: String,
    /// Events the command caused, for the events the client asked for.
    pub events: Vec<String>,
    /// Whether to close the connection after the reply.
    pub close: bool,
}

/// The state of one connection.
#[derive(Debug, Default)]
pub struct Session {
    authenticated: bool,
    events: HashSet<String>,
}

impl Session {
    /// Answers one command.
    pub fn answer(&mut self, world: &mut World, command: &Command, now: SystemTime) -> Answer {
        let mut words = command.line.split(' ').filter(|w| !w.is_empty());
        let keyword = words.next().unwrap_or_default().to_ascii_uppercase();
        let args: Vec<&str> = words.collect();
        let reply = |text: &str| Answer {
            reply: text.to_owned(),
            ..Answer::default()
        };
        match keyword.as_str() {
            "PROTOCOLINFO" => reply(&format!(
                "250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250-VERSION Tor=\"{TOR_VERSION}\"\r\n250 OK\r\n"
            )),
            "AUTHENTICATE" => {
                self.authenticated = true;
                reply("250 OK\r\n")
            }
            "QUIT" => Answer {
                reply: "250 closing connection\r\n".into(),
                close: true,
                ..Answer::default()
            },
            _ if !self.authenticated => Answer {
                reply: "514 Authentication required.\r\n".into(),
                close: true,
                ..Answer::default()
            },
            "GETINFO" => reply(&getinfo(world, &args)),
            "GETCONF" => reply(&getconf(&args)),
            "SETEVENTS" => {
                self.events = args.iter().map(|e| e.to_ascii_uppercase()).collect();
                reply("250 OK\r\n")
            }
            "SIGNAL" => reply("250 OK\r\n"),
            "HSFETCH" => self.hsfetch(world, &args),
            "HSPOST" => self.hspost(world, &args, command.data.as_deref(), now),
            _ => {
                world.unknown_command(&keyword);
                reply(&format!("510 Unrecognized command \"{keyword}\"\r\n"))
            }
        }
    }

    /// `HSFETCH address [SERVER=...]`: tor asks each named HSDir (one of
    /// its choice when none is named), and each answers with the
    /// instance's descriptor.
    /// The descriptor id field is a placeholder (tor writes the blinded
    /// key there); neither balancer reads it.
    fn hsfetch(&self, world: &mut World, args: &[&str]) -> Answer {
        let Some(address) = args.first() else {
            return reply_only("512 Missing argument to HSFETCH\r\n");
        };
        let mut servers = Vec::new();
        for arg in &args[1..] {
            let Some(server) = arg.strip_prefix("SERVER=") else {
                return reply_only(&format!("513 Invalid argument \"{arg}\"\r\n"));
            };
            match server.trim_start_matches('$').parse::<RsaId>() {
                Ok(id) if world.knows_relay(&id) => servers.push(id),
                _ => return reply_only(&format!("552 Server \"{server}\" not found\r\n")),
            }
        }
        if servers.is_empty() {
            servers.extend(world.some_relay());
        }
        let mut events = Vec::new();
        let descriptor = world.fetch(address).map(|i| i.descriptor.clone());
        for server in servers {
            let dir = format!("${server}~hsdir");
            self.event(
                &mut events,
                "HS_DESC",
                format!("650 HS_DESC REQUESTED {address} NO_AUTH {dir} descid\r\n"),
            );
            match &descriptor {
                Some(text) => {
                    self.event(
                        &mut events,
                        "HS_DESC",
                        format!("650 HS_DESC RECEIVED {address} NO_AUTH {dir} descid\r\n"),
                    );
                    self.event(
                        &mut events,
                        "HS_DESC_CONTENT",
                        format!(
                            "650+HS_DESC_CONTENT {address} descid {dir}\r\n{}.\r\n650 OK\r\n",
                            data_block(text)
                        ),
                    );
                }
                None => {
                    self.event(
                        &mut events,
                        "HS_DESC",
                        format!(
                            "650 HS_DESC FAILED {address} NO_AUTH {dir} descid REASON=NOT_FOUND\r\n"
                        ),
                    );
                    self.event(
                        &mut events,
                        "HS_DESC_CONTENT",
                        format!("650+HS_DESC_CONTENT {address} descid {dir}\r\n.\r\n650 OK\r\n"),
                    );
                }
            }
        }
        Answer {
            reply: "250 OK\r\n".into(),
            events,
            close: false,
        }
    }

    /// `+HSPOST [SERVER=...] HSADDRESS=address`: the descriptor is checked
    /// as an HSDir would, and each upload is reported.
    fn hspost(
        &self,
        world: &mut World,
        args: &[&str],
        data: Option<&str>,
        now: SystemTime,
    ) -> Answer {
        let Some(text) = data else {
            return reply_only("512 HSPOST needs a descriptor\r\n");
        };
        let mut servers = Vec::new();
        let mut address = None;
        for arg in args {
            if let Some(server) = arg.strip_prefix("SERVER=") {
                servers.push(server.to_owned());
            } else if let Some(value) = arg.strip_prefix("HSADDRESS=") {
                address = Some(value);
            } else {
                return reply_only(&format!("512 Unexpected argument \"{arg}\"\r\n"));
            }
        }
        let Some(address) = address else {
            // C tor takes a v3 post without HSADDRESS= and never answers.
            return Answer::default();
        };
        match world.post(address, &servers, text, now) {
            PostOutcome::UnknownServer(server) => {
                reply_only(&format!("552 Server \"{server}\" not found\r\n"))
            }
            PostOutcome::Invalid(_) => reply_only("554 Invalid descriptor\r\n"),
            PostOutcome::Accepted(dirs) => {
                let mut events = Vec::new();
                for dir in dirs {
                    let dir = format!("${dir}~hsdir");
                    self.event(
                        &mut events,
                        "HS_DESC",
                        format!("650 HS_DESC UPLOAD {address} UNKNOWN {dir} descid\r\n"),
                    );
                    self.event(
                        &mut events,
                        "HS_DESC",
                        format!("650 HS_DESC UPLOADED {address} UNKNOWN {dir}\r\n"),
                    );
                }
                Answer {
                    reply: "250 OK\r\n".into(),
                    events,
                    close: false,
                }
            }
        }
    }

    fn event(&self, events: &mut Vec<String>, kind: &str, text: String) {
        if self.events.contains(kind) {
            events.push(text);
        }
    }
}

fn reply_only(text: &str) -> Answer {
    Answer {
        reply: text.to_owned(),
        ..Answer::default()
    }
}

/// `GETINFO`: the keys a balancer reads.
fn getinfo(world: &World, keys: &[&str]) -> String {
    let mut out = String::new();
    for key in keys {
        match *key {
            "version" => {
                let _ = write!(out, "250-version={TOR_VERSION}\r\n");
            }
            "dir/status-vote/current/consensus-microdesc" => {
                let _ = write!(out, "250+{key}=\r\n{}.\r\n", data_block(world.consensus()));
            }
            "md/all" => {
                let _ = write!(out, "250+{key}=\r\n{}.\r\n", data_block(world.microdescs()));
            }
            _ => return format!("552 Unrecognized key \"{key}\"\r\n"),
        }
    }
    out.push_str("250 OK\r\n");
    out
}

/// `GETCONF`: a testing network is off; everything else is at its default.
fn getconf(keys: &[&str]) -> String {
    let mut lines: Vec<String> = keys
        .iter()
        .map(|key| match *key {
            "TestingTorNetwork" => format!("{key}=0"),
            _ => (*key).to_owned(),
        })
        .collect();
    if lines.is_empty() {
        lines.push("OK".into());
    }
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| format!("250{}{line}\r\n", if i == last { ' ' } else { '-' }))
        .collect()
}

/// Text as a data block: CRLF line endings, leading dots doubled. The
/// terminating `.` line is the caller's.
pub fn data_block(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    for line in text.lines() {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod test {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn data_blocks_escape_leading_dots() {
        assert_eq!(data_block("a\n.b\nc\n"), "a\r\n..b\r\nc\r\n");
        assert_eq!(data_block(""), "");
    }

    #[test]
    fn getconf_answers_every_key_with_the_last_line_final() {
        assert_eq!(
            getconf(&["TestingTorNetwork", "__OwningControllerProcess"]),
            "250-TestingTorNetwork=0\r\n250 __OwningControllerProcess\r\n"
        );
    }
}
