//! The cloud's admin HTTP side (loopback by default; TLS required anywhere else): the
//! JSON admin API (nodes and their sync state, a canteen's summary, its menu replica and
//! edits, accounts for the boxes, the audit log) and the console's pages
//! (`console`). Nothing answers without a login (`auth`): the API says 401, the console
//! sends the browser to its login page. Every change is written to the audit log with
//! who made it, the canteens it touched and how it ended.

use super::admins::{AdminAccount, AuditEntry};
use super::auth::{AdminError, AdminOptions, AdminState, ApiCaller, Auth, now_ms};
use super::server::Cloud;
use super::store::NodeRow;
use crate::proto::Account;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use crdt::menu::MenuEdit;
use crdt::settings::SettingsEdit;
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// Request bodies above this are refused (a menu push to every canteen fits).
const BODY_MAX: usize = 4 * 1024 * 1024;
/// Audit entries one request returns.
pub const AUDIT_PAGE: usize = 1000;

pub fn router(cloud: Cloud, options: AdminOptions) -> Router {
    let state = AdminState {
        cloud,
        auth: Arc::new(Auth::new(options)),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/audit", get(audit_log))
        .route("/api/sales", get(sales))
        .route("/api/fleet", get(fleet))
        .route("/api/items", get(items))
        .route("/api/reconciliation", get(reconciliation))
        .route("/api/menu/pushes", get(menu_pushes).post(menu_push))
        .route("/api/menu/resolve", post(menu_resolve))
        .route("/nodes", get(nodes))
        .route("/nodes/{node}/summary", get(summary))
        .route("/nodes/{node}/sync", get(node_sync))
        .route("/nodes/{node}/menu", get(menu))
        .route("/nodes/{node}/menu/edits", post(menu_edits))
        .route("/nodes/{node}/settings/edits", post(settings_edits))
        .route("/accounts", post(accounts))
        .route("/api/accounts/roster", post(roster))
        .route("/api/accounts/staff", post(staff_account))
        .route("/api/accounts/deactivate", post(deactivate))
        .merge(super::console::routes())
        .layer(axum::extract::DefaultBodyLimit::max(BODY_MAX))
        .with_state(state)
}

/// Runs `f` on the blocking pool (the store and argon2 never run on tokio's workers).
pub async fn on_blocking_pool<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(AdminError::internal)
}

/// `on_blocking_pool` for work whose errors are the caller's input (422).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, AdminError> {
    on_blocking_pool(f).await?.map_err(AdminError::from)
}

/// Appends to the audit log: `who` did `action` to `canteens`, ending in `result`.
pub async fn audit<T>(
    cloud: &Cloud,
    who: &str,
    action: &str,
    canteens: &[String],
    result: &Result<T, AdminError>,
    detail: String,
) {
    let outcome = match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("{}: {}", e.code, e.message),
    };
    let (store, who, action, canteens) = (
        cloud.store.clone(),
        who.to_owned(),
        action.to_owned(),
        canteens.to_vec(),
    );
    let written = tokio::task::spawn_blocking(move || {
        store.audit_append(now_ms(), &who, &action, &canteens, &outcome, &detail)
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        tracing::error!("the audit log could not be written: {written:?}");
    }
}

/// Liveness: the process answers HTTP (no login; says nothing else).
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the store answers (a replica whose database is out of reach takes no
/// traffic); 503 otherwise. No login; says nothing else.
async fn readyz(State(cloud): State<Cloud>) -> (StatusCode, &'static str) {
    let store = cloud.store.clone();
    match tokio::task::spawn_blocking(move || store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n"),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database does not answer\n",
        ),
    }
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

/// Logs in and starts a session whose token is the bearer of the JSON API.
pub async fn start_session(
    state: &AdminState,
    from: std::net::IpAddr,
    username: &str,
    password: &str,
) -> Result<(String, AdminAccount, i64), AdminError> {
    state.auth.login_attempt(from, username)?;
    let store = state.cloud.store.clone();
    let (u, p) = (username.to_owned(), password.to_owned());
    let found = blocking(move || Ok(store.admin_check_password(&u, &p)?)).await;
    let result = match found {
        Ok(Some(account)) => Ok(account),
        Ok(None) => Err(AdminError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "unknown user name or wrong password",
        )),
        Err(e) => Err(e),
    };
    let name = if super::admins::check_username(username).is_ok() {
        username
    } else {
        "(invalid user name)"
    };
    audit(
        &state.cloud,
        name,
        "login",
        &[],
        &result,
        format!("from {from}"),
    )
    .await;
    let account = result?;
    let now = now_ms();
    let ttl = state.auth.options.session_ttl.as_millis() as i64;
    let store = state.cloud.store.clone();
    let who = account.username.clone();
    let token = blocking(move || Ok(store.session_open(&who, now, ttl)?)).await?;
    Ok((token, account, now + ttl))
}

async fn login(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<LoginBody>,
) -> Result<impl IntoResponse, AdminError> {
    let (token, account, expires) =
        start_session(&state, peer.ip(), &body.username, &body.password).await?;
    Ok(Json(json!({
        "token": token,
        "expires_at_ms": expires,
        "account": account,
    })))
}

/// Ends the session with this token digest, audited as `who`'s logout.
pub async fn end_session(cloud: &Cloud, who: &str, token_digest: &str) -> Result<(), AdminError> {
    let store = cloud.store.clone();
    let digest = token_digest.to_owned();
    let result = blocking(move || Ok(store.session_delete(&digest)?)).await;
    audit(cloud, who, "logout", &[], &result, String::new()).await;
    result
}

async fn logout(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
) -> Result<impl IntoResponse, AdminError> {
    end_session(&cloud, &caller.account.username, &caller.token_digest).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(caller: ApiCaller) -> impl IntoResponse {
    Json(caller.account)
}

/// The audit log is for campus admins and viewers.
pub fn may_read_audit(account: &AdminAccount) -> Result<(), AdminError> {
    if account.may_read_campus() {
        Ok(())
    } else {
        Err(AdminError::forbidden(
            "the audit log is for campus admins and viewers",
        ))
    }
}

pub async fn audit_entries(cloud: &Cloud) -> Result<Vec<AuditEntry>, AdminError> {
    let store = cloud.store.clone();
    blocking(move || Ok(store.audit(AUDIT_PAGE)?)).await
}

async fn audit_log(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
) -> Result<impl IntoResponse, AdminError> {
    may_read_audit(&caller.account)?;
    Ok(Json(audit_entries(&cloud).await?))
}

fn readable(caller: &ApiCaller, node: &str) -> Result<(), AdminError> {
    if caller.account.may_read(node) {
        Ok(())
    } else {
        Err(AdminError::forbidden(format!(
            "{} may not see canteen {node}",
            caller.account.username
        )))
    }
}

fn changeable(caller: &ApiCaller, node: Option<&str>) -> Result<(), AdminError> {
    if caller.account.may_change(node) {
        Ok(())
    } else {
        Err(AdminError::forbidden(format!(
            "{} ({}) may not change {}",
            caller.account.username,
            caller.account.role.as_str(),
            node.map_or("campus-wide data".to_owned(), |n| format!("canteen {n}"))
        )))
    }
}

/// The canteens `account` may see, with their sync state.
pub async fn visible_nodes(
    cloud: &Cloud,
    account: &AdminAccount,
) -> Result<Vec<NodeRow>, AdminError> {
    let store = cloud.store.clone();
    let all = blocking(move || Ok(store.nodes()?)).await?;
    Ok(all
        .into_iter()
        .filter(|n| account.may_read(&n.node_id))
        .collect())
}

async fn nodes(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
) -> Result<impl IntoResponse, AdminError> {
    Ok(Json(visible_nodes(&cloud, &caller.account).await?))
}

/// A box's sync history: its timelines (a re-base after a restore starts a new one;
/// the events it lost stay counted and are marked) and refused document changes.
async fn node_sync(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    Path(node): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
    readable(&caller, &node)?;
    let store = cloud.store.clone();
    let n = node.clone();
    let timelines = blocking(move || Ok(store.timelines(&n)?)).await?;
    let refused: Vec<_> = cloud
        .docs
        .refusals(&node)
        .into_iter()
        .map(|(doc, reason)| json!({"doc": doc, "reason": reason}))
        .collect();
    Ok(Json(json!({
        "node_id": node,
        "timelines": timelines,
        "refused_documents": refused,
    })))
}

/// A business day (`?day=`), or a range of them (`?day=…&to=…`).
#[derive(Deserialize)]
pub struct DayQuery {
    pub day: Option<String>,
    pub to: Option<String>,
}

/// Every canteen the caller may see, with its link state and alerts.
async fn fleet(
    State(state): State<AdminState>,
    caller: ApiCaller,
) -> Result<impl IntoResponse, AdminError> {
    let silent = state.auth.options.alerts;
    Ok(Json(
        super::fleet::fleet(&state.cloud, &caller.account, silent).await?,
    ))
}

/// A business day's dish ranking and sold-out board across the caller's canteens.
async fn items(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    Query(q): Query<DayQuery>,
) -> Result<impl IntoResponse, AdminError> {
    Ok(Json(
        super::items::items(&cloud, &caller.account, q.day, q.to).await?,
    ))
}

/// Each canteen's business days: the box's totals against the cloud's.
async fn reconciliation(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    Query(q): Query<DayQuery>,
) -> Result<impl IntoResponse, AdminError> {
    Ok(Json(
        super::reconciliation::reconciliation(&cloud, &caller.account, q.day, q.to).await?,
    ))
}

/// The newest menu pushes with each canteen's state.
async fn menu_pushes(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
) -> Result<impl IntoResponse, AdminError> {
    Ok(Json(super::menus::pushes(&cloud, &caller.account).await?))
}

/// Pushes a dish change to several canteens.
async fn menu_push(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    Json(change): Json<super::menus::DishChange>,
) -> Result<impl IntoResponse, AdminError> {
    let outcome = super::menus::push(&cloud, &caller.account, change).await?;
    Ok((StatusCode::CREATED, Json(outcome)))
}

#[derive(Deserialize)]
struct ResolveBody {
    canteen: String,
    path: Vec<String>,
    value: String,
}

/// Settles a conflicted menu field at a canteen on one of its values.
async fn menu_resolve(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    Json(body): Json<ResolveBody>,
) -> Result<impl IntoResponse, AdminError> {
    super::menus::resolve(&cloud, &caller.account, body.canteen, body.path, body.value).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A business day's sales per canteen the caller may see, and for the campus.
async fn sales(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    Query(q): Query<DayQuery>,
) -> Result<impl IntoResponse, AdminError> {
    Ok(Json(
        super::sales::sales(&cloud, &caller.account, q.day, q.to).await?,
    ))
}

async fn summary(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    Path(node): Path<String>,
    Query(q): Query<DayQuery>,
) -> Result<impl IntoResponse, AdminError> {
    readable(&caller, &node)?;
    if let Some(day) = &q.day {
        super::sales::check_day(day)?;
    }
    let store = cloud.store.clone();
    Ok(Json(
        blocking(move || Ok(store.summary(&node, q.day.as_deref())?)).await?,
    ))
}

async fn menu(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    Path(node): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
    readable(&caller, &node)?;
    let docs = cloud.docs.clone();
    let (view, conflicts) = blocking(move || docs.menu(&node)).await?;
    Ok(Json(json!({"items": view.items, "conflicts": conflicts})))
}

/// Applies `count` edits to a document of canteen `node` if the caller may change it,
/// and audits the attempt as `action`.
async fn edit_document<T: Send + 'static>(
    cloud: &Cloud,
    caller: &ApiCaller,
    node: String,
    action: &str,
    count: usize,
    edit: impl FnOnce(&super::docs::DocHub, &str) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, AdminError> {
    let result = match changeable(caller, Some(&node)) {
        Ok(()) => {
            let (docs, n) = (cloud.docs.clone(), node.clone());
            blocking(move || edit(&docs, &n)).await
        }
        Err(e) => Err(e),
    };
    let canteens = [node];
    let detail = format!("{count} edit(s)");
    audit(
        cloud,
        &caller.account.username,
        action,
        &canteens,
        &result,
        detail,
    )
    .await;
    result
}

async fn menu_edits(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    Path(node): Path<String>,
    Json(edits): Json<Vec<MenuEdit>>,
) -> Result<impl IntoResponse, AdminError> {
    let count = edits.len();
    let view = edit_document(&cloud, &caller, node, "menu.edit", count, move |docs, n| {
        docs.edit_menu(n, &edits, now_ms())
    })
    .await?;
    Ok(Json(json!({"items": view.items})))
}

async fn settings_edits(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    Path(node): Path<String>,
    Json(edits): Json<Vec<SettingsEdit>>,
) -> Result<impl IntoResponse, AdminError> {
    let count = edits.len();
    let view = edit_document(
        &cloud,
        &caller,
        node,
        "settings.edit",
        count,
        move |docs, n| docs.edit_settings(n, &edits, now_ms()),
    )
    .await?;
    Ok(Json(view))
}

/// A student roster (CSV `student_number,name,pin`) for every canteen.
async fn roster(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    csv: String,
) -> Result<impl IntoResponse, AdminError> {
    Ok(Json(
        super::accounts::import_roster(&cloud, &caller.account, &csv).await?,
    ))
}

/// A staff account for every canteen, its password hashed here.
async fn staff_account(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    Json(staff): Json<super::accounts::StaffAccount>,
) -> Result<impl IntoResponse, AdminError> {
    Ok(Json(
        super::accounts::staff_account(&cloud, &caller.account, staff).await?,
    ))
}

/// Deactivates an account the cloud issued, at every canteen.
async fn deactivate(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    Json(d): Json<super::accounts::Deactivation>,
) -> Result<impl IntoResponse, AdminError> {
    Ok(Json(
        super::accounts::deactivate(&cloud, &caller.account, d).await?,
    ))
}

/// Account changes for every box (campus-wide: admins only); `secret_hash` is an
/// argon2id PHC string.
async fn accounts(
    State(cloud): State<Cloud>,
    caller: ApiCaller,
    Json(accounts): Json<Vec<Account>>,
) -> Result<impl IntoResponse, AdminError> {
    let count = accounts.len();
    let checked = changeable(&caller, None).and_then(|()| {
        for a in &accounts {
            if !["student", "staff", "manager"].contains(&a.role.as_str())
                || !a.secret_hash.starts_with("$argon2")
            {
                return Err(AdminError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "bad_account",
                    format!("account {:?}: bad role or hash", a.login),
                ));
            }
        }
        Ok(())
    });
    let result = match checked {
        Ok(()) => {
            let store = cloud.store.clone();
            blocking(move || Ok(store.add_accounts(&accounts)?)).await
        }
        Err(e) => Err(e),
    };
    audit(
        &cloud,
        &caller.account.username,
        "accounts.push",
        &[],
        &result,
        format!("{count} account(s)"),
    )
    .await;
    let cursor = result?;
    cloud.accounts_changed.notify_waiters();
    Ok(Json(json!({"cursor": cursor})))
}
