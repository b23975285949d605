//! Secrets and file modes on disk.
//!
//! The token signing key lives in its own file (`token.key`, 0600) beside the database,
//! never in it: a backup of the database cannot mint tokens. The key is made anew when
//! the file is missing (a fresh box, a restore into a new directory, `backup restore`)
//! and when it is older than the configured age, at start; a new key ends every open
//! session (students and staff log in again).
//!
//! The database, its WAL and shared-memory files, backups and key files are created
//! 0600 and the data directory 0700, whatever the umask (SQLite gives the WAL and
//! shared memory the database file's mode).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The signing key's file name in the data directory.
pub const TOKEN_KEY_FILE: &str = "token.key";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a key file (64 hex digits expected)")]
    BadKey(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretError + '_ {
    move |source| SecretError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Makes `dir` (created if missing) readable by its owner only.
pub fn private_dir(dir: &Path) -> Result<(), SecretError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// Makes an existing file readable by its owner only (older boxes made 0644 files).
pub fn private_file(path: &Path) -> Result<(), SecretError> {
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(io(path)),
    }
}

/// Creates a new empty file, 0600, failing if it exists.
pub fn create_private(path: &Path) -> Result<std::fs::File, SecretError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

/// A file the command line creates in a data directory while running as root (as an
/// operator with sudo would) is given to the directory's owner, the service's user:
/// otherwise the service could not open it. SQLite does the same for the WAL and
/// shared-memory files it creates beside a database.
pub fn give_to_dir_owner(file: &Path) -> Result<(), SecretError> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let owner = std::fs::metadata(dir).map_err(io(dir))?;
    if owner.uid() == 0 {
        return Ok(());
    }
    // Never through a link someone put in the file's place.
    std::os::unix::fs::lchown(file, Some(owner.uid()), Some(owner.gid())).map_err(io(file))
}

/// 32 random bytes as 64 hex digits.
pub fn new_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    key
}

/// Writes `key` to a new file `path` (0600), durably.
pub fn write_key(path: &Path, key: &[u8; 32]) -> Result<(), SecretError> {
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut f = create_private(&partial)?;
    f.write_all(hex::encode(key).as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(io(&partial))?;
    std::fs::rename(&partial, path).map_err(io(path))
}

/// Reads a key file written by [`write_key`].
pub fn read_key(path: &Path) -> Result<[u8; 32], SecretError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let bytes = hex::decode(text.trim()).map_err(|_| SecretError::BadKey(path.to_owned()))?;
    bytes
        .try_into()
        .map_err(|_| SecretError::BadKey(path.to_owned()))
}

/// Whether the token key was made at this start, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Kept,
    /// No key file: a new box, or a database restored into a new directory.
    Missing,
    /// The key was older than the maximum age.
    Aged,
}

/// The token signing key of the box in `data_dir`: read, or made when missing or older
/// than `max_age`.
pub fn token_key(data_dir: &Path, max_age: Duration) -> Result<([u8; 32], KeyOrigin), SecretError> {
    let path = data_dir.join(TOKEN_KEY_FILE);
    let origin = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyOrigin::Missing,
        Err(e) => return Err(io(&path)(e)),
        Ok(meta) => {
            let age = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            if age >= max_age {
                KeyOrigin::Aged
            } else {
                private_file(&path)?;
                return Ok((read_key(&path)?, KeyOrigin::Kept));
            }
        }
    };
    let key = new_key();
    if origin == KeyOrigin::Aged {
        std::fs::remove_file(&path).map_err(io(&path))?;
    }
    write_key(&path, &key)?;
    give_to_dir_owner(&path)?;
    Ok((key, origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_token_key_is_a_private_file_made_once_and_renewed_when_old() {
        let dir = tempfile::tempdir().unwrap();
        let (first, origin) = token_key(dir.path(), Duration::from_secs(3600)).unwrap();
        assert_eq!(origin, KeyOrigin::Missing);
        assert_eq!(mode(&dir.path().join(TOKEN_KEY_FILE)), 0o600);
        let (again, origin) = token_key(dir.path(), Duration::from_secs(3600)).unwrap();
        assert_eq!((again, origin), (first, KeyOrigin::Kept));
        let (renewed, origin) = token_key(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(origin, KeyOrigin::Aged);
        assert_ne!(renewed, first);
        // A key file made 0644 by hand is tightened on read.
        std::fs::set_permissions(
            dir.path().join(TOKEN_KEY_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        token_key(dir.path(), Duration::from_secs(3600)).unwrap();
        assert_eq!(mode(&dir.path().join(TOKEN_KEY_FILE)), 0o600);
        std::fs::write(dir.path().join("bad.key"), "nothex").unwrap();
        assert!(matches!(
            read_key(&dir.path().join("bad.key")),
            Err(SecretError::BadKey(_))
        ));
    }
}
