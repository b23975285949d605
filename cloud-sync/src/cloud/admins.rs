//! The campus admins: their accounts (argon2id), their sessions (random tokens, stored
//! only as SHA-256 digests, ending at a fixed expiry, at logout, or as soon as the
//! account is deactivated) and the audit log of what they did. Kept in the cloud's
//! database so that sessions survive a restart.

use super::db::{AsDb, DbResult, OptionalExtension, Row, params};
use super::store::{CloudStore, StoreError};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::Serialize;
use sha2::Digest;

/// What an admin may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, for every canteen.
    Admin,
    /// Reads everything, changes nothing.
    Viewer,
    /// Reads and changes the canteens named on the account, and sees no other.
    #[value(name = "canteen_manager", alias = "canteen-manager")]
    CanteenManager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::CanteenManager => "canteen_manager",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin" => Role::Admin,
            "viewer" => Role::Viewer,
            "canteen_manager" => Role::CanteenManager,
            _ => return None,
        })
    }
}

/// An admin account as the console shows it (never its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminAccount {
    pub username: String,
    pub role: Role,
    /// The canteens (node ids) of a `canteen_manager`; empty for the other roles.
    pub canteens: Vec<String>,
    pub active: bool,
}

impl AdminAccount {
    /// May this admin see canteen `node`?
    pub fn may_read(&self, node: &str) -> bool {
        match self.role {
            Role::Admin | Role::Viewer => true,
            Role::CanteenManager => self.canteens.iter().any(|c| c == node),
        }
    }

    /// May this admin see what spans the campus (every canteen, the audit log)?
    pub fn may_read_campus(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Viewer)
    }

    /// May this admin change canteen `node` (`None`: something campus-wide)?
    pub fn may_change(&self, node: Option<&str>) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Viewer => false,
            Role::CanteenManager => node.is_some_and(|n| self.canteens.iter().any(|c| c == n)),
        }
    }
}

/// A live session: whose it is and the token forms of this session must carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub account: AdminAccount,
    pub csrf: String,
    pub expires_at_ms: i64,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub username: String,
    /// What was done, e.g. `menu.edit`, `accounts.push`, `login`.
    pub action: String,
    /// The canteens it touched (empty: campus-wide or none).
    pub canteens: Vec<String>,
    /// `ok`, or why it failed.
    pub result: String,
    pub detail: String,
}

/// An admin user name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn check_username(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b))
    {
        return Err(format!(
            "user name {name:?}: 1 to 64 letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

/// Passwords of at least this many characters.
pub const PASSWORD_MIN: usize = 10;
/// And at most this many bytes (hashing is the expensive part of a login).
pub const PASSWORD_MAX: usize = 256;

fn argon() -> Argon2<'static> {
    // OWASP's argon2id minimum: 19 MiB, 2 passes.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// An argon2id PHC string of a box account's PIN or password (checked by the caller),
/// with the box's own default costs.
pub fn hash_account_secret(secret: &str) -> String {
    phc(secret).unwrap_or_default()
}

/// An argon2id PHC string of `secret` with a fresh random salt.
fn phc(secret: &str) -> Result<String, String> {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let salt = SaltString::encode_b64(&bytes).map_err(|e| e.to_string())?;
    argon()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// An argon2id PHC string of `password`, after checking its length.
pub fn hash_password(password: &str) -> Result<String, String> {
    if password.chars().count() < PASSWORD_MIN || password.len() > PASSWORD_MAX {
        return Err(format!(
            "a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters"
        ));
    }
    phc(password)
}

fn verify(password: &str, phc: &str) -> bool {
    if password.len() > PASSWORD_MAX {
        return false;
    }
    PasswordHash::new(phc).is_ok_and(|h| argon().verify_password(password.as_bytes(), &h).is_ok())
}

/// A verifier for unknown user names, so that they take as long as wrong passwords.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("not-a-password-of-anyone").unwrap_or_default());

/// A new random token (hex) and the digest stored for it.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let token = hex::encode(bytes);
    let digest = token_digest(&token);
    (token, digest)
}

pub fn token_digest(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

fn account_from_row(r: &Row) -> DbResult<AdminAccount> {
    let role: String = r.get(1)?;
    let canteens: String = r.get(2)?;
    Ok(AdminAccount {
        username: r.get(0)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        canteens: serde_json::from_str(&canteens).unwrap_or_default(),
        active: r.get::<_, i64>(3)? != 0,
    })
}

impl CloudStore {
    /// Creates the admin, or replaces the role, canteens and password of an existing
    /// one (and reactivates it).
    pub fn admin_upsert(
        &self,
        username: &str,
        role: Role,
        canteens: &[String],
        password_hash: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let canteens = if role == Role::CanteenManager {
            serde_json::to_string(canteens).unwrap_or_else(|_| "[]".into())
        } else {
            "[]".into()
        };
        self.lock()?.execute(
            "INSERT INTO admin_account (username, role, canteens, password_hash, active, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, 1, ?5)
             ON CONFLICT (username) DO UPDATE SET role = excluded.role,
                 canteens = excluded.canteens, password_hash = excluded.password_hash, active = 1",
            params![username, role.as_str(), canteens, password_hash, now_ms],
        )?;
        Ok(())
    }

    /// Deactivates (or reactivates) an admin; a deactivated admin's sessions end at
    /// once. False when there is no such admin.
    pub fn admin_set_active(&self, username: &str, active: bool) -> Result<bool, StoreError> {
        let conn = self.lock()?;
        let n = conn.execute(
            "UPDATE admin_account SET active = ?2 WHERE username = ?1",
            params![username, active as i64],
        )?;
        if !active {
            conn.execute("DELETE FROM admin_session WHERE username = ?1", [username])?;
        }
        Ok(n == 1)
    }

    pub fn admins(&self) -> Result<Vec<AdminAccount>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT username, role, canteens, active FROM admin_account ORDER BY username",
        )?;
        let rows = stmt.query_map((), account_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The active account whose password this is; `None` for an unknown, inactive
    /// or wrong one (each takes one argon2 verification).
    pub fn admin_check_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<AdminAccount>, StoreError> {
        let found = self
            .lock()?
            .query_row(
                "SELECT username, role, canteens, active, password_hash FROM admin_account
                 WHERE username = ?1",
                [username],
                |r| Ok((account_from_row(r)?, r.get::<_, String>(4)?)),
            )
            .optional()?;
        Ok(match found {
            Some((account, hash)) => (verify(password, &hash) && account.active).then_some(account),
            None => {
                let _ = verify(password, &DUMMY_HASH);
                None
            }
        })
    }

    /// Stores a session of `username` under the token's digest.
    pub fn session_create(
        &self,
        token_digest: &str,
        username: &str,
        csrf: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let conn = self.lock()?;
        // Expired sessions go when new ones come.
        conn.execute(
            "DELETE FROM admin_session WHERE expires_at_ms <= ?1",
            [now_ms],
        )?;
        conn.execute(
            "INSERT INTO admin_session (token_digest, username, csrf, created_at_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token_digest, username, csrf, now_ms, expires_at_ms],
        )?;
        Ok(())
    }

    /// The live session of this token digest, if any: not expired, of an active
    /// account.
    pub fn session(&self, token_digest: &str, now_ms: i64) -> Result<Option<Session>, StoreError> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT a.username, a.role, a.canteens, a.active, s.csrf, s.expires_at_ms
                 FROM admin_session s JOIN admin_account a ON a.username = s.username
                 WHERE s.token_digest = ?1 AND s.expires_at_ms > ?2 AND a.active = 1",
                params![token_digest, now_ms],
                |r| {
                    Ok(Session {
                        account: account_from_row(r)?,
                        csrf: r.get(4)?,
                        expires_at_ms: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// Opens a session of `username` lasting `ttl_ms`: its bearer token (stored only as
    /// a digest, with a fresh CSRF token for the console's forms).
    pub fn session_open(
        &self,
        username: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<String, StoreError> {
        let (token, digest) = new_token();
        let (csrf, _) = new_token();
        self.session_create(&digest, username, &csrf, now_ms, now_ms + ttl_ms)?;
        Ok(token)
    }

    pub fn session_delete(&self, token_digest: &str) -> Result<(), StoreError> {
        self.lock()?.execute(
            "DELETE FROM admin_session WHERE token_digest = ?1",
            [token_digest],
        )?;
        Ok(())
    }

    pub fn audit_append(
        &self,
        at_ms: i64,
        username: &str,
        action: &str,
        canteens: &[String],
        result: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.lock()?.execute(
            "INSERT INTO audit (at_ms, username, action, canteens, result, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                at_ms,
                username,
                action,
                serde_json::to_string(canteens).unwrap_or_else(|_| "[]".into()),
                result,
                detail
            ],
        )?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT id, at_ms, username, action, canteens, result, detail FROM audit
             ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            let canteens: String = r.get(4)?;
            Ok(AuditEntry {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                username: r.get(2)?,
                action: r.get(3)?,
                canteens: serde_json::from_str(&canteens).unwrap_or_default(),
                result: r.get(5)?,
                detail: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, CloudStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::store::test_store(dir.path());
        (dir, store)
    }

    #[test]
    fn a_session_lives_until_expiry_logout_or_deactivation() {
        let (_dir, store) = store();
        let hash = hash_password("correct horse battery").unwrap();
        store
            .admin_upsert("li", Role::CanteenManager, &["north".into()], &hash, 0)
            .unwrap();
        assert!(
            store
                .admin_check_password("li", "wrong password!")
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .admin_check_password("nobody", "correct horse battery")
                .unwrap()
                .is_none()
        );
        let li = store
            .admin_check_password("li", "correct horse battery")
            .unwrap()
            .unwrap();
        assert!(li.may_read("north") && !li.may_read("south"));
        assert!(li.may_change(Some("north")) && !li.may_change(None));

        let (token, digest) = new_token();
        assert_eq!(token_digest(&token), digest);
        store
            .session_create(&digest, "li", "c", 1_000, 2_000)
            .unwrap();
        assert!(store.session(&digest, 1_999).unwrap().is_some());
        assert!(store.session(&digest, 2_000).unwrap().is_none(), "expired");
        assert!(
            store.session(&token, 1_500).unwrap().is_none(),
            "the token itself is not stored"
        );

        store.admin_set_active("li", false).unwrap();
        assert!(
            store.session(&digest, 1_500).unwrap().is_none(),
            "deactivated"
        );
        assert!(
            store
                .admin_check_password("li", "correct horse battery")
                .unwrap()
                .is_none()
        );
        store.admin_set_active("li", true).unwrap();
        store
            .session_create(&digest, "li", "c", 1_000, 9_000)
            .unwrap();
        store.session_delete(&digest).unwrap();
        assert!(
            store.session(&digest, 1_500).unwrap().is_none(),
            "logged out"
        );
    }

    #[test]
    fn bad_names_and_passwords_are_refused() {
        assert!(check_username("li.wei-2").is_ok());
        for bad in ["", "li wei", "a/b", &"x".repeat(65)] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
        assert!(hash_password("short").is_err());
        assert!(hash_password(&"x".repeat(PASSWORD_MAX + 1)).is_err());
    }
}
