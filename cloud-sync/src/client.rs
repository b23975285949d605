//! The box side: dials the cloud, streams the outbox, syncs the documents, receives
//! account changes, and reconnects with capped exponential backoff and jitter. It
//! never sits on the box's order path: it reads committed events and writes only its
//! own cursors.

use crate::proto::{Account, BATCH_MAX, Message, PROTOCOL_VERSION, RefuseCode, WireEvent};
use crate::uplink::Uplink;
use crate::wire::{self, WireError};
use crdt::DocKind;
use rand::Rng;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Batches of events in flight before waiting for an acknowledgement.
const WINDOW: usize = 4;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Documents are offered again at least this often, even without a local change.
const DOC_RESYNC: Duration = Duration::from_secs(2);

/// What the client needs from the box. Implemented by `edge-node`.
pub trait EdgeLink: Send + Sync + 'static {
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
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
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
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => break,
            r = session(&endpoint, &link, &config, &status) => r,
        };
        status.update(|s| s.connected = false);
        match result {
            Ok(()) => backoff = config.backoff_min,
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

async fn session<L: EdgeLink>(
    endpoint: &quinn::Endpoint,
    link: &Arc<L>,
    config: &ClientConfig,
    status: &Arc<StatusCell>,
) -> Result<(), SessionError> {
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
    wire::send(
        &mut control,
        &Message::Hello {
            version: PROTOCOL_VERSION,
            node_id: config.node_id.clone(),
        },
    )
    .await?;
    let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, wire::next(&mut control_rx))
        .await
        .map_err(|_| SessionError::Protocol("no answer to hello".into()))?;
    let cloud_acked = match welcome {
        Ok(Message::Welcome { acked_seq, .. }) => acked_seq,
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
                return Err(SessionError::Refused {
                    code: RefuseCode::Protocol,
                    reason: String::from_utf8_lossy(&close.reason).into_owned(),
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
    let result = tokio::select! {
        Some(done) = tasks.join_next() => match done {
            Ok(r) => r,
            Err(e) => Err(SessionError::Local(e.to_string())),
        },
        reason = conn.closed() => Err(SessionError::Connect(reason.to_string())),
    };
    tasks.abort_all();
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

async fn documents<L: EdgeLink>(
    conn: quinn::Connection,
    link: Arc<L>,
    status: Arc<StatusCell>,
    doc: DocKind,
) -> Result<(), SessionError> {
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
                    if !data.is_empty() {
                        link.doc_receive(doc, data).await.map_err(|e| SessionError::Local(e.to_string()))?;
                        status.success();
                    }
                }
                other => return Err(SessionError::Protocol(format!("unexpected {other:?} on the {name} stream"))),
            },
            () = changed.notified() => {}
            () = tokio::time::sleep(DOC_RESYNC) => {}
        }
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
