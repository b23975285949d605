//! The cloud's store on PostgreSQL: the pool, the schema and its migrations, and the
//! notifications that tell every replica what another one changed.
//!
//! **Schema.** The same tables as on SQLite, every integer 64-bit. Each table that
//! holds a canteen's data has a primary key that starts with the canteen's node id, so
//! the schema can be distributed by `node_id` (Citus: `create_distributed_table(…,
//! 'node_id')`), with the campus-wide tables (accounts, admins, sessions, audit, menu
//! pushes, meta) as reference tables; see `deploy/OPERATIONS.md`.
//!
//! **Migrations** run at start in one transaction under an advisory lock, so replicas
//! starting together migrate once; a database with a newer schema is refused.
//!
//! **Notifications.** A replica that changes what boxes on other replicas must see (a
//! box's documents, accounts, the cloud's incarnation) sends `NOTIFY canteen_cloud` in
//! the same transaction; every replica `LISTEN`s on its own connection and passes the
//! notices to its server ([`Change`]).

use super::db::DbError;
use super::store::StoreError;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::broadcast;

/// The channel replicas notify each other on.
pub const CHANNEL: &str = "canteen_cloud";

/// Connections one replica keeps at most.
pub const POOL_MAX: usize = 16;

/// What another replica changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A box's document (`menu`, `settings`) has chunks this replica may not hold.
    Doc { node: String, doc: String },
    /// New account records.
    Accounts,
    /// The cloud's incarnation was renewed (a restore was detected).
    Incarnation,
    /// Notices may have been missed (the listening connection was lost, or this
    /// replica fell behind): anything may have changed.
    Missed,
}

impl Change {
    pub fn encode(&self) -> String {
        match self {
            Change::Doc { node, doc } => format!("doc {node} {doc}"),
            Change::Accounts => "accounts".into(),
            Change::Incarnation => "incarnation".into(),
            Change::Missed => "missed".into(),
        }
    }

    pub fn decode(payload: &str) -> Option<Self> {
        let mut words = payload.split(' ');
        match (words.next()?, words.next(), words.next(), words.next()) {
            ("doc", Some(node), Some(doc), None) => Some(Change::Doc {
                node: node.to_owned(),
                doc: doc.to_owned(),
            }),
            ("accounts", None, None, None) => Some(Change::Accounts),
            ("incarnation", None, None, None) => Some(Change::Incarnation),
            ("missed", None, None, None) => Some(Change::Missed),
            _ => None,
        }
    }
}

/// The schema version this build writes on PostgreSQL; a newer database is refused.
pub const SCHEMA_VERSION: i64 = 2;

/// Version 1: the SQLite store's version 5, in PostgreSQL's types.
const SCHEMA_1: &str = "
CREATE TABLE node (
    node_id        TEXT PRIMARY KEY,
    acked_seq      BIGINT NOT NULL DEFAULT 0,
    connected      BIGINT NOT NULL DEFAULT 0,
    last_seen      TEXT,
    incarnation    TEXT NOT NULL DEFAULT '',
    timeline       BIGINT NOT NULL DEFAULT 0,
    resolve_until  BIGINT NOT NULL DEFAULT 0,
    protocol       BIGINT NOT NULL DEFAULT 0,
    counted_events BIGINT NOT NULL DEFAULT 0,
    connection     TEXT NOT NULL DEFAULT ''
);
CREATE TABLE timeline (
    node_id     TEXT NOT NULL,
    timeline    BIGINT NOT NULL,
    incarnation TEXT NOT NULL,
    base_seq    BIGINT NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    lost_from   BIGINT,
    lost_to     BIGINT,
    PRIMARY KEY (node_id, timeline)
);
CREATE TABLE event (
    node_id      TEXT NOT NULL,
    timeline     BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    payload      TEXT NOT NULL,
    at           TEXT NOT NULL,
    counted      BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (node_id, timeline, seq)
);
CREATE TABLE cloud_order (
    node_id         TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    service_day     TEXT NOT NULL,
    state           TEXT NOT NULL,
    total_fen       BIGINT NOT NULL,
    placed_seq      BIGINT NOT NULL,
    placed_timeline BIGINT NOT NULL DEFAULT 0,
    placed_hour     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, order_id)
);
CREATE TABLE cloud_payment (
    node_id     TEXT NOT NULL,
    timeline    BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    order_id    TEXT NOT NULL,
    service_day TEXT NOT NULL,
    kind        TEXT NOT NULL,
    amount_fen  BIGINT NOT NULL,
    PRIMARY KEY (node_id, timeline, seq)
);
CREATE TABLE doc_chunk (
    node_id TEXT NOT NULL,
    doc     TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (node_id, doc, seq)
);
CREATE TABLE doc_sync_state (
    node_id TEXT NOT NULL,
    doc     TEXT NOT NULL,
    state   BYTEA NOT NULL,
    PRIMARY KEY (node_id, doc)
);
CREATE TABLE revocation (
    node_id       TEXT PRIMARY KEY,
    issued_before BIGINT NOT NULL
);
CREATE TABLE account (
    cursor      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    role        TEXT NOT NULL,
    login       TEXT NOT NULL,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    active      BIGINT NOT NULL,
    canteens    TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE admin_account (
    username      TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'viewer', 'canteen_manager')),
    canteens      TEXT NOT NULL DEFAULT '[]',
    password_hash TEXT NOT NULL,
    active        BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE admin_session (
    token_digest  TEXT PRIMARY KEY,
    username      TEXT NOT NULL REFERENCES admin_account (username),
    csrf          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE TABLE audit (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms    BIGINT NOT NULL,
    username TEXT NOT NULL,
    action   TEXT NOT NULL,
    canteens TEXT NOT NULL,
    result   TEXT NOT NULL,
    detail   TEXT NOT NULL
);
CREATE TABLE node_status (
    node_id           TEXT PRIMARY KEY,
    received_at_ms    BIGINT NOT NULL,
    clock_offset_ms   BIGINT NOT NULL,
    software          TEXT NOT NULL,
    schema            BIGINT NOT NULL,
    last_seq          BIGINT NOT NULL,
    acked_seq         BIGINT NOT NULL,
    oldest_waiting_at TEXT,
    docs              TEXT NOT NULL
);
CREATE TABLE day_report (
    node_id        TEXT NOT NULL,
    service_day    TEXT NOT NULL,
    through_seq    BIGINT NOT NULL,
    orders         BIGINT NOT NULL,
    revenue_fen    BIGINT NOT NULL,
    refunds_fen    BIGINT NOT NULL,
    cancelled      BIGINT NOT NULL,
    expired        BIGINT NOT NULL,
    unclaimed      BIGINT NOT NULL,
    reported_at_ms BIGINT NOT NULL,
    PRIMARY KEY (node_id, service_day)
);
CREATE TABLE day_close (
    node_id      TEXT NOT NULL,
    service_day  TEXT NOT NULL,
    through_seq  BIGINT NOT NULL,
    closed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (node_id, service_day)
);
CREATE TABLE late_event (
    node_id        TEXT NOT NULL,
    service_day    TEXT NOT NULL,
    timeline       BIGINT NOT NULL,
    seq            BIGINT NOT NULL,
    kind           TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (node_id, service_day, timeline, seq)
);
CREATE TABLE rollup_state (
    node_id     TEXT NOT NULL,
    service_day TEXT NOT NULL,
    state       TEXT NOT NULL,
    orders      BIGINT NOT NULL,
    PRIMARY KEY (node_id, service_day, state)
);
CREATE TABLE rollup_money (
    node_id      TEXT NOT NULL,
    service_day  TEXT NOT NULL,
    paid_fen     BIGINT NOT NULL,
    refunded_fen BIGINT NOT NULL,
    PRIMARY KEY (node_id, service_day)
);
CREATE TABLE rollup_hour (
    node_id     TEXT NOT NULL,
    service_day TEXT NOT NULL,
    hour        BIGINT NOT NULL,
    orders      BIGINT NOT NULL,
    PRIMARY KEY (node_id, service_day, hour)
);
CREATE TABLE rollup_item (
    node_id     TEXT NOT NULL,
    service_day TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    quantity    BIGINT NOT NULL,
    revenue_fen BIGINT NOT NULL,
    PRIMARY KEY (node_id, service_day, item_id)
);
CREATE TABLE sold_out (
    node_id     TEXT NOT NULL,
    service_day TEXT NOT NULL,
    item_id     TEXT NOT NULL,
    since       TEXT NOT NULL,
    back_at     TEXT,
    PRIMARY KEY (node_id, service_day, item_id, since)
);
CREATE TABLE menu_push (
    push_id  TEXT PRIMARY KEY,
    at_ms    BIGINT NOT NULL,
    username TEXT NOT NULL,
    item_id  TEXT NOT NULL,
    change   TEXT NOT NULL
);
CREATE TABLE menu_push_target (
    node_id TEXT NOT NULL,
    push_id TEXT NOT NULL REFERENCES menu_push (push_id),
    heads   TEXT NOT NULL,
    PRIMARY KEY (node_id, push_id)
);
CREATE INDEX account_login ON account (login, cursor);
";

/// Version 2: every text column compares as bytes (`COLLATE "C"`). The cloud's text
/// columns hold ids, days, kinds and JSON, and nothing sorts names in SQL, so the
/// database's own collation (`en_US.UTF-8`, `zh_CN.UTF-8`, whatever `initdb` was given)
/// bought nothing and cost two things: a `strcoll` in every comparison of every index
/// probe, and indexes whose order belongs to the operating system's C library, which
/// silently go out of order when an upgrade changes its collation rules (glibc 2.28
/// did) until they are rebuilt. Byte order never changes. All text columns, not only
/// the keys, so no comparison mixes two collations (PostgreSQL refuses `=` between
/// columns whose collations differ). A table added by a later version declares its
/// text columns `COLLATE "C"`; a test checks every one. On a large database this
/// rebuilds the indexes of those columns once (the tables are not rewritten: the change
/// is binary-compatible), with the tables locked: `deploy/OPERATIONS.md` says to stop
/// the older replicas first, and to migrate before distributing with Citus.
const SCHEMA_2: &str = r#"
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT table_name,
               string_agg(format('ALTER COLUMN %I TYPE text COLLATE "C"', column_name), ', ')
                   AS changes
        FROM information_schema.columns
        WHERE table_schema = current_schema()
          AND data_type = 'text'
          AND collation_name IS DISTINCT FROM 'C'
          -- The cloud's own tables only: never a view or another program's table in
          -- the same schema (pg_stat_statements puts a view in public).
          AND table_name IN ('node', 'timeline', 'event', 'cloud_order', 'cloud_payment',
              'doc_chunk', 'doc_sync_state', 'revocation', 'account', 'meta',
              'admin_account', 'admin_session', 'audit', 'node_status', 'day_report',
              'day_close', 'late_event', 'rollup_state', 'rollup_money', 'rollup_hour',
              'rollup_item', 'sold_out', 'menu_push', 'menu_push_target')
        GROUP BY table_name
        ORDER BY table_name
    LOOP
        EXECUTE format('ALTER TABLE %I %s', t.table_name, t.changes);
    END LOOP;
END
$$;
"#;

/// Every migration, oldest first: version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[SCHEMA_1, SCHEMA_2];

/// One replica's hold on the database: its pool, the runtime that runs the
/// connections, and the notices of other replicas.
pub struct PgBackend {
    pub pool: deadpool_postgres::Pool,
    runtime: Option<tokio::runtime::Runtime>,
    pub handle: tokio::runtime::Handle,
    pub changes: broadcast::Sender<Change>,
    /// This replica's name in its notices (it skips its own).
    pub replica: String,
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // Dropped from inside a runtime too (a server's last reference): no blocking.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn pool_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(DbError::Pool(e.to_string()))
}

impl PgBackend {
    /// Connects to `url` (`postgres://user@host:port/db`), migrates, and starts
    /// listening for other replicas' notices.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Restore(format!("database URL: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cloud-db")
            .enable_all()
            .build()
            .map_err(pool_error)?;
        let handle = runtime.handle().clone();
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            // A connection goes back to the pool unless it is closed, without a round
            // trip: a transaction that is not committed is rolled back when dropped
            // (`Tx`), and a rollback fails only when the connection is gone. (A
            // `ROLLBACK` at every hand-out cost a round trip per batch and a warning
            // in PostgreSQL's log each time.)
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(POOL_MAX)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(pool_error)?;
        let (changes, _) = broadcast::channel(1024);
        let backend = Self {
            pool,
            runtime: Some(runtime),
            handle,
            changes,
            replica: super::store::new_incarnation(),
        };
        backend.migrate()?;
        backend.listen(config);
        Ok(backend)
    }

    /// The payload of a notice of `change` from this replica.
    pub fn notice(&self, change: &Change) -> String {
        format!("{} {}", self.replica, change.encode())
    }

    pub fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        super::db::wait(&self.handle, self.pool.get()).map_err(pool_error)
    }

    /// A pooled connection, as the store's statements take it.
    pub fn conn(&self) -> Result<super::db::Conn<'_>, StoreError> {
        Ok(super::db::Conn::Pg(
            std::sync::Arc::new(self.client()?),
            &self.handle,
        ))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        use super::db::{AsDb, OptionalExtension};
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        // One replica migrates at a time; the others then find the work done.
        tx.execute_batch(
            "SELECT pg_advisory_xact_lock(7041200);
             CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);",
        )?;
        let found: i64 = tx
            .query_row("SELECT version FROM schema_version", (), |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found });
        }
        for sql in &MIGRATIONS[found.max(0) as usize..] {
            tx.execute_batch(sql)?;
        }
        tx.execute("DELETE FROM schema_version", ())?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [SCHEMA_VERSION],
        )?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('incarnation', ?1) ON CONFLICT (key) DO NOTHING",
            [super::store::new_incarnation()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A connection of its own that `LISTEN`s, reconnecting after a failure; notices
    /// go to [`PgBackend::changes`]. After a reconnect, [`Change::Missed`] (a notice
    /// may have been lost in between).
    fn listen(&self, config: tokio_postgres::Config) {
        let changes = self.changes.clone();
        let own = format!("{} ", self.replica);
        self.handle.spawn(async move {
            let mut first = true;
            loop {
                match config.connect(tokio_postgres::NoTls).await {
                    Ok((client, mut connection)) => {
                        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
                        // Drives the connection; its notifications' payloads go over.
                        let pump = tokio::spawn(async move {
                            loop {
                                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                        if tx.send(n.payload().to_owned()).await.is_err() {
                                            break;
                                        }
                                    }
                                    Some(Ok(_)) => {}
                                    Some(Err(_)) | None => break,
                                }
                            }
                        });
                        if client
                            .batch_execute(&format!("LISTEN {CHANNEL}"))
                            .await
                            .is_ok()
                        {
                            if !first {
                                let _ = changes.send(Change::Missed);
                            }
                            first = false;
                            while let Some(n) = rx.recv().await {
                                if n.starts_with(&own) {
                                    continue;
                                }
                                if let Some(change) = n
                                    .split_once(' ')
                                    .and_then(|(_, change)| Change::decode(change))
                                {
                                    let _ = changes.send(change);
                                }
                            }
                        }
                        pump.abort();
                        tracing::warn!("lost the database notifications connection; reconnecting");
                    }
                    Err(e) => tracing::warn!(error = %e, "database notifications connection"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}
