//! `box_meta`: the box's own small facts (node id, token secret, sync cursors).

use super::db::StoreError;
use rusqlite::{Connection, OptionalExtension, params};

/// The box database's incarnation: a random id, renewed by `edge-node restore` and
/// when the cloud shows the database went back in time. Cursors the cloud keeps for
/// this box are meaningful only within one incarnation.
pub const INCARNATION_KEY: &str = "incarnation";
/// Events up to this sequence number are shared with the incarnation before.
pub const INCARNATION_BASE_KEY: &str = "incarnation_base";
/// The cloud database's incarnation the box's cursors of the cloud refer to.
pub const CLOUD_INCARNATION_KEY: &str = "cloud_incarnation";

/// A new random incarnation id.
pub fn new_incarnation() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Starts a new incarnation sharing the events up to `base` with the one before.
pub fn renew_incarnation(conn: &Connection, base: u64) -> Result<String, StoreError> {
    let fresh = new_incarnation();
    set_text(conn, INCARNATION_KEY, &fresh)?;
    set_u64(conn, INCARNATION_BASE_KEY, base)?;
    Ok(fresh)
}

/// A text value, if set.
pub fn get_text(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM box_meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

pub fn set_text(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO box_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// A numeric value, 0 when unset or unreadable.
pub fn get_u64(conn: &Connection, key: &str) -> Result<u64, StoreError> {
    Ok(get_text(conn, key)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

pub fn set_u64(conn: &Connection, key: &str, value: u64) -> Result<(), StoreError> {
    set_text(conn, key, &value.to_string())
}

/// Reads a value, creating it with `make` on first start.
pub fn get_or_init(
    conn: &Connection,
    key: &str,
    make: impl FnOnce() -> String,
) -> Result<String, StoreError> {
    if let Some(v) = get_text(conn, key)? {
        return Ok(v);
    }
    let value = make();
    set_text(conn, key, &value)?;
    Ok(value)
}

/// Removes a value (e.g. a secret older releases kept in the database).
pub fn remove(conn: &Connection, key: &str) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM box_meta WHERE key = ?1", [key])? > 0)
}
