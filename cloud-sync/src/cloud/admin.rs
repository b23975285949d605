//! The cloud's admin HTTP API (loopback by default): nodes and their sync state, a
//! canteen's summary, its menu replica and edits, and accounts for the boxes.

use super::server::Cloud;
use crate::proto::Account;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crdt::menu::MenuEdit;
use crdt::settings::SettingsEdit;
use serde::Deserialize;
use serde_json::json;

pub fn router(cloud: Cloud) -> Router {
    Router::new()
        .route("/nodes", get(nodes))
        .route("/nodes/{node}/summary", get(summary))
        .route("/nodes/{node}/sync", get(node_sync))
        .route("/nodes/{node}/menu", get(menu))
        .route("/nodes/{node}/menu/edits", post(menu_edits))
        .route("/nodes/{node}/settings/edits", post(settings_edits))
        .route("/accounts", post(accounts))
        .layer(axum::extract::DefaultBodyLimit::max(4 * 1024 * 1024))
        .with_state(cloud)
}

struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error": {"code": "admin_error", "message": self.1}})),
        )
            .into_response()
    }
}

impl From<anyhow::Error> for AdminError {
    fn from(e: anyhow::Error) -> Self {
        Self(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AdminError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(AdminError::from)
}

async fn nodes(State(cloud): State<Cloud>) -> Result<impl IntoResponse, AdminError> {
    let store = cloud.store.clone();
    Ok(Json(blocking(move || Ok(store.nodes()?)).await?))
}

/// A box's sync history: its timelines (a re-base after a restore starts a new one;
/// the events it lost stay counted and are marked) and refused document changes.
async fn node_sync(
    State(cloud): State<Cloud>,
    Path(node): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
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

#[derive(Deserialize)]
struct DayQuery {
    day: Option<String>,
}

async fn summary(
    State(cloud): State<Cloud>,
    Path(node): Path<String>,
    Query(q): Query<DayQuery>,
) -> Result<impl IntoResponse, AdminError> {
    let store = cloud.store.clone();
    Ok(Json(
        blocking(move || Ok(store.summary(&node, q.day.as_deref())?)).await?,
    ))
}

async fn menu(
    State(cloud): State<Cloud>,
    Path(node): Path<String>,
) -> Result<impl IntoResponse, AdminError> {
    let docs = cloud.docs.clone();
    let (view, conflicts) = blocking(move || docs.menu(&node)).await?;
    Ok(Json(json!({"items": view.items, "conflicts": conflicts})))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn menu_edits(
    State(cloud): State<Cloud>,
    Path(node): Path<String>,
    Json(edits): Json<Vec<MenuEdit>>,
) -> Result<impl IntoResponse, AdminError> {
    let docs = cloud.docs.clone();
    let view = blocking(move || docs.edit_menu(&node, &edits, now_ms())).await?;
    Ok(Json(json!({"items": view.items})))
}

async fn settings_edits(
    State(cloud): State<Cloud>,
    Path(node): Path<String>,
    Json(edits): Json<Vec<SettingsEdit>>,
) -> Result<impl IntoResponse, AdminError> {
    let docs = cloud.docs.clone();
    Ok(Json(
        blocking(move || docs.edit_settings(&node, &edits, now_ms())).await?,
    ))
}

/// Account changes for every box; `secret_hash` is an argon2id PHC string.
async fn accounts(
    State(cloud): State<Cloud>,
    Json(accounts): Json<Vec<Account>>,
) -> Result<impl IntoResponse, AdminError> {
    for a in &accounts {
        if !["student", "staff", "manager"].contains(&a.role.as_str())
            || !a.secret_hash.starts_with("$argon2")
        {
            return Err(AdminError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("account {:?}: bad role or hash", a.login),
            ));
        }
    }
    let store = cloud.store.clone();
    let cursor = blocking(move || Ok(store.add_accounts(&accounts)?)).await?;
    cloud.accounts_changed.notify_waiters();
    Ok(Json(json!({"cursor": cursor})))
}
