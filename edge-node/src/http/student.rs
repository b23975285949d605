//! The students' API: login, menu with live stock, placing and following orders.

use super::error::{ApiError, ErrorBody};
use super::extract::{ClientIp, Json, Path, Student};
use crate::accounts::{self, Credentials};
use crate::app::App;
use crate::db::StoreError;
use crate::ids::{ItemId, OrderId};
use crate::menu::OptionGroup;
use crate::order::{self, Actor, IdempotencyKey, OrderEvent, OrderRequest, OrderView, PlaceParams};
use crate::payment::PaymentMode;
use crate::session::{Role, verify_secret};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(menu))
        .routes(routes!(place_order, my_orders))
        .routes(routes!(one_order))
        .routes(routes!(cancel_order))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StudentLogin {
    pub student_number: String,
    pub pin: String,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub role: Role,
    pub account_id: uuid::Uuid,
    pub name: String,
}

/// Checks a secret with the rate limits applied first and the hash check off the
/// async workers. Unknown accounts cost the same time as wrong secrets.
pub(super) async fn login_with(
    app: &App,
    ip: std::net::IpAddr,
    account: String,
    secret: String,
    lookup: fn(&Connection, &str) -> Result<Option<Credentials>, StoreError>,
) -> Result<LoginResponse, ApiError> {
    if account.is_empty() || account.len() > 64 || secret.len() > 128 {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong account or secret",
        ));
    }
    app.limits
        .login_per_ip
        .check(&ip)
        .map_err(ApiError::rate_limited)?;
    app.limits
        .login_per_account
        .check(&account)
        .map_err(ApiError::rate_limited)?;
    let creds = app.readers.read(move |c| lookup(c, &account)).await?;
    let _permit = app
        .login_permits
        .acquire()
        .await
        .map_err(|_| ApiError::overloaded())?;
    static DUMMY: OnceLock<String> = OnceLock::new();
    let cost = app.config.hash_cost;
    let hash = creds
        .as_ref()
        .map(|c| c.secret_hash.clone())
        .unwrap_or_else(|| {
            DUMMY
                .get_or_init(|| crate::session::hash_secret("dummy", cost))
                .clone()
        });
    let ok = tokio::task::spawn_blocking(move || verify_secret(&hash, &secret))
        .await
        .map_err(ApiError::internal)?;
    match creds {
        Some(c) if ok => {
            let (token, expires_at) = app.tokens.issue(c.id, c.role, app.clock.now());
            Ok(LoginResponse {
                token,
                expires_at,
                role: c.role,
                account_id: c.id,
                name: c.name,
            })
        }
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong account or secret",
        )),
    }
}

/// Log in with student number and PIN.
#[utoipa::path(post, path = "/api/student/login", tag = "student", request_body = StudentLogin,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    Json(req): Json<StudentLogin>,
) -> Result<Json<LoginResponse>, ApiError> {
    Ok(Json(
        login_with(
            &app,
            ip,
            req.student_number,
            req.pin,
            accounts::student_credentials,
        )
        .await?,
    ))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct MenuEntry {
    pub id: ItemId,
    pub name_zh: String,
    pub name_en: String,
    pub category: String,
    pub price_fen: i64,
    pub option_groups: Vec<OptionGroup>,
    pub allergens: Vec<String>,
    /// False when staff took it off today's menu.
    pub available: bool,
    pub sold_out: bool,
    /// Portions left today; `null` when the item has no quota.
    pub remaining: Option<i64>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct SlotEntry {
    pub id: String,
    /// "HH:MM" in the canteen's time zone.
    pub start: String,
    pub end: String,
    pub capacity: u32,
    pub taken: i64,
    pub full: bool,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct MenuResponse {
    #[schema(value_type = String, format = Date)]
    pub service_day: NaiveDate,
    pub open: bool,
    /// Today's hours, "HH:MM" local time; `closed_today` when the canteen is shut all day.
    pub opening_time: String,
    pub closing_time: String,
    pub closed_today: bool,
    /// IANA name of the canteen's time zone.
    pub time_zone: String,
    /// The canteen's announcement, if any.
    pub announcement: Option<String>,
    pub payment_modes: Vec<PaymentMode>,
    /// Pickup slots of today, when the canteen offers them.
    pub pickup_slots: Vec<SlotEntry>,
    pub items: Vec<MenuEntry>,
}

/// Today's menu with live stock. Served from memory.
#[utoipa::path(get, path = "/api/menu", tag = "student", responses((status = 200, body = MenuResponse)))]
async fn menu(State(app): State<App>) -> Json<MenuResponse> {
    let now = app.clock.now();
    let canteen = app.canteen();
    let day = canteen.service_day(now);
    let menu = app.menu.snapshot();
    let items = menu
        .items()
        .iter()
        .filter(|it| !it.fields.archived)
        .map(|it| {
            let level = app.stock.get(day, it.id);
            let quota = it.fields.daily_quota.map(i64::from);
            let remaining = match (&level, quota) {
                (_, None) => None,
                (Some(l), Some(_)) => Some(l.remaining().max(0)),
                (None, Some(q)) => Some(q),
            };
            MenuEntry {
                id: it.id,
                name_zh: it.fields.name_zh.clone(),
                name_en: it.fields.name_en.clone(),
                category: it.fields.category.clone(),
                price_fen: it.fields.price_fen,
                option_groups: it.fields.option_groups.clone(),
                allergens: it.fields.allergens.clone(),
                available: it.fields.available,
                sold_out: level.as_ref().is_some_and(|l| l.is_sold_out()) || remaining == Some(0),
                remaining,
            }
        })
        .collect();
    let (open_at, close_at, closed_today) = canteen.hours_on(now);
    let pickup_slots = canteen
        .raw
        .pickup_slots
        .iter()
        .map(|s| {
            let taken = app.slots.get(day, &s.id);
            SlotEntry {
                id: s.id.clone(),
                start: s.start.clone(),
                end: s.end.clone(),
                capacity: s.capacity,
                taken,
                full: taken >= i64::from(s.capacity),
            }
        })
        .collect();
    Json(MenuResponse {
        service_day: day,
        open: canteen.is_open(now),
        opening_time: open_at.format("%H:%M").to_string(),
        closing_time: close_at.format("%H:%M").to_string(),
        closed_today,
        time_zone: canteen.raw.time_zone.clone(),
        announcement: Some(canteen.raw.announcement.clone()).filter(|a| !a.is_empty()),
        payment_modes: canteen.payment_modes.clone(),
        pickup_slots,
        items,
    })
}

/// Place an order. Send an `Idempotency-Key` header: a retry with the same key and body
/// returns the first order (200) instead of placing a second one (201).
#[utoipa::path(post, path = "/api/student/orders", tag = "student", request_body = OrderRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "One per checkout; retries reuse it")),
    responses((status = 201, body = OrderView), (status = 200, description = "A replay of an earlier placement", body = OrderView),
        (status = 409, description = "sold out, unavailable or closed", body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn place_order(
    State(app): State<App>,
    Student(student): Student,
    headers: HeaderMap,
    Json(req): Json<OrderRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let key = headers
        .get("idempotency-key")
        .map(|v| IdempotencyKey::parse(v.to_str().unwrap_or("")))
        .transpose()?;
    app.limits
        .orders_per_student
        .check(&student.0)
        .map_err(ApiError::rate_limited)?;
    let now = app.clock.now();
    let canteen = app.canteen();
    if !canteen.is_open(now) {
        let (open, close, closed_today) = canteen.hours_on(now);
        let message = if closed_today {
            "the canteen is closed today".to_owned()
        } else {
            format!(
                "the canteen takes orders from {} to {}",
                open.format("%H:%M"),
                close.format("%H:%M")
            )
        };
        return Err(ApiError::conflict("closed", message));
    }
    let menu = app.menu.snapshot();
    let priced = order::price(&menu, &req, &canteen)?;
    let params = PlaceParams {
        student,
        key,
        request_hash: order::request_hash(&req),
        priced,
        day: canteen.service_day(now),
        unpaid_timeout: canteen.unpaid_timeout,
    };
    let placed = app
        .writer
        .write(move |ctx| order::place(ctx, &menu, params))
        .await?;
    let status = if placed.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(placed.order)))
}

/// My orders of today, newest first.
#[utoipa::path(get, path = "/api/student/orders", tag = "student", responses((status = 200, body = Vec<OrderView>)))]
async fn my_orders(
    State(app): State<App>,
    Student(student): Student,
) -> Result<Json<Vec<OrderView>>, ApiError> {
    let day = app.today();
    Ok(Json(
        app.readers
            .read(move |c| order::for_student(c, student, day))
            .await?,
    ))
}

/// One of my orders.
#[utoipa::path(get, path = "/api/student/orders/{id}", tag = "student", params(("id" = OrderId, Path)),
    responses((status = 200, body = OrderView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn one_order(
    State(app): State<App>,
    Student(student): Student,
    Path(id): Path<OrderId>,
) -> Result<Json<OrderView>, ApiError> {
    Ok(Json(own_order(&app, student, id).await?))
}

/// One of `student`'s orders: 404 if there is no such order, 403 if it is someone else's.
pub(super) async fn own_order(
    app: &App,
    student: crate::ids::StudentId,
    id: OrderId,
) -> Result<OrderView, ApiError> {
    let order = app
        .readers
        .read(move |c| order::load(c, id))
        .await?
        .ok_or(order::OrderError::NotFound)?;
    if order.student_id != student {
        return Err(order::OrderError::NotYours.into());
    }
    Ok(order)
}

/// Cancel my order, while the kitchen has not started on it.
#[utoipa::path(post, path = "/api/student/orders/{id}/cancel", tag = "student", params(("id" = OrderId, Path)),
    responses((status = 200, body = OrderView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_order(
    State(app): State<App>,
    Student(student): Student,
    Path(id): Path<OrderId>,
) -> Result<Json<OrderView>, ApiError> {
    let order = app
        .writer
        .write(move |ctx| {
            order::apply_event(ctx, id, OrderEvent::Cancel, &Actor::Student(student), None)
        })
        .await?;
    Ok(Json(order))
}
