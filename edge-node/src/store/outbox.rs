//! The outbox: an ordered, gapless log of every change to orders, stock, payments and
//! pickups, appended in the same transaction as the change. The sync client will stream
//! it to the cloud; until then it is queryable by `after_seq`.

use super::db::StoreError;
use super::{Effect, WriteCtx};
use canteen_api::events::{EventPayload, OutboxEvent};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

/// The `box_meta` key of the highest sequence number the cloud acknowledged.
pub const ACKED_KEY: &str = "outbox_acked_seq";

/// The `box_meta` key of the highest sequence number pruned (0: nothing pruned).
pub const PRUNED_KEY: &str = "outbox_pruned_seq";

/// The most events one prune deletes: one short write; the next sweep goes on.
pub const PRUNE_BATCH: i64 = 1000;

/// The most events one `after_seq` query returns.
pub const PAGE_MAX: usize = 1000;

/// Appends one event inside the caller's transaction and publishes it after commit.
pub fn append(ctx: &mut WriteCtx<'_>, payload: EventPayload) -> Result<i64, StoreError> {
    let at = ctx.now;
    let kind = payload.kind();
    let aggregate_id = payload.aggregate_id();
    ctx.conn
        .prepare_cached(
            "INSERT INTO outbox (kind, aggregate_id, payload, at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            kind.as_ref(),
            aggregate_id,
            payload.to_json(),
            crate::core::clock::ts(at)
        ])?;
    let seq = ctx.conn.last_insert_rowid();
    ctx.effect(Effect::Event(Box::new(OutboxEvent {
        seq,
        kind: kind.into_owned(),
        aggregate_id,
        payload,
        at,
    })));
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
        let payload = EventPayload::parse(&kind, &payload)
            .map_err(|e| StoreError::Corrupt(format!("outbox {seq}: {e}")))?;
        events.push(OutboxEvent {
            seq,
            kind,
            aggregate_id,
            payload,
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

/// Deletes the oldest events the cloud acknowledged that are older than `keep_since`,
/// at most [`PRUNE_BATCH`]; returns how many. Kept whatever their age: every event
/// after the acknowledged one (not yet in the cloud), the acknowledged event itself (a
/// reconnecting cloud's cursor is checked against it, and it carries the sequence on),
/// and so the last one. The highest number pruned is recorded in [`PRUNED_KEY`].
pub fn prune(conn: &Connection, keep_since: DateTime<Utc>) -> Result<usize, StoreError> {
    let acked = super::meta::get_u64(conn, ACKED_KEY)? as i64;
    let Some(oldest) = conn.query_row("SELECT MIN(seq) FROM outbox", [], |r| {
        r.get::<_, Option<i64>>(0)
    })?
    else {
        return Ok(0);
    };
    let cut = first_seq_since(conn, keep_since)?
        .min(acked)
        .min(oldest + PRUNE_BATCH);
    if cut <= oldest {
        return Ok(0);
    }
    let deleted = conn
        .prepare_cached("DELETE FROM outbox WHERE seq < ?1")?
        .execute([cut])?;
    let pruned = super::meta::get_u64(conn, PRUNED_KEY)? as i64;
    super::meta::set_u64(conn, PRUNED_KEY, pruned.max(cut - 1) as u64)?;
    Ok(deleted)
}

/// The highest sequence number pruned (0 when none was).
pub fn pruned_through(conn: &Connection) -> Result<i64, StoreError> {
    Ok(super::meta::get_u64(conn, PRUNED_KEY)? as i64)
}

/// The first sequence number whose event is at or after `since` (one past the last
/// when none is): a binary search over the primary key (times grow with sequence
/// numbers; one written out of order by a clock step only moves the start a little).
pub fn first_seq_since(conn: &Connection, since: DateTime<Utc>) -> Result<i64, StoreError> {
    let since = crate::core::clock::ts(since);
    let mut at =
        conn.prepare_cached("SELECT at FROM outbox WHERE seq >= ?1 ORDER BY seq LIMIT 1")?;
    let (mut lo, mut hi) = (0i64, last_seq(conn)? + 1);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        let t: Option<String> = at.query_row([mid], |r| r.get(0)).optional()?;
        match t {
            // The stored form is fixed width: text order is time order.
            Some(t) if t < since => lo = mid,
            _ => hi = mid,
        }
    }
    Ok(hi)
}

/// The highest sequence number written so far (0 when empty).
pub fn last_seq(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM outbox", [], |r| r.get(0))?)
}

/// Events not yet acknowledged by the cloud. Nothing acknowledges yet (the sync client
/// comes later), so this is every event after the stored acknowledgement cursor.
pub fn depth(conn: &Connection) -> Result<i64, StoreError> {
    let acked = super::meta::get_u64(conn, ACKED_KEY)? as i64;
    Ok(last_seq(conn)? - acked)
}

/// The time of the oldest event after `acked`, as stored, if there is one.
pub fn oldest_after(conn: &Connection, acked: i64) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT at FROM outbox WHERE seq = ?1", [acked + 1], |r| {
            r.get(0)
        })
        .optional()?)
}
