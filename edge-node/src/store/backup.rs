//! Online backup and restore.
//!
//! A backup is `VACUUM INTO` from a read connection: one read transaction, so it is a
//! consistent snapshot however busy the writer is (WAL lets the writer go on beside
//! it), and it always completes; SQLite's page-by-page backup API restarts whenever
//! the box commits, and on a busy box of a gigabyte never finishes. Progress (bytes
//! written) goes to a callback every second.
//!
//! A backup may be encrypted with a key file (`edge-node backup-key`): XChaCha20-Poly1305
//! in the STREAM construction, 64 KiB chunks, so a truncated or altered file is refused
//! on restore instead of restoring part of a canteen. Files are created 0600.
//!
//! Restore (`edge-node restore`): into a data directory without a database; the token
//! signing key there is removed, so the restored box makes a new one and no session
//! from before the restore is honoured.

use super::db::StoreError;
use super::secrets::{self, SecretError};
use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use rusqlite::{Connection, OpenFlags};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The first bytes of an encrypted backup.
const MAGIC: &[u8; 8] = b"CEBKUP01";
/// Plaintext bytes per encrypted chunk.
const CHUNK: usize = 64 * 1024;
/// The STREAM nonce prefix: XChaCha20's 24 bytes less the 5 of the counter and flag.
const NONCE_PREFIX: usize = 19;
/// Poly1305 tag per chunk.
const TAG: usize = 16;
/// The copy is flushed to disk every this many bytes while it is written.
const FLUSH_EVERY: u64 = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} already exists; choose a new file name")]
    Exists(PathBuf),
    #[error("no database at {0}")]
    NoDatabase(PathBuf),
    #[error("{0} already holds a database; restore into an empty data directory")]
    DataDirInUse(PathBuf),
    #[error("the backup failed its integrity check: {0}")]
    Integrity(String),
    #[error("{0} is encrypted; give the key file it was made with (--key)")]
    NeedsKey(PathBuf),
    #[error("{0} could not be decrypted: wrong key file, or the file is damaged or cut short")]
    Decrypt(PathBuf),
    #[error("{0} is not a backup of a canteen box")]
    NotABackup(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for BackupError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a finished backup holds.
#[derive(Debug)]
pub struct BackupReport {
    pub bytes: u64,
    pub outbox_last_seq: i64,
    pub encrypted: bool,
}

/// Copies the database at `db` to a new file `out` (encrypted with the key in
/// `key_file`, if given), checks the copy, and only then gives it its final name, so a
/// half-written file never looks like a backup. `progress` is called about every
/// second with the bytes copied so far and the size of the live database.
pub fn backup(
    db: &Path,
    out: &Path,
    key_file: Option<&Path>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<BackupReport, BackupError> {
    if out.exists() {
        return Err(BackupError::Exists(out.to_owned()));
    }
    if !db.exists() {
        return Err(BackupError::NoDatabase(db.to_owned()));
    }
    let key = key_file.map(secrets::read_key).transpose()?;
    // The plain copy is made beside the database (a private directory), never beside
    // an encrypted backup's destination.
    let staging = match key {
        Some(_) => db.with_file_name(format!("backup-{}.partial", uuid::Uuid::now_v7().simple())),
        None => out.with_extension("partial"),
    };
    let _ = std::fs::remove_file(&staging);
    let result = snapshot(db, &staging, progress).and_then(|outbox_last_seq| {
        match &key {
            None => publish(&staging, out)?,
            Some(key) => {
                let partial = out.with_extension("partial");
                let _ = std::fs::remove_file(&partial);
                let sealed =
                    encrypt_file(&staging, &partial, key).and_then(|()| publish(&partial, out));
                if sealed.is_err() {
                    let _ = std::fs::remove_file(&partial);
                }
                sealed?;
            }
        }
        Ok(outbox_last_seq)
    });
    if key.is_some() || result.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    let outbox_last_seq = result?;
    Ok(BackupReport {
        bytes: std::fs::metadata(out).map_err(io(out))?.len(),
        outbox_last_seq,
        encrypted: key.is_some(),
    })
}

/// Gives the finished file `partial` its name `out`, never replacing a file that
/// appeared there meanwhile (a hard link fails if the name is taken).
fn publish(partial: &Path, out: &Path) -> Result<(), BackupError> {
    match std::fs::hard_link(partial, out) {
        Ok(()) => std::fs::remove_file(partial).map_err(io(partial)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(partial);
            Err(BackupError::Exists(out.to_owned()))
        }
        // File systems without hard links (a FAT or exFAT stick, some network shares):
        // check, then rename.
        Err(_) if out.exists() => {
            let _ = std::fs::remove_file(partial);
            Err(BackupError::Exists(out.to_owned()))
        }
        Err(_) => std::fs::rename(partial, out).map_err(io(out)),
    }
}

/// `VACUUM INTO` a new 0600 file `to`, with progress; checks it and returns the last
/// outbox sequence number it holds.
fn snapshot(
    db: &Path,
    to: &Path,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<i64, BackupError> {
    // VACUUM INTO accepts an existing empty file: made first, it gets the private mode.
    drop(secrets::create_private(to)?);
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(Duration::from_secs(5))?;
    let total = std::fs::metadata(db).map_or(0, |m| m.len());
    let done = AtomicBool::new(false);
    let target = to.to_str().ok_or_else(|| BackupError::Io {
        path: to.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not UTF-8"),
    })?;
    let copied = std::thread::scope(|scope| {
        scope.spawn(|| {
            // Flushes the copy to disk as it grows: one flush of a gigabyte at the end
            // would stall the box's own commits (each waits for its WAL fsync behind it).
            let mut flushed = 0u64;
            let mut reported = std::time::Instant::now();
            let file = std::fs::File::open(to).ok();
            while !done.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_millis(100));
                let written = std::fs::metadata(to).map_or(0, |m| m.len());
                if written >= flushed + FLUSH_EVERY {
                    if let Some(f) = &file {
                        let _ = f.sync_data();
                    }
                    flushed = written;
                }
                if reported.elapsed() >= Duration::from_secs(1) && !done.load(Ordering::Relaxed) {
                    progress(written, total);
                    reported = std::time::Instant::now();
                }
            }
        });
        let copied = src.execute("VACUUM INTO ?1", [target]);
        done.store(true, Ordering::Relaxed);
        copied
    });
    copied?;
    let check = Connection::open(to)?;
    let verdict: String = check.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(BackupError::Integrity(verdict));
    }
    let last = super::outbox::last_seq(&check)?;
    // A plain rollback-journal file; serve switches it back to WAL.
    check.pragma_update(None, "journal_mode", "DELETE")?;
    drop(check);
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(io(to))?;
    progress(std::fs::metadata(to).map_or(0, |m| m.len()), total);
    Ok(last)
}

fn encrypt_file(from: &Path, to: &Path, key: &[u8; 32]) -> Result<(), BackupError> {
    let mut input = std::fs::File::open(from).map_err(io(from))?;
    let mut output = std::io::BufWriter::new(secrets::create_private(to)?);
    let prefix: [u8; NONCE_PREFIX] = {
        let mut p = [0u8; NONCE_PREFIX];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut p);
        p
    };
    output.write_all(MAGIC).map_err(io(to))?;
    output.write_all(&prefix).map_err(io(to))?;
    let aead = XChaCha20Poly1305::new(key.into());
    let mut stream = Some(EncryptorBE32::from_aead(aead, (&prefix).into()));
    let failed = || BackupError::Decrypt(to.to_owned());
    chunked(&mut input, CHUNK, &mut output, (from, to), |chunk, last| {
        if last {
            stream.take().ok_or_else(failed)?.encrypt_last(chunk)
        } else {
            stream.as_mut().ok_or_else(failed)?.encrypt_next(chunk)
        }
        .map_err(|_| failed())
    })?;
    finish(output, to)
}

/// Reads `input` in chunks of `len` bytes and writes `each(chunk, last)` of every one
/// to `output`; the last chunk (the only one that may be short, or empty) is marked,
/// as the STREAM construction needs. `paths` (input, output) name I/O errors.
fn chunked(
    input: &mut impl Read,
    len: usize,
    output: &mut impl Write,
    paths: (&Path, &Path),
    mut each: impl FnMut(&[u8], bool) -> Result<Vec<u8>, BackupError>,
) -> Result<(), BackupError> {
    let mut chunk = vec![0u8; len];
    let mut filled = read_full(input, &mut chunk).map_err(io(paths.0))?;
    loop {
        let mut next = vec![0u8; len];
        let next_filled = if filled == len {
            read_full(input, &mut next).map_err(io(paths.0))?
        } else {
            0
        };
        let last = next_filled == 0;
        output
            .write_all(&each(&chunk[..filled], last)?)
            .map_err(io(paths.1))?;
        if last {
            return Ok(());
        }
        chunk = next;
        filled = next_filled;
    }
}

/// Flushes and syncs a written file.
fn finish(output: std::io::BufWriter<std::fs::File>, path: &Path) -> Result<(), BackupError> {
    let file = output.into_inner().map_err(|e| BackupError::Io {
        path: path.to_owned(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(path))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn decrypt_file(from: &Path, to: &Path, key: &[u8; 32]) -> Result<(), BackupError> {
    let mut input = std::io::BufReader::new(std::fs::File::open(from).map_err(io(from))?);
    let mut head = [0u8; MAGIC.len() + NONCE_PREFIX];
    input
        .read_exact(&mut head)
        .map_err(|_| BackupError::NotABackup(from.to_owned()))?;
    let prefix: [u8; NONCE_PREFIX] = head[MAGIC.len()..]
        .try_into()
        .map_err(|_| BackupError::NotABackup(from.to_owned()))?;
    let aead = XChaCha20Poly1305::new(key.into());
    let mut stream = Some(DecryptorBE32::from_aead(aead, (&prefix).into()));
    let mut output = std::io::BufWriter::new(secrets::create_private(to)?);
    let bad = || BackupError::Decrypt(from.to_owned());
    chunked(
        &mut input,
        CHUNK + TAG,
        &mut output,
        (from, to),
        |chunk, last| {
            if last {
                stream.take().ok_or_else(bad)?.decrypt_last(chunk)
            } else {
                stream.as_mut().ok_or_else(bad)?.decrypt_next(chunk)
            }
            .map_err(|_| bad())
        },
    )?;
    finish(output, to)
}

/// Whether `path` starts like an encrypted backup.
fn is_encrypted(path: &Path) -> Result<bool, BackupError> {
    let mut head = [0u8; MAGIC.len()];
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    Ok(read_full(&mut f, &mut head).map_err(io(path))? == MAGIC.len() && &head == MAGIC)
}

/// Restores `backup` (decrypting it with `key_file` when it is encrypted) as the
/// database of `data_dir`, which must hold none; checks it; removes the data
/// directory's token key so the box makes a new one. Returns the last outbox sequence
/// number restored.
pub fn restore(
    backup: &Path,
    data_dir: &Path,
    db_file: &str,
    key_file: Option<&Path>,
) -> Result<i64, BackupError> {
    let db = data_dir.join(db_file);
    if db.exists() {
        return Err(BackupError::DataDirInUse(db));
    }
    secrets::private_dir(data_dir)?;
    let partial = data_dir.join(format!("{db_file}.restoring"));
    let _ = std::fs::remove_file(&partial);
    let copied = if is_encrypted(backup)? {
        let key = key_file.ok_or_else(|| BackupError::NeedsKey(backup.to_owned()))?;
        decrypt_file(backup, &partial, &secrets::read_key(key)?)
    } else {
        let mut out = secrets::create_private(&partial)?;
        std::fs::File::open(backup)
            .and_then(|mut f| std::io::copy(&mut f, &mut out))
            .and_then(|_| out.sync_all())
            .map_err(io(backup))
    };
    // Checked, then made a new incarnation: its events after `last` will differ from
    // the ones the cloud may hold under the same numbers (see `meta`).
    let renewed = copied.and_then(|()| {
        let not_a_backup = |_| BackupError::NotABackup(backup.to_owned());
        let conn = Connection::open(&partial).map_err(not_a_backup)?;
        let verdict: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(not_a_backup)?;
        if verdict != "ok" {
            return Err(BackupError::Integrity(verdict));
        }
        let last = super::outbox::last_seq(&conn)
            .map_err(|_| BackupError::NotABackup(backup.to_owned()))?;
        super::meta::renew_incarnation(&conn, last.max(0) as u64)?;
        conn.close().map_err(|(_, e)| e)?;
        Ok(last)
    });
    let last = match renewed {
        Ok(last) => last,
        Err(e) => {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(data_dir.join(format!("{db_file}.restoring{suffix}")));
            }
            return Err(e);
        }
    };
    // A WAL or journal left by the database that was there before (a crash is when
    // people restore) would be replayed onto the restored file: they go first.
    for suffix in ["-wal", "-shm", "-journal"] {
        let stale = data_dir.join(format!("{db_file}{suffix}"));
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&stale)(e)),
            _ => {}
        }
    }
    std::fs::rename(&partial, &db).map_err(io(&db))?;
    secrets::give_to_dir_owner(&db)?;
    let key = data_dir.join(secrets::TOKEN_KEY_FILE);
    match std::fs::remove_file(&key) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&key)(e)),
        _ => {}
    }
    Ok(last)
}

/// Makes a new backup key file (0600) at `path`, which must not exist.
pub fn make_key_file(path: &Path) -> Result<(), BackupError> {
    if path.exists() {
        return Err(BackupError::Exists(path.to_owned()));
    }
    Ok(secrets::write_key(path, &secrets::new_key())?)
}
