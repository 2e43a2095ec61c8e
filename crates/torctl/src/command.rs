//! Commands to tor, and their encoding on the wire.

use thiserror::Error;

/// A command that cannot be sent because it would not mean what it says.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CommandError {
    /// A keyword or argument held a character that ends or splits a command
    /// line, which would let it smuggle in another command.
    #[error("argument {argument:?} of {keyword} contains a line break, NUL or space")]
    BadArgument {
        /// The command keyword.
        keyword: String,
        /// The argument, shortened.
        argument: String,
    },
    /// A keyword was empty or not plain ASCII letters, digits and `_`.
    #[error("invalid command keyword {0:?}")]
    BadKeyword(String),
}

/// One command: a keyword, arguments, and for `+` commands (`+HSPOST`,
/// `+LOADCONF`) a data block.
///
/// Arguments are sent as given, separated by spaces; use [`quote`] for values
/// that the control spec wants as quoted strings.
///
/// The arguments of commands that carry a secret (see `is_secret`) never
/// appear in `Debug` or errors and are zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    keyword: String,
    args: Vec<String>,
    data: Option<String>,
}

impl Command {
    /// Whether the arguments carry a secret: a cookie, password or proof
    /// (`AUTHENTICATE`), an onion service key (`ADD_ONION`) or a client
    /// authorization key (`ONION_CLIENT_AUTH_ADD`).
    pub(crate) fn is_secret(&self) -> bool {
        ["AUTHENTICATE", "ADD_ONION", "ONION_CLIENT_AUTH_ADD"]
            .iter()
            .any(|k| self.keyword.eq_ignore_ascii_case(k))
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = f.debug_struct("Command");
        shown.field("keyword", &self.keyword);
        if self.is_secret() {
            shown.field("args", &"<redacted>");
        } else {
            shown.field("args", &self.args);
        }
        shown
            .field("data", &self.data.as_ref().map(String::len))
            .finish()
    }
}

impl Drop for Command {
    fn drop(&mut self) {
        if self.is_secret() {
            zeroize::Zeroize::zeroize(&mut self.args);
        }
    }
}

impl Command {
    /// A command with no arguments yet.
    pub fn new(keyword: impl Into<String>) -> Self {
        Command {
            keyword: keyword.into(),
            args: Vec::new(),
            data: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Attaches a data block, turning this into a `+` command.
    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// The keyword, for error messages and logs.
    pub fn keyword(&self) -> &str {
        &self.keyword
    }

    /// `GETINFO key...`
    pub fn getinfo<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Command::new("GETINFO").args(keys)
    }

    /// `GETCONF key...`
    pub fn getconf<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Command::new("GETCONF").args(keys)
    }

    /// `SIGNAL name`, e.g. `NEWNYM` or `RELOAD`.
    pub fn signal(name: &str) -> Self {
        Command::new("SIGNAL").arg(name)
    }

    /// `SETEVENTS event...`; an empty list unsubscribes from everything.
    pub fn setevents<I, S>(events: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Command::new("SETEVENTS").args(events)
    }

    /// The bytes to write to tor.
    pub fn encode(&self) -> Result<Vec<u8>, CommandError> {
        if self.keyword.is_empty()
            || !self
                .keyword
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(CommandError::BadKeyword(self.keyword.clone()));
        }
        if let Some(bad) = self.args.iter().find(|a| !is_safe_argument(a)) {
            return Err(CommandError::BadArgument {
                keyword: self.keyword.clone(),
                argument: if self.is_secret() {
                    "<redacted>".into()
                } else {
                    bad.chars().take(80).collect()
                },
            });
        }

        let mut out = String::new();
        if self.data.is_some() {
            out.push('+');
        }
        out.push_str(&self.keyword);
        for arg in &self.args {
            out.push(' ');
            out.push_str(arg);
        }
        out.push_str("\r\n");
        if let Some(data) = &self.data {
            for line in data.lines() {
                if line.starts_with('.') {
                    out.push('.');
                }
                out.push_str(line);
                out.push_str("\r\n");
            }
            out.push_str(".\r\n");
        }
        Ok(out.into_bytes())
    }
}

/// An argument may hold a quoted string with spaces inside, but never a
/// line break or NUL, and an unquoted one never a space.
fn is_safe_argument(arg: &str) -> bool {
    if arg.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        return false;
    }
    !arg.contains(' ') || arg.contains('"')
}

/// Quotes `value` as a control-spec QuotedString, escaping `"` and `\`.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Reverses [`quote`]: reads a QuotedString at the start of `input` and
/// returns its value and the rest of the input, or `None` if it is not one.
pub fn unquote(input: &str) -> Option<(String, &str)> {
    let body = input.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &body[i + 1..])),
            '\\' => {
                let (_, escaped) = chars.next()?;
                value.push(match escaped {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    other => other,
                });
            }
            other => value.push(other),
        }
    }
    None
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn simple_command() {
        let cmd = Command::getinfo(["version", "status/bootstrap-phase"]);
        assert_eq!(
            cmd.encode().unwrap(),
            b"GETINFO version status/bootstrap-phase\r\n"
        );
        assert_eq!(
            Command::signal("NEWNYM").encode().unwrap(),
            b"SIGNAL NEWNYM\r\n"
        );
    }

    #[test]
    fn data_command_is_dot_escaped() {
        let cmd = Command::new("HSPOST")
            .arg("SERVER=AAAA")
            .data("hs-descriptor 3\n.starts with dot\nend");
        assert_eq!(
            String::from_utf8(cmd.encode().unwrap()).unwrap(),
            "+HSPOST SERVER=AAAA\r\nhs-descriptor 3\r\n..starts with dot\r\nend\r\n.\r\n"
        );
    }

    #[test]
    fn injection_is_refused() {
        let cmd = Command::getinfo(["version\r\nSIGNAL HALT"]);
        assert!(matches!(
            cmd.encode(),
            Err(CommandError::BadArgument { .. })
        ));
        assert!(Command::new("GET INFO").encode().is_err());
        assert!(Command::new("").encode().is_err());
        assert!(Command::new("X").arg("a b").encode().is_err());
        assert!(Command::new("X").arg(quote("a b")).encode().is_ok());
    }

    #[test]
    fn quoting_round_trips() {
        let original = r#"C:\tor "data"/cookie"#;
        let quoted = quote(original);
        assert_eq!(quoted, r#""C:\\tor \"data\"/cookie""#);
        let input = format!("{quoted} tail");
        let (value, rest) = unquote(&input).unwrap();
        assert_eq!(value, original);
        assert_eq!(rest, " tail");
        assert_eq!(unquote("\"unterminated"), None);
        assert_eq!(unquote("bare"), None);
    }
}
