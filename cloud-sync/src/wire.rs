//! Reading and writing frames on quinn streams.
//!
//! A stream's frames are read by a task of their own into a bounded inbox. What a peer
//! can make the reader hold is limited twice: in frames (the inbox), and in bytes by
//! an [`Allowance`], which a frame is charged against from its header on (before its
//! body is read, at what it may take decoded) until its [`Charge`] is dropped: when
//! the message has been handled, or at once with [`next`]. A reader that finds the
//! allowance spent stops reading, so QUIC's flow control holds the peer back.

use crate::proto::{BATCH_MAX, FrameError, Message, decode_body, encode, frame_len};
use quinn::ReadExactError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Frames waiting to be handled per stream, at most.
const INBOX_MAX: usize = 16;
/// An allowance counts in units of this many bytes.
const UNIT: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream: {0}")]
    Stream(String),
    #[error("the peer closed the stream")]
    Closed,
}

pub async fn send(stream: &mut quinn::SendStream, message: &Message) -> Result<(), WireError> {
    let frame = encode(message)?;
    stream
        .write_all(&frame)
        .await
        .map_err(|e| WireError::Stream(e.to_string()))
}

/// Bytes that frames received and not yet handled may take: a frame takes what it may
/// take decoded from each pool in turn, and gives it back when its [`Charge`] is
/// dropped. The cloud charges each box's streams to a share of their own, then to the
/// cloud's whole, so one box cannot take more than its share of the whole.
#[derive(Clone, Default)]
pub struct Allowance {
    pools: Vec<Pool>,
}

#[derive(Clone)]
struct Pool {
    permits: Arc<Semaphore>,
    units: u32,
}

impl Allowance {
    /// No limit in bytes (the stream's inbox still holds [`INBOX_MAX`] frames at most).
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// A pool of `bytes`.
    pub fn of(bytes: usize) -> Self {
        let units = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX).max(1);
        Self {
            pools: vec![Pool {
                permits: Arc::new(Semaphore::new(units as usize)),
                units,
            }],
        }
    }

    /// `self`'s pools first, then `then`'s (shared with every allowance made from it).
    pub fn then(&self, then: &Allowance) -> Self {
        let mut pools = self.pools.clone();
        pools.extend(then.pools.iter().cloned());
        Self { pools }
    }

    /// Bytes left in the tightest pool (`usize::MAX` without any).
    pub fn left(&self) -> usize {
        self.pools
            .iter()
            .map(|p| p.permits.available_permits() * UNIT)
            .min()
            .unwrap_or(usize::MAX)
    }

    /// Whether an allowance made from this one exists (a reader's, say).
    fn in_use(&self) -> bool {
        self.pools.iter().any(|p| Arc::strong_count(&p.permits) > 1)
    }

    /// Takes `bytes` from every pool, waiting until each has them (at most a whole
    /// pool from each, so every charge can be met).
    async fn take(&self, bytes: usize) -> Charge {
        let want = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .max(1);
        let mut permits = Vec::with_capacity(self.pools.len());
        for pool in &self.pools {
            let permit = pool
                .permits
                .clone()
                .acquire_many_owned(want.min(pool.units))
                .await
                .expect("an allowance's pools are never closed");
            permits.push(permit);
        }
        Charge { _permits: permits }
    }
}

/// A whole allowance and a share for each box, the same for all of a box's
/// connections to this process (a box may hold several at once).
pub struct Shares {
    whole: Allowance,
    share: usize,
    boxes: Mutex<HashMap<String, Allowance>>,
}

impl Shares {
    pub fn new(whole: usize, share: usize) -> Self {
        Self {
            whole: Allowance::of(whole),
            share,
            boxes: Mutex::default(),
        }
    }

    /// Box `node`'s allowance: its own share first, then the whole.
    pub fn of_box(&self, node: &str) -> Allowance {
        self.share_of(node).then(&self.whole)
    }

    /// Box `node`'s own share alone.
    pub fn share_of(&self, node: &str) -> Allowance {
        let mut boxes = self.boxes.lock().unwrap_or_else(|e| e.into_inner());
        if !boxes.contains_key(node) {
            // The shares nothing holds any more go, so the map stays about as large
            // as the boxes connected.
            boxes.retain(|_, a| a.in_use());
        }
        boxes
            .entry(node.to_owned())
            .or_insert_with(|| Allowance::of(self.share))
            .clone()
    }

    /// Bytes left of the whole.
    pub fn left(&self) -> usize {
        self.whole.left()
    }
}

/// What a received message holds of its stream's [`Allowance`], given back when
/// dropped.
#[derive(Default)]
pub struct Charge {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// A received message, or why the stream ended, with its charge.
pub type Inbound = (Result<Message, WireError>, Charge);

/// The messages a stream's reader has received, in order.
pub struct Inbox(mpsc::Receiver<Inbound>);

impl From<mpsc::Receiver<Inbound>> for Inbox {
    fn from(rx: mpsc::Receiver<Inbound>) -> Self {
        Self(rx)
    }
}

impl Inbox {
    /// The next message with its charge: the reader counts the message's bytes as
    /// held until the charge is dropped.
    pub async fn next_charged(&mut self) -> Inbound {
        self.0
            .recv()
            .await
            .unwrap_or((Err(WireError::Closed), Charge::default()))
    }

    /// Like [`Inbox::next_charged`], if a message is already waiting.
    pub fn try_next_charged(&mut self) -> Option<Inbound> {
        self.0.try_recv().ok()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Spawns a task that reads frames from `recv` into an inbox, without a limit in bytes.
/// The inbox ends with an error item (or closes) when the stream does.
pub fn reader(recv: quinn::RecvStream) -> Inbox {
    reader_within(recv, Allowance::unlimited())
}

/// Like [`reader`], each frame charged against `allowance` from its header on.
pub fn reader_within(mut recv: quinn::RecvStream, allowance: Allowance) -> Inbox {
    let (tx, rx) = mpsc::channel(INBOX_MAX);
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                read = read_frame(&mut recv, &allowance) => read,
                // Nobody reads the inbox any more (the stream's handler ended): a
                // reader waiting for its allowance gives up.
                () = tx.closed() => return,
            };
            let (item, end) = match item {
                Ok(Some((message, charge))) => ((Ok(message), charge), false),
                Ok(None) => ((Err(WireError::Closed), Charge::default()), true),
                Err(e) => ((Err(e), Charge::default()), true),
            };
            if tx.send(item).await.is_err() || end {
                return;
            }
        }
    });
    Inbox(rx)
}

/// What a frame of `len` bytes (after its header) may take once decoded, at most:
/// its bytes, and for each event of a batch (at most [`BATCH_MAX`], and each at
/// least 5 bytes on the wire) its fields' allocations, counted at 16 bytes each
/// beside the allocator's.
fn charge_for(len: usize) -> usize {
    const PER_EVENT: usize = std::mem::size_of::<crate::proto::WireEvent>() + 4 * 16;
    4 + len + (len / 5).min(BATCH_MAX) * PER_EVENT
}

/// The next frame's message and charge; `None` when the stream ended between frames.
/// The charge is taken once, from the header, before the body is read.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    allowance: &Allowance,
) -> Result<Option<(Message, Charge)>, WireError> {
    let mut header = [0u8; 4];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(read_error(e)),
    }
    let len = frame_len(header)?;
    let charge = allowance.take(charge_for(len)).await;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(read_error)?;
    Ok(Some((decode_body(&body)?, charge)))
}

fn read_error(e: ReadExactError) -> WireError {
    match e {
        ReadExactError::FinishedEarly(_) => WireError::Frame(FrameError::Truncated),
        ReadExactError::ReadError(e) => WireError::Stream(e.to_string()),
    }
}

/// The next message, or why there is none; its charge is given back at once (for
/// streams whose messages are handled as they come).
pub async fn next(inbox: &mut Inbox) -> Result<Message, WireError> {
    inbox.next_charged().await.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity;
    use crate::proto::WireEvent;
    use std::time::Duration;

    /// A QUIC connection over loopback with the campus's TLS, from a box to a
    /// cloud-side endpoint: (the box's end, the cloud's end, the endpoints to keep).
    async fn link(
        dir: &std::path::Path,
    ) -> (quinn::Connection, quinn::Connection, [quinn::Endpoint; 2]) {
        let ca = dir.join("ca");
        identity::ca_init(&ca, identity::DEFAULT_CLOUD_NAME).unwrap();
        identity::enroll(&ca, "box-a", &dir.join("box"), &[]).unwrap();
        let server = identity::server_config(
            &ca.join(identity::CA_CERT),
            &ca.join(identity::CLOUD_CERT),
            &ca.join(identity::CLOUD_KEY),
        )
        .unwrap();
        let cloud = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
        let mut boxed = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        boxed.set_default_client_config(
            identity::client_config(
                &ca.join(identity::CA_CERT),
                &dir.join("box/box-a.pem"),
                &dir.join("box/box-a.key"),
            )
            .unwrap(),
        );
        let addr = cloud.local_addr().unwrap();
        let (dialled, accepted) = tokio::join!(
            async {
                boxed
                    .connect(addr, identity::DEFAULT_CLOUD_NAME)
                    .unwrap()
                    .await
                    .unwrap()
            },
            async { cloud.accept().await.unwrap().await.unwrap() }
        );
        (dialled, accepted, [cloud, boxed])
    }

    /// A batch of `n` events of about a kilobyte each, from `seq` on.
    fn batch(seq: u64, n: u64) -> Message {
        let events = (seq..seq + n)
            .map(|seq| WireEvent {
                seq,
                kind: "order.placed".into(),
                aggregate_id: format!("o{seq}"),
                payload: "x".repeat(1000),
                at: "2026-12-08T12:00:00Z".into(),
            })
            .collect();
        Message::Events { events }
    }

    fn first_seq(m: &Result<Message, WireError>) -> u64 {
        match m {
            Ok(Message::Events { events }) => events[0].seq,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    /// Waits until `inbox` holds `n` messages, and checks after a while that it holds
    /// no more: the reader stopped reading.
    async fn holds(inbox: &Inbox, n: usize) {
        tokio::time::timeout(Duration::from_secs(20), async {
            while inbox.len() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the inbox never held {n} (it holds {})", inbox.len()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(inbox.len(), n, "the reader went on past its allowance");
    }

    /// Sends twelve batches of 100 on a new stream without waiting for anything;
    /// gives the stream back, still open, once they are all written.
    async fn twelve_batches(
        link: &quinn::Connection,
    ) -> tokio::task::JoinHandle<quinn::SendStream> {
        let (mut send, _) = link.open_bi().await.unwrap();
        tokio::spawn(async move {
            for i in 0..12 {
                super::send(&mut send, &batch(1 + 100 * i, 100))
                    .await
                    .unwrap();
            }
            send
        })
    }

    /// A peer that sends more than its allowance without waiting: the reader holds
    /// what the allowance covers and stops reading (the rest waits in QUIC's flow
    /// control, at the peer); each message handled lets one more in. A second stream
    /// of the same box shares the box's allowance; another box's reader does not wait
    /// for it. Without the allowance, the inbox fills to its frame count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_cannot_make_the_reader_hold_more_than_its_allowance() {
        let dir = tempfile::tempdir().unwrap();
        let (dialled, accepted, _endpoints) = link(dir.path()).await;
        // What a batch is charged: more than its frame, as it takes more decoded.
        let frame = encode(&batch(1, 100)).unwrap().len();
        let each = charge_for(frame - 4);
        assert!(each > frame);
        // Three batches' worth for this box; more than enough in the whole.
        let shares = Shares::new(64 * each, 3 * (each + 2 * UNIT));
        let writer = twelve_batches(&dialled).await;
        let (_, recv) = accepted.accept_bi().await.unwrap();
        let mut inbox = reader_within(recv, shares.of_box("box-a"));
        holds(&inbox, 3).await;
        assert!(shares.left() < 64 * each, "the whole is charged too");

        // A second stream of the same box waits for the box's share ...
        let (mut other_send, _) = dialled.open_bi().await.unwrap();
        super::send(&mut other_send, &batch(5000, 1)).await.unwrap();
        let (_, other_recv) = accepted.accept_bi().await.unwrap();
        let other = reader_within(other_recv, shares.of_box("box-a"));
        // ... while another box's reader goes on.
        let (mut third_send, _) = dialled.open_bi().await.unwrap();
        super::send(&mut third_send, &batch(9000, 1)).await.unwrap();
        let (_, third_recv) = accepted.accept_bi().await.unwrap();
        let third = reader_within(third_recv, shares.of_box("box-b"));
        holds(&third, 1).await;
        holds(&other, 0).await;

        // Handling a message (dropping it and its charge) lets the next one in.
        let (m, charge) = inbox.next_charged().await;
        assert_eq!(first_seq(&m), 1);
        drop((m, charge));
        holds(&inbox, 3).await;
        // Messages whose charge goes as they are taken (as with `next`) let every one
        // through in turn.
        let mut seqs = vec![];
        for _ in 0..11 {
            seqs.push(first_seq(&inbox.next_charged().await.0));
        }
        assert_eq!(seqs, (1..12).map(|i| 1 + 100 * i).collect::<Vec<_>>());
        let mut send = writer.await.unwrap();
        send.finish().unwrap();
        assert!(matches!(next(&mut inbox).await, Err(WireError::Closed)));
        holds(&other, 1).await;

        // Without an allowance in bytes, a reader takes in all it can hold.
        let writer = twelve_batches(&dialled).await;
        let (_, recv) = accepted.accept_bi().await.unwrap();
        let unlimited = reader(recv);
        holds(&unlimited, 12).await;
        drop(writer.await.unwrap());
    }
}
