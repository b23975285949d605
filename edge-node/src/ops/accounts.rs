//! Accounts issued at the box: a roster import and staff accounts (the CLI and the demo
//! use these; accounts from the cloud arrive through `ops::sync`).

use crate::app::App;
use crate::session::Role;
use crate::store::accounts::{self, AccountError, StudentRecord};
use canteen_api::ids::StaffId;

/// Stores a checked roster (inserting or updating by student number); returns how
/// many rows were stored.
pub async fn import_roster(app: &App, rows: Vec<StudentRecord>) -> Result<usize, AccountError> {
    app.writer
        .write(move |ctx| accounts::upsert_students(ctx, &rows))
        .await
}

/// Creates or updates a staff account with an already hashed password.
pub async fn add_staff(
    app: &App,
    username: String,
    name: String,
    role: Role,
    password_hash: String,
) -> Result<StaffId, AccountError> {
    app.writer
        .write(move |ctx| accounts::upsert_staff(ctx, &username, &name, role, &password_hash))
        .await
}

/// Reloads the box's account states when the database's accounts changed since they
/// were loaded, e.g. by `edge-node staff add` or `roster import` run while the box
/// serves (run by housekeeping): a demotion made at the shell takes effect within
/// seconds, like one from the cloud. Returns whether it reloaded.
pub async fn refresh_states(app: &App) -> Result<bool, crate::store::StoreError> {
    use crate::store::accounts::AccountStates;
    let now = app.readers.read(AccountStates::version_in).await?;
    if !app.accounts.stale(now) {
        return Ok(false);
    }
    let fresh = app.readers.read(AccountStates::load).await?;
    app.accounts.replace(fresh);
    Ok(true)
}
