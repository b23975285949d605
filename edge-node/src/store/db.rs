//! Opening the box's SQLite database: pragmas, migrations and the read-connection pool.
//!
//! Only the writer thread ([`super::writer`]) writes. Reads go through [`Readers`],
//! whose connections are used on tokio's blocking pool, never on the async workers.

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Schema migrations (name, SQL), applied in order; `PRAGMA user_version` is the number
/// applied. Every schema change adds one here and a fixture database of the release
/// before it (`edge-node/tests/fixtures/`).
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("migrations/0001_init.sql")),
    (
        "0002_accounts",
        include_str!("migrations/0002_accounts.sql"),
    ),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "database {path} has schema version {found}, newer than this build supports ({supported}); \
         upgrade edge-node before opening it"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("the database worker stopped")]
    WorkerGone,
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Secret(#[from] super::secrets::SecretError),
}

fn apply_pragmas(conn: &Connection) -> rusqlite::Result<()> {
    // WAL lets readers run beside the single writer. synchronous=FULL makes every commit
    // fsync the WAL before COMMIT returns: an order the student saw as "placed" survives
    // a power cut, not only a process crash (NORMAL would risk the last commits on power
    // loss). Group commit in the writer amortises that fsync over many orders.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Each write runs in a savepoint inside the group's transaction; keep the
    // savepoints' rollback journal in memory instead of a temporary file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 8 MiB of page cache (negative = KiB). Larger caches measured slower here: SQLite
    // walks the cache at every commit.
    conn.pragma_update(None, "cache_size", -8192)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Every statement the box runs stays prepared (rusqlite's default keeps only 16).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

const STATEMENT_CACHE: usize = 256;

/// Opens (creating if needed) the database for writing and brings its schema up to date.
/// The database is created 0600 (and an existing one tightened to 0600, with its WAL
/// and shared memory): it holds every student's orders and the accounts' hashes.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        super::secrets::create_private(path)?;
        super::secrets::give_to_dir_owner(path)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        super::secrets::private_file(Path::new(&file))?;
    }
    let mut conn = Connection::open(path)?;
    apply_pragmas(&conn)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Runs the pending migrations in one transaction; refuses a schema newer than ours.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for (_, migration) in &MIGRATIONS[found as usize..] {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// What opening a database with this build would do to its schema, found without
/// changing anything (`edge-node migrate --check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationPlan {
    /// The schema version the database has (0: no database yet).
    pub found: i64,
    /// The version this build writes.
    pub target: i64,
    /// The migrations that would run, in order.
    pub pending: Vec<&'static str>,
}

/// The [`MigrationPlan`] for the database at `path` (read-only; a database that does
/// not exist yet would get every migration). A schema newer than this build is
/// refused, as opening it would be.
pub fn migration_plan(path: &Path) -> Result<MigrationPlan, StoreError> {
    let found = if path.exists() {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.pragma_query_value(None, "user_version", |r| r.get(0))?
    } else {
        0
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(MigrationPlan {
        found,
        target: SCHEMA_VERSION,
        pending: MIGRATIONS[found.max(0) as usize..]
            .iter()
            .map(|(name, _)| *name)
            .collect(),
    })
}

/// Opens a read-only connection (the schema must already exist).
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "query_only", true)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Copies committed WAL pages into the database file on its own thread and
/// connection, so the writer never stalls on a checkpoint in the middle of a rush.
/// Passive checkpoints never block the writer or readers.
pub struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    pub fn spawn(path: &Path, every: std::time::Duration) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_millis(100))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "checkpoint failed; will retry");
                    }
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A small pool of read connections. Each read runs on tokio's blocking pool; the
/// semaphore bounds how many run at once (and so how many connections exist).
#[derive(Clone)]
pub struct Readers {
    inner: Arc<ReadersInner>,
}

struct ReadersInner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    pub fn new(path: &Path, size: usize) -> Self {
        Self {
            inner: Arc::new(ReadersInner {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(size.max(1)),
            }),
        }
    }

    /// Runs `f` with a read connection, off the async runtime.
    pub async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::WorkerGone)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let popped = inner.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match popped {
                Some(conn) => conn,
                None => open_reader(&inner.path)?,
            };
            let result = f(&conn);
            inner
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|_| StoreError::WorkerGone)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What durability rests on, read back from SQLite: WAL, a full fsync per commit,
    /// foreign keys enforced.
    #[test]
    fn the_writer_connection_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("d.db")).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        let synchronous: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        let foreign_keys: i64 = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), synchronous, foreign_keys), ("wal", 2, 1));
    }

    #[test]
    fn migrates_a_fresh_database_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box.db");
        let conn = open_writer(&path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        // Reopening an up-to-date database is a no-op.
        open_writer(&path).unwrap();
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box.db");
        let conn = open_writer(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = open_writer(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 1)
        );
        assert!(err.to_string().contains("newer than this build supports"));
    }
}
