//! torctl's reply and event parser on arbitrary bytes, split at arbitrary
//! points: never a panic, every bound held, and the events read from what
//! it accepts.

#![no_main]

use libfuzzer_sys::fuzz_target;
use torctl::{Event, Limits, ReplyParser};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses where the input is split into reads.
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_line: 512,
        max_reply: 8192,
        max_event: 2048,
    };
    let mut parser = ReplyParser::new(limits);
    let chunk = usize::from(split).max(1);
    for piece in bytes.chunks(chunk) {
        parser.feed(piece);
        loop {
            match parser.next_reply() {
                Ok(Some(reply)) => {
                    assert!(!reply.lines.is_empty());
                    // Bytes that are not UTF-8 become U+FFFD, three bytes
                    // each: the bound is on what arrived.
                    assert!(reply
                        .lines
                        .iter()
                        .all(|l| l.text.len() <= 3 * limits.max_line));
                    assert!(reply.cost() <= limits.max_reply + 2 * torctl::LINE_OVERHEAD);
                    let _ = (reply.status(), reply.message(), reply.value("x"));
                    if reply.is_event() {
                        let _ = Event::parse(&reply);
                    }
                    // What is parsed encodes back to what parses the same.
                    let mut again = ReplyParser::new(Limits::default());
                    again.feed(&reply.to_bytes());
                    if let Ok(Some(copy)) = again.next_reply() {
                        assert_eq!(copy.status(), reply.status());
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
