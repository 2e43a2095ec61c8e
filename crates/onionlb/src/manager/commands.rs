//! The balancer's requests as control commands, and how many go at once.
//!
//! tor answers control commands in order on one connection, so many can
//! be in flight while events keep arriving; torctl matches each answer to
//! its command. At a thousand services a round is thousands of commands:
//! [`Pipeline`] keeps at most [`MAX_IN_FLIGHT`] outstanding and the rest
//! in a backlog, which holds at most what the balancer asks in one tick
//! (its fetches are capped per tick) and its publications. A lost
//! connection empties the backlog: the balancer asks again once it is
//! back.

use std::collections::VecDeque;

use onionlb_core::balancer::Request;
use torctl::Command;

/// Control commands in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// The requests waiting to be sent, and how many are in flight.
#[derive(Debug, Default)]
pub struct Pipeline {
    backlog: VecDeque<Request>,
    in_flight: usize,
}

impl Pipeline {
    /// Queues `request` behind those waiting.
    pub fn push(&mut self, request: Request) {
        self.backlog.push_back(request);
    }

    /// Takes the next request to send and counts it in flight, if there
    /// is room and one waits. Requests that are not control commands are
    /// dropped on the way.
    pub fn next(&mut self) -> Option<(Request, Command)> {
        while self.in_flight < MAX_IN_FLIGHT {
            let request = self.backlog.pop_front()?;
            if let Some(command) = command(&request) {
                self.in_flight += 1;
                return Some((request, command));
            }
        }
        None
    }

    /// A command's answer came (or its connection ended): room for one
    /// more.
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Drops what waits: the connection it was for is gone.
    pub fn clear(&mut self) {
        self.backlog.clear();
    }
}

/// `request` as a control command: `HSFETCH` of an instance from named
/// HSDirs, or `HSPOST` of a master descriptor to named HSDirs.
pub fn command(request: &Request) -> Option<Command> {
    match request {
        Request::Fetch { instance, hsdirs } => Some(
            Command::new("HSFETCH")
                .arg(instance.without_suffix())
                .args(hsdirs.iter().map(|fp| format!("SERVER=${fp}"))),
        ),
        // tor 0.4.x never answers an HSPOST without HSADDRESS=.
        Request::Post {
            service,
            hsdirs,
            text,
            ..
        } => Some(
            Command::new("HSPOST")
                .args(hsdirs.iter().map(|fp| format!("SERVER=${fp}")))
                .arg(format!("HSADDRESS={}", service.without_suffix()))
                .data(&**text),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use onionlb_core::consensus::RsaId;
    use onionlb_core::OnionAddress;

    const ADDRESS: &str = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion";

    fn hsdir(n: u8) -> RsaId {
        format!("{n:02X}{}", "AB".repeat(19)).parse().unwrap()
    }

    fn fetch() -> Request {
        Request::Fetch {
            instance: ADDRESS.parse::<OnionAddress>().unwrap(),
            hsdirs: vec![hsdir(1), hsdir(2)],
        }
    }

    fn wire(command: &Command) -> String {
        String::from_utf8(command.encode().unwrap()).unwrap()
    }

    #[test]
    fn a_fetch_names_its_hsdirs_and_a_post_its_address() {
        let fetch = wire(&command(&fetch()).unwrap());
        assert_eq!(
            fetch,
            format!(
                "HSFETCH {} SERVER=${} SERVER=${}\r\n",
                ADDRESS.trim_end_matches(".onion"),
                hsdir(1),
                hsdir(2)
            )
        );
        let post = Request::Post {
            service: ADDRESS.parse::<OnionAddress>().unwrap(),
            slot: onionlb_core::period::DescriptorSlot::First,
            hsdirs: vec![hsdir(3)],
            text: "hs-descriptor 3\nsignature x\n".into(),
        };
        assert_eq!(
            wire(&command(&post).unwrap()),
            format!(
                "+HSPOST SERVER=${} HSADDRESS={}\r\nhs-descriptor 3\r\nsignature x\r\n.\r\n",
                hsdir(3),
                ADDRESS.trim_end_matches(".onion")
            )
        );
    }

    #[test]
    fn at_most_max_in_flight_go_and_each_answer_lets_one_more() {
        let mut pipeline = Pipeline::default();
        for _ in 0..MAX_IN_FLIGHT + 3 {
            pipeline.push(fetch());
        }
        let sent = std::iter::from_fn(|| pipeline.next()).count();
        assert_eq!(sent, MAX_IN_FLIGHT);
        pipeline.finished();
        assert!(pipeline.next().is_some());
        assert!(pipeline.next().is_none());
        pipeline.clear();
        pipeline.finished();
        assert!(pipeline.next().is_none(), "the backlog was cleared");
    }
}
