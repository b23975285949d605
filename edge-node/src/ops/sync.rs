//! What the cloud link writes at the box: acknowledgements, document sync state, and
//! accounts issued centrally. (Incoming document changes are in `ops::menu`.)

use crate::app::App;
use crate::core::clock::parse_ts;
use crate::store::docs::{self, CLOUD_PEER};
use crate::store::{StoreError, WriteError, accounts, meta, orders, outbox};
use canteen_api::staff::SyncState;
use cloud_sync::client::LocalTimeline;
use cloud_sync::proto::Account;
use crdt::DocKind;

/// Why a write of the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Accounts(#[from] accounts::AccountError),
}

/// The `box_meta` key of the accounts stream's cursor.
pub const ACCOUNTS_KEY: &str = "accounts_cursor";

/// Records that the cloud stored every event through `through`. Never beyond the
/// outbox: a cursor past the box's own events would hide every event written there
/// later (they would count as acknowledged and never be sent).
pub async fn acknowledge(app: &App, through: u64) -> Result<(), LinkError> {
    app.writer
        .write(move |ctx| {
            let last = outbox::last_seq(ctx.conn)?.max(0) as u64;
            if through > last {
                return Err(StoreError::Corrupt(format!(
                    "the cloud acknowledged event {through}, beyond this box's last event {last}"
                ))
                .into());
            }
            Ok(meta::set_u64(ctx.conn, outbox::ACKED_KEY, through)?)
        })
        .await
}

/// Writes one sweep of outbox pruning may take at most (each deletes up to
/// [`outbox::PRUNE_BATCH`] events): a backlog is worked off over several sweeps
/// instead of holding the writer.
const PRUNE_WRITES_MAX: usize = 10;

/// Deletes outbox events the cloud acknowledged that are older than the box keeps
/// them (`outbox_keep_days`), oldest first; returns how many went.
pub async fn prune_outbox(app: &App) -> Result<usize, LinkError> {
    let keep = app.config.outbox_keep;
    let mut total = 0;
    for _ in 0..PRUNE_WRITES_MAX {
        let deleted = app
            .writer
            .write(move |ctx| Ok::<_, LinkError>(outbox::prune(ctx.conn, ctx.now - keep)?))
            .await?;
        total += deleted;
        if deleted < outbox::PRUNE_BATCH as usize {
            break;
        }
    }
    Ok(total)
}

/// The box's history as the link's `Hello` tells it.
pub async fn timeline(app: &App) -> Result<LocalTimeline, StoreError> {
    app.readers
        .read(|c| {
            Ok(LocalTimeline {
                incarnation: meta::get_text(c, meta::INCARNATION_KEY)?.unwrap_or_default(),
                base_seq: meta::get_u64(c, meta::INCARNATION_BASE_KEY)?,
                last_seq: outbox::last_seq(c)?.max(0) as u64,
                acked_seq: meta::get_u64(c, outbox::ACKED_KEY)?,
                cloud_incarnation: meta::get_text(c, meta::CLOUD_INCARNATION_KEY)?
                    .unwrap_or_default(),
            })
        })
        .await
}

/// The box's database went back in time (it was restored, or the cloud holds events
/// of it that it does not): a new incarnation sharing the events up to `base` with
/// the old one. What the box knew the cloud holds is no further than `base`, and the
/// cloud's idea of the box's documents is void.
pub async fn rebase(app: &App, base: u64) -> Result<(), LinkError> {
    app.writer
        .write(move |ctx| {
            let acked = meta::get_u64(ctx.conn, outbox::ACKED_KEY)?;
            meta::renew_incarnation(ctx.conn, base)?;
            meta::set_u64(ctx.conn, outbox::ACKED_KEY, acked.min(base))?;
            docs::forget_sync_states(ctx.conn, CLOUD_PEER)?;
            Ok(())
        })
        .await
}

/// The cloud is another incarnation: the accounts stream starts over, the documents'
/// sync states with it are forgotten, and what the box knows the cloud holds is no
/// more than the cloud says, all in one write (a new incarnation paired with the old,
/// higher cursor would look like yet another restore of the cloud).
pub async fn cloud_changed(
    app: &App,
    incarnation: String,
    cloud_acked: u64,
) -> Result<(), LinkError> {
    app.writer
        .write(move |ctx| {
            let acked = meta::get_u64(ctx.conn, outbox::ACKED_KEY)?;
            meta::set_u64(ctx.conn, outbox::ACKED_KEY, acked.min(cloud_acked))?;
            meta::set_text(ctx.conn, meta::CLOUD_INCARNATION_KEY, &incarnation)?;
            meta::set_u64(ctx.conn, ACCOUNTS_KEY, 0)?;
            docs::forget_sync_states(ctx.conn, CLOUD_PEER)?;
            Ok(())
        })
        .await
}

/// The next document sync message for the cloud, if any (persists the sync state).
pub async fn doc_message(app: &App, doc: DocKind) -> Result<Option<Vec<u8>>, LinkError> {
    let docs = app.docs.clone();
    app.writer
        .write(move |ctx| Ok(docs.sync_generate(ctx, doc)?))
        .await
}

/// Applies accounts issued at the cloud and advances the cursor, in one write.
pub async fn apply_accounts(app: &App, cursor: u64, batch: Vec<Account>) -> Result<(), LinkError> {
    app.writer
        .write(move |ctx| {
            accounts::apply_from_cloud(ctx, &batch)?;
            meta::set_u64(ctx.conn, ACCOUNTS_KEY, cursor)?;
            Ok(())
        })
        .await
}

/// Business days a status reports: today's and the days before it with orders.
const STATUS_DAYS: usize = 7;

/// The box's status for the cloud: outbox, versions, document heads, and its own
/// totals of today and its recent business days (for reconciliation). Today's day is
/// always first, even without orders: the cloud takes every older day as over.
pub async fn box_status(app: &App) -> Result<cloud_sync::proto::BoxStatus, StoreError> {
    let today = app.today();
    let heads: Vec<cloud_sync::proto::DocHeads> = [DocKind::Menu, DocKind::Settings]
        .into_iter()
        .map(|kind| cloud_sync::proto::DocHeads {
            doc: kind.as_str().to_owned(),
            heads: app.docs.heads_hex(kind),
        })
        .collect();
    let (outbox, days) = app
        .readers
        .read(move |c| orders::status_snapshot(c, today, STATUS_DAYS))
        .await?;
    Ok(cloud_sync::proto::BoxStatus {
        sent_at_ms: 0,
        software: env!("CARGO_PKG_VERSION").to_owned(),
        schema: crate::store::db::SCHEMA_VERSION as u32,
        last_seq: outbox.last_seq,
        acked_seq: outbox.acked_seq,
        oldest_waiting_at: outbox.oldest_waiting_at,
        docs: heads,
        days,
    })
}

/// The link as staff and metrics see it.
pub async fn state(app: &App) -> Result<SyncState, StoreError> {
    let status = app.sync_status.get();
    let now = app.clock.now();
    let (last, acked, oldest_at) = app
        .readers
        .read(|c| {
            let acked = meta::get_u64(c, outbox::ACKED_KEY)? as i64;
            Ok((outbox::last_seq(c)?, acked, outbox::oldest_after(c, acked)?))
        })
        .await?;
    let unacked = (last - acked).max(0);
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
        alarm: status.alarm,
        refused_documents: status.refused_documents,
    })
}
