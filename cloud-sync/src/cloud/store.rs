//! The cloud's store (SQLite): every box's events, applied exactly once by
//! (node id, seq), the projections an admin reads, the per-box document replicas
//! and their sync states, and the accounts that flow down.
//!
//! One connection behind a mutex; callers run it on the blocking pool.
//!
//! **Timelines.** A box's events are numbered by its own outbox. When a box comes back
//! with another incarnation (its database was restored from a backup, or reinstalled),
//! its numbers from some point on belong to a different history than the one the
//! cloud holds. The cloud then starts a new *timeline* for the box: events are keyed
//! by (node, timeline, seq); a timeline stores the events after its `base_seq`, and
//! the ones up to it are its parent's. The new timeline starts from a point both sides
//! certainly share and is *resolved* as the box resends: each resent event identical
//! to the parent's is shared (the base moves up), and the first one that differs is
//! where the histories forked. The parent's events after the fork stay, counted, and
//! are marked as the lost timeline's (`timeline.lost_from..=lost_to`).
//!
//! **Incarnation.** The cloud's database has one too (`meta.incarnation`). A box that
//! reports an acknowledgement from this incarnation beyond what the cloud holds shows
//! the database went back (a restore): the cloud takes a new incarnation, so every
//! box forgets its cursors of the cloud's streams and fetches them again.

use super::db::{
    AsDb, Cell, Conn, CopyRows, Db, DbError, DbResult, Dialect, OptionalExtension, params,
};
use crate::proto::{Account, BoxHello, BoxStatus, DayTotals, WireEvent, event_digest};
use crate::uplink::{BatchError, accept_batch};
use canteen_api::events::{EventPayload, OrderMoved, OrderPlacedHead};
use rusqlite::Connection;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS node (
    node_id    TEXT PRIMARY KEY,
    acked_seq  INTEGER NOT NULL DEFAULT 0,
    connected  INTEGER NOT NULL DEFAULT 0,
    last_seen  TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS event (
    node_id      TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    payload      TEXT NOT NULL,
    at           TEXT NOT NULL,
    PRIMARY KEY (node_id, seq)
) STRICT, WITHOUT ROWID;
-- One row per order; its lines stay in the order.placed event (read at query time).
CREATE TABLE IF NOT EXISTS cloud_order (
    node_id     TEXT NOT NULL,
    order_id    TEXT NOT NULL,
    service_day TEXT NOT NULL,
    state       TEXT NOT NULL,
    total_fen   INTEGER NOT NULL,
    placed_seq  INTEGER NOT NULL,
    PRIMARY KEY (node_id, order_id)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cloud_payment (
    node_id     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    order_id    TEXT NOT NULL,
    service_day TEXT NOT NULL,
    kind        TEXT NOT NULL,
    amount_fen  INTEGER NOT NULL,
    PRIMARY KEY (node_id, seq)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS doc_chunk (
    node_id TEXT NOT NULL,
    doc     TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (node_id, doc, seq)
) STRICT;
CREATE TABLE IF NOT EXISTS doc_sync_state (
    node_id TEXT NOT NULL,
    doc     TEXT NOT NULL,
    state   BLOB NOT NULL,
    PRIMARY KEY (node_id, doc)
) STRICT;
CREATE TABLE IF NOT EXISTS revocation (
    node_id       TEXT PRIMARY KEY,
    -- Certificates of this node issued before this time (Unix seconds) are refused.
    issued_before INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS account (
    cursor      INTEGER PRIMARY KEY AUTOINCREMENT,
    role        TEXT NOT NULL,
    login       TEXT NOT NULL,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    active      INTEGER NOT NULL
) STRICT;
";

/// Version 3: the campus admins, their sessions (token digests) and the audit log of
/// their actions.
const MIGRATION_3: &str = "
CREATE TABLE admin_account (
    username      TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'viewer', 'canteen_manager')),
    canteens      TEXT NOT NULL DEFAULT '[]',
    password_hash TEXT NOT NULL,
    active        INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE admin_session (
    token_digest  TEXT PRIMARY KEY,
    username      TEXT NOT NULL REFERENCES admin_account (username),
    csrf          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms    INTEGER NOT NULL,
    username TEXT NOT NULL,
    action   TEXT NOT NULL,
    canteens TEXT NOT NULL,
    result   TEXT NOT NULL,
    detail   TEXT NOT NULL
) STRICT;
";

/// Version 4: what boxes report of themselves (status, their own day totals), the
/// reconciliation of business days, rollups maintained at ingest (so the console's
/// pages never scan the event table), staff accounts scoped to canteens, and menu
/// pushes across canteens. The rollups are filled from the projections here, once.
const MIGRATION_4: &str = "
ALTER TABLE node ADD COLUMN protocol INTEGER NOT NULL DEFAULT 0;
ALTER TABLE node ADD COLUMN counted_events INTEGER NOT NULL DEFAULT 0;
UPDATE node SET counted_events =
    (SELECT COUNT(*) FROM event e WHERE e.node_id = node.node_id AND e.counted = 1);
-- The latest status a box sent (protocol version 3).
CREATE TABLE node_status (
    node_id           TEXT PRIMARY KEY,
    received_at_ms    INTEGER NOT NULL,
    clock_offset_ms   INTEGER NOT NULL,
    software          TEXT NOT NULL,
    schema            INTEGER NOT NULL,
    last_seq          INTEGER NOT NULL,
    acked_seq         INTEGER NOT NULL,
    oldest_waiting_at TEXT,
    docs              TEXT NOT NULL
) STRICT;
-- A box's own totals of a business day, as it last reported them.
CREATE TABLE day_report (
    node_id        TEXT NOT NULL,
    service_day    TEXT NOT NULL,
    through_seq    INTEGER NOT NULL,
    orders         INTEGER NOT NULL,
    revenue_fen    INTEGER NOT NULL,
    refunds_fen    INTEGER NOT NULL,
    cancelled      INTEGER NOT NULL,
    expired        INTEGER NOT NULL,
    unclaimed      INTEGER NOT NULL,
    reported_at_ms INTEGER NOT NULL,
    PRIMARY KEY (node_id, service_day)
) STRICT, WITHOUT ROWID;
-- A business day whose totals matched the box's after it ended: complete up to
-- through_seq. Events of the day that arrive later are late.
CREATE TABLE day_close (
    node_id      TEXT NOT NULL,
    service_day  TEXT NOT NULL,
    through_seq  INTEGER NOT NULL,
    closed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (node_id, service_day)
) STRICT, WITHOUT ROWID;
CREATE TABLE late_event (
    node_id        TEXT NOT NULL,
    service_day    TEXT NOT NULL,
    timeline       INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (node_id, service_day, timeline, seq)
) STRICT, WITHOUT ROWID;
-- Rollups, kept in the ingesting transaction.
ALTER TABLE cloud_order ADD COLUMN placed_hour INTEGER NOT NULL DEFAULT 0;
UPDATE cloud_order SET placed_hour = COALESCE((SELECT unixepoch(e.at) / 3600 FROM event e
    WHERE e.node_id = cloud_order.node_id AND e.timeline = cloud_order.placed_timeline
      AND e.seq = cloud_order.placed_seq), 0);
CREATE TABLE rollup_state (
    node_id     TEXT NOT NULL,
    service_day TEXT NOT NULL,
    state       TEXT NOT NULL,
    orders      INTEGER NOT NULL,
    PRIMARY KEY (node_id, service_day, state)
) STRICT, WITHOUT ROWID;
INSERT INTO rollup_state SELECT node_id, service_day, state, COUNT(*) FROM cloud_order
    GROUP BY 1, 2, 3;
CREATE TABLE rollup_money (
    node_id      TEXT NOT NULL,
    service_day  TEXT NOT NULL,
    paid_fen     INTEGER NOT NULL,
    refunded_fen INTEGER NOT NULL,
    PRIMARY KEY (node_id, service_day)
) STRICT, WITHOUT ROWID;
INSERT INTO rollup_money SELECT node_id, service_day,
    COALESCE(SUM(CASE WHEN kind = 'payment' THEN amount_fen END), 0),
    COALESCE(SUM(CASE WHEN kind = 'refund' THEN amount_fen END), 0)
    FROM cloud_payment GROUP BY 1, 2;
-- Orders placed per hour (Unix time / 3600, UTC): pages map hours to the canteen's
-- local time.
CREATE TABLE rollup_hour (
    node_id     TEXT NOT NULL,
    service_day TEXT NOT NULL,
    hour        INTEGER NOT NULL,
    orders      INTEGER NOT NULL,
    PRIMARY KEY (node_id, service_day, hour)
) STRICT, WITHOUT ROWID;
INSERT INTO rollup_hour SELECT node_id, service_day, placed_hour, COUNT(*) FROM cloud_order
    GROUP BY 1, 2, 3;
-- Dishes of the orders whose money was taken and kept.
CREATE TABLE rollup_item (
    node_id     TEXT NOT NULL,
    service_day TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    quantity    INTEGER NOT NULL,
    revenue_fen INTEGER NOT NULL,
    PRIMARY KEY (node_id, service_day, item_id)
) STRICT, WITHOUT ROWID;
INSERT INTO rollup_item
    SELECT o.node_id, o.service_day, l.value ->> 'item_id', SUM(l.value ->> 'quantity'),
           SUM(l.value ->> 'line_total_fen')
    FROM cloud_order o
    JOIN event e ON e.node_id = o.node_id AND e.timeline = o.placed_timeline
        AND e.seq = o.placed_seq,
    json_each(e.payload, '$.lines') l
    WHERE o.state IN ('paid', 'preparing', 'ready', 'picked_up', 'unclaimed')
    GROUP BY 1, 2, 3;
-- Dishes that sold out: since when, and when they came back.
CREATE TABLE sold_out (
    node_id     TEXT NOT NULL,
    service_day TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    since       TEXT NOT NULL,
    back_at     TEXT,
    PRIMARY KEY (node_id, service_day, item_id, since)
) STRICT, WITHOUT ROWID;
-- Staff accounts of named canteens only (JSON list of node ids; empty: every canteen).
ALTER TABLE account ADD COLUMN canteens TEXT NOT NULL DEFAULT '[]';
-- Menu changes pushed to several canteens at once, and each canteen's state.
CREATE TABLE menu_push (
    push_id  TEXT PRIMARY KEY,
    at_ms    INTEGER NOT NULL,
    username TEXT NOT NULL,
    item_id  TEXT NOT NULL,
    -- The change as the admin gave it (JSON).
    change   TEXT NOT NULL
) STRICT;
CREATE TABLE menu_push_target (
    node_id TEXT NOT NULL,
    push_id TEXT NOT NULL REFERENCES menu_push (push_id),
    -- The cloud's heads of the canteen's menu right after the push (hex, JSON list).
    heads   TEXT NOT NULL,
    PRIMARY KEY (node_id, push_id)
) STRICT, WITHOUT ROWID;
";

/// Version 5: the box's current connection, so the end of an older one (at another
/// replica of the cloud) does not mark a box that reconnected as gone.
const MIGRATION_5: &str = "
ALTER TABLE node ADD COLUMN connection TEXT NOT NULL DEFAULT '';
";

/// Version 6: events in a rowid table. As a `WITHOUT ROWID` table the event rows (about
/// 1.1 KB: the order with its lines) did not fit in an index B-tree's leaf (at most
/// about 1,000 bytes there on 4 KiB pages): every event took an overflow page of its
/// own, 4.7 KB on disk and written twice (WAL, then file) instead of 1.4 KB. A rowid
/// table keeps rows up to 4 KB in its leaves, appended in arrival order; the primary
/// key becomes an index of (node, timeline, seq).
const MIGRATION_6: &str = "
CREATE TABLE event_v6 (
    node_id      TEXT NOT NULL,
    timeline     INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    payload      TEXT NOT NULL,
    at           TEXT NOT NULL,
    counted      INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (node_id, timeline, seq)
) STRICT;
INSERT INTO event_v6 (node_id, timeline, seq, kind, aggregate_id, payload, at, counted)
    SELECT node_id, timeline, seq, kind, aggregate_id, payload, at, counted FROM event
    ORDER BY node_id, timeline, seq;
DROP TABLE event;
ALTER TABLE event_v6 RENAME TO event;
";

/// The schema version this build writes; a newer database is refused.
pub const SCHEMA_VERSION: i64 = 6;

/// Version 2: timelines and incarnations. Rebuilds the tables whose keys gain the
/// timeline (SQLite cannot change a primary key in place).
const MIGRATION_2: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
ALTER TABLE node ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
ALTER TABLE node ADD COLUMN timeline INTEGER NOT NULL DEFAULT 0;
-- While a new timeline is being resolved: the parent's last event (0 when resolved).
ALTER TABLE node ADD COLUMN resolve_until INTEGER NOT NULL DEFAULT 0;
CREATE TABLE timeline (
    node_id     TEXT NOT NULL,
    timeline    INTEGER NOT NULL,
    incarnation TEXT NOT NULL,
    base_seq    INTEGER NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    -- Events of this timeline the box no longer has (it was restored to before them).
    lost_from   INTEGER,
    lost_to     INTEGER,
    PRIMARY KEY (node_id, timeline)
) STRICT;
INSERT INTO timeline (node_id, timeline, incarnation, base_seq, started_at)
    SELECT node_id, 0, '', 0, COALESCE(last_seen, '') FROM node;
CREATE TABLE event_v2 (
    node_id      TEXT NOT NULL,
    timeline     INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    payload      TEXT NOT NULL,
    at           TEXT NOT NULL,
    -- 0 for an event already stored (and counted) in another timeline of the node: kept
    -- so the timeline reads whole, neither counted nor projected again.
    counted      INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (node_id, timeline, seq)
) STRICT, WITHOUT ROWID;
INSERT INTO event_v2 SELECT node_id, 0, seq, kind, aggregate_id, payload, at, 1 FROM event;
DROP TABLE event;
ALTER TABLE event_v2 RENAME TO event;
ALTER TABLE cloud_order ADD COLUMN placed_timeline INTEGER NOT NULL DEFAULT 0;
CREATE TABLE cloud_payment_v2 (
    node_id     TEXT NOT NULL,
    timeline    INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    order_id    TEXT NOT NULL,
    service_day TEXT NOT NULL,
    kind        TEXT NOT NULL,
    amount_fen  INTEGER NOT NULL,
    PRIMARY KEY (node_id, timeline, seq)
) STRICT, WITHOUT ROWID;
INSERT INTO cloud_payment_v2
    SELECT node_id, 0, seq, order_id, service_day, kind, amount_fen FROM cloud_payment;
DROP TABLE cloud_payment;
ALTER TABLE cloud_payment_v2 RENAME TO cloud_payment;
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database: {0}")]
    Db(#[from] DbError),
    #[error("batch refused: {0}")]
    Batch(#[from] BatchError),
    #[error(
        "the cloud database has schema version {found}; this build supports up to {SCHEMA_VERSION}"
    )]
    SchemaTooNew { found: i64 },
    #[error("{0}")]
    Restore(String),
    #[error("the box's history moved on to another timeline; reconnect")]
    StaleTimeline,
    #[error("cannot start the checkpoint thread: {0}")]
    Thread(std::io::Error),
    #[error("event {seq} of {node}: {reason}")]
    BadEvent {
        node: String,
        seq: u64,
        reason: String,
    },
}

/// The cloud's store: SQLite (one connection behind a mutex, the embedded default) or
/// PostgreSQL (a pool, shared by several replicas of the cloud).
pub struct CloudStore {
    backend: Backend,
}

enum Backend {
    Lite {
        conn: Mutex<Connection>,
        /// Held for its thread, stopped when the store is dropped.
        _checkpoints: Checkpoints,
    },
    Pg(super::pg::PgBackend),
}

/// Copies committed WAL pages into the SQLite file on a thread and connection of its
/// own. Left to SQLite, the commit that crossed 1,000 WAL pages did it: in a
/// catch-up, about every other batch, and a third of the ingest's time went to those
/// checkpoints while the box waited for its acknowledgement. (Passive: it never
/// blocks the store's connection.)
struct Checkpoints {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the checkpoint thread runs.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl Checkpoints {
    fn spawn(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_millis(100))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cloud-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "checkpoint failed; will retry");
                    }
                }
            })
            .map_err(StoreError::Thread)?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl CloudStore {
    /// Revokes every certificate of `node` issued up to now (a stolen or retired box);
    /// a certificate enrolled afterwards is accepted.
    pub fn revoke(&self, node: &str, now_unix: i64) -> Result<(), StoreError> {
        self.lock()?.execute(
            "INSERT INTO revocation (node_id, issued_before) VALUES (?1, ?2)
             ON CONFLICT (node_id) DO UPDATE SET
                 issued_before = CASE WHEN revocation.issued_before > ?2 THEN revocation.issued_before ELSE ?2 END",
            params![node, now_unix],
        )?;
        Ok(())
    }

    /// Whether a certificate of `node` issued at `issued_at` is revoked.
    pub fn is_revoked(&self, node: &str, issued_at: i64) -> Result<bool, StoreError> {
        let before: Option<i64> = self
            .lock()?
            .query_row(
                "SELECT issued_before FROM revocation WHERE node_id = ?1",
                [node],
                |r| r.get(0),
            )
            .optional()?;
        Ok(before.is_some_and(|b| issued_at <= b))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    pub node_id: String,
    pub acked_seq: u64,
    pub connected: bool,
    pub last_seen: Option<String>,
    /// The box's database incarnation (empty for a box that never said).
    pub incarnation: String,
    /// The box's current timeline: 0 unless it was restored (re-based).
    pub timeline: u64,
}

/// One history of a box's events (see the module docs).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TimelineRow {
    pub timeline: u64,
    pub incarnation: String,
    /// Events up to here are the parent timeline's.
    pub base_seq: u64,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// Events of this timeline that the box lost to a restore: kept and counted here,
    /// never sent again.
    pub lost_from: Option<u64>,
    pub lost_to: Option<u64>,
}

/// What the cloud answers a version 2 `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloOutcome {
    pub cloud_incarnation: String,
    pub acked_seq: u64,
    pub acked_digest: String,
    pub rebased: bool,
    /// The box showed that this database went back (a restore): it took a new
    /// incarnation, and connected boxes must start over.
    pub cloud_restored: bool,
    /// The box's timeline from now on: its batches are taken for this timeline only.
    pub timeline: i64,
    /// This connection's id: its end marks the box gone only if no newer connection
    /// of the box came since ([`CloudStore::disconnected`]).
    pub connection: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ItemTotal {
    pub item_id: String,
    pub quantity: i64,
    pub revenue_fen: i64,
}

/// What an admin sees of one canteen (one day or all days).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub node_id: String,
    pub orders: i64,
    pub revenue_fen: i64,
    pub refunds_fen: i64,
    pub by_state: std::collections::BTreeMap<String, i64>,
    pub items: Vec<ItemTotal>,
    pub events: i64,
}

/// The latest status a box reported.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeStatus {
    pub received_at_ms: i64,
    /// The box's clock less the cloud's, in milliseconds.
    pub clock_offset_ms: i64,
    pub software: String,
    pub schema: u32,
    pub last_seq: u64,
    pub acked_seq: u64,
    pub oldest_waiting_at: Option<String>,
    pub docs: Vec<crate::proto::DocHeads>,
    /// The protocol version of the box's latest connection.
    pub protocol: u16,
}

/// One canteen's business day as the box counts it and as the cloud does.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReconRow {
    pub canteen: String,
    pub day: String,
    /// `closed` (matched after the day ended: complete), `matches`, `in_transit` (the
    /// box counted events the cloud has not received yet), `differs`, `no_report`
    /// (a box without status messages).
    pub state: &'static str,
    pub cloud_acked_seq: u64,
    pub reported_at_ms: Option<i64>,
    pub box_totals: Option<DayTotals>,
    pub cloud_totals: DayTotals,
    /// The day is complete up to this event of the box.
    pub complete_through: Option<u64>,
    pub closed_at_ms: Option<i64>,
    /// Events of the day that arrived after it was closed.
    pub late_events: i64,
}

/// A menu change pushed to several canteens.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MenuPush {
    pub push_id: String,
    pub at_ms: i64,
    pub username: String,
    /// The dish pushed.
    pub item_id: String,
    /// The change as the admin gave it (JSON).
    pub change: String,
    /// Each canteen with the cloud's heads of its menu right after the push.
    pub targets: Vec<(String, Vec<String>)>,
}

/// Holds a box's document for this transaction (PostgreSQL: other replicas wait;
/// SQLite has one writer).
fn lock_doc(tx: &impl AsDb, node: &str, doc: &str) -> Result<(), StoreError> {
    if tx.dialect() == Dialect::Postgres {
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext(?1::text || '/' || ?2::text))",
            params![node, doc],
        )?;
    }
    Ok(())
}

/// A box's document as stored: its chunks in order.
fn chunks_in(tx: &impl AsDb, node: &str, doc: &str) -> DbResult<Vec<Vec<u8>>> {
    tx.prepare("SELECT data FROM doc_chunk WHERE node_id = ?1 AND doc = ?2 ORDER BY seq")?
        .query_map(params![node, doc], |r| r.get(0))?
        .collect()
}

fn doc_change(node: &str, doc: &str) -> super::pg::Change {
    super::pg::Change::Doc {
        node: node.to_owned(),
        doc: doc.to_owned(),
    }
}

/// ` FOR UPDATE` on PostgreSQL: the row stays this transaction's until it ends, so
/// two replicas serving the same box take turns (SQLite has one writer).
fn for_update(tx: &impl AsDb) -> &'static str {
    match tx.dialect() {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE",
    }
}

/// The node's cursor: every event up to it is stored (0 for a node never seen).
fn acked_in(conn: &impl AsDb, node: &str) -> Result<u64, StoreError> {
    let seq: Option<i64> = conn
        .query_row(
            "SELECT acked_seq FROM node WHERE node_id = ?1",
            [node],
            |r| r.get(0),
        )
        .optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

/// The totals compared in reconciliation: everything but the event they run to.
fn same_totals(a: &DayTotals, b: &DayTotals) -> bool {
    (
        a.orders,
        a.revenue_fen,
        a.refunds_fen,
        a.cancelled,
        a.expired,
        a.unclaimed,
    ) == (
        b.orders,
        b.revenue_fen,
        b.refunds_fen,
        b.cancelled,
        b.expired,
        b.unclaimed,
    )
}

/// The cloud's totals of one canteen's business day, from the rollups.
fn cloud_day(conn: &impl AsDb, node: &str, day: &str) -> Result<DayTotals, StoreError> {
    let mut t = DayTotals {
        day: day.to_owned(),
        ..DayTotals::default()
    };
    let mut stmt = conn.prepare_cached(
        "SELECT state, orders FROM rollup_state WHERE node_id = ?1 AND service_day = ?2",
    )?;
    for row in stmt.query_map(params![node, day], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (state, n) = row?;
        t.orders += n;
        match state.as_str() {
            "cancelled" => t.cancelled += n,
            "expired" => t.expired += n,
            "unclaimed" => t.unclaimed += n,
            _ => {}
        }
    }
    let money: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT paid_fen, refunded_fen FROM rollup_money WHERE node_id = ?1 AND service_day = ?2",
        )?
        .query_row(params![node, day], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((paid, refunded)) = money {
        t.revenue_fen = paid - refunded;
        t.refunds_fen = refunded;
    }
    Ok(t)
}

/// An argon2id hash of a random secret made once per process: what a box receives for
/// an account that is not valid there.
fn locked_secret() -> &'static str {
    static LOCKED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LOCKED.get_or_init(|| {
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
        super::admins::hash_account_secret(&hex::encode(secret))
    })
}

fn now_text() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    secs.to_string()
}

/// A new random incarnation id.
pub fn new_incarnation() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}

/// Brings a database to [`SCHEMA_VERSION`] in one transaction; refuses a newer one.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew { found });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction()?;
    if found < 1 {
        // Version 1 is what every cloud before versioned schemas created (the
        // statements are `IF NOT EXISTS`, so such a database passes through).
        tx.execute_batch(SCHEMA)?;
    }
    if found < 2 {
        tx.execute_batch(MIGRATION_2)?;
    }
    if found < 3 {
        tx.execute_batch(MIGRATION_3)?;
    }
    if found < 4 {
        tx.execute_batch(MIGRATION_4)?;
        // The sold-out board from the stock events already stored.
        let stock: Vec<(String, i64, WireEvent)> = tx
            .prepare(
                "SELECT node_id, timeline, seq, kind, aggregate_id, payload, at FROM event
                 WHERE kind LIKE 'stock.%' AND counted = 1 ORDER BY node_id, timeline, seq",
            )?
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    WireEvent {
                        seq: r.get::<_, i64>(2)? as u64,
                        kind: r.get(3)?,
                        aggregate_id: r.get(4)?,
                        payload: r.get(5)?,
                        at: r.get(6)?,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        for (node, timeline, e) in &stock {
            project_stock(&Db::Lite(&tx), &mut Batch::default(), node, *timeline, e)?;
        }
    }
    if found < 5 {
        tx.execute_batch(MIGRATION_5)?;
    }
    if found < 6 {
        tx.execute_batch(MIGRATION_6)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// The event at `seq` of `timeline` as the cloud holds it: the timeline's own row, or
/// (at or below its base) an ancestor's. Chains are short (one timeline per restore).
fn event_in_chain(
    conn: &impl AsDb,
    node: &str,
    timeline: i64,
    seq: u64,
) -> Result<Option<WireEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, aggregate_id, payload, at FROM event
         WHERE node_id = ?1 AND timeline = ?2 AND seq = ?3",
    )?;
    for t in (0..=timeline).rev() {
        let found = stmt
            .query_row(params![node, t, seq as i64], |r| {
                Ok(WireEvent {
                    seq,
                    kind: r.get(0)?,
                    aggregate_id: r.get(1)?,
                    payload: r.get(2)?,
                    at: r.get(3)?,
                })
            })
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

fn max_account_cursor(conn: &impl AsDb) -> Result<u64, StoreError> {
    let max: i64 = conn.query_row("SELECT COALESCE(MAX(cursor), 0) FROM account", (), |r| {
        r.get(0)
    })?;
    Ok(max as u64)
}

/// The database's incarnation.
fn read_incarnation(conn: &impl AsDb) -> Result<String, StoreError> {
    Ok(conn.query_row(
        "SELECT value FROM meta WHERE key = 'incarnation'",
        (),
        |r| r.get(0),
    )?)
}

/// Gives the database a new incarnation and returns it.
fn renew_incarnation_in(conn: &impl AsDb) -> Result<String, StoreError> {
    let fresh = new_incarnation();
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'incarnation'",
        [&fresh],
    )?;
    Ok(fresh)
}

/// [`event_digest`] of the event at `seq` of `timeline` (empty at 0 or when missing).
fn digest_at(conn: &impl AsDb, node: &str, timeline: i64, seq: u64) -> Result<String, StoreError> {
    if seq == 0 {
        return Ok(String::new());
    }
    Ok(event_in_chain(conn, node, timeline, seq)?
        .map(|e| event_digest(&e))
        .unwrap_or_default())
}

/// `VACUUM INTO` a new file: a consistent copy in one read transaction.
fn backup_into(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    if path.exists() {
        return Err(StoreError::Restore(format!(
            "{} already exists; choose a new file name",
            path.display()
        )));
    }
    let text = path
        .to_str()
        .ok_or_else(|| StoreError::Restore("the backup path is not UTF-8".into()))?;
    conn.execute("VACUUM INTO ?1", [text])?;
    Ok(())
}

/// The highest seq stored in the node's `timeline` (0: none).
fn max_seq(conn: &impl AsDb, node: &str, timeline: i64) -> DbResult<i64> {
    conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM event WHERE node_id = ?1 AND timeline = ?2",
        params![node, timeline],
        |r| r.get(0),
    )
}

/// The highest seq stored in the node's timelines other than `timeline`.
fn others_max_seq(conn: &impl AsDb, node: &str, timeline: i64) -> Result<i64, StoreError> {
    let mut max = 0;
    for t in 0..timeline {
        max = max.max(max_seq(conn, node, t)?);
    }
    Ok(max)
}

/// Whether the same event (seq and content) is stored, counted, in another timeline.
fn stored_elsewhere(
    conn: &impl AsDb,
    node: &str,
    timeline: i64,
    e: &WireEvent,
) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT 1 FROM event WHERE node_id = ?1 AND timeline = ?2 AND seq = ?3 AND counted = 1
           AND kind = ?4 AND aggregate_id = ?5 AND payload = ?6 AND at = ?7",
    )?;
    for t in (0..timeline).rev() {
        let found = stmt
            .query_row(
                params![
                    node,
                    t,
                    e.seq as i64,
                    e.kind,
                    e.aggregate_id,
                    e.payload,
                    e.at
                ],
                |_| Ok(()),
            )
            .optional()?;
        if found.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

impl CloudStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Acknowledged means durable: an ack goes out only after a FULL commit.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // A batch of 2,000 events (about 2.5 MB with its rollups and indexes) fits in
        // the page cache: with SQLite's 2 MB default the transaction spilled pages to
        // the WAL before its commit.
        conn.pragma_update(None, "cache_size", -32768)?;
        // Checkpoints are the checkpoint thread's; SQLite's own stays a safety net, at
        // 65,536 pages (256 MiB). At 16,384 the commit that crossed it checkpointed
        // inside a catch-up of 100,000 events (about 150 MB of WAL) while the box
        // waited: 9.5 % slower (BENCHMARKS.md). Once the thread has caught up, the
        // next write starts the WAL over and truncates its file to 64 MiB.
        conn.pragma_update(None, "wal_autocheckpoint", 65536)?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        let mut conn = conn;
        migrate(&mut conn)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('incarnation', ?1)",
            [new_incarnation()],
        )?;
        Ok(Self {
            backend: Backend::Lite {
                conn: Mutex::new(conn),
                _checkpoints: Checkpoints::spawn(path)?,
            },
        })
    }

    /// Opens the store on PostgreSQL (`postgres://…`): connects, migrates (once, whichever
    /// replica comes first) and listens for other replicas' changes.
    pub fn open_postgres(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Pg(super::pg::PgBackend::connect(url)?),
        })
    }

    /// Whether the database answers (a readiness probe).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.lock()?
            .query_row("SELECT 1", (), |r| r.get::<_, i64>(0))?;
        Ok(())
    }

    /// Changes other replicas made (PostgreSQL); `None` for a store only this process
    /// writes.
    pub fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<super::pg::Change>> {
        match &self.backend {
            Backend::Lite { .. } => None,
            Backend::Pg(pg) => Some(pg.changes.subscribe()),
        }
    }

    /// Tells the other replicas (PostgreSQL) what changed, when `tx` commits.
    pub(super) fn announce(
        &self,
        tx: &impl AsDb,
        change: &super::pg::Change,
    ) -> Result<(), StoreError> {
        if let Backend::Pg(pg) = &self.backend {
            tx.execute(
                "SELECT pg_notify(?1, ?2)",
                params![super::pg::CHANNEL, pg.notice(change)],
            )?;
        }
        Ok(())
    }

    /// Writes a consistent copy of the database `db` to `path` (which must not exist)
    /// while a cloud serves it: one read-only connection and one read transaction
    /// (`VACUUM INTO`); no migration runs on the live database.
    pub fn backup_file(db: &Path, path: &Path) -> Result<(), StoreError> {
        let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        backup_into(&conn, path)
    }

    /// Restores `backup` as the database `db` (which must not exist yet): checks it,
    /// migrates it, and gives it a new incarnation, so every box forgets its cursors of
    /// the cloud's streams and re-fills it from its outbox. Returns the incarnation.
    pub fn restore(backup: &Path, db: &Path) -> Result<String, StoreError> {
        let mut stale = db.as_os_str().to_owned();
        stale.push("-wal");
        if db.exists() || Path::new(&stale).exists() {
            return Err(StoreError::Restore(format!(
                "{} already holds a database (or its log); restore into an empty data directory",
                db.display()
            )));
        }
        let partial = db.with_extension("restoring");
        let result = (|| {
            std::fs::copy(backup, &partial)
                .map_err(|e| StoreError::Restore(format!("{}: {e}", backup.display())))?;
            {
                let conn = Connection::open(&partial)?;
                let verdict: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
                if verdict != "ok" {
                    return Err(StoreError::Restore(format!(
                        "the backup failed its integrity check: {verdict}"
                    )));
                }
            }
            let store = Self::open(&partial)?;
            let incarnation = store.renew_incarnation()?;
            drop(store);
            std::fs::rename(&partial, db)
                .map_err(|e| StoreError::Restore(format!("{}: {e}", db.display())))?;
            Ok(incarnation)
        })();
        if result.is_err() {
            for suffix in ["", "-wal", "-shm"] {
                let mut name = partial.clone().into_os_string();
                name.push(suffix);
                let _ = std::fs::remove_file(name);
            }
        }
        result
    }

    /// This database's incarnation.
    pub fn incarnation(&self) -> Result<String, StoreError> {
        read_incarnation(&self.lock()?)
    }

    /// Takes a new incarnation (`cloud-sync restore`; detection renews it in `hello`).
    pub fn renew_incarnation(&self) -> Result<String, StoreError> {
        renew_incarnation_in(&self.lock()?)
    }

    /// Decides how a version 2 box continues, in one transaction: a box seen for the
    /// first time starts timeline 0; a box with another incarnation than the cloud
    /// knows starts a new timeline from the point both certainly share (its
    /// `base_seq`, or the cloud's cursor if lower), to be resolved as it resends; a
    /// box that holds an acknowledgement of this cloud incarnation beyond the cloud's
    /// cursor proves this database was restored (a new cloud incarnation).
    pub fn hello(
        &self,
        node: &str,
        hello: &BoxHello,
        may_renew: bool,
    ) -> Result<HelloOutcome, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let now = now_text();
        let mut cloud_incarnation = read_incarnation(&tx)?;
        let row: Option<(String, i64, i64)> = tx
            .query_row(
                &format!(
                    "SELECT incarnation, timeline, acked_seq FROM node WHERE node_id = ?1{}",
                    for_update(&tx)
                ),
                [node],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let mut outcome = HelloOutcome {
            cloud_incarnation: String::new(),
            acked_seq: 0,
            acked_digest: String::new(),
            rebased: false,
            cloud_restored: false,
            timeline: 0,
            connection: new_incarnation(),
        };
        // Whatever the box's own history, an acknowledgement from this very cloud
        // incarnation beyond what the cloud holds of the box (nothing, for a box it
        // does not know) shows this database went back.
        let cursor = row.as_ref().map_or(0, |r| r.2 as u64);
        if hello.cloud_incarnation == cloud_incarnation && hello.acked_seq > cursor {
            if may_renew {
                cloud_incarnation = renew_incarnation_in(&tx)?;
                self.announce(&tx, &super::pg::Change::Incarnation)?;
                outcome.cloud_restored = true;
            } else {
                tracing::error!(%node, claimed = hello.acked_seq, cursor, "a box claims acknowledgements beyond this database again; the incarnation was renewed a moment ago and is not renewed again yet");
            }
        }
        match row {
            None => {
                tx.execute(
                    "INSERT INTO node (node_id, incarnation, connected, last_seen) VALUES (?1, ?2, 1, ?3)",
                    params![node, hello.incarnation, now],
                )?;
                tx.execute(
                    "INSERT INTO timeline (node_id, timeline, incarnation, base_seq, started_at)
                     VALUES (?1, 0, ?2, 0, ?3)",
                    params![node, hello.incarnation, now],
                )?;
            }
            Some((known, timeline, acked)) if known.is_empty() || known == hello.incarnation => {
                if known.is_empty() {
                    // A box that spoke version 1 before: its history so far is this
                    // incarnation's.
                    tx.execute(
                        "UPDATE timeline SET incarnation = ?3 WHERE node_id = ?1 AND timeline = ?2",
                        params![node, timeline, hello.incarnation],
                    )?;
                }
                tx.execute(
                    "UPDATE node SET incarnation = ?2, connected = 1, last_seen = ?3 WHERE node_id = ?1",
                    params![node, hello.incarnation, now],
                )?;
                outcome.acked_seq = acked as u64;
                outcome.timeline = timeline;
            }
            Some((_, timeline, acked)) => {
                let next = timeline
                    .checked_add(1)
                    .ok_or(BatchError::OutOfRange(timeline as u64))?;
                let base = hello.base_seq.min(acked as u64);
                if base > crate::uplink::SEQ_MAX {
                    return Err(BatchError::OutOfRange(base).into());
                }
                tx.execute(
                    "UPDATE timeline SET ended_at = ?3 WHERE node_id = ?1 AND timeline = ?2",
                    params![node, timeline, now],
                )?;
                tx.execute(
                    "INSERT INTO timeline (node_id, timeline, incarnation, base_seq, started_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![node, next, hello.incarnation, base as i64, now],
                )?;
                // Events after `base` up to the old cursor are compared as they come.
                let resolve_until = if acked as u64 > base { acked } else { 0 };
                tx.execute(
                    "UPDATE node SET incarnation = ?2, timeline = ?3, acked_seq = ?4,
                         resolve_until = ?5, connected = 1, last_seen = ?6
                     WHERE node_id = ?1",
                    params![
                        node,
                        hello.incarnation,
                        next,
                        base as i64,
                        resolve_until,
                        now
                    ],
                )?;
                // The box's documents start afresh too: what the cloud believed it has
                // is gone with its database.
                tx.execute("DELETE FROM doc_sync_state WHERE node_id = ?1", [node])?;
                outcome.acked_seq = base;
                outcome.rebased = true;
                outcome.timeline = next;
            }
        }
        // The box checks that its own event at the cursor is the one the cloud holds
        // there (after a re-base: the one the new timeline takes as shared, since the
        // base may come from another history).
        outcome.acked_digest = digest_at(&tx, node, outcome.timeline, outcome.acked_seq)?;
        tx.execute(
            "UPDATE node SET connection = ?2 WHERE node_id = ?1",
            params![node, outcome.connection],
        )?;
        tx.commit()?;
        outcome.cloud_incarnation = cloud_incarnation;
        Ok(outcome)
    }

    /// The incarnation a box last said it has (empty when it never said).
    pub fn node_incarnation(&self, node: &str) -> Result<String, StoreError> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT incarnation FROM node WHERE node_id = ?1",
                [node],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or_default())
    }

    /// Every timeline of a box, oldest first.
    pub fn timelines(&self, node: &str) -> Result<Vec<TimelineRow>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT timeline, incarnation, base_seq, started_at, ended_at, lost_from, lost_to
             FROM timeline WHERE node_id = ?1 ORDER BY timeline",
        )?;
        let rows = stmt.query_map([node], |r| {
            Ok(TimelineRow {
                timeline: r.get::<_, i64>(0)? as u64,
                incarnation: r.get(1)?,
                base_seq: r.get::<_, i64>(2)? as u64,
                started_at: r.get(3)?,
                ended_at: r.get(4)?,
                lost_from: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                lost_to: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A connection for one call: SQLite's, or one of the pool's.
    pub(super) fn lock(&self) -> Result<Conn<'_>, StoreError> {
        Ok(match &self.backend {
            Backend::Lite { conn, .. } => {
                Conn::Lite(conn.lock().unwrap_or_else(|e| e.into_inner()))
            }
            Backend::Pg(pg) => pg.conn()?,
        })
    }

    pub fn acked(&self, node: &str) -> Result<u64, StoreError> {
        acked_in(&self.lock()?, node)
    }

    /// Records a version 1 box as connected (a box seen for the first time starts
    /// timeline 0) and returns the connection's id.
    pub fn connected(&self, node: &str) -> Result<String, StoreError> {
        let conn = self.lock()?;
        let now = now_text();
        let connection = new_incarnation();
        conn.execute(
            "INSERT INTO node (node_id, connected, last_seen, connection) VALUES (?1, 1, ?2, ?3)
             ON CONFLICT (node_id) DO UPDATE SET connected = 1, last_seen = ?2, connection = ?3",
            params![node, now, connection],
        )?;
        conn.execute(
            "INSERT OR IGNORE INTO timeline (node_id, timeline, incarnation, base_seq, started_at)
             VALUES (?1, 0, '', 0, ?2)",
            params![node, now],
        )?;
        Ok(connection)
    }

    /// Records the end of a box's connection `connection`: the box is gone unless it
    /// connected again since (to this replica or another).
    pub fn disconnected(&self, node: &str, connection: &str) -> Result<(), StoreError> {
        self.lock()?.execute(
            "UPDATE node SET connected = 0, last_seen = ?3 WHERE node_id = ?1 AND connection = ?2",
            params![node, connection, now_text()],
        )?;
        Ok(())
    }

    /// Applies a batch exactly once and returns the node's new cursor. Everything of
    /// the batch (events, projections, cursor, the timeline's resolution) commits
    /// together, or nothing does.
    pub fn ingest(&self, node: &str, events: &[WireEvent]) -> Result<u64, StoreError> {
        self.ingest_for(node, None, events)
    }

    /// Like [`CloudStore::ingest`], for a connection that said `Hello` for `timeline`:
    /// once the box's timeline has moved on (another copy of the box, or a newer
    /// connection of it, re-based), this connection's batches are refused, so they
    /// never land in a history that is not theirs.
    pub fn ingest_for(
        &self,
        node: &str,
        timeline_expected: Option<i64>,
        events: &[WireEvent],
    ) -> Result<u64, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        tx.defer("INSERT OR IGNORE INTO node (node_id) VALUES (?1)", [node])?;
        // The box's cursor row is this batch's until it commits: a second replica
        // receiving the same box (a reconnect mid-batch) waits, then finds these
        // events stored and takes none of them again.
        let (cursor, timeline, mut resolve_until): (i64, i64, i64) = tx.query_row(
            &format!(
                "SELECT acked_seq, timeline, resolve_until FROM node WHERE node_id = ?1{}",
                for_update(&tx)
            ),
            [node],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        if timeline_expected.is_some_and(|t| t != timeline) {
            return Err(StoreError::StaleTimeline);
        }
        let fresh = accept_batch(cursor as u64, events)?;
        let Some(last) = fresh.last().map(|e| e.seq) else {
            return Ok(cursor as u64);
        };
        {
            // A history may return to events the cloud holds in a timeline it left (a
            // box restored from a backup older than its last restore): up to the
            // highest seq of the other timelines, each event is looked for there.
            let others_max = if timeline > 0 {
                others_max_seq(&tx, node, timeline)?
            } else {
                0
            };
            let mut counted = 0i64;
            let mut batch = Batch::default();
            batch.load(&tx, node, fresh)?;
            // The events to store, and whether each is counted now.
            let mut rows: Vec<(&WireEvent, bool)> = Vec::with_capacity(fresh.len());
            for e in fresh {
                if resolve_until > 0 {
                    if e.seq as i64 <= resolve_until {
                        let parent = event_in_chain(&tx, node, timeline - 1, e.seq)?;
                        if parent.as_ref() == Some(e) {
                            // The same event in both histories: shared, already counted.
                            tx.execute(
                                "UPDATE timeline SET base_seq = ?3 WHERE node_id = ?1 AND timeline = ?2",
                                params![node, timeline, e.seq as i64],
                            )?;
                            continue;
                        }
                        // The histories fork here: the parent's events from here on
                        // are the lost timeline's.
                        tx.execute(
                            "UPDATE timeline SET lost_from = ?3, lost_to = ?4
                             WHERE node_id = ?1 AND timeline = ?2",
                            params![node, timeline - 1, e.seq as i64, resolve_until],
                        )?;
                    }
                    resolve_until = 0;
                }
                let counted_before =
                    e.seq as i64 <= others_max && stored_elsewhere(&tx, node, timeline, e)?;
                rows.push((e, !counted_before));
            }
            // The cursor row's lock keeps a second replica out of this box's batch, so
            // no event after the cursor is stored yet (`ON CONFLICT DO NOTHING` would
            // leave one as it is).
            insert_events(&tx, node, timeline, cursor, &rows)?;
            // PostgreSQL stores the events (the most of its work for a batch) while
            // the projection below is worked out here.
            tx.send_deferred();
            for (e, counted_now) in rows {
                if counted_now {
                    project(&tx, &mut batch, node, timeline, e)?;
                    counted += 1;
                }
            }
            batch.insert_new_orders(&tx, node)?;
            batch.flush(&tx, node)?;
            tx.defer(
                "UPDATE node SET counted_events = counted_events + ?2 WHERE node_id = ?1",
                params![node, counted],
            )?;
        }
        tx.defer(
            "UPDATE node SET acked_seq = ?2, last_seen = ?3, resolve_until = ?4 WHERE node_id = ?1",
            params![node, last as i64, now_text(), resolve_until],
        )?;
        tx.commit()?;
        Ok(last)
    }

    pub fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT node_id, acked_seq, connected, last_seen, incarnation, timeline
             FROM node ORDER BY node_id",
        )?;
        let rows = stmt.query_map((), |r| {
            Ok(NodeRow {
                node_id: r.get(0)?,
                acked_seq: r.get::<_, i64>(1)? as u64,
                connected: r.get(2)?,
                last_seen: r.get(3)?,
                incarnation: r.get(4)?,
                timeline: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn summary(&self, node: &str, day: Option<&str>) -> Result<Summary, StoreError> {
        let day = day.unwrap_or("");
        self.summary_range(
            node,
            if day.is_empty() {
                ("", "9")
            } else {
                (day, day)
            },
        )
    }

    /// One canteen's totals over the business days `from..=to` (`YYYY-MM-DD`), read
    /// from the rollups.
    pub fn summary_range(
        &self,
        node: &str,
        (from, to): (&str, &str),
    ) -> Result<Summary, StoreError> {
        let conn = self.lock()?;
        let mut by_state = std::collections::BTreeMap::new();
        {
            let mut stmt = conn.prepare_cached(
                "SELECT state, CAST(SUM(orders) AS BIGINT) FROM rollup_state
                 WHERE node_id = ?1 AND service_day BETWEEN ?2 AND ?3 GROUP BY state",
            )?;
            for row in stmt.query_map(params![node, from, to], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })? {
                let (s, n) = row?;
                if n != 0 {
                    by_state.insert(s, n);
                }
            }
        }
        let (paid, refunded): (i64, i64) = conn.query_row(
            "SELECT CAST(COALESCE(SUM(paid_fen), 0) AS BIGINT), CAST(COALESCE(SUM(refunded_fen), 0) AS BIGINT)
             FROM rollup_money
             WHERE node_id = ?1 AND service_day BETWEEN ?2 AND ?3",
            params![node, from, to],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut stmt = conn.prepare_cached(
            "SELECT item_id, CAST(SUM(quantity) AS BIGINT), CAST(SUM(revenue_fen) AS BIGINT) FROM rollup_item
             WHERE node_id = ?1 AND service_day BETWEEN ?2 AND ?3
             GROUP BY 1 HAVING SUM(quantity) <> 0 OR SUM(revenue_fen) <> 0 ORDER BY 1",
        )?;
        let items = stmt
            .query_map(params![node, from, to], |r| {
                Ok(ItemTotal {
                    item_id: r.get(0)?,
                    quantity: r.get(1)?,
                    revenue_fen: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let events: i64 = conn
            .query_row(
                "SELECT counted_events FROM node WHERE node_id = ?1",
                [node],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        Ok(Summary {
            node_id: node.to_owned(),
            orders: by_state.values().sum(),
            revenue_fen: paid - refunded,
            refunds_fen: refunded,
            by_state,
            items,
            events,
        })
    }

    /// Orders placed per hour (Unix time / 3600) over `node`'s business days
    /// `from..=to`.
    pub fn placed_hours(
        &self,
        node: &str,
        (from, to): (&str, &str),
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT hour, CAST(SUM(orders) AS BIGINT) FROM rollup_hour
             WHERE node_id = ?1 AND service_day BETWEEN ?2 AND ?3 GROUP BY hour",
        )?;
        let rows = stmt.query_map(params![node, from, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// `node`'s dishes that sold out over `from..=to`: (item, since, back at).
    pub fn sold_out(
        &self,
        node: &str,
        (from, to): (&str, &str),
    ) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(
            "SELECT item_id, since, back_at FROM sold_out
             WHERE node_id = ?1 AND service_day BETWEEN ?2 AND ?3 ORDER BY since, item_id",
        )?;
        let rows = stmt.query_map(params![node, from, to], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest business day with an order at any canteen, as the boxes named it.
    pub fn latest_service_day(&self) -> Result<Option<String>, StoreError> {
        Ok(self.lock()?.query_row(
            "SELECT MAX(service_day) FROM rollup_state WHERE orders > 0",
            (),
            |r| r.get(0),
        )?)
    }

    /// The latest business day any box reported or sold on.
    pub fn latest_report_day(&self) -> Result<Option<String>, StoreError> {
        Ok(self.lock()?.query_row(
            "SELECT MAX(d) FROM (SELECT MAX(service_day) AS d FROM day_report
                                 UNION ALL SELECT MAX(service_day) FROM rollup_state) AS days",
            (),
            |r| r.get(0),
        )?)
    }

    /// The protocol version a box was welcomed in, at its latest connection.
    pub fn set_protocol(&self, node: &str, protocol: u16) -> Result<(), StoreError> {
        self.lock()?.execute(
            "UPDATE node SET protocol = ?2 WHERE node_id = ?1",
            params![node, protocol],
        )?;
        Ok(())
    }

    /// Records a box's status and its own day totals; closes (reconciles) each day the
    /// box has moved past whose totals the cloud now matches: complete up to the events
    /// the box had counted, or the cloud's cursor if that is lower. Returns the days
    /// closed now.
    pub fn record_status(
        &self,
        node: &str,
        status: &BoxStatus,
        now_ms: i64,
        clock_offset_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let docs =
            serde_json::to_string(&status.docs).map_err(|e| StoreError::Restore(e.to_string()))?;
        tx.execute(
            "INSERT INTO node_status (node_id, received_at_ms, clock_offset_ms, software,
                 schema, last_seq, acked_seq, oldest_waiting_at, docs)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (node_id) DO UPDATE SET received_at_ms = excluded.received_at_ms,
                 clock_offset_ms = excluded.clock_offset_ms, software = excluded.software,
                 schema = excluded.schema, last_seq = excluded.last_seq,
                 acked_seq = excluded.acked_seq, oldest_waiting_at = excluded.oldest_waiting_at,
                 docs = excluded.docs",
            params![
                node,
                now_ms,
                clock_offset_ms,
                status.software,
                status.schema,
                status.last_seq as i64,
                status.acked_seq as i64,
                status.oldest_waiting_at,
                docs
            ],
        )?;
        let acked = acked_in(&tx, node)? as i64;
        let current = status.days.iter().map(|d| d.day.as_str()).max();
        let mut closed = Vec::new();
        for d in &status.days {
            tx.execute(
                "INSERT INTO day_report (node_id, service_day, through_seq, orders,
                     revenue_fen, refunds_fen, cancelled, expired, unclaimed, reported_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (node_id, service_day) DO UPDATE SET
                     through_seq = excluded.through_seq, orders = excluded.orders,
                     revenue_fen = excluded.revenue_fen, refunds_fen = excluded.refunds_fen,
                     cancelled = excluded.cancelled, expired = excluded.expired,
                     unclaimed = excluded.unclaimed, reported_at_ms = excluded.reported_at_ms",
                params![
                    node,
                    d.day,
                    d.through_seq as i64,
                    d.orders,
                    d.revenue_fen,
                    d.refunds_fen,
                    d.cancelled,
                    d.expired,
                    d.unclaimed,
                    now_ms
                ],
            )?;
            // A day the box has moved past whose totals the cloud matches: every event
            // of it is here (the box keeps counting later events into the newer days,
            // so a busy box need not be caught up for an older day to close).
            let over = current.is_some_and(|c| d.day.as_str() < c);
            if over && same_totals(d, &cloud_day(&tx, node, &d.day)?) {
                let complete = (d.through_seq as i64).min(acked);
                let n = tx.execute(
                    "INSERT OR IGNORE INTO day_close (node_id, service_day, through_seq, closed_at_ms)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![node, d.day, complete, now_ms],
                )?;
                if n > 0 {
                    closed.push(d.day.clone());
                }
            }
        }
        tx.commit()?;
        Ok(closed)
    }

    /// The latest status a box sent, if it ever sent one.
    pub fn node_status(&self, node: &str) -> Result<Option<NodeStatus>, StoreError> {
        let conn = self.lock()?;
        let row = conn
            .query_row(
                "SELECT s.received_at_ms, s.clock_offset_ms, s.software, s.schema, s.last_seq,
                        s.acked_seq, s.oldest_waiting_at, s.docs, n.protocol
                 FROM node_status s JOIN node n USING (node_id) WHERE s.node_id = ?1",
                [node],
                |r| {
                    Ok((
                        NodeStatus {
                            received_at_ms: r.get(0)?,
                            clock_offset_ms: r.get(1)?,
                            software: r.get(2)?,
                            schema: r.get(3)?,
                            last_seq: r.get::<_, i64>(4)? as u64,
                            acked_seq: r.get::<_, i64>(5)? as u64,
                            oldest_waiting_at: r.get(6)?,
                            docs: Vec::new(),
                            protocol: r.get(8)?,
                        },
                        r.get::<_, String>(7)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.map(|(mut s, docs)| {
            s.docs = serde_json::from_str(&docs).unwrap_or_default();
            s
        }))
    }

    /// The protocol version a box was last welcomed in (0: never connected).
    pub fn protocol(&self, node: &str) -> Result<u16, StoreError> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT protocol FROM node WHERE node_id = ?1",
                [node],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Each business day of `node` in `from..=to` (newest first): the box's totals as
    /// it last reported them, the cloud's, and the day's reconciliation.
    pub fn reconciliation(
        &self,
        node: &str,
        (from, to): (&str, &str),
    ) -> Result<Vec<ReconRow>, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let acked = acked_in(&tx, node)? as i64;
        let days: Vec<String> = tx
            .prepare(
                "SELECT service_day FROM day_report WHERE node_id = ?1 AND service_day BETWEEN ?2 AND ?3
                 UNION SELECT service_day FROM rollup_state
                     WHERE node_id = ?1 AND service_day BETWEEN ?2 AND ?3
                 ORDER BY 1 DESC LIMIT 400",
            )?
            .query_map(params![node, from, to], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(days.len());
        for day in days {
            let reported = tx
                .query_row(
                    "SELECT through_seq, orders, revenue_fen, refunds_fen, cancelled, expired,
                            unclaimed, reported_at_ms
                     FROM day_report WHERE node_id = ?1 AND service_day = ?2",
                    params![node, day],
                    |r| {
                        Ok((
                            DayTotals {
                                day: day.clone(),
                                through_seq: r.get::<_, i64>(0)? as u64,
                                orders: r.get(1)?,
                                revenue_fen: r.get(2)?,
                                refunds_fen: r.get(3)?,
                                cancelled: r.get(4)?,
                                expired: r.get(5)?,
                                unclaimed: r.get(6)?,
                            },
                            r.get::<_, i64>(7)?,
                        ))
                    },
                )
                .optional()?;
            let closed = tx
                .query_row(
                    "SELECT through_seq, closed_at_ms FROM day_close
                     WHERE node_id = ?1 AND service_day = ?2",
                    params![node, day],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?)),
                )
                .optional()?;
            let late_events: i64 = tx.query_row(
                "SELECT COUNT(*) FROM late_event WHERE node_id = ?1 AND service_day = ?2",
                params![node, day],
                |r| r.get(0),
            )?;
            let cloud = cloud_day(&tx, node, &day)?;
            let state = match &reported {
                None => "no_report",
                Some((b, _)) if same_totals(b, &cloud) => {
                    if closed.is_some() {
                        "closed"
                    } else {
                        "matches"
                    }
                }
                Some((b, _)) if (b.through_seq as i64) > acked => "in_transit",
                Some(_) => "differs",
            };
            out.push(ReconRow {
                canteen: node.to_owned(),
                day,
                state,
                cloud_acked_seq: acked as u64,
                reported_at_ms: reported.as_ref().map(|r| r.1),
                box_totals: reported.map(|r| r.0),
                cloud_totals: cloud,
                complete_through: closed.map(|c| c.0),
                closed_at_ms: closed.map(|c| c.1),
                late_events,
            });
        }
        Ok(out)
    }

    pub fn doc_chunks(&self, node: &str, doc: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(chunks_in(&self.lock()?, node, doc)?)
    }

    /// Appends a chunk of a box's document and tells the other replicas.
    pub fn put_chunk(&self, node: &str, doc: &str, data: &[u8]) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        lock_doc(&tx, node, doc)?;
        tx.execute(
            "INSERT INTO doc_chunk (node_id, doc, seq, data)
             VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM doc_chunk WHERE node_id = ?1 AND doc = ?2), ?3)",
            params![node, doc, data],
        )?;
        self.announce(&tx, &doc_change(node, doc))?;
        tx.commit()?;
        Ok(())
    }

    /// The chunks of a box's document, or `None` when it had none and `first` is now
    /// its first chunk. Replicas creating the same document at once end with one of
    /// them.
    pub fn doc_chunks_or_first(
        &self,
        node: &str,
        doc: &str,
        first: &[u8],
    ) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        lock_doc(&tx, node, doc)?;
        let chunks = chunks_in(&tx, node, doc)?;
        let stored = if chunks.is_empty() {
            tx.execute(
                "INSERT INTO doc_chunk (node_id, doc, seq, data) VALUES (?1, ?2, 1, ?3)",
                params![node, doc, first],
            )?;
            None
        } else {
            Some(chunks)
        };
        tx.commit()?;
        Ok(stored)
    }

    /// Compacts a box's document: `snapshot` gets every chunk stored (another
    /// replica's too) and returns the whole document, which replaces them, in one
    /// transaction that no other writer of the document interleaves.
    pub fn compact_chunks(
        &self,
        node: &str,
        doc: &str,
        snapshot: impl FnOnce(Vec<Vec<u8>>) -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<()> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        lock_doc(&tx, node, doc)?;
        let whole = snapshot(chunks_in(&tx, node, doc)?)?;
        tx.execute(
            "DELETE FROM doc_chunk WHERE node_id = ?1 AND doc = ?2",
            params![node, doc],
        )?;
        tx.execute(
            "INSERT INTO doc_chunk (node_id, doc, seq, data) VALUES (?1, ?2, 1, ?3)",
            params![node, doc, whole],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn sync_state(&self, node: &str, doc: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT state FROM doc_sync_state WHERE node_id = ?1 AND doc = ?2",
                params![node, doc],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn save_sync_state(&self, node: &str, doc: &str, state: &[u8]) -> Result<(), StoreError> {
        self.lock()?.execute(
            "INSERT INTO doc_sync_state (node_id, doc, state) VALUES (?1, ?2, ?3)
             ON CONFLICT (node_id, doc) DO UPDATE SET state = ?3",
            params![node, doc, state],
        )?;
        Ok(())
    }

    /// Records account changes (the newest row per login wins at the boxes).
    pub fn add_accounts(&self, accounts: &[Account]) -> Result<u64, StoreError> {
        self.add_accounts_for(accounts, &[])
    }

    /// Records account changes valid at the named canteens only (every canteen when
    /// `canteens` is empty): the other canteens' boxes receive them as inactive.
    pub fn add_accounts_for(
        &self,
        accounts: &[Account],
        canteens: &[String],
    ) -> Result<u64, StoreError> {
        let scope =
            serde_json::to_string(canteens).map_err(|e| StoreError::Restore(e.to_string()))?;
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        if tx.dialect() == Dialect::Postgres {
            // Cursors become visible in their order: boxes read accounts after a
            // cursor, and a lower one committing later would be skipped.
            tx.execute_batch("LOCK TABLE account IN EXCLUSIVE MODE")?;
        }
        for a in accounts {
            tx.execute(
                "INSERT INTO account (role, login, name, secret_hash, active, canteens)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![a.role, a.login, a.name, a.secret_hash, a.active, scope],
            )?;
        }
        let cursor = max_account_cursor(&tx)?;
        self.announce(&tx, &super::pg::Change::Accounts)?;
        tx.commit()?;
        Ok(cursor)
    }

    /// The newest record the cloud issued for `login` (a student's, or a staff
    /// member's of either staff role).
    pub fn latest_account(
        &self,
        login: &str,
        student: bool,
    ) -> Result<Option<Account>, StoreError> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT role, login, name, secret_hash, active FROM account
                 WHERE login = ?1 AND (role = 'student') = ?2 ORDER BY cursor DESC LIMIT 1",
                params![login, student],
                |r| {
                    Ok(Account {
                        role: r.get(0)?,
                        login: r.get(1)?,
                        name: r.get(2)?,
                        secret_hash: r.get(3)?,
                        active: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// The newest account change's cursor (0 when none).
    pub fn accounts_max_cursor(&self) -> Result<u64, StoreError> {
        max_account_cursor(&self.lock()?)
    }

    /// Account changes after `cursor` as `node`'s box is to see them, at most `max`,
    /// and the cursor they reach. An account scoped to other canteens reaches this box
    /// inactive, with a secret nobody knows instead of its own: a staff login of one
    /// canteen does not work at another (and one moved away stops working here).
    pub fn accounts_after(
        &self,
        node: &str,
        cursor: u64,
        max: usize,
    ) -> Result<(u64, Vec<Account>), StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT cursor, role, login, name, secret_hash, active, canteens = '[]' OR {}
                 FROM account WHERE cursor > ?1 ORDER BY cursor LIMIT ?2",
            match conn.dialect() {
                Dialect::Sqlite => "EXISTS (SELECT 1 FROM json_each(canteens) WHERE value = ?3)",
                Dialect::Postgres => "canteens::jsonb @> jsonb_build_array(?3::text)",
            }
        ))?;
        let mut last = cursor;
        let mut out = Vec::new();
        for row in stmt.query_map(params![cursor as i64, max as i64, node], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Account {
                    role: r.get(1)?,
                    login: r.get(2)?,
                    name: r.get(3)?,
                    secret_hash: r.get(4)?,
                    active: r.get(5)?,
                },
                r.get::<_, bool>(6)?,
            ))
        })? {
            let (c, mut a, here) = row?;
            if !here {
                a.active = false;
                a.secret_hash = locked_secret().to_owned();
            }
            last = c as u64;
            out.push(a);
        }
        Ok((last, out))
    }

    /// The canteens an account's newest record is scoped to (empty: every canteen).
    pub fn account_canteens(&self, login: &str, student: bool) -> Result<Vec<String>, StoreError> {
        let scope: Option<String> = self
            .lock()?
            .query_row(
                "SELECT canteens FROM account WHERE login = ?1 AND (role = 'student') = ?2
                 ORDER BY cursor DESC LIMIT 1",
                params![login, student],
                |r| r.get(0),
            )
            .optional()?;
        Ok(scope
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default())
    }

    /// Records a menu push and, per canteen, the cloud's heads of its menu right after.
    pub fn add_menu_push(&self, push: &MenuPush) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO menu_push (push_id, at_ms, username, item_id, change) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![push.push_id, push.at_ms, push.username, push.item_id, push.change],
        )?;
        for (node, heads) in &push.targets {
            tx.execute(
                "INSERT INTO menu_push_target (node_id, push_id, heads) VALUES (?1, ?2, ?3)",
                params![
                    node,
                    push.push_id,
                    serde_json::to_string(heads).map_err(|e| StoreError::Restore(e.to_string()))?
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The newest menu pushes, at most `max`, with their targets.
    pub fn menu_pushes(&self, max: usize) -> Result<Vec<MenuPush>, StoreError> {
        let conn = self.lock()?;
        let mut pushes: Vec<MenuPush> = conn
            .prepare(
                "SELECT push_id, at_ms, username, item_id, change FROM menu_push
                 ORDER BY at_ms DESC, push_id DESC LIMIT ?1",
            )?
            .query_map([max as i64], |r| {
                Ok(MenuPush {
                    push_id: r.get(0)?,
                    at_ms: r.get(1)?,
                    username: r.get(2)?,
                    item_id: r.get(3)?,
                    change: r.get(4)?,
                    targets: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = conn.prepare_cached(
            "SELECT node_id, heads FROM menu_push_target WHERE push_id = ?1 ORDER BY node_id",
        )?;
        for p in &mut pushes {
            p.targets = stmt
                .query_map([&p.push_id], |r| {
                    let heads: String = r.get(1)?;
                    Ok((r.get(0)?, serde_json::from_str(&heads).unwrap_or_default()))
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(pushes)
    }
}

/// Order states whose money was taken and kept (the day's tickets).
pub const SOLD: &[&str] = &["paid", "preparing", "ready", "picked_up", "unclaimed"];

fn sold(state: &str) -> bool {
    SOLD.contains(&state)
}

/// The hour an event was stamped in (Unix time / 3600).
fn unix_hour(at: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|t| t.timestamp().div_euclid(3600))
}

/// What one ingested batch adds to the counting rollups, summed per key and written
/// once per key at the end of the batch (a catch-up of 2,000 orders of one day touches
/// a handful of rows, not 4,000); and the canteen's closed days, read once per batch.
#[derive(Default)]
struct Batch {
    /// (business day, state) → orders.
    states: HashMap<(String, String), i64>,
    /// (business day, UTC hour) → orders placed.
    hours: HashMap<(String, i64), i64>,
    /// business day → (paid, refunded) fen.
    money: HashMap<String, (i64, i64)>,
    /// business day → the event it was complete up to, for the days closed.
    closed: HashMap<String, i64>,
    /// The batch's orders as the projection holds them (`None`: not placed yet), read
    /// once per batch and kept up to date as its events are projected, so the
    /// projection's writes need not wait for reads (PostgreSQL sends them at once).
    orders: HashMap<String, Option<OrderRow>>,
    /// Orders first placed in this batch, with their totals: stored once, at the end of
    /// the batch, in the state its events left them in.
    new_orders: HashMap<String, i64>,
}

impl Batch {
    /// Reads what the projection reads: the batch's orders and the closed days. Read
    /// before the batch's events are sent ahead, since a read in a PostgreSQL
    /// transaction waits for what was sent ahead: one in the projection would stand
    /// still until PostgreSQL had stored the events.
    fn load(&mut self, tx: &impl AsDb, node: &str, events: &[WireEvent]) -> DbResult<()> {
        self.closed = tx
            .prepare("SELECT service_day, through_seq FROM day_close WHERE node_id = ?1")?
            .query_map([node], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        self.load_orders(tx, node, events)
    }

    /// Reads the rows of the batch's orders in one query. The order ids are taken from
    /// the events' aggregate ids (the box names each order event by its order) without
    /// parsing the payloads, which `project` does once; an id the payloads name that is
    /// not among them is read when it comes up (`Batch::order`).
    fn load_orders(&mut self, tx: &impl AsDb, node: &str, events: &[WireEvent]) -> DbResult<()> {
        let mut ids = Vec::new();
        for e in events {
            if e.kind.starts_with("order.")
                && !e.aggregate_id.is_empty()
                && !self.orders.contains_key(&e.aggregate_id)
            {
                self.orders.insert(e.aggregate_id.clone(), None);
                ids.push(e.aggregate_id.clone());
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        // Only the cloud's ingest of this box, under its cursor lock, stores the box's
        // orders, so an id above the greatest one stored is not stored. The box's order
        // ids are UUIDv7, so a backlog's new orders are all above it, and only the
        // older orders its later events name are looked up. Ids compare as bytes here
        // and in both stores (SQLite's BINARY, PostgreSQL's "C" collation); an id that
        // is not a UUIDv7, or a box whose clock went back, only means a lookup.
        let greatest: Option<String> = tx
            .prepare("SELECT MAX(order_id) FROM cloud_order WHERE node_id = ?1")?
            .query_row([node], |r| r.get(0))?;
        ids.retain(|id| greatest.as_deref().is_some_and(|max| id.as_str() <= max));
        if ids.is_empty() {
            return Ok(());
        }
        let listed = match tx.dialect() {
            Dialect::Sqlite => "IN (SELECT value FROM json_each(?2))",
            Dialect::Postgres => "= ANY(?2::text[])",
        };
        let rows = tx
            .prepare(&format!(
                "SELECT order_id, service_day, state, placed_hour, placed_timeline, placed_seq
                 FROM cloud_order WHERE node_id = ?1 AND order_id {listed}"
            ))?
            .query_map(
                vec![Cell::Text(node.to_owned()), Cell::TextArray(ids)],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        (r.get(1)?, r.get(2)?, r.get(3)?, (r.get(4)?, r.get(5)?)),
                    ))
                },
            )?
            .collect::<Result<Vec<(String, OrderRow)>, _>>()?;
        for (id, row) in rows {
            self.orders.insert(id, Some(row));
        }
        Ok(())
    }

    /// Stores the orders first placed in this batch (SQLite: one statement each;
    /// PostgreSQL: one `COPY` for all).
    fn insert_new_orders(&mut self, tx: &impl AsDb, node: &str) -> DbResult<()> {
        let new = std::mem::take(&mut self.new_orders);
        let rows: Vec<(String, i64, OrderRow)> = new
            .into_iter()
            .filter_map(|(id, total)| {
                let row = self.orders.get(&id).cloned().flatten()?;
                Some((id, total, row))
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        match tx.dialect() {
            Dialect::Sqlite => {
                for (id, total, (day, state, hour, (timeline, seq))) in &rows {
                    tx.defer(
                        "INSERT INTO cloud_order
                             (node_id, order_id, service_day, state, total_fen, placed_seq,
                              placed_timeline, placed_hour)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                         ON CONFLICT (node_id, order_id) DO NOTHING",
                        params![node, id, day, state, total, seq, timeline, hour],
                    )?;
                }
            }
            Dialect::Postgres => {
                let n = rows.len();
                let (mut ids, mut days, mut states) = (
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                );
                let (mut totals, mut seqs, mut timelines, mut hours) = (
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                );
                for (id, total, (day, state, hour, (timeline, seq))) in rows {
                    ids.push(id);
                    days.push(day);
                    states.push(state);
                    totals.push(total);
                    seqs.push(seq);
                    timelines.push(timeline);
                    hours.push(hour);
                }
                // Looked up in this transaction, under the box's cursor row lock, and
                // not found: no other transaction can store them first.
                tx.defer_copy(CopyRows::new(
                    "cloud_order",
                    "node_id, order_id, service_day, state, total_fen, placed_seq, \
                     placed_timeline, placed_hour",
                    vec![
                        Cell::Text(node.to_owned()),
                        Cell::TextArray(ids),
                        Cell::TextArray(days),
                        Cell::TextArray(states),
                        Cell::IntArray(totals),
                        Cell::IntArray(seqs),
                        Cell::IntArray(timelines),
                        Cell::IntArray(hours),
                    ],
                ))?;
            }
        }
        Ok(())
    }

    /// An order as the projection holds it now.
    fn order(&mut self, tx: &impl AsDb, node: &str, id: &str) -> DbResult<Option<OrderRow>> {
        if let Some(row) = self.orders.get(id) {
            return Ok(row.clone());
        }
        let row = order_row(tx, node, id)?;
        self.orders.insert(id.to_owned(), row.clone());
        Ok(row)
    }

    fn state(&mut self, day: &str, state: &str, by: i64) {
        *self
            .states
            .entry((day.to_owned(), state.to_owned()))
            .or_default() += by;
    }

    fn hour(&mut self, day: &str, hour: i64, by: i64) {
        *self.hours.entry((day.to_owned(), hour)).or_default() += by;
    }

    fn money(&mut self, day: &str, paid: i64, refunded: i64) {
        let m = self.money.entry(day.to_owned()).or_default();
        m.0 += paid;
        m.1 += refunded;
    }

    /// The event a closed day was complete up to, if the day is closed.
    fn closed_through(&self, day: &str) -> Option<i64> {
        self.closed.get(day).copied()
    }

    /// Writes the sums into the rollups.
    fn flush(self, tx: &impl AsDb, node: &str) -> DbResult<()> {
        let state_sql = "INSERT INTO rollup_state (node_id, service_day, state, orders) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (node_id, service_day, state) DO UPDATE SET orders = rollup_state.orders + ?4";
        for ((day, s), n) in self.states.into_iter().filter(|(_, n)| *n != 0) {
            tx.defer(state_sql, params![node, day, s, n])?;
        }
        let hour_sql = "INSERT INTO rollup_hour (node_id, service_day, hour, orders) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (node_id, service_day, hour) DO UPDATE SET orders = rollup_hour.orders + ?4";
        for ((day, h), n) in self.hours.into_iter().filter(|(_, n)| *n != 0) {
            tx.defer(hour_sql, params![node, day, h, n])?;
        }
        let money_sql = "INSERT INTO rollup_money (node_id, service_day, paid_fen, refunded_fen)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (node_id, service_day) DO UPDATE SET
                 paid_fen = rollup_money.paid_fen + ?3,
                 refunded_fen = rollup_money.refunded_fen + ?4";
        for (day, (paid, refunded)) in self.money {
            tx.defer(money_sql, params![node, day, paid, refunded])?;
        }
        Ok(())
    }
}

/// Adds (`sign` 1) or takes back (-1) the dishes of an order's `order.placed` event.
fn bump_items(
    tx: &impl AsDb,
    node: &str,
    day: &str,
    placed: (i64, i64),
    sign: i64,
) -> DbResult<()> {
    // PostgreSQL takes each key once per statement: an order's lines of one dish are
    // summed first (SQLite's upsert takes the rows one by one).
    let lines = match tx.dialect() {
        Dialect::Sqlite => {
            "SELECT ?1, ?2, l.value ->> 'item_id', ?5 * (l.value ->> 'quantity'),
                    ?5 * (l.value ->> 'line_total_fen')
             FROM event e, json_each(e.payload, '$.lines') l
             WHERE e.node_id = ?1 AND e.timeline = ?3 AND e.seq = ?4 AND true"
        }
        Dialect::Postgres => {
            "SELECT ?1::text, ?2::text, l ->> 'item_id',
                    ?5::bigint * CAST(SUM((l ->> 'quantity')::bigint) AS BIGINT),
                    ?5::bigint * CAST(SUM((l ->> 'line_total_fen')::bigint) AS BIGINT)
             FROM event e, jsonb_array_elements(e.payload::jsonb -> 'lines') l
             WHERE e.node_id = ?1 AND e.timeline = ?3 AND e.seq = ?4
             GROUP BY l ->> 'item_id'"
        }
    };
    tx.defer(
        &format!(
            "INSERT INTO rollup_item (node_id, service_day, item_id, quantity, revenue_fen)
             {lines}
             ON CONFLICT (node_id, service_day, item_id) DO UPDATE SET
                 quantity = rollup_item.quantity + excluded.quantity,
                 revenue_fen = rollup_item.revenue_fen + excluded.revenue_fen"
        ),
        params![node, day, placed.0, placed.1, sign],
    )?;
    Ok(())
}

/// Stores a batch's events: one statement per event on SQLite (in-process), one for the
/// whole batch on PostgreSQL (its columns as arrays, sent in binary: nothing for the
/// server to parse).
///
/// On PostgreSQL the rows go by `COPY` (2–3 times cheaper for the server than an
/// `INSERT … ON CONFLICT`, which checks and confirms each row on its own) when none of
/// them can be there: only batches store events, each under the box's cursor row lock
/// and only after the cursor, so the timeline holds nothing after `cursor`, which one
/// index probe confirms. Should it ever hold something (a database edited by hand),
/// the batch takes the `INSERT … ON CONFLICT DO NOTHING`, as on SQLite.
fn insert_events(
    tx: &impl AsDb,
    node: &str,
    timeline: i64,
    cursor: i64,
    rows: &[(&WireEvent, bool)],
) -> DbResult<()> {
    match tx.dialect() {
        Dialect::Sqlite => {
            for (e, counted) in rows {
                tx.defer(
                    "INSERT INTO event
                         (node_id, timeline, seq, kind, aggregate_id, payload, at, counted)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (node_id, timeline, seq) DO NOTHING",
                    params![
                        node,
                        timeline,
                        e.seq as i64,
                        e.kind,
                        e.aggregate_id,
                        e.payload,
                        e.at,
                        counted
                    ],
                )?;
            }
        }
        Dialect::Postgres => {
            if rows.is_empty() {
                return Ok(());
            }
            let n = rows.len();
            let (mut seqs, mut counts) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let (mut kinds, mut aggregates, mut payloads, mut ats) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for (e, counted) in rows {
                seqs.push(e.seq as i64);
                kinds.push(e.kind.clone());
                aggregates.push(e.aggregate_id.clone());
                payloads.push(e.payload.clone());
                ats.push(e.at.clone());
                counts.push(i64::from(*counted));
            }
            let columns = vec![
                Cell::Text(node.to_owned()),
                Cell::Int(timeline),
                Cell::IntArray(seqs),
                Cell::TextArray(kinds),
                Cell::TextArray(aggregates),
                Cell::TextArray(payloads),
                Cell::TextArray(ats),
                Cell::IntArray(counts),
            ];
            if max_seq(tx, node, timeline)? <= cursor {
                return tx.defer_copy(CopyRows::new(
                    "event",
                    "node_id, timeline, seq, kind, aggregate_id, payload, at, counted",
                    columns,
                ));
            }
            tx.defer(
                "INSERT INTO event (node_id, timeline, seq, kind, aggregate_id, payload, at, counted)
                 SELECT ?1::text, ?2::bigint, x.seq, x.kind, x.aggregate_id, x.payload, x.at,
                        x.counted
                 FROM unnest(?3::bigint[], ?4::text[], ?5::text[], ?6::text[], ?7::text[],
                             ?8::bigint[]) AS x(seq, kind, aggregate_id, payload, at, counted)
                 ON CONFLICT (node_id, timeline, seq) DO NOTHING",
                columns,
            )?;
        }
    }
    Ok(())
}

/// An order as the projection holds it: (business day, state, placed hour, placed
/// event's timeline and seq).
type OrderRow = (String, String, i64, (i64, i64));

fn order_row(tx: &impl AsDb, node: &str, order_id: &str) -> DbResult<Option<OrderRow>> {
    tx.prepare(
        "SELECT service_day, state, placed_hour, placed_timeline, placed_seq FROM cloud_order
         WHERE node_id = ?1 AND order_id = ?2",
    )?
    .query_row(params![node, order_id], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, (r.get(3)?, r.get(4)?)))
    })
    .optional()
}

/// A late event: of a business day already reconciled, after the event it was
/// complete up to. Recorded for the reconciliation page.
fn note_if_late(
    tx: &impl AsDb,
    batch: &mut Batch,
    node: &str,
    timeline: i64,
    e: &WireEvent,
    day: &str,
) -> DbResult<()> {
    if batch
        .closed_through(day)
        .is_none_or(|through| e.seq as i64 <= through)
    {
        return Ok(());
    }
    tx.defer(
        "INSERT OR IGNORE INTO late_event (node_id, service_day, timeline, seq, kind, received_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            node,
            day,
            timeline,
            e.seq as i64,
            e.kind,
            super::auth::now_ms()
        ],
    )?;
    Ok(())
}

/// The sold-out board from a stock event: the staff's sold-out marks and stock actions,
/// and the box's own word that orders took a dish's last portion (or gave portions
/// back).
fn project_stock(
    tx: &impl AsDb,
    batch: &mut Batch,
    node: &str,
    timeline: i64,
    e: &WireEvent,
) -> Result<(), StoreError> {
    let availability = match EventPayload::parse(&e.kind, &e.payload) {
        Ok(EventPayload::StockChanged(st)) => {
            Some((st.service_day, st.item_id, st.sold_out || st.remaining <= 0))
        }
        Ok(EventPayload::StockAvailability(a)) => Some((a.service_day, a.item_id, a.sold_out)),
        _ => None,
    };
    if let Some((day, item, out)) = availability {
        let (day, item) = (day.to_string(), item.to_string());
        if out {
            tx.defer(
                "INSERT INTO sold_out (node_id, service_day, item_id, since)
                 SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM sold_out
                     WHERE node_id = ?1 AND service_day = ?2 AND item_id = ?3
                       AND back_at IS NULL)",
                params![node, day, item, e.at],
            )?;
        } else {
            tx.defer(
                "UPDATE sold_out SET back_at = ?4
                 WHERE node_id = ?1 AND service_day = ?2 AND item_id = ?3 AND back_at IS NULL",
                params![node, day, item, e.at],
            )?;
        }
        note_if_late(tx, batch, node, timeline, e, &day)?;
    }
    Ok(())
}

/// Projects one event into the aggregate tables and the rollups. Events are the box's
/// own records, read as the typed, versioned payloads of `canteen_api::events`:
/// `order.placed` through [`OrderPlacedHead`] (only the fields used, borrowed: it
/// carries the whole order and runs for every order of a catch-up), `order.<state>` as
/// a whole [`OrderMoved`], stock changes for the sold-out board. A payload newer than
/// this cloud knows, or malformed, is refused (`BadEvent`) rather than guessed at.
fn project(
    tx: &impl AsDb,
    batch: &mut Batch,
    node: &str,
    timeline: i64,
    e: &WireEvent,
) -> Result<(), StoreError> {
    let bad = |reason: String| StoreError::BadEvent {
        node: node.to_owned(),
        seq: e.seq,
        reason,
    };
    if e.kind.starts_with("stock.") {
        return project_stock(tx, batch, node, timeline, e);
    }
    if !e.kind.starts_with("order.") {
        return Ok(());
    }
    if e.kind == "order.placed" {
        let p = OrderPlacedHead::parse(&e.payload).map_err(|err| bad(err.to_string()))?;
        let hour = unix_hour(&e.at).ok_or_else(|| bad(format!("time {:?}", e.at)))?;
        let row = params![
            node,
            p.id,
            p.service_day,
            p.total_fen,
            e.seq as i64,
            timeline,
            hour
        ];
        match batch.order(tx, node, &p.id)? {
            None => {
                batch.new_orders.insert(p.id.to_string(), p.total_fen);
            }
            Some((day, state, old_hour, placed)) => {
                // The same order placed again (another timeline's copy): its old
                // counts go, and the row starts over.
                batch.state(&day, &state, -1);
                batch.hour(&day, old_hour, -1);
                if sold(&state) {
                    bump_items(tx, node, &day, placed, -1)?;
                }
                tx.defer(
                    "UPDATE cloud_order SET service_day = ?3, state = 'placed', total_fen = ?4,
                         placed_seq = ?5, placed_timeline = ?6, placed_hour = ?7
                     WHERE node_id = ?1 AND order_id = ?2",
                    row,
                )?;
            }
        }
        batch.orders.insert(
            p.id.to_string(),
            Some((
                p.service_day.to_string(),
                "placed".to_owned(),
                hour,
                (timeline, e.seq as i64),
            )),
        );
        batch.state(&p.service_day, "placed", 1);
        batch.hour(&p.service_day, hour, 1);
        note_if_late(tx, batch, node, timeline, e, &p.service_day)?;
        return Ok(());
    }
    let m: OrderMoved = match EventPayload::parse(&e.kind, &e.payload) {
        Ok(EventPayload::OrderMoved(m)) => m,
        Ok(other) => return Err(bad(format!("{} is not an order transition", other.kind()))),
        Err(err) => return Err(bad(err.to_string())),
    };
    let order_id = m.order_id.to_string();
    let to = m.to.as_str();
    if let Some((day, from, hour, placed)) = batch.order(tx, node, &order_id)? {
        batch.orders.insert(
            order_id.clone(),
            Some((day.clone(), to.to_owned(), hour, placed)),
        );
        // An order placed in this batch is written at its end, in its last state.
        if !batch.new_orders.contains_key(&order_id) {
            tx.defer(
                "UPDATE cloud_order SET state = ?3 WHERE node_id = ?1 AND order_id = ?2",
                params![node, order_id, to],
            )?;
        }
        batch.state(&day, &from, -1);
        batch.state(&day, to, 1);
        match (sold(&from), sold(to)) {
            (false, true) => bump_items(tx, node, &day, placed, 1)?,
            (true, false) => bump_items(tx, node, &day, placed, -1)?,
            _ => {}
        }
    }
    let money_day = m.service_day.to_string();
    if let Some(money) = m.payment {
        tx.defer(
            "INSERT INTO cloud_payment (node_id, timeline, seq, order_id, service_day, kind, amount_fen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            node,
            timeline,
            e.seq as i64,
            order_id,
            money_day,
            money.kind.as_str(),
            money.amount_fen
        ])?;
        match money.kind.as_str() {
            "refund" => batch.money(&money_day, 0, money.amount_fen),
            _ => batch.money(&money_day, money.amount_fen, 0),
        }
    }
    note_if_late(tx, batch, node, timeline, e, &money_day)?;
    Ok(())
}

/// The store a unit test runs on: SQLite in `dir`, or, with
/// `CLOUD_TEST_STORE=postgres`, a fresh database on a throwaway PostgreSQL server (the
/// test command runs the suite both ways).
#[cfg(test)]
pub(crate) fn test_store(dir: &Path) -> CloudStore {
    match std::env::var("CLOUD_TEST_STORE").as_deref() {
        Ok("postgres") => {
            let url = crate::pgtest::shared()
                .fresh_database()
                .expect("a fresh PostgreSQL database");
            CloudStore::open_postgres(&url).expect("the store on PostgreSQL")
        }
        Ok("sqlite") | Err(_) => CloudStore::open(&dir.join("cloud.db")).expect("the store"),
        Ok(other) => panic!("CLOUD_TEST_STORE={other}: sqlite or postgres"),
    }
}

/// The rollups kept at ingest against a model of the same orders.
#[cfg(test)]
mod rollup_tests {
    use super::*;
    use canteen_api::{ItemId, OrderId, PaymentId, StudentId};
    use proptest::prelude::*;

    /// How an order's day goes.
    #[derive(Debug, Clone, Copy)]
    enum Path {
        Expired,
        Refunded,
        PickedUp,
        Unclaimed,
        Unpaid,
    }

    const DAYS: [&str; 2] = ["2026-11-23", "2026-11-24"];

    /// What one business day should hold.
    #[derive(Debug, Clone, Default)]
    struct DayModel {
        orders: i64,
        by_state: std::collections::BTreeMap<&'static str, i64>,
        paid: i64,
        refunded: i64,
        hours: std::collections::BTreeMap<i64, i64>,
        dishes: std::collections::BTreeMap<String, (i64, i64)>,
    }

    #[allow(clippy::too_many_arguments)]
    fn moved(
        seq: u64,
        day: &str,
        order: OrderId,
        from: &str,
        to: &str,
        event: &str,
        money: Option<(&str, i64)>,
        at: &str,
    ) -> WireEvent {
        let payment = match money {
            None => "null".to_owned(),
            Some(("payment", fen)) => format!(
                r#"{{"kind":"payment","payment_id":"{}","method":"counter","amount_fen":{fen}}}"#,
                PaymentId::new()
            ),
            Some((_, fen)) => format!(
                r#"{{"kind":"refund","refund_id":"{}","method":"counter","amount_fen":{fen}}}"#,
                PaymentId::new()
            ),
        };
        WireEvent {
            seq,
            kind: format!("order.{to}"),
            aggregate_id: order.to_string(),
            payload: format!(
                r#"{{"v":2,"order_id":"{order}","student_id":"{}","service_day":"{day}","from":"{from}","to":"{to}","event":"{event}","version":2,"actor":"system","payment":{payment}}}"#,
                StudentId::new()
            ),
            at: at.into(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

        /// Whatever the orders and however the events are batched, the rollups give
        /// the totals, hours and dishes a model of the same orders gives.
        #[test]
        fn rollups_equal_a_model_of_the_orders(
            orders in prop::collection::vec(
                (0usize..2, 0u32..24, prop::collection::vec((0usize..3, 1i64..4), 1..3),
                 prop::sample::select(vec![Path::Expired, Path::Refunded, Path::PickedUp, Path::Unclaimed, Path::Unpaid])),
                1..40),
            batch in 1usize..30,
            clock_back in any::<bool>(),
        ) {
            let items = [ItemId::new(), ItemId::new(), ItemId::new()];
            // The box's order ids are UUIDv7, in the order it placed them; or, for a box
            // whose clock went back, in the reverse order.
            let mut ids: Vec<OrderId> = orders.iter().map(|_| OrderId::new()).collect();
            if clock_back {
                ids.reverse();
            }
            let mut per_order: Vec<Vec<WireEvent>> = Vec::new();
            // The model: per day (orders, by state, paid, refunded, hours, dishes).
            let mut model: std::collections::BTreeMap<&str, DayModel> = Default::default();
            for ((day_i, hour, lines, path), &order) in orders.iter().zip(&ids) {
                let day = DAYS[*day_i];
                let at = format!("{day}T{hour:02}:15:00Z");
                let unix_hour = unix_hour(&at).unwrap();
                let lines_json: Vec<String> = lines.iter().map(|(i, q)| format!(r#"{{"item_id":"{}","quantity":{q},"line_total_fen":{}}}"#, items[*i], q * 700)).collect();
                let total: i64 = lines.iter().map(|(_, q)| q * 700).sum();
                let mut evs = vec![WireEvent {
                    seq: 0,
                    kind: "order.placed".into(),
                    aggregate_id: order.to_string(),
                    payload: format!(r#"{{"v":2,"id":"{order}","student_id":"{}","service_day":"{day}","total_fen":{total},"lines":[{}]}}"#, StudentId::new(), lines_json.join(",")),
                    at: at.clone(),
                }];
                let m = model.entry(day).or_default();
                m.orders += 1;
                *m.hours.entry(unix_hour).or_default() += 1;
                let paid = || Some(("payment", total));
                let end = match path {
                    Path::Unpaid => "placed",
                    Path::Expired => {
                        evs.push(moved(0, day, order, "placed", "expired", "expire", None, &at));
                        "expired"
                    }
                    _ => {
                        evs.push(moved(0, day, order, "placed", "paid", "pay", paid(), &at));
                        m.paid += total;
                        match path {
                            Path::Refunded => {
                                evs.push(moved(0, day, order, "paid", "cancelled", "cancel", Some(("refund", total)), &at));
                                m.refunded += total;
                                "cancelled"
                            }
                            Path::PickedUp => {
                                evs.push(moved(0, day, order, "paid", "preparing", "start_preparing", None, &at));
                                evs.push(moved(0, day, order, "preparing", "ready", "mark_ready", None, &at));
                                evs.push(moved(0, day, order, "ready", "picked_up", "pick_up", None, &at));
                                "picked_up"
                            }
                            _ => {
                                evs.push(moved(0, day, order, "paid", "ready", "mark_ready", None, &at));
                                evs.push(moved(0, day, order, "ready", "unclaimed", "mark_unclaimed", None, &at));
                                "unclaimed"
                            }
                        }
                    }
                };
                *m.by_state.entry(end).or_default() += 1;
                if SOLD.contains(&end) {
                    for (i, q) in lines {
                        let d = m.dishes.entry(items[*i].to_string()).or_default();
                        d.0 += q;
                        d.1 += q * 700;
                    }
                }
                per_order.push(evs);
            }
            // Interleave the orders' events round by round (each order's own stay in
            // order), as a busy box writes them.
            let mut stream = Vec::new();
            let rounds = per_order.iter().map(Vec::len).max().unwrap_or(0);
            for round in 0..rounds {
                for evs in &per_order {
                    if let Some(e) = evs.get(round) {
                        let mut e = e.clone();
                        e.seq = stream.len() as u64 + 1;
                        stream.push(e);
                    }
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let store = test_store(dir.path());
            for chunk in stream.chunks(batch) {
                store.ingest("box", chunk).unwrap();
            }
            for day in DAYS {
                let want = model.get(day).cloned().unwrap_or_default();
                let got = store.summary(Some(day).map(|_| "box").unwrap(), Some(day)).unwrap();
                prop_assert_eq!(got.orders, want.orders, "orders of {}", day);
                let by_state: std::collections::BTreeMap<String, i64> = want.by_state.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
                prop_assert_eq!(&got.by_state, &by_state);
                prop_assert_eq!(got.revenue_fen, want.paid - want.refunded);
                prop_assert_eq!(got.refunds_fen, want.refunded);
                let hours: std::collections::BTreeMap<i64, i64> = store.placed_hours("box", (day, day)).unwrap().into_iter().filter(|(_, n)| *n != 0).collect();
                prop_assert_eq!(hours, want.hours.clone());
                let dishes: std::collections::BTreeMap<String, (i64, i64)> = got.items.iter().map(|t| (t.item_id.clone(), (t.quantity, t.revenue_fen))).collect();
                prop_assert_eq!(dishes, want.dishes.clone());
                let cloud = cloud_day(&store.lock().unwrap(), "box", day).unwrap();
                prop_assert_eq!(cloud.orders, want.orders);
                prop_assert_eq!(cloud.cancelled, *want.by_state.get("cancelled").unwrap_or(&0));
            }
            // Both days together: the range sums them.
            let both = store.summary_range("box", (DAYS[0], DAYS[1])).unwrap();
            prop_assert_eq!(both.orders, orders.len() as i64);
            prop_assert_eq!(both.events, stream.len() as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canteen_api::{ItemId, OrderId, PaymentId, StaffId, StudentId};

    fn event(seq: u64, kind: &str, payload: String) -> WireEvent {
        WireEvent {
            seq,
            kind: kind.into(),
            aggregate_id: String::new(),
            payload,
            at: "2026-11-23T04:00:00Z".into(),
        }
    }

    fn placed(seq: u64, v: &str, order: OrderId, total: i64) -> WireEvent {
        let payload = format!(
            r#"{{{v}"id":"{order}","student_id":"{s}","service_day":"2026-11-23","total_fen":{total},"lines":[]}}"#,
            s = StudentId::new()
        );
        event(seq, "order.placed", payload)
    }

    /// `order.<to>` with `money` as the payment (or `null`); `v` is `""` (version 1,
    /// written before payloads were versioned) or e.g. `"v":2,`.
    fn moved(seq: u64, v: &str, order: OrderId, from: &str, to: &str, money: &str) -> WireEvent {
        let event_name = if to == "paid" { "pay" } else { "cancel" };
        let payload = format!(
            r#"{{{v}"order_id":"{order}","student_id":"{s}","service_day":"2026-11-23","from":"{from}","to":"{to}",
            "event":"{event_name}","version":2,"actor":"system","payment":{money}}}"#,
            s = StudentId::new()
        );
        event(seq, &format!("order.{to}"), payload)
    }

    fn payments(store: &CloudStore) -> Vec<(i64, String, String, i64)> {
        let conn = store.lock().unwrap();
        let mut stmt = conn
            .prepare("SELECT seq, order_id, kind, amount_fen FROM cloud_payment ORDER BY seq")
            .unwrap();
        stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn count(store: &CloudStore, table: &str) -> i64 {
        store
            .lock()
            .unwrap()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), (), |r| r.get(0))
            .unwrap()
    }

    /// An event of an order with its lines (about 1.1 KB) takes about its own size in
    /// the database: as a `WITHOUT ROWID` table each took an overflow page of its own
    /// (4.7 KB an event, written twice: WAL and file).
    #[test]
    fn an_event_takes_about_its_own_size_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = CloudStore::open(&dir.path().join("cloud.db")).unwrap();
        let bytes = |store: &CloudStore| -> i64 {
            let conn = store.lock().unwrap();
            let pages: i64 = conn
                .query_row("PRAGMA page_count", (), |r| r.get(0))
                .unwrap();
            let size: i64 = conn
                .query_row("PRAGMA page_size", (), |r| r.get(0))
                .unwrap();
            pages * size
        };
        let before = bytes(&store);
        let n = 2_000u64;
        let events: Vec<WireEvent> = (1..=n)
            .map(|seq| {
                let lines: Vec<String> = (0..5)
                    .map(|_| {
                        format!(
                            r#"{{"item_id":"{}","name_zh":"红烧牛肉面（大碗）","name_en":"Braised beef noodles (large)","quantity":1,"unit_price_fen":1800,"line_total_fen":1800,"options":[]}}"#,
                            ItemId::new()
                        )
                    })
                    .collect();
                let payload = format!(
                    r#"{{"v":2,"id":"{}","student_id":"{}","service_day":"2026-11-23","total_fen":9000,"lines":[{}]}}"#,
                    OrderId::new(),
                    StudentId::new(),
                    lines.join(",")
                );
                event(seq, "order.placed", payload)
            })
            .collect();
        assert!(
            events[0].payload.len() > 1_000,
            "{}",
            events[0].payload.len()
        );
        for batch in events.chunks(500) {
            store.ingest("box-1", batch).unwrap();
        }
        assert_eq!(count(&store, "event"), n as i64);
        let per_event = (bytes(&store) - before) / n as i64;
        assert!(
            per_event < 2_000,
            "{per_event} bytes an event for a {}-byte payload",
            events[0].payload.len()
        );
    }

    #[test]
    fn refunds_of_both_payload_versions_are_projected_and_newer_versions_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path());
        let (old, new) = (OrderId::new(), OrderId::new());
        let stock = format!(
            r#"{{"item_id":"{}","service_day":"2026-11-23","staff_id":"{}","remaining":0,"sold_out":true}}"#,
            ItemId::new(),
            StaffId::new()
        );
        let batch = vec![
            // Version 1: no `v`; a refund is told by its `refund_id` alone.
            placed(1, "", old, 900),
            moved(
                2,
                "",
                old,
                "placed",
                "paid",
                &format!(
                    r#"{{"payment_id":"{}","method":"counter","amount_fen":900}}"#,
                    PaymentId::new()
                ),
            ),
            moved(
                3,
                "",
                old,
                "paid",
                "cancelled",
                &format!(
                    r#"{{"refund_id":"{}","method":"counter","amount_fen":900}}"#,
                    PaymentId::new()
                ),
            ),
            // Stock events are stored, not projected.
            event(4, "stock.sold_out", stock),
            // Version 2: `v` and an explicit `kind` on money moves.
            placed(5, r#""v":2,"#, new, 1200),
            moved(
                6,
                r#""v":2,"#,
                new,
                "placed",
                "paid",
                &format!(
                    r#"{{"kind":"payment","payment_id":"{}","method":"campus_card","amount_fen":1200}}"#,
                    PaymentId::new()
                ),
            ),
            moved(
                7,
                r#""v":2,"#,
                new,
                "paid",
                "cancelled",
                &format!(
                    r#"{{"kind":"refund","refund_id":"{}","method":"campus_card","amount_fen":1200}}"#,
                    PaymentId::new()
                ),
            ),
        ];
        assert_eq!(store.ingest("box-1", &batch).unwrap(), 7);
        let (old, new) = (old.to_string(), new.to_string());
        assert_eq!(
            payments(&store),
            vec![
                (2, old.clone(), "payment".to_owned(), 900),
                (3, old, "refund".to_owned(), 900),
                (6, new.clone(), "payment".to_owned(), 1200),
                (7, new, "refund".to_owned(), 1200),
            ]
        );
        let summary = store.summary("box-1", Some("2026-11-23")).unwrap();
        assert_eq!(summary.refunds_fen, 2100);
        assert_eq!(summary.revenue_fen, 0);
        assert_eq!(summary.by_state.get("cancelled"), Some(&2));
        assert_eq!(summary.events, 7);

        // A payload newer than this cloud knows is refused, with the whole batch: a
        // transition, and a placement (read by its head only).
        let third = OrderId::new();
        let newer_move = vec![
            placed(8, r#""v":2,"#, third, 500),
            moved(
                9,
                r#""v":99,"#,
                third,
                "placed",
                "paid",
                &format!(
                    r#"{{"kind":"payment","payment_id":"{}","method":"counter","amount_fen":500}}"#,
                    PaymentId::new()
                ),
            ),
        ];
        let newer_placement = vec![placed(8, r#""v":99,"#, third, 500)];
        for (batch, bad_seq) in [(newer_move, 9), (newer_placement, 8)] {
            match store.ingest("box-1", &batch) {
                Err(StoreError::BadEvent { seq, reason, .. }) => {
                    assert_eq!(seq, bad_seq);
                    assert!(reason.contains("99"), "{reason}");
                }
                other => panic!("a version 99 payload was not refused: {other:?}"),
            }
            assert_eq!(store.acked("box-1").unwrap(), 7);
            assert_eq!(count(&store, "event"), 7);
            assert_eq!(count(&store, "cloud_order"), 2);
            assert_eq!(payments(&store).len(), 4);
        }

        // Malformed money (both ids) and unknown order kinds are refused too.
        let both = format!(
            r#"{{"payment_id":"{p}","refund_id":"{p}","method":"counter","amount_fen":1}}"#,
            p = PaymentId::new()
        );
        let malformed = vec![moved(8, "", third, "placed", "paid", &both)];
        assert!(matches!(
            store.ingest("box-1", &malformed),
            Err(StoreError::BadEvent { seq: 8, .. })
        ));
        let mut unknown = moved(8, "", third, "placed", "paid", "null");
        unknown.kind = "order.teleported".into();
        assert!(matches!(
            store.ingest("box-1", &[unknown]),
            Err(StoreError::BadEvent { seq: 8, .. })
        ));
        assert_eq!(count(&store, "event"), 7);
    }
}

#[cfg(test)]
mod revocation_tests {
    use super::*;

    #[test]
    fn a_revocation_covers_certificates_issued_before_it_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path());
        assert!(!store.is_revoked("canteen-a", 1_000).unwrap());
        store.revoke("canteen-a", 2_000).unwrap();
        assert!(store.is_revoked("canteen-a", 1_000).unwrap());
        assert!(store.is_revoked("canteen-a", 2_000).unwrap());
        assert!(!store.is_revoked("canteen-a", 2_001).unwrap());
        assert!(!store.is_revoked("canteen-b", 1_000).unwrap());
        // An earlier revocation never narrows a later one.
        store.revoke("canteen-a", 1_500).unwrap();
        assert!(store.is_revoked("canteen-a", 2_000).unwrap());
    }
}

#[cfg(test)]
mod timeline_tests {
    use super::*;
    use crate::proto::BoxHello;

    fn ev(seq: u64, tag: &str) -> WireEvent {
        WireEvent {
            seq,
            kind: "stock.restocked".into(),
            aggregate_id: tag.into(),
            payload: format!(r#"{{"tag":"{tag}"}}"#),
            at: "2026-11-23T04:00:00Z".into(),
        }
    }

    fn hello(incarnation: &str, base: u64, last: u64, acked: u64, cloud: &str) -> BoxHello {
        BoxHello {
            version: 2,
            node_id: "box-1".into(),
            incarnation: incarnation.into(),
            base_seq: base,
            last_seq: last,
            acked_seq: acked,
            cloud_incarnation: cloud.into(),
            doc_schemas: Vec::new(),
        }
    }

    fn fresh() -> (tempfile::TempDir, CloudStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path());
        (dir, store)
    }

    /// A box that reconnected (to another replica) before its older connection ended
    /// stays connected when that one ends.
    #[test]
    fn the_end_of_an_older_connection_leaves_a_reconnected_box_connected() {
        let (_dir, store) = fresh();
        let first = store
            .hello("box-1", &hello("a", 0, 0, 0, ""), true)
            .unwrap();
        let second = store
            .hello("box-1", &hello("a", 0, 0, 0, ""), true)
            .unwrap();
        assert_ne!(first.connection, second.connection);
        store.disconnected("box-1", &first.connection).unwrap();
        assert!(store.nodes().unwrap()[0].connected);
        store.disconnected("box-1", &second.connection).unwrap();
        assert!(!store.nodes().unwrap()[0].connected);
        // A version 1 box's connections too.
        let old = store.connected("box-2").unwrap();
        let new = store.connected("box-2").unwrap();
        store.disconnected("box-2", &old).unwrap();
        assert!(store.nodes().unwrap()[1].connected);
        store.disconnected("box-2", &new).unwrap();
        assert!(!store.nodes().unwrap()[1].connected);
    }

    fn stored(store: &CloudStore) -> Vec<(i64, i64, String)> {
        let conn = store.lock().unwrap();
        let mut stmt = conn
            .prepare("SELECT timeline, seq, aggregate_id FROM event ORDER BY timeline, seq")
            .unwrap();
        stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A box restored to event 7 comes back as a new incarnation after the cloud
    /// stored 10 events of the old history: the resent events 5–7 are recognised as
    /// shared, the fork is found at 8, the old 8–10 stay counted as the lost
    /// timeline's, and the new 8–12 are stored once.
    #[test]
    fn a_restored_box_starts_a_timeline_resolved_at_the_fork() {
        let (_dir, store) = fresh();
        let cloud = store.incarnation().unwrap();
        let first = store
            .hello("box-1", &hello("a", 0, 10, 0, ""), true)
            .unwrap();
        assert_eq!((first.acked_seq, first.rebased), (0, false));
        let old: Vec<_> = (1..=10).map(|s| ev(s, "old")).collect();
        assert_eq!(store.ingest("box-1", &old).unwrap(), 10);

        // Same incarnation: the cursor and the digest of the event there.
        let again = store
            .hello("box-1", &hello("a", 0, 10, 10, &cloud), true)
            .unwrap();
        assert_eq!(again.acked_seq, 10);
        assert_eq!(again.acked_digest, event_digest(&ev(10, "old")));
        assert!(!again.cloud_restored);

        // Restored: a new incarnation, sharing at least 4 events.
        let re = store
            .hello("box-1", &hello("b", 4, 12, 4, &cloud), true)
            .unwrap();
        assert!(re.rebased);
        assert_eq!(re.acked_seq, 4);
        let mut new: Vec<_> = (5..=7).map(|s| ev(s, "old")).collect();
        new.extend((8..=12).map(|s| ev(s, "new")));
        assert_eq!(store.ingest("box-1", &new[..2]).unwrap(), 6);
        assert_eq!(store.ingest("box-1", &new[2..]).unwrap(), 12);

        let rows = stored(&store);
        assert_eq!(
            rows.len(),
            15,
            "10 of the old timeline, 5 of the new: {rows:?}"
        );
        assert!(rows[..10].iter().all(|(t, _, tag)| *t == 0 && tag == "old"));
        assert_eq!(
            rows[10..]
                .iter()
                .map(|(t, s, _)| (*t, *s))
                .collect::<Vec<_>>(),
            (8..=12).map(|s| (1, s)).collect::<Vec<_>>()
        );
        let timelines = store.timelines("box-1").unwrap();
        assert_eq!(timelines.len(), 2);
        assert_eq!(
            (timelines[0].lost_from, timelines[0].lost_to),
            (Some(8), Some(10))
        );
        assert!(timelines[0].ended_at.is_some());
        assert_eq!(timelines[1].base_seq, 7);
        assert_eq!(timelines[1].incarnation, "b");
        assert_eq!(store.summary("box-1", None).unwrap().events, 15);

        // The new timeline's own cursor and digests from here on.
        let later = store
            .hello("box-1", &hello("b", 4, 12, 12, &cloud), true)
            .unwrap();
        assert_eq!(later.acked_seq, 12);
        assert_eq!(later.acked_digest, event_digest(&ev(12, "new")));
        // At the base, the digest is the shared (parent's) event.
        let conn = store.lock().unwrap();
        assert_eq!(
            event_in_chain(&conn, "box-1", 1, 6).unwrap(),
            Some(ev(6, "old"))
        );
    }

    /// A box restored from a backup older than its previous restore returns to events
    /// the cloud holds in the first timeline, which the second one left: they are
    /// counted once, not again.
    #[test]
    fn returning_to_an_older_history_counts_its_events_once() {
        let (_dir, store) = fresh();
        let cloud = store.incarnation().unwrap();
        store
            .hello("box-1", &hello("a", 0, 10, 0, ""), true)
            .unwrap();
        let first: Vec<_> = (1..=10).map(|s| ev(s, "a")).collect();
        store.ingest("box-1", &first).unwrap();
        // Restored to 4 and sold on: timeline 1, events 5–8 of its own.
        store
            .hello("box-1", &hello("b", 4, 8, 4, &cloud), true)
            .unwrap();
        store
            .ingest("box-1", &(5..=8).map(|s| ev(s, "b")).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(store.summary("box-1", None).unwrap().events, 14);
        // Restored again, by hand, from the first history at 7 (its incarnation is
        // the first one's, base 0): the events 1–7 are the first timeline's.
        let o = store
            .hello("box-1", &hello("a", 0, 9, 4, &cloud), true)
            .unwrap();
        assert!(o.rebased);
        let mut again = first[..7].to_vec();
        again.extend((8..=9).map(|s| ev(s, "c")));
        store.ingest("box-1", &again).unwrap();
        // 10 of the first history, 4 of the second, 2 new: nothing twice.
        assert_eq!(store.summary("box-1", None).unwrap().events, 16);
        let t = store.timelines("box-1").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!((t[1].lost_from, t[1].lost_to), (Some(5), Some(8)));
        // The new timeline reads whole: its event 6 is the first history's.
        let conn = store.lock().unwrap();
        assert_eq!(
            event_in_chain(&conn, "box-1", 2, 6).unwrap(),
            Some(ev(6, "a"))
        );
    }

    /// Batches of a connection whose timeline the box has left (another copy of the
    /// box, or a stale connection) are refused, not stored in the new history; a
    /// re-based welcome carries the digest of the event it takes as shared.
    #[test]
    fn a_connection_of_a_timeline_left_behind_cannot_add_to_the_new_one() {
        let (_dir, store) = fresh();
        let old = store
            .hello("box-1", &hello("a", 0, 5, 0, ""), true)
            .unwrap();
        store
            .ingest_for(
                "box-1",
                Some(old.timeline),
                &(1..=5).map(|s| ev(s, "a")).collect::<Vec<_>>(),
            )
            .unwrap();
        let new = store
            .hello("box-1", &hello("b", 3, 3, 3, ""), true)
            .unwrap();
        assert!(new.rebased);
        assert_eq!(new.acked_digest, event_digest(&ev(3, "a")));
        assert!(matches!(
            store.ingest_for("box-1", Some(old.timeline), &[ev(6, "a")]),
            Err(StoreError::StaleTimeline)
        ));
        store
            .ingest_for("box-1", Some(new.timeline), &[ev(4, "b")])
            .unwrap();
        assert_eq!(store.summary("box-1", None).unwrap().events, 6);
    }

    /// A box the cloud does not know, holding acknowledgements of this incarnation,
    /// shows the database went back too; renewals can be held back (rate limit).
    #[test]
    fn restore_detection_covers_unknown_boxes_and_can_be_held_back() {
        let (_dir, store) = fresh();
        let cloud = store.incarnation().unwrap();
        let held = store
            .hello("box-9", &hello("z", 0, 7, 7, &cloud), false)
            .unwrap();
        assert!(!held.cloud_restored);
        assert_eq!(store.incarnation().unwrap(), cloud);
        let o = store
            .hello("box-8", &hello("y", 0, 7, 7, &cloud), true)
            .unwrap();
        assert!(o.cloud_restored);
        assert_ne!(o.cloud_incarnation, cloud);
    }

    /// A box reinstalled with a fresh database (old enrolment files) shares nothing:
    /// the whole old history is the lost timeline's.
    #[test]
    fn a_reinstalled_box_shares_nothing_with_its_old_history() {
        let (_dir, store) = fresh();
        store
            .hello("box-1", &hello("a", 0, 3, 0, ""), true)
            .unwrap();
        store
            .ingest("box-1", &(1..=3).map(|s| ev(s, "old")).collect::<Vec<_>>())
            .unwrap();
        let re = store
            .hello("box-1", &hello("fresh", 0, 2, 0, ""), true)
            .unwrap();
        assert_eq!((re.acked_seq, re.rebased), (0, true));
        store
            .ingest("box-1", &(1..=2).map(|s| ev(s, "new")).collect::<Vec<_>>())
            .unwrap();
        let t = store.timelines("box-1").unwrap();
        assert_eq!((t[0].lost_from, t[0].lost_to), (Some(1), Some(3)));
        assert_eq!(store.summary("box-1", None).unwrap().events, 5);
    }

    /// A box holding an acknowledgement of this cloud incarnation beyond the cloud's
    /// cursor shows the cloud's database went back: a new cloud incarnation.
    #[test]
    fn a_cloud_behind_its_own_acknowledgements_takes_a_new_incarnation() {
        let (_dir, store) = fresh();
        let cloud = store.incarnation().unwrap();
        store
            .hello("box-1", &hello("a", 0, 3, 0, ""), true)
            .unwrap();
        store
            .ingest("box-1", &(1..=3).map(|s| ev(s, "e")).collect::<Vec<_>>())
            .unwrap();
        // The box had 9 acknowledged by this incarnation: the database lost 4–9.
        let o = store
            .hello("box-1", &hello("a", 0, 9, 9, &cloud), true)
            .unwrap();
        assert!(o.cloud_restored);
        assert_eq!(o.acked_seq, 3);
        assert_ne!(o.cloud_incarnation, cloud);
        assert_eq!(store.incarnation().unwrap(), o.cloud_incarnation);
        // An acknowledgement from another incarnation proves nothing.
        let o2 = store
            .hello("box-1", &hello("a", 0, 9, 9, &cloud), true)
            .unwrap();
        assert!(!o2.cloud_restored);
    }

    /// A backup taken while the cloud serves restores into an empty place only, with
    /// its events and a new incarnation.
    #[test]
    fn a_backup_restores_as_a_new_incarnation() {
        // A backup of the SQLite file (PostgreSQL's are pg_dump's).
        let dir = tempfile::tempdir().unwrap();
        let store = CloudStore::open(&dir.path().join("cloud.db")).unwrap();
        let first = store.incarnation().unwrap();
        store
            .hello("box-1", &hello("a", 0, 3, 0, ""), true)
            .unwrap();
        store
            .ingest("box-1", &(1..=3).map(|s| ev(s, "e")).collect::<Vec<_>>())
            .unwrap();
        let backup = dir.path().join("backup.db");
        let db = dir.path().join("cloud.db");
        CloudStore::backup_file(&db, &backup).unwrap();
        assert!(
            CloudStore::backup_file(&db, &backup).is_err(),
            "never overwritten"
        );
        let restored = dir.path().join("restored").join("cloud.db");
        std::fs::create_dir_all(restored.parent().unwrap()).unwrap();
        let incarnation = CloudStore::restore(&backup, &restored).unwrap();
        assert_ne!(incarnation, first);
        let back = CloudStore::open(&restored).unwrap();
        assert_eq!(back.incarnation().unwrap(), incarnation);
        assert_eq!(back.acked("box-1").unwrap(), 3);
        assert_eq!(back.summary("box-1", None).unwrap().events, 3);
        drop(back);
        assert!(
            CloudStore::restore(&backup, &restored).is_err(),
            "the place is taken"
        );
        std::fs::write(dir.path().join("junk.db"), b"not a database").unwrap();
        let elsewhere = dir.path().join("elsewhere.db");
        assert!(CloudStore::restore(&dir.path().join("junk.db"), &elsewhere).is_err());
        assert!(!elsewhere.exists());
    }

    /// A database of the release before versioned schemas opens, migrated, with its
    /// events, orders and payments kept as timeline 0; a newer schema is refused.
    #[test]
    fn a_version_1_database_is_migrated_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloud.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute_batch(
                "INSERT INTO node (node_id, acked_seq) VALUES ('box-1', 3);
                 INSERT INTO event VALUES ('box-1', 1, 'order.placed', 'o', '{}', 't'),
                                          ('box-1', 2, 'order.paid', 'o', '{}', 't');
                 INSERT INTO cloud_order VALUES ('box-1', 'o', '2026-11-23', 'paid', 900, 1);
                 INSERT INTO cloud_payment VALUES ('box-1', 2, 'o', '2026-11-23', 'payment', 900);",
            )
            .unwrap();
            // A staff sold-out mark: the migration puts it on the sold-out board.
            let sold_out = format!(
                r#"{{"item_id":"{}","service_day":"2026-11-23","staff_id":"{}","remaining":3,"sold_out":true}}"#,
                canteen_api::ItemId::new(),
                canteen_api::StaffId::new()
            );
            conn.execute(
                "INSERT INTO event VALUES ('box-1', 3, 'stock.sold_out', 'i', ?1, '2026-11-23T04:00:00Z')",
                [sold_out],
            )
            .unwrap();
        }
        let store = CloudStore::open(&path).unwrap();
        assert_eq!(store.acked("box-1").unwrap(), 3);
        let s = store.summary("box-1", Some("2026-11-23")).unwrap();
        assert_eq!((s.events, s.orders, s.revenue_fen), (3, 1, 900));
        let board = store
            .sold_out("box-1", ("2026-11-23", "2026-11-23"))
            .unwrap();
        assert_eq!(board.len(), 1, "{board:?}");
        assert_eq!(board[0].2, None, "still sold out");
        assert_eq!(store.timelines("box-1").unwrap().len(), 1);
        // Version 6 keeps the events in a rowid table (a `WITHOUT ROWID` one has none).
        let rowids: i64 = store
            .lock()
            .unwrap()
            .query_row("SELECT COUNT(rowid) FROM event", (), |r| r.get(0))
            .unwrap();
        assert_eq!(rowids, 3);
        drop(store);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            CloudStore::open(&path),
            Err(StoreError::SchemaTooNew { .. })
        ));
    }
}

/// Two replicas on one PostgreSQL database: what one box's batches do when both
/// receive them at once, and what a replica does with a newer schema. These need
/// PostgreSQL whatever `CLOUD_TEST_STORE` says (and fail when it cannot start).
#[cfg(test)]
mod replica_tests {
    use super::*;
    use canteen_api::{OrderId, StudentId};

    fn placed(seq: u64) -> WireEvent {
        WireEvent {
            seq,
            kind: "order.placed".into(),
            aggregate_id: String::new(),
            payload: format!(
                r#"{{"v":2,"id":"{}","student_id":"{}","service_day":"2026-11-23","total_fen":100,"lines":[]}}"#,
                OrderId::new(),
                StudentId::new()
            ),
            at: "2026-11-23T04:00:00Z".into(),
        }
    }

    /// The box's cursor row, locked per batch, holds this (without the lock the second
    /// replica counts the batch again: checked): the replica that waited finds the
    /// cursor moved past the batch and stores nothing of it.
    #[test]
    fn the_same_batch_at_two_replicas_at_once_is_counted_once() {
        let url = crate::pgtest::shared().fresh_database().unwrap();
        let a = std::sync::Arc::new(CloudStore::open_postgres(&url).unwrap());
        let b = std::sync::Arc::new(CloudStore::open_postgres(&url).unwrap());
        let mut seq = 0u64;
        for _ in 0..25 {
            let batch: Vec<WireEvent> = (seq + 1..=seq + 40).map(placed).collect();
            seq += 40;
            let both: Vec<_> = [a.clone(), b.clone()]
                .into_iter()
                .map(|store| {
                    let batch = batch.clone();
                    std::thread::spawn(move || store.ingest("box-1", &batch))
                })
                .collect();
            for replica in both {
                // Both acknowledge the batch: one stored it, the other waited for the
                // box's cursor row and found every event stored.
                assert_eq!(replica.join().unwrap().unwrap(), seq);
            }
        }
        for store in [&a, &b] {
            let s = store.summary("box-1", None).unwrap();
            assert_eq!((s.events, s.orders), (1000, 1000));
        }
        let conn = a.lock().unwrap();
        let stored: i64 = conn
            .query_row("SELECT COUNT(*) FROM event", (), |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 1000);
    }

    /// Batches are copied into the event table when nothing after the cursor is
    /// stored; an event that is (put there by hand) sends the batch through
    /// `INSERT … ON CONFLICT DO NOTHING` instead of failing it: the stored row stays.
    #[test]
    fn an_event_stored_after_the_cursor_is_kept_and_the_batch_lands() {
        let url = crate::pgtest::shared().fresh_database().unwrap();
        let store = CloudStore::open_postgres(&url).unwrap();
        let first: Vec<WireEvent> = (1..=40).map(placed).collect();
        assert_eq!(store.ingest("box-1", &first).unwrap(), 40);
        store
            .lock()
            .unwrap()
            .execute(
                "INSERT INTO event (node_id, timeline, seq, kind, aggregate_id, payload, at)
                 VALUES ('box-1', 0, 42, 'order.placed', 'by-hand', '{}', 't')",
                (),
            )
            .unwrap();
        let second: Vec<WireEvent> = (41..=80).map(placed).collect();
        assert_eq!(store.ingest("box-1", &second).unwrap(), 80);
        let conn = store.lock().unwrap();
        let (stored, by_hand): (i64, String) = conn
            .query_row(
                "SELECT COUNT(*), MAX(CASE WHEN seq = 42 THEN aggregate_id END) FROM event",
                (),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((stored, by_hand.as_str()), (80, "by-hand"));
    }

    /// Text columns whose collation is not `"C"` (`None` is the database's default).
    fn not_bytewise(store: &CloudStore) -> Vec<String> {
        let conn = store.lock().unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT table_name || '.' || column_name FROM information_schema.columns
                 WHERE table_schema = current_schema() AND data_type = 'text'
                   AND collation_name IS DISTINCT FROM 'C' ORDER BY 1",
            )
            .unwrap();
        stmt.query_map((), |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Version 2 makes every text column compare as bytes, on a new database and on
    /// one of version 1 with events in it, which keep counting afterwards.
    #[test]
    fn every_text_column_compares_as_bytes_after_the_migration() {
        let url = crate::pgtest::shared().fresh_database().unwrap();
        let store = CloudStore::open_postgres(&url).unwrap();
        assert_eq!(not_bytewise(&store), Vec::<String>::new());
        let batch: Vec<_> = (1..=50).map(placed).collect();
        assert_eq!(store.ingest("box-1", &batch).unwrap(), 50);
        // Back to version 1 for some columns: the database's own collation (the key
        // of the events, and both ends of a foreign key).
        store
            .lock()
            .unwrap()
            .execute_batch(
                r#"ALTER TABLE event ALTER COLUMN node_id TYPE text COLLATE "default";
                ALTER TABLE admin_account ALTER COLUMN username TYPE text COLLATE "default";
                ALTER TABLE admin_session ALTER COLUMN username TYPE text COLLATE "default";
                UPDATE schema_version SET version = 1;"#,
            )
            .unwrap();
        let before = not_bytewise(&store);
        assert!(before.contains(&"event.node_id".to_owned()), "{before:?}");
        assert!(before.contains(&"admin_session.username".to_owned()));
        drop(store);

        let store = CloudStore::open_postgres(&url).unwrap();
        assert_eq!(not_bytewise(&store), Vec::<String>::new());
        let batch: Vec<_> = (51..=80).map(placed).collect();
        assert_eq!(store.ingest("box-1", &batch).unwrap(), 80);
        let s = store.summary("box-1", None).unwrap();
        assert_eq!((s.events, s.orders), (80, 80));
    }

    #[test]
    fn a_replica_refuses_a_newer_schema_and_replicas_starting_together_migrate_once() {
        let url = crate::pgtest::shared().fresh_database().unwrap();
        let starting: Vec<_> = (0..3)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || CloudStore::open_postgres(&url).map(|_| ()))
            })
            .collect();
        for s in starting {
            s.join().unwrap().unwrap();
        }
        let store = CloudStore::open_postgres(&url).unwrap();
        store
            .lock()
            .unwrap()
            .execute("UPDATE schema_version SET version = version + 1", ())
            .unwrap();
        drop(store);
        assert!(matches!(
            CloudStore::open_postgres(&url),
            Err(StoreError::SchemaTooNew { .. })
        ));
    }
}
