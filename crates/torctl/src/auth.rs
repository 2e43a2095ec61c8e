//! Authentication: what `PROTOCOLINFO` offers, which method to use, and the
//! `SAFECOOKIE` handshake (control-spec sections 3.21, 3.24 and 3.5).
//!
//! Everything here is pure; [`crate::ControlClient::authenticate`] does the
//! talking.

use std::path::PathBuf;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use zeroize::Zeroizing;

use crate::command::unquote;
use crate::reply::Reply;

/// HMAC key tor uses to prove it knows the cookie.
const SERVER_TO_CONTROLLER: &[u8] = b"Tor safe cookie authentication server-to-controller hash";
/// HMAC key we use to prove we know the cookie.
const CONTROLLER_TO_SERVER: &[u8] = b"Tor safe cookie authentication controller-to-server hash";

/// Length of a control-port authentication cookie.
pub const COOKIE_LEN: usize = 32;

/// Bound on a control-password file: a password and a line ending.
pub const MAX_PASSWORD_FILE: u64 = 4096;

/// How to prove to tor that we may control it.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Use whatever tor offers that needs no secret from us: no
    /// authentication, or the cookie file it names.
    #[default]
    Auto,
    /// Use the cookie in this file, even if tor names another.
    CookieFile(PathBuf),
    /// The password matching tor's `HashedControlPassword` (zeroed on
    /// drop).
    Password(Zeroizing<String>),
}

impl Credentials {
    /// The password in the file at `path` (its first line, without the
    /// line ending), so it never has to appear on a command line. The
    /// file must be a regular file of at most [`MAX_PASSWORD_FILE`] bytes.
    pub fn from_password_file(path: &std::path::Path) -> Result<Self, crate::file::FileError> {
        let bytes = Zeroizing::new(crate::file::read_capped(path, MAX_PASSWORD_FILE)?);
        let text = String::from_utf8_lossy(&bytes);
        let password = text.lines().next().unwrap_or_default();
        Ok(Credentials::Password(Zeroizing::new(password.to_owned())))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Auto => f.write_str("Auto"),
            Credentials::CookieFile(path) => f.debug_tuple("CookieFile").field(path).finish(),
            Credentials::Password(_) => f.write_str("Password(<redacted>)"),
        }
    }
}

/// What tor said in answer to `PROTOCOLINFO 1`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtocolInfo {
    /// Offered methods, upper case: `NULL`, `HASHEDPASSWORD`, `COOKIE`,
    /// `SAFECOOKIE`.
    pub methods: Vec<String>,
    /// Where tor keeps its cookie, if it uses one.
    pub cookie_file: Option<PathBuf>,
    /// Tor's version string.
    pub tor_version: Option<String>,
}

impl ProtocolInfo {
    /// Reads a `PROTOCOLINFO` reply.
    pub fn parse(reply: &Reply) -> Result<Self, AuthError> {
        if !reply.is_success() {
            return Err(AuthError::ProtocolInfo(reply.message().to_owned()));
        }
        let mut info = ProtocolInfo::default();
        for line in &reply.lines {
            if let Some(rest) = line.text.strip_prefix("AUTH ") {
                let mut rest = rest.trim_start();
                while !rest.is_empty() {
                    if let Some(methods) = rest.strip_prefix("METHODS=") {
                        let end = methods.find(' ').unwrap_or(methods.len());
                        info.methods = methods[..end].split(',').map(str::to_owned).collect();
                        rest = &methods[end..];
                    } else if let Some(file) = rest.strip_prefix("COOKIEFILE=") {
                        let (path, tail) = unquote(file)
                            .ok_or_else(|| AuthError::ProtocolInfo(line.text.clone()))?;
                        info.cookie_file = Some(PathBuf::from(path));
                        rest = tail;
                    } else {
                        // An argument a later protocol version added.
                        let end = rest.find(' ').unwrap_or(rest.len());
                        rest = &rest[end..];
                    }
                    rest = rest.trim_start();
                }
            } else if let Some(rest) = line.text.strip_prefix("VERSION Tor=") {
                info.tor_version = unquote(rest).map(|(version, _)| version);
            }
        }
        Ok(info)
    }

    /// Whether tor offers `method`.
    pub fn offers(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }

    /// Picks the method to use with `credentials`, strongest first.
    pub fn choose(&self, credentials: &Credentials) -> Result<Method, AuthError> {
        if self.offers("NULL") {
            return Ok(Method::Null);
        }
        match credentials {
            Credentials::Password(password) if self.offers("HASHEDPASSWORD") => {
                Ok(Method::Password(password.clone()))
            }
            Credentials::Password(_) => Err(self.unsupported("a password")),
            Credentials::CookieFile(path) => self.cookie_method(path.clone()),
            Credentials::Auto => match &self.cookie_file {
                Some(path) => self.cookie_method(path.clone()),
                None => Err(self.unsupported("no credentials")),
            },
        }
    }

    fn cookie_method(&self, path: PathBuf) -> Result<Method, AuthError> {
        if self.offers("SAFECOOKIE") {
            Ok(Method::SafeCookie(path))
        } else if self.offers("COOKIE") {
            Ok(Method::Cookie(path))
        } else {
            Err(self.unsupported("a cookie"))
        }
    }

    fn unsupported(&self, have: &str) -> AuthError {
        AuthError::NoUsableMethod {
            offered: self.methods.join(","),
            have: have.to_owned(),
        }
    }
}

/// The authentication method chosen for a connection.
#[derive(Clone, PartialEq, Eq)]
pub enum Method {
    /// Tor needs no authentication.
    Null,
    /// Send the cookie itself.
    Cookie(PathBuf),
    /// Prove knowledge of the cookie without sending it.
    SafeCookie(PathBuf),
    /// Send the password.
    Password(Zeroizing<String>),
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Null => f.write_str("Null"),
            Method::Cookie(path) => f.debug_tuple("Cookie").field(path).finish(),
            Method::SafeCookie(path) => f.debug_tuple("SafeCookie").field(path).finish(),
            Method::Password(_) => f.write_str("Password(<redacted>)"),
        }
    }
}

/// Why authentication could not go ahead.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AuthError {
    /// `PROTOCOLINFO` failed or its answer was not understood.
    #[error("tor's PROTOCOLINFO answer was not usable: {0}")]
    ProtocolInfo(String),
    /// Nothing tor offers matches what we have.
    #[error("tor offers authentication methods [{offered}] but we have {have}")]
    NoUsableMethod {
        /// The methods tor offered.
        offered: String,
        /// What we had to offer.
        have: String,
    },
    /// The cookie file did not hold a 32-byte cookie.
    #[error("cookie has {0} bytes, expected 32")]
    BadCookie(usize),
    /// The `AUTHCHALLENGE` answer was not understood.
    #[error("malformed AUTHCHALLENGE answer: {0}")]
    BadChallenge(String),
    /// Tor's hash did not match: whoever answered does not know the cookie.
    #[error("tor's SAFECOOKIE hash is wrong: this is not the tor that owns the cookie")]
    ServerHashMismatch,
}

/// Tor's answer to `AUTHCHALLENGE SAFECOOKIE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// HMAC proving tor knows the cookie.
    pub server_hash: Vec<u8>,
    /// Tor's nonce.
    pub server_nonce: Vec<u8>,
}

impl Challenge {
    /// Reads `250 AUTHCHALLENGE SERVERHASH=... SERVERNONCE=...`.
    pub fn parse(reply: &Reply) -> Result<Self, AuthError> {
        let bad = || AuthError::BadChallenge(reply.message().to_owned());
        if !reply.is_success() {
            return Err(bad());
        }
        let text = reply
            .message()
            .strip_prefix("AUTHCHALLENGE ")
            .ok_or_else(bad)?;
        let mut hash = None;
        let mut nonce = None;
        for field in text.split(' ') {
            if let Some(v) = field.strip_prefix("SERVERHASH=") {
                hash = hex::decode(v).ok();
            } else if let Some(v) = field.strip_prefix("SERVERNONCE=") {
                nonce = hex::decode(v).ok();
            }
        }
        Ok(Challenge {
            server_hash: hash.ok_or_else(bad)?,
            server_nonce: nonce.ok_or_else(bad)?,
        })
    }

    /// Checks tor's proof and returns ours, to send with `AUTHENTICATE`.
    pub fn respond(&self, cookie: &[u8], client_nonce: &[u8]) -> Result<Vec<u8>, AuthError> {
        if cookie.len() != COOKIE_LEN {
            return Err(AuthError::BadCookie(cookie.len()));
        }
        let parts = [cookie, client_nonce, &self.server_nonce];
        // `verify_slice` compares in constant time.
        hmac(SERVER_TO_CONTROLLER, &parts)
            .verify_slice(&self.server_hash)
            .map_err(|_| AuthError::ServerHashMismatch)?;
        let client = hmac(CONTROLLER_TO_SERVER, &parts);
        Ok(client.finalize().into_bytes().to_vec())
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for part in parts {
        mac.update(part);
    }
    mac
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::reply::ReplyParser;

    fn reply(text: &str) -> Reply {
        let mut parser = ReplyParser::default();
        parser.feed(text.as_bytes());
        parser.next_reply().unwrap().unwrap()
    }

    #[test]
    fn protocolinfo_with_cookie() {
        let info = ProtocolInfo::parse(&reply(
            "250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE=\"/var/lib/tor/control_auth_cookie\"\r\n250-VERSION Tor=\"0.4.9.11\"\r\n250 OK\r\n",
        ))
        .unwrap();
        assert_eq!(info.methods, ["COOKIE", "SAFECOOKIE"]);
        assert_eq!(
            info.cookie_file.as_deref(),
            Some(std::path::Path::new("/var/lib/tor/control_auth_cookie"))
        );
        assert_eq!(info.tor_version.as_deref(), Some("0.4.9.11"));
        assert_eq!(
            info.choose(&Credentials::Auto).unwrap(),
            Method::SafeCookie("/var/lib/tor/control_auth_cookie".into())
        );
        assert!(info
            .choose(&Credentials::Password(Zeroizing::new("x".into())))
            .is_err());
    }

    #[test]
    fn protocolinfo_null_and_password() {
        let open = ProtocolInfo::parse(&reply(
            "250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250 OK\r\n",
        ))
        .unwrap();
        assert_eq!(open.choose(&Credentials::Auto).unwrap(), Method::Null);

        let pw = ProtocolInfo::parse(&reply(
            "250-PROTOCOLINFO 1\r\n250-AUTH METHODS=HASHEDPASSWORD\r\n250 OK\r\n",
        ))
        .unwrap();
        assert_eq!(
            pw.choose(&Credentials::Password(Zeroizing::new("s3cret".into())))
                .unwrap(),
            Method::Password(Zeroizing::new("s3cret".into()))
        );
        assert!(matches!(
            pw.choose(&Credentials::Auto),
            Err(AuthError::NoUsableMethod { .. })
        ));
        assert!(!format!(
            "{:?}",
            Credentials::Password(Zeroizing::new("s3cret".into()))
        )
        .contains("s3cret"));
    }

    /// Vector computed independently (Python's `hmac` module) from the
    /// constants in control-spec section 3.24.
    #[test]
    fn safecookie_vector() {
        let cookie = [7u8; 32];
        let client_nonce = [1u8; 32];
        let server_hash = "143DE95D0D10F5C5AEAD16693DB53E611971B444476AF4A4B232B5F57951AFFA";
        let server_nonce = hex::encode_upper([2u8; 32]);
        let challenge = Challenge::parse(&reply(&format!(
            "250 AUTHCHALLENGE SERVERHASH={server_hash} SERVERNONCE={server_nonce}\r\n"
        )))
        .unwrap();
        assert_eq!(
            hex::encode(challenge.respond(&cookie, &client_nonce).unwrap()),
            "33564648e2fac0cce6c2e12c0bb9af2ad09e39741a3dff0072e075cc11c53eae"
        );
        assert_eq!(
            challenge.respond(&[8u8; 32], &client_nonce),
            Err(AuthError::ServerHashMismatch)
        );
        assert_eq!(
            challenge.respond(&[8u8; 5], &client_nonce),
            Err(AuthError::BadCookie(5))
        );
    }

    #[test]
    fn bad_challenge() {
        assert!(Challenge::parse(&reply("250 AUTHCHALLENGE SERVERHASH=zz\r\n")).is_err());
        assert!(Challenge::parse(&reply("515 nope\r\n")).is_err());
    }

    #[test]
    fn a_password_file_gives_its_first_line() {
        let path = std::env::temp_dir().join(format!("torctl-password-{}", std::process::id()));
        std::fs::write(&path, "secret words\r\n").unwrap();
        let credentials = Credentials::from_password_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(credentials, Credentials::Password(p) if p.as_str() == "secret words"));
    }
}
