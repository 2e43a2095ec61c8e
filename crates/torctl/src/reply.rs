//! Replies and asynchronous events from tor, and the incremental parser that
//! finds them in a byte stream.
//!
//! The grammar (control-spec section 2.3) is line based: every line starts
//! with a three-digit status code and a separator. `-` means "more lines
//! follow", `+` means "a data block follows, ended by a line holding a single
//! `.`", and a space ends the reply. Data lines that start with a dot have it
//! doubled on the wire.

use thiserror::Error;

/// Status code tor uses for asynchronous events.
pub const EVENT_STATUS: u16 = 650;

/// Bounds on what the parser accepts, each past which the connection
/// has to be dropped. Sizes are memory costs: a line's bytes plus
/// [`LINE_OVERHEAD`], so that many short lines cannot cost many times
/// their size on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// One line, without its terminator.
    pub max_line: usize,
    /// One command's reply. `GETINFO md/all` and the microdescriptor
    /// consensus are the largest tor sends: a few megabytes each on the
    /// public network.
    pub max_reply: usize,
    /// One asynchronous event. The largest tor sends is `HS_DESC_CONTENT`
    /// with a descriptor, at most the consensus's `HSV3MaxDescriptorSize`
    /// (50 000 bytes by default).
    pub max_event: usize,
}

impl Default for Limits {
    /// 1 MiB lines, 64 MiB replies, 1 MiB events: over ten times what
    /// tor sends on the public network in each case.
    fn default() -> Self {
        Limits {
            max_line: 1024 * 1024,
            max_reply: 64 * 1024 * 1024,
            max_event: 1024 * 1024,
        }
    }
}

/// What one reply line costs beyond its bytes once parsed: the
/// [`ReplyLine`] (56 bytes, up to twice that in a growing `Vec`) and its
/// text's allocation. A line of a data block costs twice its length
/// instead, for the slack of the growing text it is appended to.
pub const LINE_OVERHEAD: usize = 128;

/// One line of a reply, with the data block that followed it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine {
    /// The three-digit status code of this line.
    pub status: u16,
    /// The text after the status code and separator.
    pub text: String,
    /// For a `+` line: the data block, dot-unescaped, lines joined by `\n`.
    pub data: Option<String>,
}

/// A complete reply to one command, or one asynchronous event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Every line of the reply, the final one last. Never empty.
    pub lines: Vec<ReplyLine>,
}

impl Reply {
    /// The status code of the final line, which is the status of the reply.
    pub fn status(&self) -> u16 {
        self.last().status
    }

    /// Whether tor accepted the command (a 2xx status).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status())
    }

    /// Whether this is an asynchronous event rather than a command's reply.
    pub fn is_event(&self) -> bool {
        self.lines[0].status == EVENT_STATUS
    }

    /// The text of the final line: `OK`, or the reason for a failure.
    pub fn message(&self) -> &str {
        &self.last().text
    }

    /// For an event, its keyword (`HS_DESC`, `STATUS_CLIENT`, ...).
    pub fn event_keyword(&self) -> Option<&str> {
        if !self.is_event() {
            return None;
        }
        self.lines[0].text.split(' ').next()
    }

    /// Looks up `key` among `key=value` lines, as `GETINFO` and `GETCONF`
    /// answer. A value sent as a data block is returned whole.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.lines.iter().find_map(|line| {
            let rest = line.text.strip_prefix(key)?.strip_prefix('=')?;
            Some(match &line.data {
                Some(data) => data.as_str(),
                None => rest,
            })
        })
    }

    /// What the reply holds in memory, near enough: its text and data,
    /// and [`LINE_OVERHEAD`] for each line and for the reply itself.
    pub fn cost(&self) -> usize {
        let lines: usize = self
            .lines
            .iter()
            .map(|line| line.text.len() + line.data.as_ref().map_or(0, String::len) + LINE_OVERHEAD)
            .sum();
        lines + LINE_OVERHEAD
    }

    /// The reply as tor would send it: the inverse of [`ReplyParser`], for
    /// proxies and simulators that speak tor's side of the protocol.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            let separator = if line.data.is_some() {
                '+'
            } else if i + 1 == self.lines.len() {
                ' '
            } else {
                '-'
            };
            out.push_str(&format!("{:03}{separator}{}\r\n", line.status, line.text));
            if let Some(data) = &line.data {
                for data_line in data.split('\n') {
                    if data_line.starts_with('.') {
                        out.push('.');
                    }
                    out.push_str(data_line);
                    out.push_str("\r\n");
                }
                out.push_str(".\r\n");
            }
        }
        out.into_bytes()
    }

    fn last(&self) -> &ReplyLine {
        // A `Reply` is only built by the parser, with at least one line.
        &self.lines[self.lines.len() - 1]
    }
}

/// Why a byte stream is not a valid sequence of control-port replies.
///
/// After any of these the stream cannot be resynchronised; the connection
/// has to be dropped.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A line did not start with three digits and a separator.
    #[error("malformed reply line: {line:?}")]
    MalformedLine {
        /// The offending line, shortened.
        line: String,
    },
    /// A line grew beyond [`Limits::max_line`].
    #[error("reply line longer than {limit} bytes")]
    LineTooLong {
        /// The bound that was exceeded.
        limit: usize,
    },
    /// A reply grew beyond [`Limits::max_reply`].
    #[error("reply longer than {limit} bytes")]
    ReplyTooLong {
        /// The bound that was exceeded.
        limit: usize,
    },
    /// An event grew beyond [`Limits::max_event`].
    #[error("event longer than {limit} bytes")]
    EventTooLong {
        /// The bound that was exceeded.
        limit: usize,
    },
}

/// Incremental parser: feed it bytes as they arrive, take complete replies.
///
/// Linear in its input however the bytes are split: each byte is looked at
/// once when searching for line ends, and only the unfinished line is kept
/// besides the reply being assembled. Memory is bounded by [`Limits`].
#[derive(Debug)]
pub struct ReplyParser {
    buf: Vec<u8>,
    /// Offset in `buf` of the first byte not yet consumed.
    pos: usize,
    /// Offset in `buf` up to which no line end was found.
    scanned: usize,
    lines: Vec<ReplyLine>,
    /// The `+` line whose data block is being read, with the data so far.
    data: Option<(ReplyLine, String)>,
    /// Whether the reply being assembled is an event.
    event: bool,
    /// What the reply being assembled costs so far (see [`Limits`]).
    reply_cost: usize,
    limits: Limits,
    /// Bytes looked at in searches for line ends, for the linearity test.
    #[cfg(test)]
    examined: usize,
}

impl Default for ReplyParser {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl ReplyParser {
    /// A parser that refuses anything past `limits`.
    pub fn new(limits: Limits) -> Self {
        ReplyParser {
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            lines: Vec::new(),
            data: None,
            event: false,
            reply_cost: 0,
            limits,
            #[cfg(test)]
            examined: 0,
        }
    }

    /// Adds bytes received from tor.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete reply, or `None` when more bytes are needed.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ProtocolError> {
        loop {
            let found = self.buf[self.scanned..].iter().position(|&b| b == b'\n');
            #[cfg(test)]
            {
                self.examined += found.map_or(self.buf.len() - self.scanned, |at| at + 1);
            }
            let Some(found) = found else {
                self.scanned = self.buf.len();
                if self.buf.len() - self.pos > self.limits.max_line {
                    return Err(ProtocolError::LineTooLong {
                        limit: self.limits.max_line,
                    });
                }
                return Ok(None);
            };
            let end = self.scanned + found;
            let mut line = &self.buf[self.pos..end];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if line.len() > self.limits.max_line {
                return Err(ProtocolError::LineTooLong {
                    limit: self.limits.max_line,
                });
            }
            let line = String::from_utf8_lossy(line).into_owned();
            self.pos = end + 1;
            self.scanned = self.pos;
            if let Some(reply) = self.take_line(line)? {
                return Ok(Some(reply));
            }
        }
    }

    /// Handles one line without its terminator; returns a reply it completes.
    fn take_line(&mut self, line: String) -> Result<Option<Reply>, ProtocolError> {
        if self.data.is_some() {
            self.charge(2 * (line.len() + 1))?;
            self.take_data_line(&line);
            return Ok(None);
        }

        let (status, separator, text) = split_status(&line)?;
        if self.lines.is_empty() {
            self.event = status == EVENT_STATUS;
        }
        self.charge(line.len() + LINE_OVERHEAD)?;
        let parsed = ReplyLine {
            status,
            text: text.to_owned(),
            data: None,
        };
        match separator {
            b'-' => self.lines.push(parsed),
            b'+' => self.data = Some((parsed, String::new())),
            _ => {
                self.lines.push(parsed);
                self.reply_cost = 0;
                let mut lines = std::mem::take(&mut self.lines);
                // A reply may wait in a queue: keep no spare capacity.
                lines.shrink_to_fit();
                return Ok(Some(Reply { lines }));
            }
        }
        Ok(None)
    }

    /// Adds `cost` to the cost of the reply being assembled.
    fn charge(&mut self, cost: usize) -> Result<(), ProtocolError> {
        self.reply_cost = self.reply_cost.saturating_add(cost);
        if self.event && self.reply_cost > self.limits.max_event {
            return Err(ProtocolError::EventTooLong {
                limit: self.limits.max_event,
            });
        }
        if self.reply_cost > self.limits.max_reply {
            return Err(ProtocolError::ReplyTooLong {
                limit: self.limits.max_reply,
            });
        }
        Ok(())
    }

    /// Handles one line inside a data block.
    fn take_data_line(&mut self, line: &str) {
        if line == "." {
            if let Some((mut head, mut data)) = self.data.take() {
                // Every data line was stored with a terminator; drop the last.
                data.pop();
                data.shrink_to_fit();
                head.data = Some(data);
                self.lines.push(head);
            }
            return;
        }
        if let Some((_, data)) = &mut self.data {
            data.push_str(line.strip_prefix('.').unwrap_or(line));
            data.push('\n');
        }
    }

    /// Drops the consumed bytes. Only the unfinished line stays, so this
    /// costs at most one line's length per call, and only once after
    /// lines were consumed.
    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.scanned -= self.pos;
            self.pos = 0;
        }
    }
}

/// Splits `250-text` into its status, separator and text.
fn split_status(line: &str) -> Result<(u16, u8, &str), ProtocolError> {
    let malformed = || ProtocolError::MalformedLine {
        line: line.chars().take(80).collect(),
    };
    let bytes = line.as_bytes();
    if bytes.len() < 4 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return Err(malformed());
    }
    let separator = bytes[3];
    if !matches!(separator, b' ' | b'-' | b'+') {
        return Err(malformed());
    }
    let status = line[..3].parse().map_err(|_| malformed())?;
    Ok((status, separator, &line[4..]))
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> Vec<Reply> {
        let mut parser = ReplyParser::default();
        parser.feed(input);
        let mut replies = Vec::new();
        while let Some(reply) = parser.next_reply().unwrap() {
            replies.push(reply);
        }
        replies
    }

    #[test]
    fn single_line() {
        let replies = parse_all(b"250 OK\r\n");
        assert_eq!(replies.len(), 1);
        assert!(replies[0].is_success());
        assert_eq!(replies[0].message(), "OK");
    }

    #[test]
    fn multi_line_getinfo() {
        let replies = parse_all(b"250-version=0.4.9.11\r\n250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=100 TAG=done\r\n250 OK\r\n");
        let reply = &replies[0];
        assert_eq!(reply.value("version"), Some("0.4.9.11"));
        assert_eq!(
            reply.value("status/bootstrap-phase"),
            Some("NOTICE BOOTSTRAP PROGRESS=100 TAG=done")
        );
        assert_eq!(reply.value("missing"), None);
    }

    #[test]
    fn data_block_is_dot_unescaped() {
        let input = b"250+md/all=\r\nonion-key\r\n..leading dot\r\n.\r\n250 OK\r\n";
        let replies = parse_all(input);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].value("md/all"), Some("onion-key\n.leading dot"));
        assert_eq!(replies[0].lines.len(), 2);
    }

    #[test]
    fn event_with_data() {
        let input =
            b"650+HS_DESC_CONTENT abc x HSDIR\r\nhs-descriptor 3\r\n.\r\n650 OK\r\n250 OK\r\n";
        let replies = parse_all(input);
        assert_eq!(replies.len(), 2);
        assert!(replies[0].is_event());
        assert_eq!(replies[0].event_keyword(), Some("HS_DESC_CONTENT"));
        assert_eq!(replies[0].lines[0].data.as_deref(), Some("hs-descriptor 3"));
        assert!(!replies[1].is_event());
        assert_eq!(replies[1].event_keyword(), None);
    }

    #[test]
    fn bytes_arriving_one_at_a_time() {
        let input = b"250-a=1\r\n250+b=\r\nx\r\n.\r\n552 Unrecognized key \"c\"\r\n";
        let mut parser = ReplyParser::default();
        let mut replies = Vec::new();
        for byte in input {
            parser.feed(&[*byte]);
            while let Some(reply) = parser.next_reply().unwrap() {
                replies.push(reply);
            }
        }
        assert_eq!(replies, parse_all(input));
        assert_eq!(replies[0].status(), 552);
        assert!(!replies[0].is_success());
    }

    #[test]
    fn replies_round_trip_through_bytes() {
        let input: &[u8] = b"250-a=1\r\n250+md/all=\r\nonion-key\r\n..dot\r\n\r\nlast\r\n.\r\n250 OK\r\n650+HS_DESC_CONTENT x y z\r\nhs-descriptor 3\r\n.\r\n650 OK\r\n";
        let replies = parse_all(input);
        let encoded: Vec<u8> = replies.iter().flat_map(Reply::to_bytes).collect();
        assert_eq!(encoded, input);
    }

    #[test]
    fn bare_newlines_are_accepted() {
        let replies = parse_all(b"250-x=1\n250 OK\n");
        assert_eq!(replies[0].value("x"), Some("1"));
    }

    #[test]
    fn malformed_line_is_an_error() {
        let mut parser = ReplyParser::default();
        parser.feed(b"hello\r\n");
        assert!(matches!(
            parser.next_reply(),
            Err(ProtocolError::MalformedLine { .. })
        ));
        parser = ReplyParser::default();
        parser.feed(b"250\r\n");
        assert!(parser.next_reply().is_err());
    }

    #[test]
    fn oversized_reply_is_refused() {
        let limits = Limits {
            max_line: 16,
            max_reply: 2 * LINE_OVERHEAD + 20,
            max_event: LINE_OVERHEAD + 10,
        };
        let mut parser = ReplyParser::new(limits);
        parser.feed(b"250-0123456789\r\n250-0123456789\r\n");
        assert_eq!(
            parser.next_reply(),
            Err(ProtocolError::ReplyTooLong {
                limit: limits.max_reply
            })
        );
        let mut parser = ReplyParser::new(limits);
        parser.feed(&[b'2'; 40]);
        assert_eq!(
            parser.next_reply(),
            Err(ProtocolError::LineTooLong { limit: 16 })
        );
        let mut parser = ReplyParser::new(limits);
        parser.feed(b"650-0123456789\r\n");
        assert_eq!(
            parser.next_reply(),
            Err(ProtocolError::EventTooLong {
                limit: limits.max_event
            })
        );
        // A reply as large as an event may be.
        let mut parser = ReplyParser::new(limits);
        parser.feed(b"250-0123456789\r\n250 OK\r\n");
        assert!(parser.next_reply().unwrap().is_some());
    }

    /// Found by the `reply_parser` fuzz target: a line of bytes that are
    /// not UTF-8 grows threefold when each becomes U+FFFD. It is charged at
    /// what it grows to.
    #[test]
    fn invalid_utf8_is_charged_at_its_replacement_size() {
        let limits = Limits {
            max_line: 100,
            max_reply: 200 + LINE_OVERHEAD,
            max_event: 1000,
        };
        let mut parser = ReplyParser::new(limits);
        let mut line = b"250 ".to_vec();
        line.extend([0xff; 90]);
        line.extend(b"\r\n");
        parser.feed(&line);
        assert_eq!(
            parser.next_reply(),
            Err(ProtocolError::ReplyTooLong {
                limit: limits.max_reply
            })
        );
        let mut parser = ReplyParser::new(Limits {
            max_reply: 300 + LINE_OVERHEAD,
            ..limits
        });
        parser.feed(&line);
        let reply = parser.next_reply().unwrap().unwrap();
        assert_eq!(reply.message().len(), 270);
        assert!(reply.cost() <= 300 + 2 * LINE_OVERHEAD);
    }

    #[test]
    fn a_long_line_in_small_pieces_is_scanned_once() {
        let line_len = 1_000_000;
        let mut parser = ReplyParser::default();
        parser.feed(b"250-");
        let chunk = [b'x'; 100];
        for _ in 0..line_len / chunk.len() {
            parser.feed(&chunk);
            assert_eq!(parser.next_reply(), Ok(None));
        }
        parser.feed(b"\r\n250 OK\r\n");
        let reply = parser.next_reply().unwrap().unwrap();
        assert_eq!(reply.lines[0].text.len(), line_len);
        let total = 4 + line_len + 2 + 8;
        assert!(
            parser.examined <= total,
            "{} bytes examined for {total}",
            parser.examined
        );
    }

    #[test]
    fn many_short_lines_count_at_their_cost_in_memory() {
        let limits = Limits::default();
        let mut parser = ReplyParser::new(limits);
        // Each 7-byte line costs 5 + LINE_OVERHEAD: the limit is reached
        // long before max_event bytes have arrived.
        let lines = limits.max_event / (5 + LINE_OVERHEAD) + 1;
        parser.feed("650-x\r\n".repeat(lines).as_bytes());
        assert!(matches!(
            parser.next_reply(),
            Err(ProtocolError::EventTooLong { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut parser = ReplyParser::new(Limits { max_line: 100, max_reply: 4096, max_event: 1024 });
            for chunk in chunks {
                parser.feed(&chunk);
                while let Ok(Some(reply)) = parser.next_reply() {
                    prop_assert!(!reply.lines.is_empty());
                    let _ = (reply.status(), reply.message(), reply.event_keyword());
                }
            }
        }

        #[test]
        fn line_like_input_never_panics(lines in proptest::collection::vec("[0-9]{3}[ +-][ -~]{0,20}|\\.|\\.\\.[a-z]{0,4}", 0..20)) {
            let mut parser = ReplyParser::default();
            parser.feed(lines.join("\r\n").as_bytes());
            while let Ok(Some(_)) = parser.next_reply() {}
        }
    }
}
