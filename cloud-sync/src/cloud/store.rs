//! The cloud's store (SQLite): every box's events, applied exactly once by
//! (node id, seq), the projections an admin reads, the per-box document replicas
//! and their sync states, and the accounts that flow down.
//!
//! One connection behind a mutex; callers run it on the blocking pool.

use crate::proto::{Account, WireEvent};
use crate::uplink::{BatchError, accept_batch};
use canteen_api::events::{EventPayload, OrderMoved, OrderPlacedHead};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("batch refused: {0}")]
    Batch(#[from] BatchError),
    #[error("event {seq} of {node}: {reason}")]
    BadEvent {
        node: String,
        seq: u64,
        reason: String,
    },
}

pub struct CloudStore {
    conn: Mutex<Connection>,
}

impl CloudStore {
    /// Revokes every certificate of `node` issued up to now (a stolen or retired box);
    /// a certificate enrolled afterwards is accepted.
    pub fn revoke(&self, node: &str, now_unix: i64) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO revocation (node_id, issued_before) VALUES (?1, ?2)
             ON CONFLICT (node_id) DO UPDATE SET issued_before = max(issued_before, ?2)",
            params![node, now_unix],
        )?;
        Ok(())
    }

    /// Whether a certificate of `node` issued at `issued_at` is revoked.
    pub fn is_revoked(&self, node: &str, issued_at: i64) -> Result<bool, StoreError> {
        let before: Option<i64> = self
            .lock()
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

fn now_text() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    secs.to_string()
}

impl CloudStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Acknowledged means durable: an ack goes out only after a FULL commit.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn acked(&self, node: &str) -> Result<u64, StoreError> {
        let seq: Option<i64> = self
            .lock()
            .query_row(
                "SELECT acked_seq FROM node WHERE node_id = ?1",
                [node],
                |r| r.get(0),
            )
            .optional()?;
        Ok(seq.unwrap_or(0) as u64)
    }

    pub fn set_connected(&self, node: &str, connected: bool) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO node (node_id, connected, last_seen) VALUES (?1, ?2, ?3)
             ON CONFLICT (node_id) DO UPDATE SET connected = ?2, last_seen = ?3",
            params![node, connected, now_text()],
        )?;
        Ok(())
    }

    /// Applies a batch exactly once and returns the node's new cursor. Everything of
    /// the batch (events, projections, cursor) commits together, or nothing does.
    pub fn ingest(&self, node: &str, events: &[WireEvent]) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute("INSERT OR IGNORE INTO node (node_id) VALUES (?1)", [node])?;
        let cursor: i64 = tx.query_row(
            "SELECT acked_seq FROM node WHERE node_id = ?1",
            [node],
            |r| r.get(0),
        )?;
        let fresh = accept_batch(cursor as u64, events)?;
        let Some(last) = fresh.last().map(|e| e.seq) else {
            return Ok(cursor as u64);
        };
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO event (node_id, seq, kind, aggregate_id, payload, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for e in fresh {
                insert.execute(params![
                    node,
                    e.seq as i64,
                    e.kind,
                    e.aggregate_id,
                    e.payload,
                    e.at
                ])?;
                project(&tx, node, e)?;
            }
        }
        tx.execute(
            "UPDATE node SET acked_seq = ?2, last_seen = ?3 WHERE node_id = ?1",
            params![node, last as i64, now_text()],
        )?;
        tx.commit()?;
        Ok(last)
    }

    pub fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT node_id, acked_seq, connected, last_seen FROM node ORDER BY node_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(NodeRow {
                node_id: r.get(0)?,
                acked_seq: r.get::<_, i64>(1)? as u64,
                connected: r.get(2)?,
                last_seen: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn summary(&self, node: &str, day: Option<&str>) -> Result<Summary, StoreError> {
        let conn = self.lock();
        let day = day.unwrap_or("%");
        let mut by_state = std::collections::BTreeMap::new();
        {
            let mut stmt = conn.prepare(
                "SELECT state, COUNT(*) FROM cloud_order WHERE node_id = ?1 AND service_day LIKE ?2 GROUP BY state",
            )?;
            for row in stmt.query_map(params![node, day], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })? {
                let (s, n) = row?;
                by_state.insert(s, n);
            }
        }
        let (paid, refunded): (i64, i64) = conn.query_row(
            "SELECT COALESCE(SUM(CASE WHEN kind = 'payment' THEN amount_fen END), 0),
                    COALESCE(SUM(CASE WHEN kind = 'refund' THEN amount_fen END), 0)
             FROM cloud_payment WHERE node_id = ?1 AND service_day LIKE ?2",
            params![node, day],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut stmt = conn.prepare(
            "SELECT l.value ->> 'item_id', SUM(l.value ->> 'quantity'), SUM(l.value ->> 'line_total_fen')
             FROM cloud_order o
             JOIN event e ON e.node_id = o.node_id AND e.seq = o.placed_seq,
             json_each(e.payload, '$.lines') l
             WHERE o.node_id = ?1 AND o.service_day LIKE ?2
               AND o.state IN ('paid', 'preparing', 'ready', 'picked_up', 'unclaimed')
             GROUP BY 1 ORDER BY 1",
        )?;
        let items = stmt
            .query_map(params![node, day], |r| {
                Ok(ItemTotal {
                    item_id: r.get(0)?,
                    quantity: r.get(1)?,
                    revenue_fen: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let events: i64 = conn.query_row(
            "SELECT COUNT(*) FROM event WHERE node_id = ?1",
            [node],
            |r| r.get(0),
        )?;
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

    pub fn doc_chunks(&self, node: &str, doc: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT data FROM doc_chunk WHERE node_id = ?1 AND doc = ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![node, doc], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Appends a chunk; with `replace_all`, first removes every earlier chunk (a
    /// compacted snapshot), in one transaction.
    pub fn put_chunk(
        &self,
        node: &str,
        doc: &str,
        data: &[u8],
        replace_all: bool,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if replace_all {
            tx.execute(
                "DELETE FROM doc_chunk WHERE node_id = ?1 AND doc = ?2",
                params![node, doc],
            )?;
        }
        tx.execute(
            "INSERT INTO doc_chunk (node_id, doc, seq, data)
             VALUES (?1, ?2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM doc_chunk WHERE node_id = ?1 AND doc = ?2), ?3)",
            params![node, doc, data],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn sync_state(&self, node: &str, doc: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT state FROM doc_sync_state WHERE node_id = ?1 AND doc = ?2",
                params![node, doc],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn save_sync_state(&self, node: &str, doc: &str, state: &[u8]) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO doc_sync_state (node_id, doc, state) VALUES (?1, ?2, ?3)
             ON CONFLICT (node_id, doc) DO UPDATE SET state = ?3",
            params![node, doc, state],
        )?;
        Ok(())
    }

    /// Records account changes (the newest row per login wins at the boxes).
    pub fn add_accounts(&self, accounts: &[Account]) -> Result<u64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for a in accounts {
            tx.execute(
                "INSERT INTO account (role, login, name, secret_hash, active) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![a.role, a.login, a.name, a.secret_hash, a.active],
            )?;
        }
        let cursor: i64 =
            tx.query_row("SELECT COALESCE(MAX(cursor), 0) FROM account", [], |r| {
                r.get(0)
            })?;
        tx.commit()?;
        Ok(cursor as u64)
    }

    /// Account changes after `cursor`, at most `max`, and the cursor they reach.
    pub fn accounts_after(
        &self,
        cursor: u64,
        max: usize,
    ) -> Result<(u64, Vec<Account>), StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT cursor, role, login, name, secret_hash, active FROM account WHERE cursor > ?1 ORDER BY cursor LIMIT ?2",
        )?;
        let mut last = cursor;
        let mut out = Vec::new();
        for row in stmt.query_map(params![cursor as i64, max as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Account {
                    role: r.get(1)?,
                    login: r.get(2)?,
                    name: r.get(3)?,
                    secret_hash: r.get(4)?,
                    active: r.get(5)?,
                },
            ))
        })? {
            let (c, a) = row?;
            last = c as u64;
            out.push(a);
        }
        Ok((last, out))
    }
}

/// Projects one event into the aggregate tables. Events are the box's own records, read
/// as the typed, versioned payloads of `canteen_api::events`: `order.placed` through
/// [`OrderPlacedHead`] (only the fields used, borrowed: it carries the whole order and
/// runs for every order of a catch-up), `order.<state>` as a whole [`OrderMoved`]. A
/// payload newer than this cloud knows, or malformed, is refused (`BadEvent`) rather
/// than guessed at. Stock events are stored, not projected.
fn project(tx: &rusqlite::Transaction<'_>, node: &str, e: &WireEvent) -> Result<(), StoreError> {
    let bad = |reason: String| StoreError::BadEvent {
        node: node.to_owned(),
        seq: e.seq,
        reason,
    };
    if !e.kind.starts_with("order.") {
        return Ok(());
    }
    if e.kind == "order.placed" {
        let p = OrderPlacedHead::parse(&e.payload).map_err(|err| bad(err.to_string()))?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO cloud_order (node_id, order_id, service_day, state, total_fen, placed_seq)
             VALUES (?1, ?2, ?3, 'placed', ?4, ?5)",
        )?
        .execute(params![node, p.id, p.service_day, p.total_fen, e.seq as i64])?;
        return Ok(());
    }
    let m: OrderMoved = match EventPayload::parse(&e.kind, &e.payload) {
        Ok(EventPayload::OrderMoved(m)) => m,
        Ok(other) => return Err(bad(format!("{} is not an order transition", other.kind()))),
        Err(err) => return Err(bad(err.to_string())),
    };
    let order_id = m.order_id.to_string();
    tx.prepare_cached("UPDATE cloud_order SET state = ?3 WHERE node_id = ?1 AND order_id = ?2")?
        .execute(params![node, order_id, m.to.as_str()])?;
    if let Some(money) = m.payment {
        tx.prepare_cached(
            "INSERT INTO cloud_payment (node_id, seq, order_id, service_day, kind, amount_fen) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            node,
            e.seq as i64,
            order_id,
            m.service_day.to_string(),
            money.kind.as_str(),
            money.amount_fen
        ])?;
    }
    Ok(())
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
        let conn = store.lock();
        let mut stmt = conn
            .prepare("SELECT seq, order_id, kind, amount_fen FROM cloud_payment ORDER BY seq")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn count(store: &CloudStore, table: &str) -> i64 {
        store
            .lock()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn refunds_of_both_payload_versions_are_projected_and_newer_versions_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = CloudStore::open(&dir.path().join("cloud.db")).unwrap();
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
        let store = CloudStore::open(&dir.path().join("cloud.db")).unwrap();
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
