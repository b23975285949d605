//! The students' API: login, menu with live stock, placing and following orders.

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{ClientIp, IsStaff, Json, Path, Student};
use crate::app::App;
use crate::core::pricing::IdempotencyKey;
use crate::ops::orders::{self, OrderError};
use crate::session::verify_secret;
use crate::store::accounts;
use crate::store::orders as stored;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use canteen_api::ids::OrderId;
use canteen_api::menu::{MenuEntry, MenuResponse, SlotEntry};
use canteen_api::order::{OrderRequest, OrderView};
use canteen_api::staff::{LoginResponse, StudentLogin};
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

use crate::session::LoginRefusal;
pub(super) use crate::session::LoginSpace;

fn wrong_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidCredentials,
        "wrong account or secret",
    )
}

/// Checks a secret with the login guard applied first and the hash check off the
/// async workers. Unknown accounts cost the same time as wrong secrets and count as
/// failures of that name, like wrong secrets.
pub(super) async fn login_with(
    app: &App,
    ip: std::net::IpAddr,
    account: String,
    secret: String,
    space: LoginSpace,
) -> Result<LoginResponse, ApiError> {
    if account.is_empty() || account.len() > 64 || secret.len() > 128 {
        return Err(wrong_credentials());
    }
    let attempt = match app.limits.login.check(space, &account, ip) {
        Ok(attempt) => attempt,
        Err((why, wait)) => {
            app.metrics
                .login_refused
                .with_label_values(&[space.as_str(), why.as_str()])
                .inc();
            // Logins of this address already being checked: busy, not a limit (a
            // client retries after a moment, as for any 503).
            return Err(match why {
                LoginRefusal::InFlight => ApiError::overloaded(),
                _ => ApiError::rate_limited(wait),
            });
        }
    };
    let lookup = account.clone();
    let creds = app
        .readers
        .read(move |c| match space {
            LoginSpace::Student => accounts::student_credentials(c, &lookup),
            LoginSpace::Staff => accounts::staff_credentials(c, &lookup),
        })
        .await?;
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
            attempt.succeeded();
            // An account made by the command line while the box runs is not in the
            // box's account states yet: add it (never overwriting what the writer
            // published).
            app.accounts.insert_if_absent(
                c.id,
                match c.role {
                    crate::session::Role::Student => {
                        crate::store::accounts::AccountState::student(true, c.blocked.clone())
                    }
                    role => crate::store::accounts::AccountState::staff(role, true),
                },
            );
            let (token, expires_at) = app.tokens.issue(c.id, c.role, app.clock.now());
            Ok(LoginResponse {
                token,
                expires_at,
                role: c.role,
                account_id: c.id,
                name: c.name,
            })
        }
        _ => {
            attempt.failed();
            app.metrics
                .login_failures
                .with_label_values(&[space.as_str()])
                .inc();
            Err(wrong_credentials())
        }
    }
}

/// Log in with student number and PIN.
#[utoipa::path(post, path = "/api/student/login", tag = "student", request_body = StudentLogin,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, description = "logins from this address are being checked; retry in a moment", body = ErrorBody)))]
async fn login(
    State(app): State<App>,
    ClientIp(ip): ClientIp,
    Json(req): Json<StudentLogin>,
) -> Result<Json<LoginResponse>, ApiError> {
    Ok(Json(
        login_with(&app, ip, req.student_number, req.pin, LoginSpace::Student).await?,
    ))
}

/// Today's menu with live stock. Served from memory. Students see `few_left` for a
/// dish nearly gone, never the count; staff (sending their token) also get the exact
/// `remaining`.
#[utoipa::path(get, path = "/api/menu", tag = "student", responses((status = 200, body = MenuResponse)))]
async fn menu(State(app): State<App>, IsStaff(is_staff): IsStaff) -> Json<MenuResponse> {
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
                few_left: remaining.is_some_and(|n| n > 0 && n <= app.config.few_left_threshold),
                remaining: remaining.filter(|_| is_staff),
            }
        })
        .collect();
    let (open_at, close_at, closed_today) = canteen.hours_on(now);
    let next_ready = app.kitchen.next_ready(now);
    let pickup_slots = canteen
        .raw
        .pickup_slots
        .iter()
        .map(|s| {
            let offer = app.slot_offer(&canteen, s, day, now, next_ready);
            SlotEntry {
                id: s.id.clone(),
                start: s.start.clone(),
                end: s.end.clone(),
                capacity: offer.capacity,
                taken: offer.taken,
                full: offer.full,
                ceiling: s.capacity,
                offered: offer.offered,
            }
        })
        .collect::<Vec<_>>();
    let next_slot = pickup_slots
        .iter()
        .find(|s| s.offered)
        .map(|s| s.id.clone());
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
        next_slot,
        ready_estimate: Some(next_ready),
        items,
    })
}

/// Place an order. Send an `Idempotency-Key` header: a retry with the same key and body
/// returns the first order (200) instead of placing a second one (201).
#[utoipa::path(post, path = "/api/student/orders", tag = "student", request_body = OrderRequest,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,128}$", description = "One per checkout (1 to 128 visible ASCII characters); retries reuse it")),
    responses((status = 201, body = OrderView), (status = 200, description = "A replay of an earlier placement", body = OrderView),
        (status = 403, description = "staff blocked this student from ordering (`account_blocked`)", body = ErrorBody),
        (status = 409, description = "sold out, not enough left, unavailable, closed, or too many unpaid orders", body = ErrorBody),
        (status = 422, description = "invalid order, or more portions of a dish than one order may take", body = ErrorBody),
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
    let mut placed = orders::place(&app, student, key, &req).await?;
    app.with_estimates(std::slice::from_mut(&mut placed.order));
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
    let mut orders = app
        .readers
        .read(move |c| stored::for_student(c, student, day))
        .await?;
    app.with_estimates(&mut orders);
    Ok(Json(orders))
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
    student: canteen_api::ids::StudentId,
    id: OrderId,
) -> Result<OrderView, ApiError> {
    let mut order = app
        .readers
        .read(move |c| stored::load(c, id))
        .await?
        .ok_or(OrderError::NotFound)?;
    if order.student_id != student {
        return Err(crate::core::lifecycle::Refusal::NotYours.into());
    }
    app.with_estimates(std::slice::from_mut(&mut order));
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
    Ok(Json(orders::student_cancel(&app, student, id).await?))
}
