//! The cloud's QUIC side: accepts boxes, checks who they are, and serves their
//! streams (events in, documents both ways, accounts down).

use super::docs::DocHub;
use super::store::CloudStore;
use crate::identity;
use crate::proto::{
    BATCH_MAX, BoxHello, BoxStatus, CloudWelcome, Message, PROTOCOL_MIN, PROTOCOL_VERSION,
    RefuseCode, STATUS_VERSION, WireEvent,
};
use crate::wire::{self, WireError};
use crdt::DocKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// Boxes connected at once, at most.
const CONNECTIONS_MAX: usize = 1000;
/// Handshakes in progress at once (before any certificate is checked).
const HANDSHAKES_MAX: usize = 64;
/// A handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const ACCOUNTS_PAGE: usize = 1000;

/// Application close codes.
pub const CLOSE_REFUSED_VERSION: u32 = 1;
pub const CLOSE_REFUSED_IDENTITY: u32 = 2;
pub const CLOSE_PROTOCOL: u32 = 3;

#[derive(Clone)]
pub struct Cloud {
    pub store: Arc<CloudStore>,
    pub docs: Arc<DocHub>,
    pub accounts_changed: Arc<Notify>,
    /// The cloud's incarnation: when it changes (a restore was detected), every
    /// connected box is disconnected so it starts over with the new one.
    pub incarnation: Arc<tokio::sync::watch::Sender<String>>,
    /// When this process last renewed the incarnation: at most one renewal per
    /// [`RENEWAL_INTERVAL`], so a box that keeps claiming acknowledgements it never got
    /// cannot make every box start over again and again.
    renewed_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// What frames received and not yet handled may take: [`RECEIVED_PER_BOX`] for
    /// one box, and for all boxes at once [`RECEIVED_PER_INGEST`] for each group
    /// stored at once ([`ingests_max`]; 64 MiB on two cores): the groups being stored
    /// and the next batches of each. A mass reconnect after an outage, each box with
    /// its window of batches in flight, waits in QUIC's flow control rather than in
    /// memory.
    pub receiving: Arc<wire::Shares>,
    /// Groups of batches being stored at once, at most [`ingests_max`].
    ingests: Arc<Semaphore>,
}

/// Groups of batches stored at once, from all boxes: two per core, at least four and
/// at most twelve (the PostgreSQL pool holds sixteen connections, and the console
/// needs some). More at once add no speed, only memory: a group being stored holds
/// its decoded events (about 10 MB for four batches of orders), the rows on their way
/// to the database and its projection, so after an outage a reconnecting fleet waits
/// in its boxes' windows, not in the cloud's memory.
fn ingests_max() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores).clamp(4, 12)
}

/// What frames received and not yet handled (stored, for batches) may take for one
/// box, over all its connections: its window of batches (eight of about 2.6 MB decoded
/// for orders of a few lines) and its other streams' messages. A box whose batches are
/// larger is slowed, not stopped: every frame fits ([`crate::proto::FRAME_MAX`] is
/// 8 MiB).
const RECEIVED_PER_BOX: usize = 32 << 20;
/// The part of all boxes' frames per group stored at once: a group of four batches
/// (about 10 MB decoded) and the next ones. A fleet of 30 boxes catching up at once
/// peaked at 284 MiB of resident memory with this, at 393 MiB with twice this, and
/// at 580 MiB without any limit (BENCHMARKS.md).
const RECEIVED_PER_INGEST: usize = 16 << 20;

/// The least time between two renewals of the cloud's incarnation by detection.
const RENEWAL_INTERVAL: Duration = Duration::from_secs(600);

impl Cloud {
    pub fn new(store: Arc<CloudStore>) -> Result<Self, super::store::StoreError> {
        let incarnation = store.incarnation()?;
        let cloud = Self {
            docs: Arc::new(DocHub::new(store.clone())),
            store,
            accounts_changed: Arc::new(Notify::new()),
            incarnation: Arc::new(tokio::sync::watch::Sender::new(incarnation)),
            renewed_at: Arc::default(),
            receiving: Arc::new(wire::Shares::new(
                ingests_max() * RECEIVED_PER_INGEST,
                RECEIVED_PER_BOX,
            )),
            ingests: Arc::new(Semaphore::new(ingests_max())),
        };
        if let (Some(changes), Ok(rt)) =
            (cloud.store.changes(), tokio::runtime::Handle::try_current())
        {
            rt.spawn(follow_replicas(cloud.clone(), changes));
        }
        Ok(cloud)
    }

    fn may_renew(&self) -> bool {
        self.renewed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| at.elapsed() >= RENEWAL_INTERVAL)
    }

    fn renewed(&self) {
        *self.renewed_at.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::time::Instant::now());
    }
}

/// Takes what other replicas of the cloud changed (PostgreSQL's notifications): a box's
/// documents (the box's connection here offers them), new accounts, a renewed
/// incarnation (every box here starts over); after missed notices, all three.
async fn follow_replicas(
    cloud: Cloud,
    mut changes: tokio::sync::broadcast::Receiver<super::pg::Change>,
) {
    use super::pg::Change;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            Err(RecvError::Lagged(_)) => Change::Missed,
            Err(RecvError::Closed) => return,
        };
        let (docs, accounts, incarnation) = match &change {
            Change::Doc { node, doc } => (
                Some((Some(node.clone()), DocKind::parse(doc))),
                false,
                false,
            ),
            Change::Accounts => (None, true, false),
            Change::Incarnation => (None, false, true),
            Change::Missed => (Some((None, None)), true, true),
        };
        if let Some((node, kind)) = docs {
            let hub = cloud.docs.clone();
            if let Err(e) = blocking(move || hub.reload(node.as_deref(), kind)).await {
                tracing::warn!(error = %e, "taking another replica's document changes");
            }
        }
        if accounts {
            cloud.accounts_changed.notify_waiters();
        }
        if incarnation {
            let store = cloud.store.clone();
            match blocking(move || Ok(store.incarnation()?)).await {
                Ok(fresh) => {
                    cloud.incarnation.send_if_modified(|known| {
                        let changed = *known != fresh;
                        *known = fresh;
                        changed
                    });
                }
                Err(e) => tracing::warn!(error = %e, "reading the cloud's incarnation"),
            }
        }
    }
}

/// Longest incarnation id a box may send.
const INCARNATION_MAX: usize = 64;
/// Document schema entries a box may declare.
const DOC_SCHEMAS_MAX: usize = 8;

/// What is wrong with a version 2 `Hello`, if anything: every number and string is
/// the peer's.
fn hello_problem(h: &BoxHello) -> Option<String> {
    let id_ok = |s: &str| {
        s.len() <= INCARNATION_MAX && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if h.incarnation.is_empty() || !id_ok(&h.incarnation) || !id_ok(&h.cloud_incarnation) {
        return Some("incarnation ids are 1 to 64 letters, digits or dashes".into());
    }
    let max = crate::uplink::SEQ_MAX;
    if h.base_seq > max || h.last_seq > max || h.acked_seq > max {
        return Some("a sequence number is out of range".into());
    }
    if h.acked_seq > h.last_seq {
        return Some("the box claims acknowledgements beyond its last event".into());
    }
    if h.base_seq > h.last_seq {
        return Some("the base of the box's incarnation is beyond its last event".into());
    }
    if h.doc_schemas.len() > DOC_SCHEMAS_MAX || h.doc_schemas.iter().any(|(d, _)| d.len() > 32) {
        return Some("too many document schemas".into());
    }
    None
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!(e))?
}

/// Why a box is not who it says, if it is not: its certificate names another node (or
/// none), or the certificate is revoked (a stolen box; checked on every handshake).
async fn identity_refusal(
    conn: &quinn::Connection,
    cloud: &Cloud,
    cert_node: Option<String>,
    node: &str,
) -> Option<String> {
    if cert_node.as_deref() != Some(node) {
        return Some(format!(
            "this box claims node id {node:?} but its certificate names {}",
            cert_node.map_or("no node".to_owned(), |c| format!("{c:?}"))
        ));
    }
    let issued_at = crate::identity::peer_issued_at(conn).unwrap_or(0);
    let (store, owned) = (cloud.store.clone(), node.to_owned());
    match blocking(move || Ok(store.is_revoked(&owned, issued_at)?)).await {
        Ok(false) => None,
        Ok(true) => Some(format!(
            "the certificate of {node:?} is revoked; enrol the box again"
        )),
        Err(e) => {
            tracing::error!(%node, error = %e, "cannot check the revocation list; refusing");
            Some("the cloud cannot check its revocation list; try again later".into())
        }
    }
}

/// Accepts connections until `shutdown`, then closes them politely.
pub async fn serve(endpoint: quinn::Endpoint, cloud: Cloud, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            i = endpoint.accept() => match i { Some(i) => i, None => break },
        };
        // Address validation first (a QUIC retry): a spoofed source address never
        // gets as far as a handshake.
        if !incoming.remote_address_validated() && incoming.may_retry() {
            let _ = incoming.retry();
            continue;
        }
        // Handshakes (not yet authenticated) have a small pool and a time limit of
        // their own; only a box whose certificate checked out takes a connection slot.
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let (cloud, permits) = (cloud.clone(), permits.clone());
        tasks.spawn(async move {
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "a box's handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!("a box's handshake timed out");
                    return;
                }
            };
            drop(handshake);
            let Ok(_permit) = permits.try_acquire_owned() else {
                conn.close(CLOSE_PROTOCOL.into(), b"too many boxes connected");
                return;
            };
            connection(conn, cloud).await;
        });
        while tasks.try_join_next().is_some() {}
    }
    endpoint.close(0u32.into(), b"cloud shutting down");
    tasks.abort_all();
    endpoint.wait_idle().await;
}

/// Sends the refusal, then closes the connection with the close code of `code`.
async fn refuse(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    code: RefuseCode,
    reason: String,
) {
    let close = match code {
        RefuseCode::Version => CLOSE_REFUSED_VERSION,
        RefuseCode::Identity => CLOSE_REFUSED_IDENTITY,
        RefuseCode::Protocol => CLOSE_PROTOCOL,
    };
    tracing::warn!(remote = %conn.remote_address(), %reason, "refusing a box");
    let _ = wire::send(
        send,
        &Message::Refused {
            code,
            reason: reason.clone(),
        },
    )
    .await;
    let _ = send.finish();
    // Give the refusal a moment to leave before the close.
    tokio::time::sleep(Duration::from_millis(100)).await;
    conn.close(close.into(), reason.as_bytes());
}

async fn connection(conn: quinn::Connection, cloud: Cloud) {
    let cert_node = identity::peer_node_id(&conn);
    let Ok(Ok((mut control, control_rx))) =
        tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await
    else {
        conn.close(CLOSE_PROTOCOL.into(), b"no control stream");
        return;
    };
    // Frames are charged to the node the certificate names (one without a name is
    // refused at its hello). The control stream (the hello, statuses) is charged to
    // the box's share alone, so a box's hello never waits behind other boxes' batches.
    let node_of_cert = cert_node.as_deref().unwrap_or_default();
    let allowance = cloud.receiving.of_box(node_of_cert);
    let mut control_rx = wire::reader_within(control_rx, cloud.receiving.share_of(node_of_cert));
    let hello = tokio::time::timeout(HELLO_TIMEOUT, wire::next(&mut control_rx)).await;
    let (version, node, v2) = match hello {
        Ok(Ok(Message::Hello { version, node_id })) => (version, node_id, None),
        Ok(Ok(Message::HelloV2(h))) => (h.version, h.node_id.clone(), Some(h)),
        _ => {
            conn.close(CLOSE_PROTOCOL.into(), b"expected hello");
            return;
        }
    };
    if !(PROTOCOL_MIN..=PROTOCOL_VERSION).contains(&version) || (v2.is_some() && version < 2) {
        let reason = format!(
            "protocol version {version} is not supported; this cloud speaks versions {PROTOCOL_MIN} to {PROTOCOL_VERSION}"
        );
        refuse(&conn, &mut control, RefuseCode::Version, reason).await;
        return;
    }
    if let Some(reason) = identity_refusal(&conn, &cloud, cert_node, &node).await {
        refuse(&conn, &mut control, RefuseCode::Identity, reason).await;
        return;
    }
    if let Some(reason) = v2.as_ref().and_then(hello_problem) {
        refuse(&conn, &mut control, RefuseCode::Protocol, reason).await;
        return;
    }
    let declared = v2
        .as_ref()
        .map(|h| h.doc_schemas.clone())
        .unwrap_or_default();
    let (docs, n) = (cloud.docs.clone(), node.clone());
    if let Err(e) = blocking(move || docs.set_box_schemas(&n, &declared)).await {
        tracing::error!(%node, error = %e, "cannot keep the box's documents at its schema");
        conn.close(CLOSE_PROTOCOL.into(), b"cloud store unavailable");
        return;
    }
    // Subscribed before the store answers: a renewal by another box's hello in
    // between is seen below, not missed.
    let mut incarnation = cloud.incarnation.subscribe();
    let mut timeline = None;
    let welcome = match v2 {
        // A version 1 box: no incarnations, the cursor alone. A box that has spoken
        // version 2 before is refused it: an older release would adopt a cursor beyond
        // its outbox after a restore (the loss version 2 prevents).
        None => {
            let (store, n) = (cloud.store.clone(), node.clone());
            let answer = blocking(move || {
                if !store.node_incarnation(&n)?.is_empty() {
                    return Ok(None);
                }
                let connection = store.connected(&n)?;
                Ok(Some((
                    connection,
                    Message::Welcome {
                        version: 1,
                        acked_seq: store.acked(&n)?,
                    },
                )))
            })
            .await;
            match answer {
                Ok(None) => {
                    let reason = "this box spoke protocol version 2 before; a box of an older \
                                  release cannot re-base after a restore: upgrade it"
                        .to_owned();
                    refuse(&conn, &mut control, RefuseCode::Version, reason).await;
                    return;
                }
                Ok(Some(welcome)) => Ok(welcome),
                Err(e) => Err(e),
            }
        }
        Some(h) => {
            let speak = h.version.min(PROTOCOL_VERSION);
            let (store, n) = (cloud.store.clone(), node.clone());
            let may_renew = cloud.may_renew();
            match blocking(move || Ok(store.hello(&n, &h, may_renew)?)).await {
                Ok(o) => {
                    if o.cloud_restored {
                        tracing::error!(
                            %node,
                            incarnation = %o.cloud_incarnation,
                            "this box holds acknowledgements beyond this database: the cloud \
                             was restored from a backup; took a new incarnation, boxes refill it"
                        );
                        cloud.renewed();
                        cloud.incarnation.send_replace(o.cloud_incarnation.clone());
                    }
                    if o.rebased {
                        tracing::warn!(
                            %node,
                            from_seq = o.acked_seq,
                            "the box came back with another incarnation (restored or \
                             reinstalled): a new timeline, resolved as it resends"
                        );
                        cloud.docs.forget_peer(&node);
                    }
                    timeline = Some(o.timeline);
                    Ok((
                        o.connection,
                        Message::WelcomeV2(CloudWelcome {
                            version: speak,
                            cloud_incarnation: o.cloud_incarnation,
                            acked_seq: o.acked_seq,
                            acked_digest: o.acked_digest,
                            rebased: o.rebased,
                        }),
                    ))
                }
                Err(e) => Err(e),
            }
        }
    };
    let Ok((connection, welcome)) = welcome else {
        conn.close(CLOSE_PROTOCOL.into(), b"cloud store unavailable");
        return;
    };
    let acked_seq = match &welcome {
        Message::Welcome { acked_seq, .. } => *acked_seq,
        Message::WelcomeV2(w) => w.acked_seq,
        _ => 0,
    };
    let current = incarnation.borrow_and_update().clone();
    if let Message::WelcomeV2(w) = &welcome
        && w.cloud_incarnation != current
    {
        conn.close(
            CLOSE_PROTOCOL.into(),
            b"the cloud's incarnation changed; reconnect",
        );
        return;
    }
    if wire::send(&mut control, &welcome).await.is_err() {
        return;
    }
    tracing::info!(%node, acked_seq, remote = %conn.remote_address(), "box connected");
    let protocol = match &welcome {
        Message::WelcomeV2(w) => w.version,
        _ => 1,
    };
    {
        let (store, n) = (cloud.store.clone(), node.clone());
        let _ = blocking(move || Ok(store.set_protocol(&n, protocol)?)).await;
    }

    let mut streams = tokio::task::JoinSet::new();
    if protocol >= STATUS_VERSION {
        let (conn, cloud, node) = (conn.clone(), cloud.clone(), node.clone());
        streams.spawn(async move {
            if let Err(reason) = statuses(&conn, control_rx, &cloud, &node).await {
                tracing::warn!(%node, %reason, "closing the link: bad status");
                conn.close(CLOSE_PROTOCOL.into(), reason.as_bytes());
            }
        });
    } else {
        // An older box sends nothing more on its control stream; nothing it might
        // send is read (or held).
        drop(control_rx);
    }
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let (cloud, node) = (cloud.clone(), node.clone());
                    let inbox = wire::reader_within(recv, allowance.clone());
                    streams.spawn(async move {
                        if let Err(e) = stream(send, inbox, cloud, node.clone(), timeline).await {
                            tracing::debug!(%node, error = %e, "stream ended");
                        }
                    });
                }
                Err(_) => break,
            },
            Some(_) = streams.join_next() => {}
            Ok(()) = incarnation.changed() => {
                conn.close(CLOSE_PROTOCOL.into(), b"the cloud's incarnation changed; reconnect");
                break;
            }
        }
    }
    streams.abort_all();
    let store = cloud.store.clone();
    let _ = blocking(move || Ok(store.disconnected(&node, &connection)?)).await;
}

/// Statuses are recorded at most this often (a box sends one per interval).
const STATUS_MIN_GAP: Duration = Duration::from_millis(500);
/// Events of the batches already waiting that one transaction takes at most: four
/// batches (the box keeps eight in flight, so the next group arrives while one is
/// stored).
const COALESCE_MAX: usize = 4 * BATCH_MAX;

/// Reads the box's status messages on the control stream and records each (with the
/// box's clock offset: its clock less the cloud's, less half the round trip). A
/// malformed status, or any other message, ends the link with the reason.
async fn statuses(
    conn: &quinn::Connection,
    mut control_rx: wire::Inbox,
    cloud: &Cloud,
    node: &str,
) -> Result<(), String> {
    let mut last: Option<std::time::Instant> = None;
    loop {
        // The status's charge is kept until it is recorded.
        let (status, _charge) = control_rx.next_charged().await;
        let status: BoxStatus = match status {
            Ok(Message::Status(s)) => s,
            Ok(other) => return Err(format!("unexpected {other:?} on the control stream")),
            Err(WireError::Closed) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        if let Some(problem) = status.problem() {
            return Err(format!("status refused: {problem}"));
        }
        // A box that sends faster is slowed down (its stream backs up), never
        // dropped: the latest status always counts.
        if let Some(wait) = last.and_then(|t| STATUS_MIN_GAP.checked_sub(t.elapsed())) {
            tokio::time::sleep(wait).await;
        }
        last = Some(std::time::Instant::now());
        let now_ms = super::auth::now_ms();
        let half_rtt = (conn.rtt().as_millis() / 2) as i64;
        let offset_ms = status
            .sent_at_ms
            .saturating_add(half_rtt)
            .saturating_sub(now_ms);
        let (store, n) = (cloud.store.clone(), node.to_owned());
        if let Err(e) =
            blocking(move || Ok(store.record_status(&n, &status, now_ms, offset_ms)?)).await
        {
            tracing::error!(%node, error = %e, "cannot record the box's status");
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{0}")]
    Other(String),
}

impl From<anyhow::Error> for StreamError {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e.to_string())
    }
}

/// Appends to `events` the batches already waiting in `inbox` that go on where it
/// ends, up to [`COALESCE_MAX`] events: batches that arrived while the last one was
/// stored go into one transaction with it (group commit: one commit, one flush to disk
/// and one acknowledgement, cumulative, which the box's window takes for all); `ends`
/// gets where each batch taken ends. A message that does not go on (a batch sent
/// again, anything out of line, the stream's end) is returned, to be handled on its
/// own in its turn, as it was sent.
fn gather(
    events: &mut Vec<WireEvent>,
    ends: &mut Vec<usize>,
    charges: &mut Vec<wire::Charge>,
    inbox: &mut wire::Inbox,
) -> Option<wire::Inbound> {
    while events.len() + BATCH_MAX <= COALESCE_MAX {
        match inbox.try_next_charged()? {
            (Ok(Message::Events { events: more }), charge) if continues(events, &more) => {
                events.extend(more);
                ends.push(events.len());
                charges.push(charge);
            }
            other => return Some(other),
        }
    }
    None
}

/// Stores a gathered group of batches (`ends`: where each ends) in one transaction, and
/// returns the cursors to acknowledge, in order, and the error that stopped it, if any.
/// A group that fails is stored again batch by batch, as it was sent, so the batches
/// before a refused one (an event of a newer version than this cloud knows, say) land
/// and are acknowledged as they were before batches were gathered.
fn store_group(
    store: &CloudStore,
    node: &str,
    timeline: Option<i64>,
    events: &[WireEvent],
    ends: &[usize],
) -> (Vec<u64>, Result<(), super::store::StoreError>) {
    match store.ingest_for(node, timeline, events) {
        Ok(through) => return (vec![through], Ok(())),
        Err(e) if ends.len() < 2 => return (Vec::new(), Err(e)),
        Err(_) => {}
    }
    let mut acks = Vec::with_capacity(ends.len());
    let mut start = 0;
    for &end in ends {
        match store.ingest_for(node, timeline, &events[start..end]) {
            Ok(through) => acks.push(through),
            Err(e) => return (acks, Err(e)),
        }
        start = end;
    }
    (acks, Ok(()))
}

/// Whether `more` starts right after `events` ends.
fn continues(events: &[WireEvent], more: &[WireEvent]) -> bool {
    match (events.last(), more.first()) {
        (Some(last), Some(next)) => last.seq.checked_add(1) == Some(next.seq),
        _ => false,
    }
}

async fn stream(
    mut send: quinn::SendStream,
    mut inbox: wire::Inbox,
    cloud: Cloud,
    node: String,
    timeline: Option<i64>,
) -> Result<(), StreamError> {
    let (first, charge) = inbox.next_charged().await;
    match first? {
        Message::Events { events } => {
            // The next message, when already taken from the inbox: the stream's first,
            // or one that stopped the gathering of batches (handled in its turn).
            let mut held = Some((Ok(Message::Events { events }), charge));
            loop {
                let (next, charge) = match held.take() {
                    Some(m) => m,
                    None => inbox.next_charged().await,
                };
                let mut events = match next? {
                    Message::Events { events } => events,
                    other => return Err(StreamError::Other(format!("unexpected {other:?}"))),
                };
                // The turn first: batches that arrive while this one waits for it
                // go into its transaction.
                let turn = cloud
                    .ingests
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
                let mut ends = vec![events.len()];
                let mut charges = vec![charge];
                held = gather(&mut events, &mut ends, &mut charges, &mut inbox);
                if events.is_empty() {
                    continue;
                }
                let (store, n) = (cloud.store.clone(), node.clone());
                // The turn and the charges go with the store's thread: if this stream
                // ends meanwhile (the box went, every box is dropped), they come back
                // only when the store is done with the events. Both come back before
                // the acknowledgements wait on a box that may not read them.
                let (acks, stored) = blocking(move || {
                    let stored = store_group(&store, &n, timeline, &events, &ends);
                    drop((turn, charges));
                    Ok(stored)
                })
                .await?;
                for through_seq in acks {
                    wire::send(&mut send, &Message::Ack { through_seq }).await?;
                }
                stored.map_err(anyhow::Error::from)?;
            }
        }
        Message::DocSync { doc, data } => {
            let kind = DocKind::parse(&doc)
                .ok_or_else(|| StreamError::Other(format!("unknown document {doc:?}")))?;
            let (docs, n) = (cloud.docs.clone(), node.clone());
            blocking(move || docs.begin(&n, kind)).await?;
            if !data.is_empty() {
                let (docs, n) = (cloud.docs.clone(), node.clone());
                // The charge goes with the message, to the thread that applies it.
                blocking(move || {
                    let _charge = charge;
                    docs.receive(&n, kind, &data)
                })
                .await?;
            } else {
                drop(charge);
            }
            // A refused message is logged and kept for admins by `receive`; the
            // stream goes on (the box does not send the same changes again on it).
            let waker = cloud.docs.waker(&node);
            loop {
                loop {
                    let (docs, n) = (cloud.docs.clone(), node.clone());
                    match blocking(move || docs.generate(&n, kind)).await? {
                        Some(data) => {
                            wire::send(
                                &mut send,
                                &Message::DocSync {
                                    doc: doc.clone(),
                                    data,
                                },
                            )
                            .await?
                        }
                        None => break,
                    }
                }
                tokio::select! {
                    (msg, charge) = inbox.next_charged() => match msg? {
                        Message::DocSync { data, .. } if !data.is_empty() => {
                            let (docs, n) = (cloud.docs.clone(), node.clone());
                            blocking(move || {
                                let _charge = charge;
                                docs.receive(&n, kind, &data)
                            })
                            .await?;
                        }
                        Message::DocSync { .. } => {}
                        other => return Err(StreamError::Other(format!("unexpected {other:?}"))),
                    },
                    () = waker.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
        Message::AccountsFrom { mut cursor } => {
            drop(charge);
            let mut box_sends = true;
            // A cursor beyond every account this cloud issued comes from a database
            // that went back (restored): the box gets every account again.
            let store = cloud.store.clone();
            let newest = blocking(move || Ok(store.accounts_max_cursor()?)).await?;
            if cursor > newest {
                tracing::warn!(%node, cursor, newest, "accounts cursor beyond this cloud's; resending every account");
                cursor = 0;
            }
            loop {
                let (store, n) = (cloud.store.clone(), node.clone());
                let (next, accounts) =
                    blocking(move || Ok(store.accounts_after(&n, cursor, ACCOUNTS_PAGE)?)).await?;
                if !accounts.is_empty() {
                    wire::send(
                        &mut send,
                        &Message::Accounts {
                            cursor: next,
                            accounts,
                        },
                    )
                    .await?;
                    cursor = next;
                    continue;
                }
                tokio::select! {
                    () = cloud.accounts_changed.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    // The box sends nothing more here: anything it sends ends the
                    // stream rather than wait, charged, in the inbox.
                    (msg, _) = inbox.next_charged(), if box_sends => match msg {
                        Ok(other) => return Err(StreamError::Other(format!(
                            "unexpected {other:?} on the accounts stream"
                        ))),
                        Err(WireError::Closed) => box_sends = false,
                        Err(e) => return Err(e.into()),
                    },
                }
            }
        }
        other => Err(StreamError::Other(format!(
            "unexpected first message {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seqs: std::ops::RangeInclusive<u64>) -> Result<Message, WireError> {
        let events = seqs
            .map(|seq| WireEvent {
                seq,
                kind: "order.placed".into(),
                aggregate_id: format!("o{seq}"),
                payload: "{}".into(),
                at: "2026-12-07T12:00:00Z".into(),
            })
            .collect();
        Ok(Message::Events { events })
    }

    fn events_of(m: Result<Message, WireError>) -> Vec<WireEvent> {
        match m {
            Ok(Message::Events { events }) => events,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    fn seqs(events: &[WireEvent]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    /// Waiting batches that go on where the first ends are taken with it; one that
    /// repeats part of it (a box sending again) stops the gathering and is handed back
    /// whole, and so is the stream's end; at most `COALESCE_MAX` events are taken.
    #[test]
    fn only_batches_that_go_on_are_gathered() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let mut inbox = wire::Inbox::from(rx);
        let send = |m| tx.try_send((m, wire::Charge::default())).unwrap();
        for m in [batch(4..=6), batch(7..=9), batch(5..=12), batch(13..=14)] {
            send(m);
        }
        let mut events = events_of(batch(1..=3));
        let (mut ends, mut charges) = (vec![3], vec![]);
        let held = gather(&mut events, &mut ends, &mut charges, &mut inbox);
        assert_eq!(seqs(&events), (1..=9).collect::<Vec<_>>());
        assert_eq!(ends, vec![3, 6, 9]);
        assert_eq!(charges.len(), 2, "each batch taken keeps its charge");
        match held {
            Some((Ok(Message::Events { events: again }), _)) => {
                assert_eq!(seqs(&again), (5..=12).collect::<Vec<_>>())
            }
            other => panic!(
                "expected the batch sent again, got {:?}",
                other.map(|o| o.0)
            ),
        }
        // The end of the stream, or a seq at the end of the range, is not gathered.
        let next = inbox.try_next_charged().unwrap().0;
        assert_eq!(seqs(&events_of(next)), vec![13, 14]);
        let mut events = vec![];
        send(Err(WireError::Closed));
        assert!(matches!(
            gather(&mut events, &mut vec![0], &mut vec![], &mut inbox),
            Some((Err(WireError::Closed), _))
        ));
        let mut last = events_of(batch(u64::MAX..=u64::MAX));
        send(batch(0..=0));
        assert!(gather(&mut last, &mut vec![1], &mut vec![], &mut inbox).is_some());
        // A full transaction's worth stops the gathering.
        let mut events = events_of(batch(1..=BATCH_MAX as u64));
        let mut next = BATCH_MAX as u64 + 1;
        for _ in 0..5 {
            send(batch(next..=next + BATCH_MAX as u64 - 1));
            next += BATCH_MAX as u64;
        }
        let mut ends = vec![BATCH_MAX];
        assert!(gather(&mut events, &mut ends, &mut vec![], &mut inbox).is_none());
        assert_eq!(events.len(), COALESCE_MAX);
        assert_eq!(ends.len(), 4);
        assert_eq!(inbox.len(), 2);
    }

    /// An order placed at `seq`, its payload of version `v`.
    fn placed(seq: u64, v: u32) -> WireEvent {
        let order = canteen_api::OrderId::new();
        WireEvent {
            seq,
            kind: "order.placed".into(),
            aggregate_id: order.to_string(),
            payload: format!(
                r#"{{"v":{v},"id":"{order}","student_id":"{}","service_day":"2026-12-07","total_fen":500,"lines":[]}}"#,
                canteen_api::StudentId::new()
            ),
            at: "2026-12-07T04:00:00Z".into(),
        }
    }

    /// A gathered group whose second batch holds an event of a version this cloud does
    /// not know: the first batch is stored and acknowledged, as if sent alone, and the
    /// refusal names the event; a group that stores is acknowledged once.
    #[test]
    fn a_refused_batch_in_a_group_leaves_the_ones_before_it_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::store::test_store(dir.path());
        let group = [placed(1, 2), placed(2, 2), placed(3, 2), placed(4, 99)];
        let (acks, stored) = store_group(&store, "box", None, &group, &[2, 4]);
        assert_eq!(acks, vec![2]);
        assert!(
            matches!(
                stored,
                Err(super::super::store::StoreError::BadEvent { seq: 4, .. })
            ),
            "{stored:?}"
        );
        assert_eq!(store.acked("box").unwrap(), 2);

        let group = [placed(3, 2), placed(4, 2), placed(5, 2)];
        let (acks, stored) = store_group(&store, "box", None, &group, &[1, 3]);
        assert_eq!((acks, stored.is_ok()), (vec![5], true));
        assert_eq!(store.summary("box", None).unwrap().orders, 5);
    }
}
