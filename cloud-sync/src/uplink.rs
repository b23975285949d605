//! The event stream's state on both ends, without I/O.
//!
//! Box side, [`Uplink`]: which events to send next, how many batches may be in flight,
//! what an acknowledgement means. After any failure the box starts again from the
//! cloud's cursor, so delivery is at least once; the cloud side ([`accept_batch`])
//! applies each (node, seq) exactly once and refuses gaps, which makes the whole
//! exactly once.

use crate::proto::WireEvent;
use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UplinkError {
    #[error("the cloud acknowledged {through}, but only {sent} was sent")]
    AckBeyondSent { through: u64, sent: u64 },
    #[error("the cloud acknowledged {through}, behind its earlier acknowledgement {acked}")]
    AckWentBack { through: u64, acked: u64 },
}

#[derive(Debug, Clone)]
pub struct Uplink {
    acked: u64,
    sent: u64,
    in_flight: VecDeque<u64>,
    window: usize,
    batch_max: usize,
}

impl Uplink {
    /// `acked`: what the box knows the cloud has; `window`: batches in flight at most.
    pub fn new(acked: u64, window: usize, batch_max: usize) -> Self {
        Self {
            acked,
            sent: acked,
            in_flight: VecDeque::new(),
            window: window.max(1),
            batch_max: batch_max.max(1),
        }
    }

    /// A new connection: the cloud says what it has; everything after is (re)sent,
    /// also when the cloud has less than it once acknowledged (it was restored from a
    /// backup: the box keeps every event, so it re-fills it). The caller checks first
    /// that `cloud_acked` is within the box's own outbox.
    pub fn on_welcome(&mut self, cloud_acked: u64) {
        self.acked = cloud_acked;
        self.sent = self.acked;
        self.in_flight.clear();
    }

    /// `Some((after_seq, max))` when another batch may be sent.
    pub fn want(&self) -> Option<(u64, usize)> {
        (self.in_flight.len() < self.window).then_some((self.sent, self.batch_max))
    }

    /// A batch ending at `last_seq` went out.
    pub fn sent_batch(&mut self, last_seq: u64) {
        debug_assert!(last_seq > self.sent);
        self.sent = last_seq;
        self.in_flight.push_back(last_seq);
    }

    /// The cloud committed everything through `through`. Returns the new cursor to
    /// persist, if it moved.
    pub fn on_ack(&mut self, through: u64) -> Result<Option<u64>, UplinkError> {
        if through > self.sent {
            return Err(UplinkError::AckBeyondSent {
                through,
                sent: self.sent,
            });
        }
        if through < self.acked {
            return Err(UplinkError::AckWentBack {
                through,
                acked: self.acked,
            });
        }
        while self.in_flight.front().is_some_and(|&last| last <= through) {
            self.in_flight.pop_front();
        }
        if through == self.acked {
            return Ok(None);
        }
        self.acked = through;
        Ok(Some(through))
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("events are not consecutive at seq {0}")]
    NotConsecutive(u64),
    #[error("gap: the cloud has up to {cursor}, the batch starts at {first}")]
    Gap { cursor: u64, first: u64 },
    #[error("seq {0} is out of range")]
    OutOfRange(u64),
}

/// The largest sequence number accepted from a box (stored as SQLite's signed 64-bit
/// integer).
pub const SEQ_MAX: u64 = i64::MAX as u64;

/// Cloud side: which events of a batch are new, given the node's cursor. Replays are
/// skipped; a gap is refused (the box resends from the cursor). Every number is the
/// peer's: the arithmetic is checked, and sequence numbers beyond [`SEQ_MAX`] (or 0)
/// are refused.
pub fn accept_batch(cursor: u64, events: &[WireEvent]) -> Result<&[WireEvent], BatchError> {
    if let Some(bad) = events.iter().find(|e| e.seq == 0 || e.seq > SEQ_MAX) {
        return Err(BatchError::OutOfRange(bad.seq));
    }
    for pair in events.windows(2) {
        if pair[0].seq.checked_add(1) != Some(pair[1].seq) {
            return Err(BatchError::NotConsecutive(pair[1].seq));
        }
    }
    let Some(first) = events.first() else {
        return Ok(&[]);
    };
    let next = cursor
        .checked_add(1)
        .ok_or(BatchError::OutOfRange(cursor))?;
    if first.seq > next {
        return Err(BatchError::Gap {
            cursor,
            first: first.seq,
        });
    }
    let skip = usize::try_from(next - first.seq).unwrap_or(usize::MAX);
    Ok(&events[skip.min(events.len())..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> WireEvent {
        WireEvent {
            seq,
            kind: "k".into(),
            aggregate_id: "a".into(),
            payload: "{}".into(),
            at: String::new(),
        }
    }

    #[test]
    fn window_and_acks() {
        let mut u = Uplink::new(10, 2, 100);
        assert_eq!(u.want(), Some((10, 100)));
        u.sent_batch(20);
        assert_eq!(u.want(), Some((20, 100)));
        u.sent_batch(25);
        assert_eq!(u.want(), None, "two batches in flight");
        assert_eq!(u.on_ack(20), Ok(Some(20)));
        assert_eq!(u.want(), Some((25, 100)));
        assert_eq!(u.on_ack(20), Ok(None), "a repeated ack changes nothing");
        assert!(u.on_ack(30).is_err());
        assert!(u.on_ack(15).is_err());
    }

    #[test]
    fn a_reconnect_resends_from_the_clouds_cursor() {
        let mut u = Uplink::new(10, 4, 100);
        u.sent_batch(20);
        u.sent_batch(30);
        // The link dropped; the cloud had committed up to 20.
        u.on_welcome(20);
        assert_eq!(u.want(), Some((20, 100)));
        assert_eq!(u.acked(), 20);
        // A cloud restored from an older backup is re-filled from its own cursor.
        u.on_welcome(5);
        assert_eq!(u.acked(), 5);
        assert_eq!(u.want(), Some((5, 100)));
    }

    /// Found: `seq + 1` on a peer-supplied value overflowed (a panic in debug builds).
    #[test]
    fn peer_numbers_at_the_edges_are_refused_not_overflowed() {
        assert_eq!(
            accept_batch(0, &[ev(u64::MAX)]),
            Err(BatchError::OutOfRange(u64::MAX))
        );
        assert_eq!(
            accept_batch(0, &[ev(SEQ_MAX), ev(SEQ_MAX + 1)]),
            Err(BatchError::OutOfRange(SEQ_MAX + 1))
        );
        assert_eq!(accept_batch(0, &[ev(0)]), Err(BatchError::OutOfRange(0)));
        assert!(accept_batch(u64::MAX, &[ev(5)]).is_err());
        assert_eq!(accept_batch(SEQ_MAX - 1, &[ev(SEQ_MAX)]).unwrap().len(), 1);
    }

    #[test]
    fn the_cloud_applies_each_seq_once_and_refuses_gaps() {
        let batch: Vec<_> = (5..=9).map(ev).collect();
        assert_eq!(accept_batch(4, &batch).unwrap().len(), 5);
        assert_eq!(
            accept_batch(7, &batch)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![8, 9]
        );
        assert!(
            accept_batch(9, &batch).unwrap().is_empty(),
            "a full replay changes nothing"
        );
        assert!(accept_batch(12, &batch).unwrap().is_empty());
        assert_eq!(
            accept_batch(2, &batch),
            Err(BatchError::Gap {
                cursor: 2,
                first: 5
            })
        );
        let holes = vec![ev(1), ev(3)];
        assert_eq!(accept_batch(0, &holes), Err(BatchError::NotConsecutive(3)));
    }
}
