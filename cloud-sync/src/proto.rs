//! The wire protocol: versioned messages in length-prefixed frames.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of a postcard-
//! encoded [`Message`]. Frames larger than [`FRAME_MAX`] are refused from their header
//! ([`frame_len`]), before any allocation; [`decode_body`] turns any body into a
//! message or a typed error, never a panic (`crate::wire` reads frames with both).

use serde::{Deserialize, Serialize};

/// ALPN of the protocol family; the exact version travels in `Hello`.
pub const ALPN: &[u8] = b"canteen-sync";
/// The protocol version this build speaks. Version 2 adds incarnations (`HelloV2`,
/// `WelcomeV2`); version 3 the box's periodic `Status` on the control stream. A cloud
/// of this build still serves a version 1 or 2 box (it welcomes a box in the lower of
/// both versions), and a box of this build speaks version 2 to a cloud that refuses 3.
pub const PROTOCOL_VERSION: u16 = 3;
/// The first version with the box's `Status` message.
pub const STATUS_VERSION: u16 = 3;
/// The oldest protocol version this build still serves.
pub const PROTOCOL_MIN: u16 = 1;
/// Largest frame accepted, in bytes.
pub const FRAME_MAX: usize = 8 * 1024 * 1024;
/// Events in one batch at most.
pub const BATCH_MAX: usize = 2000;

/// An outbox event on the wire. The payload stays JSON text: it is the box's own
/// record, stored and projected by the cloud; its `kind` says how to read it and its
/// `v` which version it is (`canteen_api::events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    pub seq: u64,
    pub kind: String,
    pub aggregate_id: String,
    pub payload: String,
    /// RFC 3339, UTC, as the box stamped it.
    pub at: String,
}

/// A student or staff account flowing down from the cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// `student` or `staff` / `manager`.
    pub role: String,
    /// Student number or staff username.
    pub login: String,
    pub name: String,
    /// argon2id PHC string.
    pub secret_hash: String,
    pub active: bool,
}

/// Why a peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseCode {
    Version,
    Identity,
    Protocol,
}

/// Box → cloud, version 2: who the box is and where its outbox stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxHello {
    pub version: u16,
    pub node_id: String,
    /// The incarnation of the box's database: a random id, renewed when the database
    /// is restored (or found to have gone back in time).
    pub incarnation: String,
    /// Every event up to this one is shared with the incarnation before (the point
    /// the restored database reached); 0 for a box's first incarnation.
    pub base_seq: u64,
    /// The last event in the box's outbox.
    pub last_seq: u64,
    /// What the box believes the cloud holds, and in which incarnation of the cloud
    /// (empty when it knows none).
    pub acked_seq: u64,
    pub cloud_incarnation: String,
    /// The document schema versions this box can load, by document name.
    pub doc_schemas: Vec<(String, u64)>,
}

/// Cloud → box, version 2: accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudWelcome {
    pub version: u16,
    /// The incarnation of the cloud's database: when it differs from the one the box
    /// knows, the box's cursors of the cloud's streams (accounts, documents) are void.
    pub cloud_incarnation: String,
    /// The cloud holds every event of the box's current timeline up to here.
    pub acked_seq: u64,
    /// [`event_digest`] of the event at `acked_seq` as the cloud stored it, so the box
    /// can tell whether its own event there is the same one (it is not after a
    /// restore); empty when there is nothing to compare.
    pub acked_digest: String,
    /// This connection started a new timeline for the box (its incarnation changed).
    pub rebased: bool,
}

/// One business day as the box itself counts it, for reconciliation with the cloud's
/// totals of the same day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayTotals {
    /// `YYYY-MM-DD`, the canteen's own business day.
    pub day: String,
    /// The box's last outbox event when it counted: the totals cover every event up to
    /// here.
    pub through_seq: u64,
    pub orders: i64,
    /// Payments less refunds.
    pub revenue_fen: i64,
    pub refunds_fen: i64,
    pub cancelled: i64,
    pub expired: i64,
    pub unclaimed: i64,
}

/// A document's heads at the box (hex change hashes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocHeads {
    pub doc: String,
    pub heads: Vec<String>,
}

/// Box → cloud on the control stream, every status interval (version 3): what admins
/// need to see about a box that the events do not say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxStatus {
    /// The box's clock when it sent this, in milliseconds since the epoch (the cloud
    /// compares it with its own, less half the round trip).
    pub sent_at_ms: i64,
    /// The box's software version and database schema version.
    pub software: String,
    pub schema: u32,
    /// The last event in the box's outbox, and what the cloud acknowledged as the box
    /// knows it.
    pub last_seq: u64,
    pub acked_seq: u64,
    /// When the oldest event not yet acknowledged was written (RFC 3339), if any.
    pub oldest_waiting_at: Option<String>,
    /// The documents' heads as the box holds them.
    pub docs: Vec<DocHeads>,
    /// The box's own totals of its recent business days (newest first).
    pub days: Vec<DayTotals>,
}

/// Limits on what a status may carry.
pub const STATUS_DOCS_MAX: usize = 4;
pub const STATUS_HEADS_MAX: usize = 64;
pub const STATUS_DAYS_MAX: usize = 8;

impl BoxStatus {
    /// What is wrong with a status from a box, if anything: every field is the peer's.
    pub fn problem(&self) -> Option<String> {
        let short = |s: &str, max: usize| s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic());
        if !short(&self.software, 64) {
            return Some("the software version is 1 to 64 visible characters".into());
        }
        if self.acked_seq > self.last_seq {
            return Some("acknowledged beyond the last event".into());
        }
        if self
            .oldest_waiting_at
            .as_deref()
            .is_some_and(|t| t.len() > 40 || chrono::DateTime::parse_from_rfc3339(t).is_err())
        {
            return Some("the oldest waiting event's time is not RFC 3339".into());
        }
        if self.docs.len() > STATUS_DOCS_MAX
            || self.docs.iter().any(|d| {
                !short(&d.doc, 32)
                    || d.heads.len() > STATUS_HEADS_MAX
                    || d.heads
                        .iter()
                        .any(|h| h.len() != 64 || hex::decode(h).is_err())
            })
        {
            return Some("document heads are at most 4 documents of 64 hex hashes".into());
        }
        if self.days.len() > STATUS_DAYS_MAX
            || self.days.iter().any(|d| {
                chrono::NaiveDate::parse_from_str(&d.day, "%Y-%m-%d").is_err()
                    || d.through_seq > self.last_seq
                    || [d.orders, d.refunds_fen, d.cancelled, d.expired, d.unclaimed]
                        .iter()
                        .any(|n| *n < 0)
            })
        {
            return Some(
                "day totals are at most 8 days (YYYY-MM-DD), counted through an event the box has, none negative"
                    .into(),
            );
        }
        None
    }
}

/// A digest of one event's content (kind, aggregate, payload, time): two timelines
/// that reuse a sequence number hold different events there.
pub fn event_digest(e: &WireEvent) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [&e.kind, &e.aggregate_id, &e.payload, &e.at] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// Decodes a batch's events, refusing more than [`BATCH_MAX`] (every release sends at
/// most that many).
fn at_most_a_batch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<WireEvent>, D::Error> {
    struct Batch;
    impl<'de> serde::de::Visitor<'de> for Batch {
        type Value = Vec<WireEvent>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "at most {BATCH_MAX} events")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(BATCH_MAX));
            while let Some(event) = seq.next_element()? {
                if events.len() == BATCH_MAX {
                    return Err(serde::de::Error::custom(format!(
                        "a batch of more than {BATCH_MAX} events"
                    )));
                }
                events.push(event);
            }
            Ok(events)
        }
    }
    d.deserialize_seq(Batch)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Box → cloud, first frame of the control stream.
    Hello { version: u16, node_id: String },
    /// Cloud → box: accepted; the cloud has every event up to `acked_seq`.
    Welcome { version: u16, acked_seq: u64 },
    /// Either way, then the connection closes.
    Refused { code: RefuseCode, reason: String },
    /// Box → cloud on the events stream: consecutive events, at most [`BATCH_MAX`] (a
    /// longer batch is refused while it is decoded, before it takes the memory).
    Events {
        #[serde(deserialize_with = "at_most_a_batch")]
        events: Vec<WireEvent>,
    },
    /// Cloud → box: every event up to `through_seq` is committed at the cloud.
    Ack { through_seq: u64 },
    /// Either way on a document stream: one Automerge sync message (empty `data`
    /// opens the stream).
    DocSync {
        doc: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Box → cloud: open the accounts stream from this cursor.
    AccountsFrom { cursor: u64 },
    /// Cloud → box: account changes up to `cursor`.
    Accounts { cursor: u64, accounts: Vec<Account> },
    // Version 2. New variants are appended: postcard numbers variants by position, so
    // a version 1 peer still decodes every message it knows.
    /// Box → cloud, first frame of the control stream (version 2).
    HelloV2(BoxHello),
    /// Cloud → box: accepted (version 2).
    WelcomeV2(CloudWelcome),
    // Version 3.
    /// Box → cloud on the control stream, after the welcome, periodically.
    Status(BoxStatus),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {FRAME_MAX}-byte limit")]
    TooLarge(usize),
    #[error("undecodable message: {0}")]
    Malformed(String),
    #[error("the stream ended inside a frame")]
    Truncated,
}

/// Encodes one message as a frame.
pub fn encode(message: &Message) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(message).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if body.len() > FRAME_MAX {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The length of the frame a 4-byte header announces, refused above [`FRAME_MAX`]
/// (before anything of the frame is kept).
pub fn frame_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > FRAME_MAX {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame's body (the bytes after its header).
pub fn decode_body(body: &[u8]) -> Result<Message, FrameError> {
    postcard::from_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A batch of more events than any release sends is refused as it is decoded;
    /// a full one is not.
    #[test]
    fn a_batch_longer_than_batch_max_is_refused() {
        let batch = |n: usize| Message::Events {
            events: (0..n as u64)
                .map(|seq| WireEvent {
                    seq,
                    kind: String::new(),
                    aggregate_id: String::new(),
                    payload: String::new(),
                    at: String::new(),
                })
                .collect(),
        };
        let full = encode(&batch(BATCH_MAX)).unwrap();
        assert_eq!(decode_body(&full[4..]), Ok(batch(BATCH_MAX)));
        let over = encode(&batch(BATCH_MAX + 1)).unwrap();
        // (postcard's error does not carry the reason.)
        assert!(matches!(
            decode_body(&over[4..]),
            Err(FrameError::Malformed(_))
        ));
    }

    fn sample() -> Vec<Message> {
        vec![
            Message::Hello {
                version: 1,
                node_id: "box-1".into(),
            },
            Message::Welcome {
                version: 1,
                acked_seq: 42,
            },
            Message::Refused {
                code: RefuseCode::Version,
                reason: "no".into(),
            },
            Message::Events {
                events: vec![WireEvent {
                    seq: 1,
                    kind: "order.placed".into(),
                    aggregate_id: "x".into(),
                    payload: "{\"a\":1}".into(),
                    at: "2026-11-22T12:00:00Z".into(),
                }],
            },
            Message::Ack { through_seq: 9 },
            Message::DocSync {
                doc: "menu".into(),
                data: vec![1, 2, 3],
            },
        ]
    }

    /// Splits `bytes` as a stream's reader does (`frame_len` of each header, then
    /// `decode_body`): the messages, then the error that stopped it or the bytes left
    /// over (a frame not yet whole).
    fn split(mut bytes: &[u8]) -> (Vec<Message>, Result<usize, FrameError>) {
        let mut out = Vec::new();
        while bytes.len() >= 4 {
            let len = match frame_len([bytes[0], bytes[1], bytes[2], bytes[3]]) {
                Ok(len) => len,
                Err(e) => return (out, Err(e)),
            };
            if bytes.len() < 4 + len {
                break;
            }
            match decode_body(&bytes[4..4 + len]) {
                Ok(m) => out.push(m),
                Err(e) => return (out, Err(e)),
            }
            bytes = &bytes[4 + len..];
        }
        (out, Ok(bytes.len()))
    }

    /// Every message comes back as sent, and a stream cut anywhere gives the messages
    /// before the cut and a frame not yet whole, never an error.
    #[test]
    fn frames_round_trip_even_cut_anywhere() {
        let all: Vec<u8> = sample().iter().flat_map(|m| encode(m).unwrap()).collect();
        assert_eq!(split(&all), (sample(), Ok(0)));
        for cut in 0..all.len() {
            let (messages, rest) = split(&all[..cut]);
            assert_eq!(messages, sample()[..messages.len()]);
            assert!(rest.is_ok(), "cut at {cut}: {rest:?}");
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_reading_them() {
        let header = (FRAME_MAX as u32 + 1).to_be_bytes();
        assert_eq!(split(&header).1, Err(FrameError::TooLarge(FRAME_MAX + 1)));
    }

    /// Crashers found while fuzzing the decoder, kept as regressions.
    #[test]
    fn kept_crashers_decode_to_errors() {
        let cases: &[&[u8]] = &[
            &[0, 0, 0, 1, 0xff],
            &[0, 0, 0, 5, 3, 0xff, 0xff, 0xff, 0xff],
            &[0, 0, 0, 2, 6, 0xff],
            &[0xff, 0xff, 0xff, 0xff],
        ];
        for case in cases {
            let (messages, rest) = split(case);
            assert!(messages.is_empty());
            assert!(rest.is_err() || rest.is_ok_and(|left| left > 0));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

        /// Arbitrary bytes never panic the decoding; it yields messages or errors.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
            let _ = split(&bytes);
        }

        /// Valid frames with a corrupted byte still never panic.
        #[test]
        fn corrupted_frames_never_panic(i in 0usize..64, b in any::<u8>()) {
            let mut frame: Vec<u8> = sample().iter().flat_map(|m| encode(m).unwrap()).collect();
            let at = i % frame.len();
            frame[at] = b;
            let _ = split(&frame);
        }
    }
}
