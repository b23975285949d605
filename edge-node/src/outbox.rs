//! The outbox: an ordered, gapless log of every change to orders, stock, payments and
//! pickups, appended in the same transaction as the change. The sync client will stream
//! it to the cloud; until then it is queryable by `after_seq`.

use crate::db::StoreError;
use crate::writer::{Effect, WriteCtx};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

/// The most events one `after_seq` query returns.
pub const PAGE_MAX: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxEvent {
    /// Per-box sequence number, starting at 1, without gaps.
    pub seq: i64,
    /// What happened, e.g. `order.placed`, `order.paid`, `stock.restocked`.
    pub kind: String,
    /// The order or item the event is about.
    pub aggregate_id: String,
    pub payload: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// Appends one event inside the caller's transaction and publishes it after commit.
pub fn append(
    ctx: &mut WriteCtx<'_>,
    kind: &str,
    aggregate_id: &str,
    payload: serde_json::Value,
) -> Result<i64, StoreError> {
    let at = ctx.now;
    ctx.conn
        .prepare_cached(
            "INSERT INTO outbox (kind, aggregate_id, payload, at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            kind,
            aggregate_id,
            payload.to_string(),
            crate::clock::ts(at)
        ])?;
    let seq = ctx.conn.last_insert_rowid();
    ctx.effect(Effect::Event(OutboxEvent {
        seq,
        kind: kind.to_owned(),
        aggregate_id: aggregate_id.to_owned(),
        payload,
        at,
    }));
    Ok(seq)
}

/// Events with `seq > after_seq`, oldest first, at most `limit` (capped at [`PAGE_MAX`]).
pub fn after(
    conn: &Connection,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<OutboxEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, kind, aggregate_id, payload, at FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after_seq, limit.min(PAGE_MAX) as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut events = Vec::new();
    for row in rows {
        let (seq, kind, aggregate_id, payload, at) = row?;
        events.push(OutboxEvent {
            seq,
            kind,
            aggregate_id,
            payload: serde_json::from_str(&payload)
                .map_err(|e| StoreError::Corrupt(format!("outbox {seq}: {e}")))?,
            at: DateTime::parse_from_rfc3339(&at)
                .map_err(|e| StoreError::Corrupt(format!("outbox {seq}: {e}")))?
                .with_timezone(&Utc),
        });
    }
    Ok(events)
}

/// (seq, kind, aggregate id, payload JSON text, time text) of a stored event.
pub type RawEvent = (i64, String, String, String, String);

/// Like [`after`], with the payload left as the stored JSON text (for the sync
/// client, which forwards it as text: no parse and re-serialise per event).
pub fn after_raw(
    conn: &Connection,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<RawEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, kind, aggregate_id, payload, at FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after_seq, limit.min(SYNC_PAGE_MAX) as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The most events one sync read returns.
pub const SYNC_PAGE_MAX: usize = 2000;

/// The highest sequence number written so far (0 when empty).
pub fn last_seq(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM outbox", [], |r| r.get(0))?)
}

/// Events not yet acknowledged by the cloud. Nothing acknowledges yet (the sync client
/// comes later), so this is every event after the stored acknowledgement cursor.
pub fn depth(conn: &Connection) -> Result<i64, StoreError> {
    let acked: i64 = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM box_meta WHERE key = 'outbox_acked_seq'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    Ok(last_seq(conn)? - acked)
}
