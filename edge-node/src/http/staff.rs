//! The staff API: the order queue and its transitions, hand-over, stock, menu edits
//! (managers), the day summary and the outbox.

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{ClientIp, Json, Manager, Path, Query, Staff};
use super::student::{LoginSpace, login_with};
use crate::app::App;
use crate::core::canteen::Canteen;
use crate::core::menu::{ItemFields, MenuEdit, MenuItem};
use crate::ops;
use crate::ops::orders::OrderError;
use crate::store::{orders, outbox};
use axum::extract::State;
use axum::http::StatusCode;
use canteen_api::ids::{ItemId, OrderId};
use canteen_api::order::{DaySummary, OrderState, OrderView};
use canteen_api::staff::{
    BLOCK_REASON_MAX, BlockRequest, HandOverRequest, LoginResponse, OutboxPage, StaffLogin,
    StaffMenu, StaffSettings, StudentStanding, SyncState, TransitionRequest,
};
use canteen_api::stock::{StaffStockAction, StockLevel};
use chrono::NaiveDate;
use crdt::settings::SettingsEdit;
use serde::Deserialize;
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
        .routes(routes!(cancel_unpaid))
        .routes(routes!(block, unblock))
}

/// The most orders one queue request returns.
const QUEUE_MAX: usize = 500;

/// Log in with a staff account.
#[utoipa::path(post, path = "/api/staff/login", tag = "staff", request_body = StaffLogin,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, description = "logins from this address are being checked; retry in a moment", body = ErrorBody)))]
async fn login(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    Json(req): Json<StaffLogin>,
) -> Result<Json<LoginResponse>, ApiError> {
    Ok(Json(
        login_with(&app, ip, req.username, req.password, LoginSpace::Staff).await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct QueueQuery {
    /// Comma-separated states; default: placed,paid,preparing,ready.
    #[param(
        pattern = r"^((placed|paid|preparing|ready|picked_up|cancelled|expired|unclaimed)(,(placed|paid|preparing|ready|picked_up|cancelled|expired|unclaimed))*)?$"
    )]
    pub state: Option<String>,
    /// At most this many orders (1 to 500; default 500).
    #[param(minimum = 1, maximum = 500)]
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
        None | Some("") => OrderState::OPEN.to_vec(),
        Some(list) => list
            .split(',')
            .map(|s| {
                OrderState::parse(s).ok_or_else(|| {
                    ApiError::bad_request(
                        ErrorCode::BadQuery,
                        format!("{s:?} is not an order state"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let limit = limit_within(q.limit, QUEUE_MAX)?;
    let day = app.today();
    let mut orders = app
        .readers
        .read(move |c| orders::queue(c, day, &states, limit))
        .await?;
    app.with_estimates(&mut orders);
    Ok(Json(orders))
}

/// One order.
#[utoipa::path(get, path = "/api/staff/orders/{id}", tag = "staff", params(("id" = OrderId, Path)),
    responses((status = 200, body = OrderView), (status = 404, body = ErrorBody)))]
async fn one_order(
    State(app): State<App>,
    _staff: Staff,
    Path(id): Path<OrderId>,
) -> Result<Json<OrderView>, ApiError> {
    let mut order = app
        .readers
        .read(move |c| orders::load(c, id))
        .await?
        .ok_or(OrderError::NotFound)?;
    app.with_estimates(std::slice::from_mut(&mut order));
    Ok(Json(order))
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
    Ok(Json(
        ops::orders::staff_transition(&app, staff.id, id, req.event, req.version).await?,
    ))
}

fn standing(
    student_id: canteen_api::ids::StudentId,
    student_number: String,
    blocked_reason: Option<String>,
    cancelled: Vec<OrderView>,
) -> StudentStanding {
    StudentStanding {
        student_id,
        student_number,
        blocked_reason,
        cancelled: cancelled.into_iter().map(|o| o.id).collect(),
    }
}

/// Cancel every unpaid open order of a student at once (their portions come back).
#[utoipa::path(post, path = "/api/staff/students/{student_number}/cancel-unpaid", tag = "staff",
    params(("student_number" = String, Path)),
    responses((status = 200, body = StudentStanding), (status = 404, body = ErrorBody)))]
async fn cancel_unpaid(
    State(app): State<App>,
    staff: Staff,
    Path(student_number): Path<String>,
) -> Result<Json<StudentStanding>, ApiError> {
    let (id, cancelled) =
        ops::orders::restrain_student(&app, staff.id, student_number.clone(), true, None).await?;
    let blocked = app.accounts.get(id.0).and_then(|a| a.blocked);
    Ok(Json(standing(id, student_number, blocked, cancelled)))
}

/// Block a student from ordering at this box, with a reason (recorded in the outbox
/// with who did it; shown to the student). Paid orders can still be collected.
#[utoipa::path(post, path = "/api/staff/students/{student_number}/block", tag = "staff",
    params(("student_number" = String, Path)), request_body = BlockRequest,
    responses((status = 200, body = StudentStanding), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn block(
    State(app): State<App>,
    staff: Staff,
    Path(student_number): Path<String>,
    Json(req): Json<BlockRequest>,
) -> Result<Json<StudentStanding>, ApiError> {
    let reason = req.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > BLOCK_REASON_MAX {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidBody,
            format!("reason must be 1 to {BLOCK_REASON_MAX} characters"),
        ));
    }
    let (id, cancelled) = ops::orders::restrain_student(
        &app,
        staff.id,
        student_number.clone(),
        req.cancel_unpaid,
        Some(reason.clone()),
    )
    .await?;
    Ok(Json(standing(id, student_number, Some(reason), cancelled)))
}

/// Let a blocked student order again.
#[utoipa::path(delete, path = "/api/staff/students/{student_number}/block", tag = "staff",
    params(("student_number" = String, Path)),
    responses((status = 200, body = StudentStanding), (status = 404, body = ErrorBody)))]
async fn unblock(
    State(app): State<App>,
    staff: Staff,
    Path(student_number): Path<String>,
) -> Result<Json<StudentStanding>, ApiError> {
    let id = ops::orders::unblock_student(&app, staff.id, student_number.clone()).await?;
    Ok(Json(standing(id, student_number, None, Vec::new())))
}

/// Hand an order over: by pickup number or scanned token.
#[utoipa::path(post, path = "/api/staff/pickups", tag = "staff", request_body = HandOverRequest,
    responses((status = 200, body = OrderView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn hand_over(
    State(app): State<App>,
    staff: Staff,
    Json(req): Json<HandOverRequest>,
) -> Result<Json<OrderView>, ApiError> {
    Ok(Json(
        ops::orders::hand_over(&app, staff.id, &req.code).await?,
    ))
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
    Ok(Json(
        ops::stock::staff_action(&app, staff.id, item_id, action).await?,
    ))
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

/// Add a menu item (managers).
#[utoipa::path(post, path = "/api/staff/menu", tag = "staff", request_body = ItemFields,
    responses((status = 201, body = MenuItem), (status = 409, description = "the item exists already (`menu_conflict`)", body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_item(
    State(app): State<App>,
    _m: Manager,
    Json(fields): Json<ItemFields>,
) -> Result<(StatusCode, Json<MenuItem>), ApiError> {
    let saved = ops::menu::create_item(&app, fields).await?;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// Replace a menu item's fields (managers). Only the fields that differ from the
/// menu as it is now are written, so a concurrent edit of another field by someone
/// else is kept. Archive instead of deleting.
#[utoipa::path(put, path = "/api/staff/menu/{item_id}", tag = "staff", params(("item_id" = ItemId, Path)),
    request_body = ItemFields,
    responses((status = 200, body = MenuItem), (status = 404, body = ErrorBody), (status = 409, description = "`menu_conflict`", body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_item(
    State(app): State<App>,
    _m: Manager,
    Path(id): Path<ItemId>,
    Json(fields): Json<ItemFields>,
) -> Result<Json<MenuItem>, ApiError> {
    Ok(Json(ops::menu::update_item(&app, id, fields).await?))
}

/// Apply single-field menu edits (managers), all or nothing.
#[utoipa::path(post, path = "/api/staff/menu/edits", tag = "staff", request_body = Vec<MenuEdit>,
    responses((status = 200, body = StaffMenu), (status = 404, body = ErrorBody), (status = 409, description = "an item, group or choice exists already (`menu_conflict`)", body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn menu_edits(
    State(app): State<App>,
    _m: Manager,
    Json(edits): Json<Vec<MenuEdit>>,
) -> Result<Json<StaffMenu>, ApiError> {
    let menu = ops::menu::edit(&app, edits).await?;
    Ok(Json(StaffMenu {
        items: menu.items().to_vec(),
        conflicts: menu.conflicts().to_vec(),
    }))
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
    let canteen = ops::menu::edit_settings(&app, edits).await?;
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
        app.readers.read(move |c| orders::summary(c, day)).await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct OutboxQuery {
    /// Events after this sequence number (default 0: from the start).
    #[serde(default)]
    #[param(minimum = 0)]
    pub after_seq: i64,
    /// At most this many events (1 to 1000; default 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A page size from the query: absent means `max`; outside 1..=max is refused.
fn limit_within(limit: Option<usize>, max: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(max),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            ErrorCode::BadQuery,
            format!("limit must be between 1 and {max}, not {n}"),
        )),
    }
}

/// Outbox events after a sequence number, oldest first.
#[utoipa::path(get, path = "/api/staff/outbox", tag = "staff", params(OutboxQuery), responses((status = 200, body = OutboxPage)))]
async fn outbox_after(
    State(app): State<App>,
    _staff: Staff,
    Query(q): Query<OutboxQuery>,
) -> Result<Json<OutboxPage>, ApiError> {
    let limit = limit_within(q.limit, outbox::PAGE_MAX)?;
    if q.after_seq < 0 {
        return Err(ApiError::bad_request(
            ErrorCode::BadQuery,
            "after_seq must not be negative",
        ));
    }
    let page = app
        .readers
        .read(move |c| {
            Ok(OutboxPage {
                events: outbox::after(c, q.after_seq, limit)?,
                last_seq: outbox::last_seq(c)?,
                pruned_through: outbox::pruned_through(c)?,
            })
        })
        .await?;
    Ok(Json(page))
}

/// The link to the campus cloud: connected or not, events not yet acknowledged, the
/// oldest one's age, the last successful exchange.
#[utoipa::path(get, path = "/api/staff/sync", tag = "staff", responses((status = 200, body = SyncState)))]
async fn sync_state(State(app): State<App>, _staff: Staff) -> Result<Json<SyncState>, ApiError> {
    Ok(Json(crate::ops::sync::state(&app).await?))
}
