//! What tor tells a managed server transport it launches (pt-spec 3.2,
//! the `TOR_PT_*` environment) and the lines the transport answers with
//! on its standard output (pt-spec 3.3), for a transport that offers one
//! method: the Extended ORPort shim tor launches in front of itself.
//!
//! Pure: the caller passes a lookup of environment variables, and prints
//! the lines.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the environment cannot be served; [`EnvError::line`] is what to
/// print before exiting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// `TOR_PT_MANAGED_TRANSPORT_VER` does not list version 1.
    #[error("tor speaks no managed-transport version this shim knows (it offers {0:?})")]
    NoVersion(String),
    /// A variable the shim needs is missing or empty.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A variable is set but does not parse.
    #[error("{name} is not what pt-spec says it is")]
    Malformed {
        /// The variable.
        name: &'static str,
    },
}

impl EnvError {
    /// The line to print on standard output for tor.
    pub fn line(&self) -> String {
        match self {
            EnvError::NoVersion(_) => "VERSION-ERROR no-version".to_owned(),
            other => format!("ENV-ERROR {other}"),
        }
    }
}

/// What tor asked of a managed server transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedServer {
    /// The method to offer: the first of `TOR_PT_SERVER_TRANSPORTS`.
    pub method: String,
    /// Where to listen (`TOR_PT_SERVER_BINDADDR` for the method), if tor
    /// said; otherwise the transport picks a loopback port.
    pub bind: Option<SocketAddr>,
    /// Tor's Extended ORPort (`TOR_PT_EXTENDED_SERVER_PORT`).
    pub extended_server_port: SocketAddr,
    /// Tor's Extended ORPort cookie file (`TOR_PT_AUTH_COOKIE_FILE`).
    pub auth_cookie_file: PathBuf,
    /// Whether to exit when standard input closes
    /// (`TOR_PT_EXIT_ON_STDIN_CLOSE=1`).
    pub exit_on_stdin_close: bool,
}

impl ManagedServer {
    /// Reads tor's variables through `var`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let nonempty = |name: &'static str| {
            var(name)
                .filter(|v| !v.is_empty())
                .ok_or(EnvError::Missing(name))
        };
        let versions = var("TOR_PT_MANAGED_TRANSPORT_VER").unwrap_or_default();
        if !versions.split(',').any(|v| v == "1") {
            return Err(EnvError::NoVersion(versions));
        }
        let transports = nonempty("TOR_PT_SERVER_TRANSPORTS")?;
        let method = transports.split(',').next().unwrap_or_default().to_owned();
        let bind = match var("TOR_PT_SERVER_BINDADDR").filter(|v| !v.is_empty()) {
            None => None,
            Some(list) => list
                .split(',')
                .filter_map(|entry| entry.split_once('-'))
                .find(|(name, _)| *name == method)
                .map(|(_, addr)| addr.parse())
                .transpose()
                .map_err(|_| EnvError::Malformed {
                    name: "TOR_PT_SERVER_BINDADDR",
                })?,
        };
        let extended_server_port =
            nonempty("TOR_PT_EXTENDED_SERVER_PORT")?
                .parse()
                .map_err(|_| EnvError::Malformed {
                    name: "TOR_PT_EXTENDED_SERVER_PORT",
                })?;
        let auth_cookie_file = PathBuf::from(nonempty("TOR_PT_AUTH_COOKIE_FILE")?);
        let exit_on_stdin_close = var("TOR_PT_EXIT_ON_STDIN_CLOSE").as_deref() == Some("1");
        Ok(ManagedServer {
            method,
            bind,
            extended_server_port,
            auth_cookie_file,
            exit_on_stdin_close,
        })
    }

    /// The lines telling tor the method listens at `addr`, and that there
    /// are no others.
    pub fn ready_lines(&self, addr: SocketAddr) -> String {
        format!("VERSION 1\nSMETHOD {} {addr}\nSMETHODS DONE\n", self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const TOR: [(&str, &str); 6] = [
        ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
        ("TOR_PT_SERVER_TRANSPORTS", "extor_static_cookie"),
        (
            "TOR_PT_SERVER_BINDADDR",
            "other-127.0.0.1:1,extor_static_cookie-127.0.0.1:10001",
        ),
        ("TOR_PT_EXTENDED_SERVER_PORT", "127.0.0.1:9201"),
        (
            "TOR_PT_AUTH_COOKIE_FILE",
            "/var/lib/tor/extended_orport_auth_cookie",
        ),
        ("TOR_PT_EXIT_ON_STDIN_CLOSE", "1"),
    ];

    #[test]
    fn what_tor_sets_is_read() {
        let server = ManagedServer::from_env(env(&TOR)).unwrap();
        assert_eq!(server.method, "extor_static_cookie");
        assert_eq!(server.bind, Some("127.0.0.1:10001".parse().unwrap()));
        assert_eq!(
            server.extended_server_port,
            "127.0.0.1:9201".parse().unwrap()
        );
        assert!(server.exit_on_stdin_close);
        assert_eq!(
            server.ready_lines("127.0.0.1:10001".parse().unwrap()),
            "VERSION 1\nSMETHOD extor_static_cookie 127.0.0.1:10001\nSMETHODS DONE\n"
        );
    }

    #[test]
    fn what_is_missing_or_wrong_is_said_in_tors_terms() {
        let without = |name: &str| -> Vec<(&str, &str)> {
            TOR.iter().copied().filter(|(k, _)| *k != name).collect()
        };
        let error = |pairs: &[(&str, &str)]| ManagedServer::from_env(env(pairs)).unwrap_err();
        assert_eq!(
            error(&without("TOR_PT_MANAGED_TRANSPORT_VER")).line(),
            "VERSION-ERROR no-version"
        );
        assert_eq!(
            error(&without("TOR_PT_EXTENDED_SERVER_PORT")),
            EnvError::Missing("TOR_PT_EXTENDED_SERVER_PORT")
        );
        assert!(error(&without("TOR_PT_AUTH_COOKIE_FILE"))
            .line()
            .starts_with("ENV-ERROR "));
        let mut bad = without("TOR_PT_SERVER_BINDADDR");
        bad.push(("TOR_PT_SERVER_BINDADDR", "extor_static_cookie-nowhere"));
        assert_eq!(
            error(&bad),
            EnvError::Malformed {
                name: "TOR_PT_SERVER_BINDADDR"
            }
        );
        let unbound = ManagedServer::from_env(env(&without("TOR_PT_SERVER_BINDADDR"))).unwrap();
        assert_eq!(unbound.bind, None);
    }
}
