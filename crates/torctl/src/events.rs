//! The asynchronous events onionlb follows (control-spec section 4.1),
//! read from `650` replies.

use crate::reply::Reply;

/// An event, as far as onionlb cares about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `HS_DESC`: progress of a descriptor fetch or upload.
    HsDesc(HsDescEvent),
    /// `HS_DESC_CONTENT`: a fetched descriptor.
    HsDescContent(HsDescContent),
    /// `CIRC`: a circuit changed status.
    Circ(CircEvent),
    /// `STATUS_CLIENT`, e.g. `CONSENSUS_ARRIVED`.
    StatusClient {
        /// The status action.
        action: String,
    },
    /// Anything else.
    Other(String),
}

/// What an `HS_DESC` event reports (control-spec section 4.1.25).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HsDescAction {
    /// A fetch was asked of an HSDir.
    Requested,
    /// An upload was sent to an HSDir.
    Upload,
    /// A fetch brought a descriptor.
    Received,
    /// An HSDir accepted an upload.
    Uploaded,
    /// A descriptor was fetched and not used.
    Ignore,
    /// A fetch or an upload failed (see `REASON=`).
    Failed,
    /// tor made a descriptor of its own.
    Created,
    /// An action a later tor may add.
    Other(String),
}

impl HsDescAction {
    /// The action named `word` on the wire.
    pub fn from_word(word: &str) -> Self {
        match word {
            "REQUESTED" => HsDescAction::Requested,
            "UPLOAD" => HsDescAction::Upload,
            "RECEIVED" => HsDescAction::Received,
            "UPLOADED" => HsDescAction::Uploaded,
            "IGNORE" => HsDescAction::Ignore,
            "FAILED" => HsDescAction::Failed,
            "CREATED" => HsDescAction::Created,
            other => HsDescAction::Other(other.to_owned()),
        }
    }
}

/// An `HS_DESC` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsDescEvent {
    /// What it reports.
    pub action: HsDescAction,
    /// The onion address without `.onion`, or `UNKNOWN`.
    pub address: String,
    /// The HSDir's fingerprint (hex, no `$`), if named.
    pub hsdir: Option<String>,
    /// `REASON=`, for failures.
    pub reason: Option<String>,
}

/// A `CIRC` event (control-spec section 4.1.1), as far as onionlb reads
/// it: what the circuit was for and, once it ended, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircEvent {
    /// `LAUNCHED`, `BUILT`, `EXTENDED`, `FAILED`, `CLOSED`, ...
    pub status: String,
    /// `PURPOSE=`, e.g. `HS_CLIENT_REND`.
    pub purpose: Option<String>,
    /// `HS_STATE=`, e.g. `HSCR_JOINED` (a rendezvous circuit joined to
    /// the service's).
    pub hs_state: Option<String>,
    /// `REND_QUERY=`: the onion address (without `.onion`) an onion
    /// service circuit is for.
    pub rend_query: Option<String>,
    /// `REASON=`, for a circuit that ended: `DESTROYED` when the far end
    /// tore it down.
    pub reason: Option<String>,
    /// `REMOTE_REASON=`: the far end's reason, when it tore it down.
    pub remote_reason: Option<String>,
}

impl CircEvent {
    /// The onion address (without `.onion`) whose service's end tore down
    /// this client's rendezvous circuit to it, if that is what this event
    /// says: a joined `HS_CLIENT_REND` circuit `CLOSED` because it was
    /// `DESTROYED` from the far end (the client's own closing, at
    /// `MaxCircuitDirtiness` say, gives another reason).
    pub fn rendezvous_torn_down(&self) -> Option<&str> {
        let torn_down = self.status == "CLOSED"
            && self.purpose.as_deref() == Some("HS_CLIENT_REND")
            && self.hs_state.as_deref() == Some("HSCR_JOINED")
            && self.reason.as_deref() == Some("DESTROYED");
        self.rend_query.as_deref().filter(|_| torn_down)
    }
}

/// An `HS_DESC_CONTENT` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsDescContent {
    /// The onion address without `.onion`.
    pub address: String,
    /// The HSDir's fingerprint (hex, no `$`), if named.
    pub hsdir: Option<String>,
    /// The descriptor; empty when the HSDir had none.
    pub descriptor: String,
}

impl Event {
    /// Reads an event reply. Never fails: what it does not know is `Other`.
    pub fn parse(reply: &Reply) -> Event {
        let Some(first) = reply.lines.first() else {
            return Event::Other(String::new());
        };
        let mut words = first.text.split(' ');
        let keyword = words.next().unwrap_or_default();
        let fields: Vec<&str> = words.collect();
        match keyword {
            "HS_DESC" if fields.len() >= 4 => Event::HsDesc(HsDescEvent {
                action: HsDescAction::from_word(fields[0]),
                address: fields[1].to_owned(),
                hsdir: fingerprint(fields[3]),
                reason: fields
                    .iter()
                    .find_map(|f| f.strip_prefix("REASON="))
                    .map(str::to_owned),
            }),
            "HS_DESC_CONTENT" if fields.len() >= 3 => Event::HsDescContent(HsDescContent {
                address: fields[0].to_owned(),
                hsdir: fingerprint(fields[2]),
                descriptor: first.data.clone().unwrap_or_default(),
            }),
            "CIRC" if fields.len() >= 2 => {
                let keyed = |key: &str| {
                    fields
                        .iter()
                        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                        .map(str::to_owned)
                };
                Event::Circ(CircEvent {
                    status: fields[1].to_owned(),
                    purpose: keyed("PURPOSE"),
                    hs_state: keyed("HS_STATE"),
                    rend_query: keyed("REND_QUERY"),
                    reason: keyed("REASON"),
                    remote_reason: keyed("REMOTE_REASON"),
                })
            }
            "STATUS_CLIENT" if fields.len() >= 2 => Event::StatusClient {
                action: fields[1].to_owned(),
            },
            _ => Event::Other(first.text.clone()),
        }
    }
}

/// The fingerprint in a LongName (`$FP~nick`, `$FP=nick`, `FP`), or `None`
/// for `UNKNOWN`.
fn fingerprint(long_name: &str) -> Option<String> {
    let name = long_name.strip_prefix('$').unwrap_or(long_name);
    let fp = name.split(['~', '=']).next()?;
    (fp.len() == 40 && fp.bytes().all(|b| b.is_ascii_hexdigit())).then(|| fp.to_ascii_uppercase())
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::reply::ReplyParser;

    fn event(text: &str) -> Event {
        let mut parser = ReplyParser::default();
        parser.feed(text.as_bytes());
        Event::parse(&parser.next_reply().unwrap().unwrap())
    }

    const FP: &str = "5128386E9AA8505DD855A33B7146A708115E14E0";

    #[test]
    fn hs_desc() {
        let e = event(&format!("650 HS_DESC UPLOADED tuuzxd5jkuib7anygifwutuunra4vukj2x7gb67sgzcigygyt2yuqgqd UNKNOWN ${FP}~auth0\r\n"));
        assert_eq!(
            e,
            Event::HsDesc(HsDescEvent {
                action: HsDescAction::Uploaded,
                address: "tuuzxd5jkuib7anygifwutuunra4vukj2x7gb67sgzcigygyt2yuqgqd".into(),
                hsdir: Some(FP.into()),
                reason: None,
            })
        );
        let failed = event(&format!(
            "650 HS_DESC FAILED abc NO_AUTH ${FP} descid REASON=NOT_FOUND\r\n"
        ));
        let Event::HsDesc(failed) = failed else {
            panic!()
        };
        assert_eq!(failed.reason.as_deref(), Some("NOT_FOUND"));
        let unknown = event("650 HS_DESC REQUESTED abc NO_AUTH UNKNOWN\r\n");
        let Event::HsDesc(unknown) = unknown else {
            panic!()
        };
        assert_eq!(unknown.hsdir, None);
    }

    #[test]
    fn circ() {
        let closed = event(&format!("650 CIRC 127 CLOSED ${FP}~relay1,${FP}~relay2 BUILD_FLAGS=IS_INTERNAL,NEED_CAPACITY PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_JOINED REND_QUERY=abc TIME_CREATED=2026-12-01T19:35:44.000000 REASON=DESTROYED REMOTE_REASON=CHANNEL_CLOSED SOCKS_USERNAME=\"onionlb-probe\"\r\n"));
        assert_eq!(
            closed,
            Event::Circ(CircEvent {
                status: "CLOSED".into(),
                purpose: Some("HS_CLIENT_REND".into()),
                hs_state: Some("HSCR_JOINED".into()),
                rend_query: Some("abc".into()),
                reason: Some("DESTROYED".into()),
                remote_reason: Some("CHANNEL_CLOSED".into()),
            })
        );
        let Event::Circ(torn_down) = &closed else {
            panic!()
        };
        assert_eq!(torn_down.rendezvous_torn_down(), Some("abc"));
        let finished = event("650 CIRC 9 CLOSED PURPOSE=HS_CLIENT_REND HS_STATE=HSCR_JOINED REND_QUERY=abc REASON=FINISHED\r\n");
        let Event::Circ(finished) = finished else {
            panic!()
        };
        assert_eq!(finished.rendezvous_torn_down(), None);
        let built = event("650 CIRC 1 BUILT $AAAA~x PURPOSE=GENERAL\r\n");
        let Event::Circ(built) = built else { panic!() };
        assert_eq!((built.status.as_str(), built.rend_query), ("BUILT", None));
    }

    #[test]
    fn hs_desc_content_and_status() {
        let e = event(&format!("650+HS_DESC_CONTENT abc descid ${FP}~auth0\r\nhs-descriptor 3\r\nmore\r\n.\r\n650 OK\r\n"));
        assert_eq!(
            e,
            Event::HsDescContent(HsDescContent {
                address: "abc".into(),
                hsdir: Some(FP.into()),
                descriptor: "hs-descriptor 3\nmore".into(),
            })
        );
        assert_eq!(
            event("650 STATUS_CLIENT NOTICE CONSENSUS_ARRIVED\r\n"),
            Event::StatusClient {
                action: "CONSENSUS_ARRIVED".into()
            }
        );
        assert!(matches!(event("650 CIRC\r\n"), Event::Other(_)));
        assert!(matches!(event("650 HS_DESC short\r\n"), Event::Other(_)));
    }
}
