//! Online backup: copies the live database page by page with SQLite's backup API while
//! the box keeps serving (WAL lets it read a consistent snapshot beside the writer).
//!
//! Restore: put the backup file as `canteen.db` in an empty data directory and start
//! `edge-node serve --data-dir <that directory>`.

use super::db::StoreError;
use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} already exists; choose a new file name")]
    Exists(std::path::PathBuf),
    #[error("no database at {0}")]
    NoDatabase(std::path::PathBuf),
    #[error("the backup failed its integrity check: {0}")]
    Integrity(String),
    #[error("writing the backup: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for BackupError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// What a finished backup holds.
#[derive(Debug)]
pub struct BackupReport {
    pub bytes: u64,
    pub outbox_last_seq: i64,
}

/// Copies the database at `db` to a new file `out`, checks it, and only then gives it
/// its final name (so a half-written file never looks like a backup).
pub fn backup(db: &Path, out: &Path) -> Result<BackupReport, BackupError> {
    if out.exists() {
        return Err(BackupError::Exists(out.to_owned()));
    }
    if !db.exists() {
        return Err(BackupError::NoDatabase(db.to_owned()));
    }
    let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    src.busy_timeout(Duration::from_secs(5))?;
    let partial = out.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    {
        let mut dst = Connection::open(&partial)?;
        // Small steps with pauses let the writer commit between them.
        Backup::new(&src, &mut dst)?.run_to_completion(256, Duration::from_millis(2), None)?;
        let check: String = dst.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(BackupError::Integrity(check));
        }
        // The copy is a plain rollback-journal file; serve switches it back to WAL.
        dst.pragma_update(None, "journal_mode", "DELETE")?;
    }
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, out)?;
    let check = Connection::open_with_flags(out, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let outbox_last_seq = super::outbox::last_seq(&check)?;
    Ok(BackupReport {
        bytes: std::fs::metadata(out)?.len(),
        outbox_last_seq,
    })
}
