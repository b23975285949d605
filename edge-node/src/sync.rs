//! The box's side of the cloud link: what the sync client reads and writes here.
//!
//! The client (in `cloud-sync`) only reads committed outbox events and documents, and
//! writes its own cursors, sync states and incoming changes through the writer; it
//! never sits on the order path. Its state is shown in `/metrics` and the staff API.

use crate::app::App;
use crate::clock::parse_ts;
use crate::outbox;
use cloud_sync::client::EdgeLink;
use cloud_sync::proto::{Account, WireEvent};
use crdt::DocKind;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::Notify;

const ACKED_KEY: &str = "outbox_acked_seq";
const ACCOUNTS_KEY: &str = "accounts_cursor";

fn meta_u64(conn: &Connection, key: &str) -> Result<u64, crate::db::StoreError> {
    let v: Option<String> = conn
        .query_row("SELECT value FROM box_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn set_meta(conn: &Connection, key: &str, value: u64) -> Result<(), crate::db::StoreError> {
    conn.prepare_cached("INSERT INTO box_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2")?
        .execute(params![key, value.to_string()])?;
    Ok(())
}

/// The link as the sync client sees the box.
pub struct BoxLink {
    pub app: App,
}

impl EdgeLink for BoxLink {
    async fn events_after(&self, after_seq: u64, max: usize) -> anyhow::Result<Vec<WireEvent>> {
        let events = self
            .app
            .readers
            .read(move |c| outbox::after_raw(c, after_seq as i64, max))
            .await?;
        Ok(events
            .into_iter()
            .map(|(seq, kind, aggregate_id, payload, at)| WireEvent {
                seq: seq as u64,
                kind,
                aggregate_id,
                payload,
                at,
            })
            .collect())
    }

    async fn acked(&self) -> anyhow::Result<u64> {
        Ok(self.app.readers.read(|c| meta_u64(c, ACKED_KEY)).await?)
    }

    async fn set_acked(&self, through: u64) -> anyhow::Result<()> {
        self.app
            .writer
            .write(move |ctx| -> anyhow::Result<()> { Ok(set_meta(ctx.conn, ACKED_KEY, through)?) })
            .await
    }

    fn outbox_changed(&self) -> Arc<Notify> {
        self.app.outbox_changed.clone()
    }

    async fn doc_begin(&self, doc: DocKind) -> anyhow::Result<()> {
        let docs = self.app.docs.clone();
        Ok(self
            .app
            .readers
            .read(move |c| docs.sync_begin(c, doc))
            .await?)
    }

    async fn doc_generate(&self, doc: DocKind) -> anyhow::Result<Option<Vec<u8>>> {
        let docs = self.app.docs.clone();
        self.app
            .writer
            .write(move |ctx| -> anyhow::Result<_> { Ok(docs.sync_generate(ctx, doc)?) })
            .await
    }

    async fn doc_receive(&self, doc: DocKind, data: Vec<u8>) -> anyhow::Result<()> {
        let docs = self.app.docs.clone();
        self.app
            .writer
            .write(move |ctx| -> anyhow::Result<()> {
                docs.sync_receive(ctx, doc, &data)?;
                Ok(())
            })
            .await
    }

    fn docs_changed(&self) -> Arc<Notify> {
        self.app.docs_changed.clone()
    }

    async fn accounts_cursor(&self) -> anyhow::Result<u64> {
        Ok(self.app.readers.read(|c| meta_u64(c, ACCOUNTS_KEY)).await?)
    }

    async fn apply_accounts(&self, cursor: u64, accounts: Vec<Account>) -> anyhow::Result<()> {
        self.app
            .writer
            .write(move |ctx| -> anyhow::Result<()> {
                crate::accounts::apply_from_cloud(ctx, &accounts)?;
                set_meta(ctx.conn, ACCOUNTS_KEY, cursor)?;
                Ok(())
            })
            .await
    }
}

/// What staff and metrics see of the link.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SyncState {
    /// Is a cloud configured at all?
    pub configured: bool,
    pub connected: bool,
    /// Outbox events the cloud has not acknowledged yet.
    pub unacked_events: i64,
    /// Age of the oldest of them, in seconds (0 when none).
    pub oldest_unacked_age_s: i64,
    /// Seconds since the epoch of the last successful exchange.
    pub last_success_unix: Option<u64>,
    pub last_error: Option<String>,
}

pub async fn state(app: &App) -> Result<SyncState, crate::db::StoreError> {
    let status = app.sync_status.get();
    let now = app.clock.now();
    let (last, acked, oldest_at) = app
        .readers
        .read(|c| {
            let acked = meta_u64(c, ACKED_KEY)?;
            let last = outbox::last_seq(c)?;
            let oldest: Option<String> = c
                .query_row(
                    "SELECT at FROM outbox WHERE seq = ?1",
                    [acked as i64 + 1],
                    |r| r.get(0),
                )
                .optional()?;
            Ok((last, acked, oldest))
        })
        .await?;
    let unacked = (last - acked as i64).max(0);
    let oldest_unacked_age_s = oldest_at
        .as_deref()
        .and_then(parse_ts)
        .map_or(0, |at| (now - at).num_seconds().max(0));
    Ok(SyncState {
        configured: status.configured,
        connected: status.connected,
        unacked_events: unacked,
        oldest_unacked_age_s: if unacked > 0 { oldest_unacked_age_s } else { 0 },
        last_success_unix: status.last_success_unix,
        last_error: status.last_error,
    })
}

/// Builds the client's configuration from the box's, if a cloud is configured.
pub fn client_config(
    cloud: &crate::config::CloudConfig,
) -> anyhow::Result<cloud_sync::client::ClientConfig> {
    Ok(cloud_sync::client::ClientConfig {
        node_id: cloud.node_id.clone(),
        cloud_addr: cloud.addr,
        cloud_name: cloud.name.clone(),
        tls: cloud_sync::identity::client_config(&cloud.ca, &cloud.cert, &cloud.key)?,
        backoff_min: std::time::Duration::from_millis(200),
        backoff_max: std::time::Duration::from_secs(30),
    })
}
