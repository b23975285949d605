//! What the cloud link writes at the box: acknowledgements, document sync state, and
//! accounts issued centrally. (Incoming document changes are in `ops::menu`.)

use crate::app::App;
use crate::core::clock::parse_ts;
use crate::store::{StoreError, WriteError, accounts, meta, outbox};
use canteen_api::staff::SyncState;
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

/// Records that the cloud stored every event through `through`.
pub async fn acknowledge(app: &App, through: u64) -> Result<(), LinkError> {
    app.writer
        .write(move |ctx| Ok(meta::set_u64(ctx.conn, outbox::ACKED_KEY, through)?))
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
    })
}
