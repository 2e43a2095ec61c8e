//! What the management tor's asynchronous events are to the balancer.
//!
//! The manager subscribes to [`EVENTS`]. Of those, a fetched descriptor
//! (`HS_DESC_CONTENT`), an HSDir's answer to an upload or a fetch
//! (`HS_DESC UPLOADED` or `FAILED`), and a rendezvous circuit torn down
//! by the far end (a probe's instance) are inputs; `STATUS_CLIENT
//! CONSENSUS_ARRIVED` means the consensus must be read again, which the
//! daemon does in a task. The rest (`REQUESTED`, `RECEIVED`, other
//! circuit changes) is progress nobody acts on.

use onionlb_core::balancer::{HsDescReason, HsDirAnswer, Input};
use onionlb_core::consensus::RsaId;
use onionlb_core::OnionAddress;
use torctl::{Event, HsDescAction};

/// The events the manager follows: fetched descriptors, upload results,
/// new consensuses, and circuits (a probe's rendezvous circuit torn down
/// by the instance's end).
pub const EVENTS: [&str; 4] = ["HS_DESC", "HS_DESC_CONTENT", "STATUS_CLIENT", "CIRC"];

/// What an event calls for.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "made and taken apart at once, never stored"
)]
pub enum Heard<'a> {
    /// An input for the balancer.
    Input(Input<'a>),
    /// A new consensus: read it.
    ConsensusArrived,
    /// Nothing.
    Nothing,
}

/// Reads `event` as what it calls for. Addresses and HSDirs are compared
/// as keys: rendering an address hashes, and there are thousands of
/// events per round at a thousand services.
pub fn heard(event: &Event) -> Heard<'_> {
    match event {
        Event::HsDescContent(content) => match content.address.parse::<OnionAddress>() {
            Ok(instance) => Heard::Input(Input::Fetched {
                instance,
                text: &content.descriptor,
            }),
            Err(_) => Heard::Nothing,
        },
        Event::HsDesc(event) => {
            let answer = match event.action {
                HsDescAction::Uploaded => HsDirAnswer::Uploaded,
                HsDescAction::Failed => {
                    HsDirAnswer::Failed(HsDescReason::from_word(event.reason.as_deref()))
                }
                _ => return Heard::Nothing,
            };
            let (Ok(address), Some(Ok(hsdir))) = (
                event.address.parse::<OnionAddress>(),
                event.hsdir.as_deref().map(str::parse::<RsaId>),
            ) else {
                return Heard::Nothing;
            };
            Heard::Input(Input::HsDirAnswer {
                address,
                hsdir,
                answer,
            })
        }
        Event::Circ(circ) => match circ.rendezvous_torn_down().map(str::parse) {
            Some(Ok(instance)) => Heard::Input(Input::RendezvousLost { instance }),
            _ => Heard::Nothing,
        },
        Event::StatusClient { action } if action == "CONSENSUS_ARRIVED" => Heard::ConsensusArrived,
        _ => Heard::Nothing,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use torctl::{Limits, ReplyParser};

    const INSTANCE: &str = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd";
    const HSDIR: &str = "1AB7E7F1A6B1A4A2B3C4D5E6F708192A3B4C5D6E";

    /// The events tor would send as `lines`.
    fn event(lines: &str) -> Event {
        let mut parser = ReplyParser::new(Limits::default());
        parser.feed(lines.as_bytes());
        Event::parse(&parser.next_reply().unwrap().unwrap())
    }

    #[test]
    fn a_fetched_descriptor_is_offered_with_its_text() {
        let e = event(&format!(
            "650+HS_DESC_CONTENT {INSTANCE} abcdefgh ${HSDIR}\r\nhs-descriptor 3\r\nsignature x\r\n.\r\n650 OK\r\n"
        ));
        let Heard::Input(Input::Fetched { instance, text }) = heard(&e) else {
            panic!("{e:?}");
        };
        assert_eq!(instance.without_suffix(), INSTANCE);
        assert!(text.starts_with("hs-descriptor 3\n"), "{text:?}");
    }

    #[test]
    fn an_hsdir_s_answer_is_an_input_and_progress_is_not() {
        let uploaded = event(&format!(
            "650 HS_DESC UPLOADED {INSTANCE} UNKNOWN ${HSDIR}~relay\r\n"
        ));
        assert!(matches!(
            heard(&uploaded),
            Heard::Input(Input::HsDirAnswer {
                answer: HsDirAnswer::Uploaded,
                ..
            })
        ));
        let failed = event(&format!(
            "650 HS_DESC FAILED {INSTANCE} UNKNOWN ${HSDIR} REASON=UPLOAD_REJECTED\r\n"
        ));
        let Heard::Input(Input::HsDirAnswer {
            address,
            hsdir,
            answer: HsDirAnswer::Failed(reason),
        }) = heard(&failed)
        else {
            panic!("{failed:?}");
        };
        assert_eq!(address.without_suffix(), INSTANCE);
        assert_eq!(hsdir, HSDIR.parse::<RsaId>().unwrap());
        assert_eq!(reason, HsDescReason::UploadRejected);
        for progress in [
            format!("650 HS_DESC REQUESTED {INSTANCE} NO_AUTH ${HSDIR} abcd\r\n"),
            format!("650 HS_DESC RECEIVED {INSTANCE} NO_AUTH ${HSDIR} abcd\r\n"),
            // An answer that names no HSDir cannot be counted.
            format!("650 HS_DESC FAILED {INSTANCE} UNKNOWN UNKNOWN REASON=NOT_FOUND\r\n"),
            "650 HS_DESC UPLOADED notanaddress UNKNOWN $00\r\n".to_owned(),
        ] {
            assert!(
                matches!(heard(&event(&progress)), Heard::Nothing),
                "{progress}"
            );
        }
    }

    #[test]
    fn a_probe_s_rendezvous_torn_down_by_the_instance_is_an_input() {
        let line = |reason: &str| {
            format!("650 CIRC 127 CLOSED ${HSDIR}~relay1 PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_JOINED REND_QUERY={INSTANCE} REASON={reason}\r\n")
        };
        let Heard::Input(Input::RendezvousLost { instance }) = heard(&event(&line("DESTROYED")))
        else {
            panic!("not an input");
        };
        assert_eq!(instance.without_suffix(), INSTANCE);
        // Closed by the client itself: nothing about the instance.
        assert!(matches!(heard(&event(&line("FINISHED"))), Heard::Nothing));
    }

    #[test]
    fn a_new_consensus_is_read_and_other_statuses_are_not() {
        assert!(matches!(
            heard(&event("650 STATUS_CLIENT NOTICE CONSENSUS_ARRIVED\r\n")),
            Heard::ConsensusArrived
        ));
        assert!(matches!(
            heard(&event("650 STATUS_CLIENT NOTICE CIRCUIT_ESTABLISHED\r\n")),
            Heard::Nothing
        ));
    }
}
