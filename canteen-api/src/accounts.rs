//! The rules of accounts, the same at the box and at the cloud: what a student number,
//! a PIN, a staff user name, a name and a staff password may be, and the roster CSV
//! (`student_number,name,pin`), checked whole before anything is stored.

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

/// Shortest PIN accepted for a new or changed account. Logins are rate limited with
/// back-off, but a 4-digit PIN falls to a patient guesser within days; 6 digits take
/// years at the back-off's pace.
pub const PIN_MIN_DIGITS: usize = 6;

/// A PIN: 6 to 12 digits.
pub fn check_pin(text: &str) -> Result<(), String> {
    if !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 12 {
        return Err("PIN must be 6 to 12 digits".into());
    }
    if text.len() < PIN_MIN_DIGITS {
        return Err(format!(
            "PIN has {} digits; PINs must have at least {PIN_MIN_DIGITS} digits (issue the student a longer one)",
            text.len()
        ));
    }
    Ok(())
}

/// A staff username: 1 to 32 letters, digits, '-', '_' or '.'.
pub fn check_username(username: &str) -> Result<(), String> {
    if username.is_empty()
        || username.len() > 32
        || !username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err("username must be 1 to 32 letters, digits, '-', '_' or '.'".into());
    }
    Ok(())
}

/// A person's name: 1 to 80 characters once trimmed.
pub fn check_name(text: &str) -> Result<(), String> {
    let n = text.trim().chars().count();
    if n == 0 || n > 80 {
        return Err("name must be 1 to 80 characters".into());
    }
    Ok(())
}

/// Shortest staff password.
pub const STAFF_PASSWORD_MIN: usize = 8;

/// A staff password: 8 to 256 characters.
pub fn check_staff_password(password: &str) -> Result<(), String> {
    if password.chars().count() < STAFF_PASSWORD_MIN || password.len() > 256 {
        return Err(format!(
            "the password needs {STAFF_PASSWORD_MIN} to 256 characters"
        ));
    }
    Ok(())
}

/// One roster row as read (the PIN still in the clear).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RosterRow {
    pub student_number: String,
    pub name: String,
    pub pin: String,
}

/// A roster row that breaks a rule, by its line in the file (the header is line 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Reads a roster CSV with the header `student_number,name,pin`, checking every row
/// before returning any (names trimmed).
pub fn read_roster(input: impl std::io::Read) -> Result<Vec<RosterRow>, BadRow> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let mut rows = Vec::new();
    for (i, row) in reader.deserialize::<RosterRow>().enumerate() {
        let line = i as u64 + 2;
        let row = row.map_err(|e| BadRow {
            line,
            message: e.to_string(),
        })?;
        check_student_number(&row.student_number)
            .and_then(|()| check_name(&row.name))
            .and_then(|()| check_pin(&row.pin))
            .map_err(|message| BadRow { line, message })?;
        rows.push(RosterRow {
            name: row.name.trim().to_owned(),
            ..row
        });
    }
    Ok(rows)
}
