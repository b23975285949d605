//! The box side: dials the cloud, streams the outbox, syncs the documents, receives
//! account changes, and reconnects with capped exponential backoff and jitter. It
//! never sits on the box's order path: it reads committed events and writes only its
//! own cursors.

use crate::proto::{
    Account, BATCH_MAX, BoxHello, BoxStatus, CloudWelcome, Message, PROTOCOL_VERSION, RefuseCode,
    STATUS_VERSION, WireEvent,
};
use crate::uplink::Uplink;
use crate::wire::{self, WireError};
use crdt::DocKind;
use crdt::sync::Received;
use rand::Rng;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Batches of events in flight before waiting for an acknowledgement: enough that
/// the cloud has the next ones at hand while it stores a group (up to four at once,
/// `COALESCE_MAX`). Eight batches of orders (about 2.6 MB each decoded) fit what the
/// cloud lets one box hold (32 MiB); larger batches are held back by it, not lost.
const WINDOW: usize = 8;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Documents are offered again at least this often, even without a local change.
const DOC_RESYNC: Duration = Duration::from_secs(2);
/// After the box refuses a document's changes, it waits this long before it asks
/// again, doubling up to [`DOC_REFUSED_WAIT_MAX`]: a cloud that keeps sending what
/// the box cannot take is not answered in a loop.
const DOC_REFUSED_WAIT: Duration = Duration::from_secs(5);
const DOC_REFUSED_WAIT_MAX: Duration = Duration::from_secs(300);

/// Where the box's history stands, as `Hello` tells the cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTimeline {
    /// The box database's incarnation.
    pub incarnation: String,
    /// Events up to here are shared with the incarnation before.
    pub base_seq: u64,
    /// The last event in the outbox.
    pub last_seq: u64,
    /// What the box believes the cloud holds, and the cloud incarnation that said so.
    pub acked_seq: u64,
    pub cloud_incarnation: String,
}

/// What the client needs from the box. Implemented by `edge-node`.
pub trait EdgeLink: Send + Sync + 'static {
    /// The box's history as it stands.
    fn timeline(&self) -> impl Future<Output = anyhow::Result<LocalTimeline>> + Send;
    /// [`crate::proto::event_digest`] of the box's own event `seq`, if it has one.
    fn event_digest(&self, seq: u64)
    -> impl Future<Output = anyhow::Result<Option<String>>> + Send;
    /// The box's database went back in time (restored): takes a new incarnation
    /// whose history is shared with the old one up to `base_seq`.
    fn rebase(&self, base_seq: u64) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// The cloud is another incarnation than the box knew: its cursors of the
    /// cloud's streams (accounts, documents) are void; records the new one, and (in
    /// the same write) that the cloud holds no more than `cloud_acked`.
    fn cloud_changed(
        &self,
        incarnation: String,
        cloud_acked: u64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Committed events after `after_seq`, oldest first, at most `max`.
    fn events_after(
        &self,
        after_seq: u64,
        max: usize,
    ) -> impl Future<Output = anyhow::Result<Vec<WireEvent>>> + Send;
    /// The box's own record of what the cloud acknowledged.
    fn acked(&self) -> impl Future<Output = anyhow::Result<u64>> + Send;
    /// Persists a new acknowledgement cursor.
    fn set_acked(&self, through: u64) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Signalled after each commit that appended events.
    fn outbox_changed(&self) -> Arc<Notify>;
    /// Starts a document's sync with the cloud afresh from its persisted state.
    fn doc_begin(&self, doc: DocKind) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// The next sync message for the cloud, if any.
    fn doc_generate(
        &self,
        doc: DocKind,
    ) -> impl Future<Output = anyhow::Result<Option<Vec<u8>>>> + Send;
    /// A sync message from the cloud.
    fn doc_receive(
        &self,
        doc: DocKind,
        data: Vec<u8>,
    ) -> impl Future<Output = anyhow::Result<Received>> + Send;
    /// Signalled when a local edit changed a document.
    fn docs_changed(&self) -> Arc<Notify>;
    /// Cursor of the accounts stream already applied.
    fn accounts_cursor(&self) -> impl Future<Output = anyhow::Result<u64>> + Send;
    /// Applies account changes and their new cursor in one transaction.
    fn apply_accounts(
        &self,
        cursor: u64,
        accounts: Vec<Account>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// The box's status as it stands (protocol version 3; `sent_at_ms` is stamped by
    /// the client as it sends).
    fn status(&self) -> impl Future<Output = anyhow::Result<BoxStatus>> + Send;
}

#[derive(Clone)]
pub struct ClientConfig {
    pub node_id: String,
    pub cloud_addr: SocketAddr,
    /// The name on the cloud's certificate.
    pub cloud_name: String,
    pub tls: quinn::ClientConfig,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How often the box sends its status (protocol version 3).
    pub status_every: Duration,
}

/// The link's state, for metrics and the staff API.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyncStatus {
    pub configured: bool,
    pub connected: bool,
    pub acked_seq: u64,
    /// Seconds since the epoch of the last acknowledgement or document exchange.
    pub last_success_unix: Option<u64>,
    pub last_error: Option<String>,
    /// Something an operator must know about the link's history (this box was found
    /// restored and re-based; the cloud was restored): kept until the process ends.
    pub alarm: Option<String>,
    /// Documents whose changes from the cloud the box refused, with the reason
    /// (cleared when the document's changes are taken again).
    pub refused_documents: Vec<String>,
}

#[derive(Default)]
pub struct StatusCell(Mutex<SyncStatus>);

impl StatusCell {
    pub fn get(&self) -> SyncStatus {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut SyncStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Records (or, with `None`, clears) the box's refusal of a document's changes.
    fn refusal(&self, doc: DocKind, reason: Option<&str>) {
        let prefix = format!("{}: ", doc.as_str());
        self.update(|s| {
            s.refused_documents.retain(|r| !r.starts_with(&prefix));
            if let Some(reason) = reason {
                s.refused_documents.push(format!("{prefix}{reason}"));
            }
        });
    }

    fn success(&self) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .ok();
        self.update(|s| s.last_success_unix = now);
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connecting: {0}")]
    Connect(String),
    #[error("refused by the cloud ({code:?}): {reason}")]
    Refused { code: RefuseCode, reason: String },
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Local(String),
    #[error("re-based: {0}")]
    Rebased(String),
    #[error("the cloud speaks only protocol version 1")]
    Legacy,
}

/// Runs until `shutdown`: connect, sync, and on any failure wait and try again.
pub async fn run<L: EdgeLink>(
    link: Arc<L>,
    config: ClientConfig,
    status: Arc<StatusCell>,
    shutdown: CancellationToken,
) {
    status.update(|s| s.configured = true);
    let mut endpoint = match quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot open a UDP socket for sync");
            return;
        }
    };
    endpoint.set_default_client_config(config.tls.clone());
    let mut backoff = config.backoff_min;
    // The version this box says in its hello. A cloud of an older release refuses
    // version 3 (the box then speaks 2, without status messages) or cannot read
    // `HelloV2` at all (the box then speaks 1, without incarnations); a cloud that
    // refuses the lower version gets the newest again.
    let mut speak = PROTOCOL_VERSION;
    loop {
        let legacy = speak == 1;
        let result = tokio::select! {
            () = shutdown.cancelled() => break,
            r = session(&endpoint, &link, &config, &status, speak) => r,
        };
        status.update(|s| s.connected = false);
        match result {
            Ok(()) => backoff = config.backoff_min,
            Err(SessionError::Rebased(reason)) => {
                // Reconnect with the new incarnation after the usual wait (which keeps
                // growing if re-basing repeats, as with two copies of one box).
                tracing::error!(%reason, "this box's database went back in time; re-based its history with the cloud");
                status.update(|s| s.alarm = Some(reason));
            }
            Err(SessionError::Refused {
                code: RefuseCode::Version,
                ..
            }) if speak < PROTOCOL_VERSION => {
                tracing::warn!(
                    "the cloud refuses protocol version {speak}: speaking version {PROTOCOL_VERSION} again"
                );
                speak = PROTOCOL_VERSION;
            }
            Err(SessionError::Refused {
                code: RefuseCode::Version,
                ..
            }) if speak > 2 => {
                tracing::warn!(
                    "the cloud speaks protocol version 2 at most: the box's status is not reported until it is upgraded"
                );
                speak = 2;
                backoff = config.backoff_min;
            }
            Err(SessionError::Legacy) if !legacy => {
                tracing::warn!(
                    "the cloud speaks protocol version 1 only: restores are not detected until it is upgraded"
                );
                speak = 1;
                backoff = config.backoff_min;
            }
            Err(e) => {
                match &e {
                    SessionError::Refused { .. } => {
                        tracing::error!(error = %e, "the cloud refused this box")
                    }
                    _ => tracing::warn!(error = %e, "sync link down"),
                }
                status.update(|s| s.last_error = Some(e.to_string()));
            }
        }
        // Full jitter on a capped exponential backoff.
        let wait = rand::rng().random_range(backoff / 2..=backoff);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
    endpoint.close(0u32.into(), b"box shutting down");
    endpoint.wait_idle().await;
}

/// Checks a version 2 welcome against the box's own history and returns the cursor to
/// continue from. The box never adopts a cursor beyond its outbox, nor one whose event
/// differs from its own: either means its database went back in time (a restore), and
/// it re-bases instead. A cloud of another incarnation voids the box's cursors of the
/// cloud's streams.
async fn welcome_v2<L: EdgeLink>(
    link: &Arc<L>,
    local: &LocalTimeline,
    w: CloudWelcome,
    status: &Arc<StatusCell>,
) -> Result<u64, SessionError> {
    let local_err = |e: anyhow::Error| SessionError::Local(e.to_string());
    let diverged = if w.acked_seq > local.last_seq {
        Some(format!(
            "the cloud holds events up to {} of this box, but its outbox ends at {}",
            w.acked_seq, local.last_seq
        ))
    } else if w.acked_seq > 0 && !w.acked_digest.is_empty() {
        let mine = link.event_digest(w.acked_seq).await.map_err(local_err)?;
        (mine.as_deref() != Some(w.acked_digest.as_str())).then(|| {
            format!(
                "the cloud's event {} of this box is not the box's own event {}",
                w.acked_seq, w.acked_seq
            )
        })
    } else {
        None
    };
    if let Some(reason) = diverged {
        // Up to here both histories certainly agree: the box's own acknowledged
        // events (a backup holds only what was acknowledged when it was taken). If the
        // cloud's new timeline itself does not share the box's event at its base (the
        // base came from another history, after several restores), nothing is taken
        // as shared: from 0, the cloud finds every event it holds already and counts
        // it once.
        let base = if w.rebased {
            0
        } else {
            local.acked_seq.min(w.acked_seq).min(local.last_seq)
        };
        let reason = format!("{reason}: restored from a backup? re-based from event {base}");
        link.rebase(base).await.map_err(local_err)?;
        return Err(SessionError::Rebased(reason));
    }
    if w.cloud_incarnation != local.cloud_incarnation {
        if !local.cloud_incarnation.is_empty() {
            let alarm = "the cloud is another incarnation (restored from a backup?): \
                         accounts and documents are fetched again, events resent from its cursor";
            tracing::warn!(cloud_acked = w.acked_seq, "{alarm}");
            status.update(|s| s.alarm = Some(alarm.into()));
        }
        link.cloud_changed(w.cloud_incarnation, w.acked_seq)
            .await
            .map_err(local_err)?;
    }
    if w.rebased {
        tracing::warn!(
            from_seq = w.acked_seq,
            "the cloud started a new timeline for this box"
        );
    }
    Ok(w.acked_seq)
}

async fn session<L: EdgeLink>(
    endpoint: &quinn::Endpoint,
    link: &Arc<L>,
    config: &ClientConfig,
    status: &Arc<StatusCell>,
    speak: u16,
) -> Result<(), SessionError> {
    let legacy = speak == 1;
    let connecting = endpoint
        .connect(config.cloud_addr, &config.cloud_name)
        .map_err(|e| SessionError::Connect(e.to_string()))?;
    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
        .await
        .map_err(|_| SessionError::Connect("timed out".into()))?
        .map_err(|e| SessionError::Connect(e.to_string()))?;
    let (mut control, control_rx) = conn
        .open_bi()
        .await
        .map_err(|e| SessionError::Connect(e.to_string()))?;
    let mut control_rx = wire::reader(control_rx);
    let local = link
        .timeline()
        .await
        .map_err(|e| SessionError::Local(e.to_string()))?;
    let hello = if legacy {
        Message::Hello {
            version: 1,
            node_id: config.node_id.clone(),
        }
    } else {
        Message::HelloV2(BoxHello {
            version: speak,
            node_id: config.node_id.clone(),
            incarnation: local.incarnation.clone(),
            base_seq: local.base_seq,
            last_seq: local.last_seq,
            acked_seq: local.acked_seq,
            cloud_incarnation: local.cloud_incarnation.clone(),
            doc_schemas: [DocKind::Menu, DocKind::Settings]
                .iter()
                .map(|d| (d.as_str().to_owned(), d.schema_version()))
                .collect(),
        })
    };
    wire::send(&mut control, &hello).await?;
    let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, wire::next(&mut control_rx))
        .await
        .map_err(|_| SessionError::Protocol("no answer to hello".into()))?;
    let mut welcomed_in = 1;
    let cloud_acked = match welcome {
        Ok(Message::WelcomeV2(w)) => {
            welcomed_in = w.version.min(speak);
            welcome_v2(link, &local, w, status).await?
        }
        Ok(Message::Welcome { acked_seq, .. }) => {
            // A version 1 cloud: no incarnations; still never a cursor beyond the outbox.
            if acked_seq > local.last_seq {
                let alarm = format!(
                    "the cloud holds events up to {acked_seq} of this box, whose outbox ends at \
                     {}: the box was restored; upgrade the cloud to re-base",
                    local.last_seq
                );
                status.update(|s| s.alarm = Some(alarm.clone()));
                return Err(SessionError::Protocol(alarm));
            }
            acked_seq
        }
        Ok(Message::Refused { code, reason }) => {
            return Err(SessionError::Refused { code, reason });
        }
        Ok(other) => {
            return Err(SessionError::Protocol(format!(
                "expected welcome, got {other:?}"
            )));
        }
        Err(e) => {
            // A refusal closes the connection with the reason.
            if let Some(quinn::ConnectionError::ApplicationClosed(close)) = conn.close_reason() {
                let reason = String::from_utf8_lossy(&close.reason).into_owned();
                if !legacy && reason == "expected hello" {
                    return Err(SessionError::Legacy);
                }
                return Err(SessionError::Refused {
                    code: RefuseCode::Protocol,
                    reason,
                });
            }
            return Err(e.into());
        }
    };
    tracing::info!(cloud = %config.cloud_addr, cloud_acked, "sync link up");
    status.update(|s| {
        s.connected = true;
        s.last_error = None;
    });
    status.success();

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(events(
        conn.clone(),
        link.clone(),
        status.clone(),
        cloud_acked,
    ));
    for doc in [DocKind::Menu, DocKind::Settings] {
        tasks.spawn(documents(conn.clone(), link.clone(), status.clone(), doc));
    }
    tasks.spawn(accounts(conn.clone(), link.clone()));
    // The control stream stays open for the session (a version 3 session carries the
    // status on it).
    let mut control = Some(control);
    if welcomed_in >= STATUS_VERSION
        && let Some(control) = control.take()
    {
        tasks.spawn(report_status(control, link.clone(), config.status_every));
    }
    let result = tokio::select! {
        Some(done) = tasks.join_next() => match done {
            Ok(r) => r,
            Err(e) => Err(SessionError::Local(e.to_string())),
        },
        reason = conn.closed() => Err(SessionError::Connect(reason.to_string())),
    };
    tasks.abort_all();
    drop(control);
    conn.close(0u32.into(), b"reconnecting");
    result
}

async fn events<L: EdgeLink>(
    conn: quinn::Connection,
    link: Arc<L>,
    status: Arc<StatusCell>,
    cloud_acked: u64,
) -> Result<(), SessionError> {
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| SessionError::Connect(e.to_string()))?;
    let mut inbox = wire::reader(recv);
    let local = link
        .acked()
        .await
        .map_err(|e| SessionError::Local(e.to_string()))?;
    let mut uplink = Uplink::new(local, WINDOW, BATCH_MAX);
    uplink.on_welcome(cloud_acked);
    if uplink.acked() != local {
        link.set_acked(uplink.acked())
            .await
            .map_err(|e| SessionError::Local(e.to_string()))?;
    }
    status.update(|s| s.acked_seq = uplink.acked());
    let changed = link.outbox_changed();
    // Announce the stream even when there is nothing to send yet.
    wire::send(&mut send, &Message::Events { events: Vec::new() }).await?;
    loop {
        while let Some((after, max)) = uplink.want() {
            let batch = link
                .events_after(after, max)
                .await
                .map_err(|e| SessionError::Local(e.to_string()))?;
            let Some(last) = batch.last().map(|e| e.seq) else {
                break;
            };
            wire::send(&mut send, &Message::Events { events: batch }).await?;
            uplink.sent_batch(last);
        }
        tokio::select! {
            msg = wire::next(&mut inbox) => match msg? {
                Message::Ack { through_seq } => {
                    if let Some(cursor) = uplink.on_ack(through_seq).map_err(|e| SessionError::Protocol(e.to_string()))? {
                        link.set_acked(cursor).await.map_err(|e| SessionError::Local(e.to_string()))?;
                        status.update(|s| s.acked_seq = cursor);
                        status.success();
                    }
                }
                other => return Err(SessionError::Protocol(format!("unexpected {other:?} on the events stream"))),
            },
            () = changed.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One document's exchange with the cloud, on a stream of its own. When the box
/// refuses the cloud's changes, it closes the stream, waits (doubling the wait up to
/// [`DOC_REFUSED_WAIT_MAX`]) and opens a new one: both sides then start the exchange
/// afresh from their stored states, so nothing the cloud sent meanwhile is taken for
/// delivered.
async fn documents<L: EdgeLink>(
    conn: quinn::Connection,
    link: Arc<L>,
    status: Arc<StatusCell>,
    doc: DocKind,
) -> Result<(), SessionError> {
    let mut refused_wait = DOC_REFUSED_WAIT;
    loop {
        let refused = document_stream(&conn, &link, &status, doc, &mut refused_wait).await?;
        tracing::warn!(doc = doc.as_str(), reason = %refused, wait_s = refused_wait.as_secs(), "refused the cloud's document changes; asking again later");
        tokio::time::sleep(refused_wait).await;
        refused_wait = (refused_wait * 2).min(DOC_REFUSED_WAIT_MAX);
    }
}

/// Runs one document stream until the box refuses a message; returns why.
async fn document_stream<L: EdgeLink>(
    conn: &quinn::Connection,
    link: &Arc<L>,
    status: &Arc<StatusCell>,
    doc: DocKind,
    refused_wait: &mut Duration,
) -> Result<String, SessionError> {
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| SessionError::Connect(e.to_string()))?;
    let mut inbox = wire::reader(recv);
    let name = doc.as_str().to_owned();
    link.doc_begin(doc)
        .await
        .map_err(|e| SessionError::Local(e.to_string()))?;
    wire::send(
        &mut send,
        &Message::DocSync {
            doc: name.clone(),
            data: Vec::new(),
        },
    )
    .await?;
    let changed = link.docs_changed();
    loop {
        while let Some(data) = link
            .doc_generate(doc)
            .await
            .map_err(|e| SessionError::Local(e.to_string()))?
        {
            wire::send(
                &mut send,
                &Message::DocSync {
                    doc: name.clone(),
                    data,
                },
            )
            .await?;
        }
        tokio::select! {
            msg = wire::next(&mut inbox) => match msg? {
                Message::DocSync { doc: d, data } if d == name => {
                    if data.is_empty() {
                        continue;
                    }
                    let received = link
                        .doc_receive(doc, data)
                        .await
                        .map_err(|e| SessionError::Local(e.to_string()))?;
                    match received {
                        Received::Taken { changed } => {
                            // A refusal stands until changes are taken again (a message
                            // with only heads says nothing about them).
                            if changed {
                                status.refusal(doc, None);
                                *refused_wait = DOC_REFUSED_WAIT;
                            }
                            status.success();
                        }
                        Received::Refused(reason) => {
                            status.refusal(doc, Some(&reason));
                            let _ = send.reset(0u32.into());
                            return Ok(reason);
                        }
                    }
                }
                other => return Err(SessionError::Protocol(format!("unexpected {other:?} on the {name} stream"))),
            },
            () = changed.notified() => {}
            () = tokio::time::sleep(DOC_RESYNC) => {}
        }
    }
}

/// Sends the box's status on the control stream now and then every `every`. The
/// clock is read last, just before the send, so the cloud's offset estimate is not
/// skewed by the time spent gathering the rest.
async fn report_status<L: EdgeLink>(
    mut control: quinn::SendStream,
    link: Arc<L>,
    every: Duration,
) -> Result<(), SessionError> {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut report = link
            .status()
            .await
            .map_err(|e| SessionError::Local(e.to_string()))?;
        report.sent_at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        wire::send(&mut control, &Message::Status(report)).await?;
    }
}

async fn accounts<L: EdgeLink>(conn: quinn::Connection, link: Arc<L>) -> Result<(), SessionError> {
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| SessionError::Connect(e.to_string()))?;
    let mut inbox = wire::reader(recv);
    let cursor = link
        .accounts_cursor()
        .await
        .map_err(|e| SessionError::Local(e.to_string()))?;
    wire::send(&mut send, &Message::AccountsFrom { cursor }).await?;
    loop {
        match wire::next(&mut inbox).await? {
            Message::Accounts { cursor, accounts } => {
                let n = accounts.len();
                link.apply_accounts(cursor, accounts)
                    .await
                    .map_err(|e| SessionError::Local(e.to_string()))?;
                tracing::info!(accounts = n, cursor, "accounts from the cloud applied");
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "unexpected {other:?} on the accounts stream"
                )));
            }
        }
    }
}
