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
        assert!(matches!(event("650 CIRC 1 BUILT\r\n"), Event::Other(_)));
        assert!(matches!(event("650 HS_DESC short\r\n"), Event::Other(_)));
    }
}
