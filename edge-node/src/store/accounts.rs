//! Accounts: the student roster and staff. (Identity will flow down from the cloud;
//! for now the box's CLI imports the roster and adds staff.)

use super::WriteCtx;
use super::db::StoreError;
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

/// A student number: 1 to 32 letters, digits or dashes.
pub fn check_student_number(text: &str) -> Result<(), String> {
    if text.is_empty()
        || text.len() > 32
        || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err("student number must be 1 to 32 letters, digits or dashes".into());
    }
    Ok(())
}

/// A PIN: 4 to 12 digits.
pub fn check_pin(text: &str) -> Result<(), String> {
    if !(4..=12).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("PIN must be 4 to 12 digits".into());
    }
    Ok(())
}

fn check_name(text: &str) -> Result<(), String> {
    let n = text.trim().chars().count();
    if n == 0 || n > 80 {
        return Err("name must be 1 to 80 characters".into());
    }
    Ok(())
}

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
    #[derive(serde::Deserialize)]
    struct Row {
        student_number: String,
        name: String,
        pin: String,
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let mut rows = Vec::new();
    for (i, row) in reader.deserialize::<Row>().enumerate() {
        let line = i as u64 + 2;
        let row = row.map_err(|e| AccountError::BadRow {
            line,
            message: e.to_string(),
        })?;
        let check = check_student_number(&row.student_number)
            .and_then(|()| check_name(&row.name))
            .and_then(|()| check_pin(&row.pin));
        check.map_err(|message| AccountError::BadRow { line, message })?;
        rows.push(row);
    }
    Ok(rows
        .into_iter()
        .map(|r| StudentRecord {
            pin_hash: hash_secret(&r.pin, cost),
            student_number: r.student_number,
            name: r.name.trim().to_owned(),
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
         ON CONFLICT (student_number) DO UPDATE SET name = ?3, pin_hash = ?4, active = 1",
    )?;
    for s in students {
        stmt.execute(params![
            StudentId::new().to_string(),
            s.student_number,
            s.name,
            s.pin_hash
        ])?;
    }
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
    if username.is_empty()
        || username.len() > 32
        || !username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(AccountError::Invalid(
            "username must be 1 to 32 letters, digits, '-', '_' or '.'".into(),
        ));
    }
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
    id.parse()
        .map_err(|_| AccountError::Store(StoreError::Corrupt(format!("staff id {id}"))))
}

/// Applies account changes from the cloud (the newest change per login wins, since
/// they arrive in cursor order).
pub fn apply_from_cloud(
    ctx: &mut WriteCtx<'_>,
    accounts: &[cloud_sync::proto::Account],
) -> Result<(), AccountError> {
    for a in accounts {
        match a.role.as_str() {
            "student" => {
                ctx.conn
                    .prepare_cached(
                        "INSERT INTO student (id, student_number, name, pin_hash, active) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (student_number) DO UPDATE SET name = ?3, pin_hash = ?4, active = ?5",
                    )?
                    .execute(params![StudentId::new().to_string(), a.login, a.name, a.secret_hash, a.active])?;
            }
            "staff" | "manager" => {
                ctx.conn
                    .prepare_cached(
                        "INSERT INTO staff (id, username, display_name, role, password_hash, active) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (username) DO UPDATE SET display_name = ?3, role = ?4, password_hash = ?5, active = ?6",
                    )?
                    .execute(params![StaffId::new().to_string(), a.login, a.name, a.role, a.secret_hash, a.active])?;
            }
            other => {
                tracing::warn!(role = other, login = %a.login, "ignored an account with an unknown role")
            }
        }
    }
    Ok(())
}

/// What login needs to know about an account.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub id: uuid::Uuid,
    pub name: String,
    pub role: Role,
    pub secret_hash: String,
}

pub fn student_credentials(
    conn: &Connection,
    student_number: &str,
) -> Result<Option<Credentials>, StoreError> {
    let row: Option<(String, String, String)> = conn
        .prepare_cached(
            "SELECT id, name, pin_hash FROM student WHERE student_number = ?1 AND active = 1",
        )?
        .query_row([student_number], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    row.map(|(id, name, secret_hash)| {
        Ok(Credentials {
            id: id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("student id {id}")))?,
            name,
            role: Role::Student,
            secret_hash,
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
        let ok = "student_number,name,pin\n2024001,Li Hua,1234\n2024002, Wang Fang ,5678\n";
        let rows = read_roster_csv(ok.as_bytes(), cost).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].name, "Wang Fang");
        let bad = "student_number,name,pin\n2024001,Li Hua,1234\n2024002,Wang,12\n";
        let err = read_roster_csv(bad.as_bytes(), cost)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("PIN"), "{err}");
    }
}
