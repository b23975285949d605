//! `box_meta`: the box's own small facts (node id, token secret, sync cursors).

use super::db::StoreError;
use rusqlite::{Connection, OptionalExtension, params};

/// A numeric value, 0 when unset or unreadable.
pub fn get_u64(conn: &Connection, key: &str) -> Result<u64, StoreError> {
    let v: Option<String> = conn
        .query_row("SELECT value FROM box_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}

pub fn set_u64(conn: &Connection, key: &str, value: u64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO box_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
    )?
    .execute(params![key, value.to_string()])?;
    Ok(())
}

/// Reads a value, creating it with `make` on first start.
pub fn get_or_init(
    conn: &Connection,
    key: &str,
    make: impl FnOnce() -> String,
) -> Result<String, StoreError> {
    let existing: Option<String> = conn
        .query_row("SELECT value FROM box_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(v) = existing {
        return Ok(v);
    }
    let value = make();
    conn.execute(
        "INSERT INTO box_meta (key, value) VALUES (?1, ?2)",
        [key, &value],
    )?;
    Ok(value)
}

/// Removes a value (e.g. a secret older releases kept in the database).
pub fn remove(conn: &Connection, key: &str) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM box_meta WHERE key = ?1", [key])? > 0)
}
