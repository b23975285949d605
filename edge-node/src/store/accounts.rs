//! Accounts: the student roster and staff. (Identity will flow down from the cloud;
//! for now the box's CLI imports the roster and adds staff.)

use super::db::StoreError;
use super::{Effect, WriteCtx};
use crate::session::{HashCost, Role, hash_secret};
use canteen_api::ids::{StaffId, StudentId};
use rusqlite::{Connection, OptionalExtension, params};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("line {line}: {message}")]
    BadRow { line: u64, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("reading the CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] super::WriteError),
}

impl From<rusqlite::Error> for AccountError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

pub use canteen_api::accounts::{
    PIN_MIN_DIGITS, check_name, check_pin, check_student_number, check_username,
};

/// One roster row, with the PIN already hashed.
#[derive(Debug, Clone)]
pub struct StudentRecord {
    pub student_number: String,
    pub name: String,
    pub pin_hash: String,
}

/// Reads a roster CSV with the header `student_number,name,pin`, validating every row
/// before anything is stored.
pub fn read_roster_csv(
    input: impl std::io::Read,
    cost: HashCost,
) -> Result<Vec<StudentRecord>, AccountError> {
    let rows = canteen_api::accounts::read_roster(input).map_err(|bad| AccountError::BadRow {
        line: bad.line,
        message: bad.message,
    })?;
    Ok(rows
        .into_iter()
        .map(|r| StudentRecord {
            pin_hash: hash_secret(&r.pin, cost),
            student_number: r.student_number,
            name: r.name,
        })
        .collect())
}

/// Inserts or updates students by student number. Returns how many rows were written.
pub fn upsert_students(
    ctx: &mut WriteCtx<'_>,
    students: &[StudentRecord],
) -> Result<usize, AccountError> {
    let mut stmt = ctx.conn.prepare_cached(
        "INSERT INTO student (id, student_number, name, pin_hash) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (student_number) DO UPDATE SET name = ?3, pin_hash = ?4, active = 1
         RETURNING id, blocked_reason",
    )?;
    let mut changed = Vec::with_capacity(students.len());
    for s in students {
        let (id, blocked): (String, Option<String>) = stmt.query_row(
            params![
                StudentId::new().to_string(),
                s.student_number,
                s.name,
                s.pin_hash
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        changed.push((parse_id(&id)?, AccountState::student(true, blocked)));
    }
    drop(stmt);
    ctx.effect(Effect::Accounts(changed));
    Ok(students.len())
}

/// Adds a staff account or resets its password and role.
pub fn upsert_staff(
    ctx: &mut WriteCtx<'_>,
    username: &str,
    display_name: &str,
    role: Role,
    password_hash: &str,
) -> Result<StaffId, AccountError> {
    check_username(username).map_err(AccountError::Invalid)?;
    check_name(display_name).map_err(AccountError::Invalid)?;
    if role == Role::Student {
        return Err(AccountError::Invalid(
            "staff role must be staff or manager".into(),
        ));
    }
    let id: String = ctx
        .conn
        .prepare_cached(
            "INSERT INTO staff (id, username, display_name, role, password_hash) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (username) DO UPDATE SET display_name = ?3, role = ?4, password_hash = ?5, active = 1
             RETURNING id",
        )?
        .query_row(
            params![StaffId::new().to_string(), username, display_name, role.as_str(), password_hash],
            |r| r.get(0),
        )?;
    let id = parse_id(&id)?;
    ctx.effect(Effect::Accounts(vec![(
        id,
        AccountState::staff(role, true),
    )]));
    Ok(StaffId(id))
}

fn parse_id(id: &str) -> Result<uuid::Uuid, StoreError> {
    id.parse()
        .map_err(|_| StoreError::Corrupt(format!("account id {id}")))
}

/// Checks an account from the cloud with the same rules as accounts made at the box,
/// and its hash (argon2id within cost bounds: see `session::check_phc`).
fn check_cloud_account(a: &cloud_sync::proto::Account) -> Result<(), String> {
    match a.role.as_str() {
        "student" => check_student_number(&a.login)?,
        "staff" | "manager" => check_username(&a.login)?,
        other => return Err(format!("unknown role {other:?}")),
    }
    check_name(&a.name)?;
    crate::session::check_phc(&a.secret_hash)
}

/// Applies account changes from the cloud (the newest change per login wins, since
/// they arrive in cursor order). An account that breaks the rules is refused and
/// logged, the rest of the batch applies; an account made at the box (`origin =
/// 'local'`) is never overwritten. Returns how many were refused.
pub fn apply_from_cloud(
    ctx: &mut WriteCtx<'_>,
    accounts: &[cloud_sync::proto::Account],
) -> Result<usize, AccountError> {
    let mut changed = Vec::with_capacity(accounts.len());
    let mut refused = 0;
    for a in accounts {
        if let Err(why) = check_cloud_account(a) {
            refused += 1;
            tracing::warn!(login = %a.login.chars().take(40).collect::<String>(), %why, "refused an account from the cloud");
            continue;
        }
        let applied = match a.role.as_str() {
            "student" => ctx
                .conn
                .prepare_cached(
                    "INSERT INTO student (id, student_number, name, pin_hash, active, origin) VALUES (?1, ?2, ?3, ?4, ?5, 'cloud')
                     ON CONFLICT (student_number) DO UPDATE SET name = ?3, pin_hash = ?4, active = ?5
                     WHERE origin = 'cloud'
                     RETURNING id, blocked_reason",
                )?
                .query_row(
                    params![StudentId::new().to_string(), a.login, a.name, a.secret_hash, a.active],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
                )
                .optional()?
                .map(|(id, blocked)| Ok::<_, StoreError>((parse_id(&id)?, AccountState::student(a.active, blocked))))
                .transpose()?,
            _ => {
                let role = Role::parse(&a.role).unwrap_or(Role::Staff);
                ctx.conn
                    .prepare_cached(
                        "INSERT INTO staff (id, username, display_name, role, password_hash, active, origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'cloud')
                         ON CONFLICT (username) DO UPDATE SET display_name = ?3, role = ?4, password_hash = ?5, active = ?6
                         WHERE origin = 'cloud'
                         RETURNING id",
                    )?
                    .query_row(
                        params![StaffId::new().to_string(), a.login, a.name, a.role, a.secret_hash, a.active],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()?
                    .map(|id| Ok::<_, StoreError>((parse_id(&id)?, AccountState::staff(role, a.active))))
                    .transpose()?
            }
        };
        match applied {
            Some(change) => changed.push(change),
            None => {
                tracing::warn!(login = %a.login, "an account from the cloud names an account made at this box; kept the box's")
            }
        }
    }
    ctx.effect(Effect::Accounts(changed));
    Ok(refused)
}

/// What every authenticated request checks about its account: a token is honoured
/// only while its account is active (and, for students, not blocked), with the role
/// the account has now, not the one it had at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub role: Role,
    pub active: bool,
    /// Why staff blocked this student, if they did.
    pub blocked: Option<String>,
}

impl AccountState {
    pub fn student(active: bool, blocked: Option<String>) -> Self {
        Self {
            role: Role::Student,
            active,
            blocked,
        }
    }

    pub fn staff(role: Role, active: bool) -> Self {
        Self {
            role,
            active,
            blocked: None,
        }
    }
}

/// The `box_meta` key every account change bumps (a trigger, whichever process writes).
pub const ACCOUNTS_VERSION_KEY: &str = "accounts_version";

/// Every account's state, in memory: loaded at start, updated from the writer's
/// effects after each commit that changes an account, and reloaded when another
/// process (the command line) changed accounts in the database.
#[derive(Default)]
pub struct AccountStates {
    map: std::sync::RwLock<std::collections::HashMap<uuid::Uuid, AccountState>>,
    /// The accounts version the map was last loaded at.
    version: std::sync::atomic::AtomicU64,
}

impl AccountStates {
    /// The accounts version in the database.
    pub fn version_in(conn: &Connection) -> Result<u64, StoreError> {
        super::meta::get_u64(conn, ACCOUNTS_VERSION_KEY)
    }

    /// Whether the database's accounts changed since the map was loaded.
    pub fn stale(&self, version_now: u64) -> bool {
        self.version.load(std::sync::atomic::Ordering::Acquire) != version_now
    }

    /// Replaces the map with `fresh` (loaded from the database at its version).
    pub fn replace(&self, fresh: AccountStates) {
        let version = fresh.version.load(std::sync::atomic::Ordering::Acquire);
        let map = fresh.map.into_inner().unwrap_or_else(|e| e.into_inner());
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = map;
        self.version
            .store(version, std::sync::atomic::Ordering::Release);
    }

    pub fn load(conn: &Connection) -> Result<Self, StoreError> {
        let version = Self::version_in(conn)?;
        let mut map = std::collections::HashMap::new();
        let mut stmt = conn.prepare("SELECT id, active, blocked_reason FROM student")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?, r.get(2)?))
        })?;
        for row in rows {
            let (id, active, blocked) = row?;
            map.insert(parse_id(&id)?, AccountState::student(active, blocked));
        }
        let mut stmt = conn.prepare("SELECT id, role, active FROM staff")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })?;
        for row in rows {
            let (id, role, active) = row?;
            let role = Role::parse(&role)
                .ok_or_else(|| StoreError::Corrupt(format!("staff role {role}")))?;
            map.insert(parse_id(&id)?, AccountState::staff(role, active));
        }
        Ok(Self {
            map: std::sync::RwLock::new(map),
            version: std::sync::atomic::AtomicU64::new(version),
        })
    }

    pub fn get(&self, id: uuid::Uuid) -> Option<AccountState> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Adds an account the box has not seen (made by another process, e.g. the command
    /// line, while the box runs); an account already known is left as it is.
    pub fn insert_if_absent(&self, id: uuid::Uuid, state: AccountState) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_insert(state);
    }

    pub fn apply(&self, changed: Vec<(uuid::Uuid, AccountState)>) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for (id, state) in changed {
            map.insert(id, state);
        }
    }
}

/// A student found by student number: id and block reason.
pub fn student_by_number(
    conn: &Connection,
    student_number: &str,
) -> Result<Option<(StudentId, Option<String>)>, StoreError> {
    let row: Option<(String, Option<String>)> = conn
        .prepare_cached("SELECT id, blocked_reason FROM student WHERE student_number = ?1")?
        .query_row([student_number], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(id, reason)| Ok((StudentId(parse_id(&id)?), reason)))
        .transpose()
}

/// Why staff blocked a student, if they did.
pub fn blocked_reason(conn: &Connection, student: StudentId) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT blocked_reason FROM student WHERE id = ?1")?
        .query_row([student.to_string()], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten())
}

/// Blocks (with a reason) or unblocks a student, and records it in the outbox.
pub fn set_block(
    ctx: &mut WriteCtx<'_>,
    student_number: &str,
    reason: Option<&str>,
    staff: StaffId,
) -> Result<Option<StudentId>, StoreError> {
    let row: Option<(String, bool)> = ctx
        .conn
        .prepare_cached(
            "UPDATE student SET blocked_reason = ?2, blocked_at = CASE WHEN ?2 IS NULL THEN NULL ELSE ?3 END
             WHERE student_number = ?1 RETURNING id, active",
        )?
        .query_row(
            params![student_number, reason, crate::core::clock::ts(ctx.now)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((id, active)) = row else {
        return Ok(None);
    };
    let id = StudentId(parse_id(&id)?);
    super::outbox::append(
        ctx,
        canteen_api::events::EventPayload::AccountBlock(canteen_api::events::AccountBlock {
            v: canteen_api::events::EVENT_VERSION,
            student_id: id,
            student_number: student_number.to_owned(),
            blocked: reason.is_some(),
            reason: reason.map(str::to_owned),
            staff_id: staff,
        }),
    )?;
    ctx.effect(Effect::Accounts(vec![(
        id.0,
        AccountState::student(active, reason.map(str::to_owned)),
    )]));
    Ok(Some(id))
}

/// What login needs to know about an account.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub id: uuid::Uuid,
    pub name: String,
    pub role: Role,
    pub secret_hash: String,
    /// Why staff blocked this student, if they did.
    pub blocked: Option<String>,
}

pub fn student_credentials(
    conn: &Connection,
    student_number: &str,
) -> Result<Option<Credentials>, StoreError> {
    let row: Option<(String, String, String, Option<String>)> = conn
        .prepare_cached(
            "SELECT id, name, pin_hash, blocked_reason FROM student WHERE student_number = ?1 AND active = 1",
        )?
        .query_row([student_number], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    row.map(|(id, name, secret_hash, blocked)| {
        Ok(Credentials {
            id: id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("student id {id}")))?,
            name,
            role: Role::Student,
            secret_hash,
            blocked,
        })
    })
    .transpose()
}

pub fn staff_credentials(
    conn: &Connection,
    username: &str,
) -> Result<Option<Credentials>, StoreError> {
    let row: Option<(String, String, String, String)> = conn
        .prepare_cached("SELECT id, display_name, role, password_hash FROM staff WHERE username = ?1 AND active = 1")?
        .query_row([username], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    row.map(|(id, name, role, secret_hash)| {
        Ok(Credentials {
            id: id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("staff id {id}")))?,
            name,
            role: Role::parse(&role)
                .ok_or_else(|| StoreError::Corrupt(format!("staff role {role}")))?,
            secret_hash,
            blocked: None,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roster_rows_are_validated_with_line_numbers() {
        let cost = HashCost {
            memory_kib: 8,
            passes: 1,
        };
        let ok = "student_number,name,pin\n2024001,Li Hua,135790\n2024002, Wang Fang ,567890\n";
        let rows = read_roster_csv(ok.as_bytes(), cost).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].name, "Wang Fang");
        let bad = "student_number,name,pin\n2024001,Li Hua,135790\n2024002,Wang,12\n";
        let err = read_roster_csv(bad.as_bytes(), cost)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("PIN"), "{err}");
        // A roster made for the old 4-digit rule is refused, naming the row and the rule.
        let short = "student_number,name,pin\n2024001,Li Hua,1234\n";
        let err = read_roster_csv(short.as_bytes(), cost)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("at least 6 digits"),
            "{err}"
        );
    }
}
