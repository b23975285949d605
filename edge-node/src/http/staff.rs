//! The staff API: the order queue and its transitions, hand-over, stock, menu edits
//! (managers), the day summary and the outbox.

use super::error::{ApiError, ErrorBody};
use super::extract::{ClientIp, Json, Manager, Path, Query, Staff};
use super::student::{LoginResponse, login_with};
use crate::accounts;
use crate::app::App;
use crate::canteen::Canteen;
use crate::ids::{ItemId, OrderId};
use crate::menu::{self, Conflict, ItemFields, Menu, MenuEdit, MenuError, MenuItem};
use crate::order::{self, Actor, DaySummary, OrderEvent, OrderState, OrderView};
use crate::outbox::{self, OutboxEvent};
use crate::pickup::{self, PickupCode};
use crate::stock::{self, StaffStockAction, StockLevel};
use axum::extract::State;
use axum::http::StatusCode;
use chrono::NaiveDate;
use crdt::settings::{CanteenSettings, SettingsEdit};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(queue))
        .routes(routes!(one_order))
        .routes(routes!(transition))
        .routes(routes!(hand_over))
        .routes(routes!(stock_action))
        .routes(routes!(full_menu, create_item))
        .routes(routes!(update_item))
        .routes(routes!(menu_edits))
        .routes(routes!(settings))
        .routes(routes!(settings_edits))
        .routes(routes!(summary))
        .routes(routes!(outbox_after))
        .routes(routes!(sync_state))
}

/// The most orders one queue request returns.
const QUEUE_MAX: usize = 500;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaffLogin {
    pub username: String,
    pub password: String,
}

/// Log in with a staff account.
#[utoipa::path(post, path = "/api/staff/login", tag = "staff", request_body = StaffLogin,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    Json(req): Json<StaffLogin>,
) -> Result<Json<LoginResponse>, ApiError> {
    Ok(Json(
        login_with(
            &app,
            ip,
            req.username,
            req.password,
            accounts::staff_credentials,
        )
        .await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct QueueQuery {
    /// Comma-separated states; default: placed,paid,preparing,ready.
    pub state: Option<String>,
    pub limit: Option<usize>,
}

/// Today's orders in the given states, oldest first.
#[utoipa::path(get, path = "/api/staff/orders", tag = "staff", params(QueueQuery),
    responses((status = 200, body = Vec<OrderView>), (status = 400, body = ErrorBody)))]
async fn queue(
    State(app): State<App>,
    _staff: Staff,
    Query(q): Query<QueueQuery>,
) -> Result<Json<Vec<OrderView>>, ApiError> {
    let states = match q.state.as_deref() {
        None | Some("") => vec![
            OrderState::Placed,
            OrderState::Paid,
            OrderState::Preparing,
            OrderState::Ready,
        ],
        Some(list) => list
            .split(',')
            .map(|s| {
                OrderState::parse(s.trim()).ok_or_else(|| {
                    ApiError::bad_request("bad_query", format!("{s:?} is not an order state"))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let limit = q.limit.unwrap_or(QUEUE_MAX).clamp(1, QUEUE_MAX);
    let day = app.today();
    Ok(Json(
        app.readers
            .read(move |c| order::queue(c, day, &states, limit))
            .await?,
    ))
}

/// One order.
#[utoipa::path(get, path = "/api/staff/orders/{id}", tag = "staff", params(("id" = OrderId, Path)),
    responses((status = 200, body = OrderView), (status = 404, body = ErrorBody)))]
async fn one_order(
    State(app): State<App>,
    _staff: Staff,
    Path(id): Path<OrderId>,
) -> Result<Json<OrderView>, ApiError> {
    let order = app.readers.read(move |c| order::load(c, id)).await?;
    Ok(Json(order.ok_or(order::OrderError::NotFound)?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    pub event: OrderEvent,
    /// The order version this terminal saw; a newer one on the box gives 409.
    pub version: i64,
}

/// Move an order along its lifecycle (pay at counter, start preparing, ready, pick up,
/// cancel).
#[utoipa::path(post, path = "/api/staff/orders/{id}/transitions", tag = "staff", params(("id" = OrderId, Path)),
    request_body = TransitionRequest,
    responses((status = 200, body = OrderView), (status = 409, description = "stale version or not allowed", body = ErrorBody)))]
async fn transition(
    State(app): State<App>,
    staff: Staff,
    Path(id): Path<OrderId>,
    Json(req): Json<TransitionRequest>,
) -> Result<Json<OrderView>, ApiError> {
    let order = app
        .writer
        .write(move |ctx| {
            order::apply_event(
                ctx,
                id,
                req.event,
                &Actor::Staff(staff.id),
                Some(req.version),
            )
        })
        .await?;
    Ok(Json(order))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandOverRequest {
    /// Today's pickup number, or the token from the QR code.
    pub code: String,
}

/// Hand an order over: by pickup number or scanned token.
#[utoipa::path(post, path = "/api/staff/pickups", tag = "staff", request_body = HandOverRequest,
    responses((status = 200, body = OrderView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn hand_over(
    State(app): State<App>,
    staff: Staff,
    Json(req): Json<HandOverRequest>,
) -> Result<Json<OrderView>, ApiError> {
    let code = PickupCode::parse(&req.code)?;
    let day = app.today();
    let order = app
        .writer
        .write(move |ctx| pickup::hand_over(ctx, day, &code, staff.id))
        .await?;
    Ok(Json(order))
}

/// Restock, adjust, mark sold out or back.
#[utoipa::path(post, path = "/api/staff/stock/{item_id}", tag = "staff", params(("item_id" = ItemId, Path)),
    request_body = StaffStockAction,
    responses((status = 200, body = StockLevel), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn stock_action(
    State(app): State<App>,
    staff: Staff,
    Path(item_id): Path<ItemId>,
    Json(action): Json<StaffStockAction>,
) -> Result<Json<StockLevel>, ApiError> {
    let item = app
        .menu
        .snapshot()
        .get(item_id)
        .cloned()
        .ok_or(MenuError::NotFound(item_id))?;
    let day = app.today();
    let level = app
        .writer
        .write(move |ctx| stock::staff_action(ctx, &item, day, &action, staff.id))
        .await?;
    Ok(Json(level))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct StaffMenu {
    /// Every item, archived ones included.
    pub items: Vec<MenuItem>,
    /// Fields two editors set concurrently; `values[0]` is the one in effect. Setting
    /// the field again resolves the conflict.
    pub conflicts: Vec<Conflict>,
}

/// The whole menu with its conflicts.
#[utoipa::path(get, path = "/api/staff/menu", tag = "staff", responses((status = 200, body = StaffMenu)))]
async fn full_menu(State(app): State<App>, _staff: Staff) -> Json<StaffMenu> {
    let menu = app.menu.snapshot();
    Json(StaffMenu {
        items: menu.items().to_vec(),
        conflicts: menu.conflicts().to_vec(),
    })
}

/// Applies menu edits in one change, and carries quota changes into today's stock.
async fn edit_menu(app: &App, edits: Vec<MenuEdit>) -> Result<Arc<Menu>, ApiError> {
    let day = app.today();
    let docs = app.docs.clone();
    app.writer
        .write(move |ctx| -> Result<Arc<Menu>, ApiError> {
            let menu = docs.edit_menu(ctx, &edits)?;
            let quota_changed: HashSet<ItemId> = edits
                .iter()
                .filter(|e| matches!(e, MenuEdit::SetQuota { .. }))
                .map(MenuEdit::item)
                .collect();
            for id in quota_changed {
                if let Some(item) = menu.get(id) {
                    stock::set_quota(ctx, item, day)?;
                }
            }
            Ok(menu)
        })
        .await
}

/// Add a menu item (managers).
#[utoipa::path(post, path = "/api/staff/menu", tag = "staff", request_body = ItemFields,
    responses((status = 201, body = MenuItem), (status = 422, body = ErrorBody)))]
async fn create_item(
    State(app): State<App>,
    _m: Manager,
    Json(fields): Json<ItemFields>,
) -> Result<(StatusCode, Json<MenuItem>), ApiError> {
    fields.validate()?;
    let item = MenuItem {
        id: ItemId::new(),
        fields,
    };
    let menu = edit_menu(&app, menu::diff(None, &item)).await?;
    let saved = menu
        .get(item.id)
        .cloned()
        .ok_or(MenuError::NotFound(item.id))?;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// Replace a menu item's fields (managers). Only the fields that differ from the
/// menu as it is now are written, so a concurrent edit of another field by someone
/// else is kept. Archive instead of deleting.
#[utoipa::path(put, path = "/api/staff/menu/{item_id}", tag = "staff", params(("item_id" = ItemId, Path)),
    request_body = ItemFields,
    responses((status = 200, body = MenuItem), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_item(
    State(app): State<App>,
    _m: Manager,
    Path(id): Path<ItemId>,
    Json(fields): Json<ItemFields>,
) -> Result<Json<MenuItem>, ApiError> {
    fields.validate()?;
    let current = app
        .menu
        .snapshot()
        .get(id)
        .cloned()
        .ok_or(MenuError::NotFound(id))?;
    let edits = menu::diff(Some(&current), &MenuItem { id, fields });
    if edits.is_empty() {
        return Ok(Json(current));
    }
    let menu = edit_menu(&app, edits).await?;
    Ok(Json(menu.get(id).cloned().ok_or(MenuError::NotFound(id))?))
}

/// Apply single-field menu edits (managers), all or nothing.
#[utoipa::path(post, path = "/api/staff/menu/edits", tag = "staff", request_body = Vec<MenuEdit>,
    responses((status = 200, body = StaffMenu), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn menu_edits(
    State(app): State<App>,
    _m: Manager,
    Json(edits): Json<Vec<MenuEdit>>,
) -> Result<Json<StaffMenu>, ApiError> {
    let menu = edit_menu(&app, edits).await?;
    Ok(Json(StaffMenu {
        items: menu.items().to_vec(),
        conflicts: menu.conflicts().to_vec(),
    }))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct StaffSettings {
    pub settings: CanteenSettings,
    pub conflicts: Vec<Conflict>,
}

fn staff_settings(canteen: &Canteen) -> StaffSettings {
    StaffSettings {
        settings: canteen.raw.clone(),
        conflicts: canteen.conflicts.clone(),
    }
}

/// The canteen's settings with their conflicts.
#[utoipa::path(get, path = "/api/staff/settings", tag = "staff", responses((status = 200, body = StaffSettings)))]
async fn settings(State(app): State<App>, _staff: Staff) -> Json<StaffSettings> {
    Json(staff_settings(&app.canteen()))
}

/// Apply settings edits (managers), all or nothing.
#[utoipa::path(post, path = "/api/staff/settings/edits", tag = "staff", request_body = Vec<SettingsEdit>,
    responses((status = 200, body = StaffSettings), (status = 422, body = ErrorBody)))]
async fn settings_edits(
    State(app): State<App>,
    _m: Manager,
    Json(edits): Json<Vec<SettingsEdit>>,
) -> Result<Json<StaffSettings>, ApiError> {
    let docs = app.docs.clone();
    let canteen = app
        .writer
        .write(move |ctx| docs.edit_settings(ctx, &edits))
        .await?;
    Ok(Json(staff_settings(&canteen)))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct DayQuery {
    /// YYYY-MM-DD; default today.
    #[param(value_type = Option<String>, format = Date)]
    pub day: Option<NaiveDate>,
}

/// End-of-day summary: orders, revenue, per item, cancellations, unclaimed.
#[utoipa::path(get, path = "/api/staff/summary", tag = "staff", params(DayQuery), responses((status = 200, body = DaySummary)))]
async fn summary(
    State(app): State<App>,
    _staff: Staff,
    Query(q): Query<DayQuery>,
) -> Result<Json<DaySummary>, ApiError> {
    let day = q.day.unwrap_or_else(|| app.today());
    Ok(Json(
        app.readers.read(move |c| order::summary(c, day)).await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct OutboxQuery {
    #[serde(default)]
    pub after_seq: i64,
    pub limit: Option<usize>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxPage {
    pub events: Vec<OutboxEvent>,
    /// Highest sequence number on the box.
    pub last_seq: i64,
}

/// Outbox events after a sequence number, oldest first.
#[utoipa::path(get, path = "/api/staff/outbox", tag = "staff", params(OutboxQuery), responses((status = 200, body = OutboxPage)))]
async fn outbox_after(
    State(app): State<App>,
    _staff: Staff,
    Query(q): Query<OutboxQuery>,
) -> Result<Json<OutboxPage>, ApiError> {
    let limit = q
        .limit
        .unwrap_or(outbox::PAGE_MAX)
        .clamp(1, outbox::PAGE_MAX);
    let page = app
        .readers
        .read(move |c| {
            Ok(OutboxPage {
                events: outbox::after(c, q.after_seq, limit)?,
                last_seq: outbox::last_seq(c)?,
            })
        })
        .await?;
    Ok(Json(page))
}

/// The link to the campus cloud: connected or not, events not yet acknowledged, the
/// oldest one's age, the last successful exchange.
#[utoipa::path(get, path = "/api/staff/sync", tag = "staff", responses((status = 200, body = crate::sync::SyncState)))]
async fn sync_state(
    State(app): State<App>,
    _staff: Staff,
) -> Result<Json<crate::sync::SyncState>, ApiError> {
    Ok(Json(crate::sync::state(&app).await?))
}
