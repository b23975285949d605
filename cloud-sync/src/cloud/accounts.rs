//! Accounts for the boxes: a student roster imported once for the campus from CSV
//! (every row checked before any is stored), staff accounts of named canteens (a staff
//! login of one canteen does not work at another: the other boxes receive the account
//! inactive, without its hash), and deactivations.
//! PINs and passwords reach the cloud in the clear over the admin listener (loopback or
//! TLS) and are hashed here (argon2id) before they are stored or sent to any box. A
//! deactivation reaches each box on its next sync, and ends the account's sessions
//! there.

use super::admin::{audit, on_blocking_pool};
use super::admins::{AdminAccount, hash_account_secret};
use super::auth::AdminError;
use super::server::Cloud;
use crate::proto::Account;
use axum::http::StatusCode;
use canteen_api::accounts as rules;
use serde::{Deserialize, Serialize};

/// The most students one roster import may hold.
pub const ROSTER_MAX: usize = 50_000;

#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    /// Accounts written.
    pub accounts: usize,
    /// The accounts stream's cursor after them (boxes are synced up to it).
    pub cursor: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffAccount {
    pub username: String,
    pub name: String,
    /// `staff` or `manager`.
    pub role: String,
    pub password: String,
    /// The canteens (node ids) where the account works: at least one.
    pub canteens: Vec<String>,
}

/// Canteens one staff account may name, at most.
pub const STAFF_CANTEENS_MAX: usize = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deactivation {
    /// `student` or `staff` (staff covers managers).
    pub role: String,
    /// The student number or staff user name.
    pub login: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> AdminError {
    AdminError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// Only campus admins issue accounts: they are valid at every canteen.
fn may_issue(account: &AdminAccount) -> Result<(), AdminError> {
    if account.may_change(None) {
        Ok(())
    } else {
        Err(AdminError::forbidden(format!(
            "{} ({}) may not issue accounts: they are campus-wide",
            account.username,
            account.role.as_str()
        )))
    }
}

/// Stores accounts valid at `canteens` (every canteen when empty) and wakes the boxes'
/// account streams.
async fn issue(
    cloud: &Cloud,
    accounts: Vec<Account>,
    canteens: Vec<String>,
) -> Result<Issued, AdminError> {
    let store = cloud.store.clone();
    let n = accounts.len();
    let cursor = on_blocking_pool(move || store.add_accounts_for(&accounts, &canteens))
        .await?
        .map_err(AdminError::internal)?;
    cloud.accounts_changed.notify_waiters();
    Ok(Issued {
        accounts: n,
        cursor,
    })
}

async fn hashed(secrets: Vec<String>) -> Result<Vec<String>, AdminError> {
    on_blocking_pool(move || secrets.iter().map(|s| hash_account_secret(s)).collect()).await
}

/// Imports a roster CSV (`student_number,name,pin`) for every canteen.
pub async fn import_roster(
    cloud: &Cloud,
    who: &AdminAccount,
    csv: &str,
) -> Result<Issued, AdminError> {
    let result = async {
        may_issue(who)?;
        let rows = rules::read_roster(csv.as_bytes())
            .map_err(|bad| refused("bad_roster", bad.to_string()))?;
        if rows.is_empty() {
            return Err(refused("bad_roster", "the roster has no students"));
        }
        if rows.len() > ROSTER_MAX {
            return Err(refused(
                "bad_roster",
                format!(
                    "{} students; import at most {ROSTER_MAX} at a time",
                    rows.len()
                ),
            ));
        }
        let hashes = hashed(rows.iter().map(|r| r.pin.clone()).collect()).await?;
        let accounts = rows
            .into_iter()
            .zip(hashes)
            .map(|(r, secret_hash)| Account {
                role: "student".into(),
                login: r.student_number,
                name: r.name,
                secret_hash,
                active: true,
            })
            .collect();
        issue(cloud, accounts, Vec::new()).await
    }
    .await;
    let detail = match &result {
        Ok(i) => format!("{} student(s)", i.accounts),
        Err(_) => String::new(),
    };
    audit(cloud, &who.username, "roster.import", &[], &result, detail).await;
    result
}

/// Creates a staff account of named canteens (or resets its name, role, password and
/// canteens). A canteen manager issues accounts of their own canteens only.
pub async fn staff_account(
    cloud: &Cloud,
    who: &AdminAccount,
    mut staff: StaffAccount,
) -> Result<Issued, AdminError> {
    let username = staff.username.clone();
    staff.canteens.sort();
    staff.canteens.dedup();
    let canteens = staff.canteens.clone();
    let result = async {
        if who.role == super::admins::Role::Viewer {
            return Err(AdminError::forbidden("a viewer cannot issue accounts"));
        }
        if staff.canteens.is_empty() || staff.canteens.len() > STAFF_CANTEENS_MAX {
            return Err(refused(
                "bad_account",
                format!("name the canteens where the account works (1 to {STAFF_CANTEENS_MAX})"),
            ));
        }
        let known = super::admin::visible_nodes(cloud, who).await?;
        for c in &staff.canteens {
            if !who.may_change(Some(c)) {
                return Err(AdminError::forbidden(format!(
                    "{} ({}) may not issue accounts of {c:?}",
                    who.username,
                    who.role.as_str()
                )));
            }
            if !known.iter().any(|n| &n.node_id == c) {
                return Err(refused("bad_account", format!("no canteen {c:?}")));
            }
        }
        if !["staff", "manager"].contains(&staff.role.as_str()) {
            return Err(refused("bad_account", "role must be staff or manager"));
        }
        rules::check_username(&staff.username)
            .and_then(|()| rules::check_name(&staff.name))
            .and_then(|()| rules::check_staff_password(&staff.password))
            .map_err(|m| refused("bad_account", m))?;
        let hash = hashed(vec![staff.password]).await?.remove(0);
        issue(
            cloud,
            vec![Account {
                role: staff.role,
                login: staff.username,
                name: staff.name.trim().to_owned(),
                secret_hash: hash,
                active: true,
            }],
            staff.canteens,
        )
        .await
    }
    .await;
    audit(
        cloud,
        &who.username,
        "staff.save",
        &canteens,
        &result,
        username,
    )
    .await;
    result
}

/// Deactivates a student or staff account the cloud issued, at every canteen.
pub async fn deactivate(
    cloud: &Cloud,
    who: &AdminAccount,
    d: Deactivation,
) -> Result<Issued, AdminError> {
    let what = format!("{} {}", d.role, d.login);
    let result = async {
        may_issue(who)?;
        let student = match d.role.as_str() {
            "student" => true,
            "staff" => false,
            _ => return Err(refused("bad_account", "role must be student or staff")),
        };
        let store = cloud.store.clone();
        let login = d.login.clone();
        let (latest, canteens) = on_blocking_pool(move || {
            Ok::<_, super::store::StoreError>((
                store.latest_account(&login, student)?,
                store.account_canteens(&login, student)?,
            ))
        })
        .await?
        .map_err(AdminError::internal)?;
        let Some(mut account) = latest else {
            return Err(AdminError::new(
                StatusCode::NOT_FOUND,
                "no_such_account",
                format!("the cloud has issued no {} account {:?}", d.role, d.login),
            ));
        };
        // Name, role and hash stay as issued; an inactive account cannot log in.
        account.active = false;
        issue(cloud, vec![account], canteens).await
    }
    .await;
    audit(
        cloud,
        &who.username,
        "account.deactivate",
        &[],
        &result,
        what,
    )
    .await;
    result
}
