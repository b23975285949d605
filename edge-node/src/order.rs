//! Orders: placement (pricing, stock reservation, idempotency) and the lifecycle.
//!
//! ```text
//! placed ──pay──> paid ──> preparing ──> ready ──> picked_up
//!   │               │           │
//!   ├─timeout─> expired         └──(staff)──> cancelled (refund recorded if paid)
//!   └─(student|staff)─> cancelled                 ready ──(closing time)──> unclaimed
//! ```
//!
//! Every allowed (state, event) pair is in [`next_state`]; everything else is refused.
//! A paid order may still be cancelled by the student or staff before the kitchen
//! starts (a refund is recorded); once preparing, only staff may cancel.

use crate::canteen::Canteen;
use crate::clock::{parse_ts, ts};
use crate::db::StoreError;
use crate::ids::{ItemId, OrderId, StaffId, StudentId};
use crate::menu::Menu;
use crate::outbox;
use crate::payment::{self, PaymentMode};
use crate::pickup;
use crate::stock::{self, Held, StockError};
use crate::writer::{WriteCtx, WriteError};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

pub const LINES_MAX: usize = 20;
pub const QUANTITY_MAX: u32 = 20;
pub const IDEMPOTENCY_KEY_MAX: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Placed,
    Paid,
    Preparing,
    Ready,
    PickedUp,
    Cancelled,
    Expired,
    Unclaimed,
}

impl OrderState {
    pub const ALL: [OrderState; 8] = [
        Self::Placed,
        Self::Paid,
        Self::Preparing,
        Self::Ready,
        Self::PickedUp,
        Self::Cancelled,
        Self::Expired,
        Self::Unclaimed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Paid => "paid",
            Self::Preparing => "preparing",
            Self::Ready => "ready",
            Self::PickedUp => "picked_up",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Unclaimed => "unclaimed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderEvent {
    Pay,
    StartPreparing,
    MarkReady,
    PickUp,
    Cancel,
    Expire,
    MarkUnclaimed,
}

impl OrderEvent {
    pub const ALL: [OrderEvent; 7] = [
        Self::Pay,
        Self::StartPreparing,
        Self::MarkReady,
        Self::PickUp,
        Self::Cancel,
        Self::Expire,
        Self::MarkUnclaimed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pay => "pay",
            Self::StartPreparing => "start_preparing",
            Self::MarkReady => "mark_ready",
            Self::PickUp => "pick_up",
            Self::Cancel => "cancel",
            Self::Expire => "expire",
            Self::MarkUnclaimed => "mark_unclaimed",
        }
    }
}

/// Who causes a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Student(StudentId),
    Staff(StaffId),
    /// The campus-card system, through its signed webhook, with its transaction id.
    CampusCard(String),
    /// The box itself: expiry and closing time.
    System,
}

impl Actor {
    fn describe(&self) -> String {
        match self {
            Self::Student(id) => format!("student:{id}"),
            Self::Staff(id) => format!("staff:{id}"),
            Self::CampusCard(txn) => format!("campus_card:{txn}"),
            Self::System => "system".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("no such order")]
    NotFound,
    #[error("this order belongs to someone else")]
    NotYours,
    #[error("cannot {event} an order that is {from}", event = .event.as_str(), from = .from.as_str())]
    NotAllowed { from: OrderState, event: OrderEvent },
    #[error("the kitchen has started on this order; ask at the counter")]
    KitchenStarted,
    #[error("only {allowed} may {event} an order", event = .event.as_str())]
    NotPermitted {
        event: OrderEvent,
        allowed: &'static str,
    },
    #[error("the order changed meanwhile (now version {current}); reload and try again")]
    Stale { current: i64 },
    #[error(transparent)]
    Stock(#[from] StockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl From<rusqlite::Error> for OrderError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The lifecycle: the state an event leads to, if `actor` may cause it from `from`.
pub fn next_state(
    from: OrderState,
    event: OrderEvent,
    actor: &Actor,
) -> Result<OrderState, OrderError> {
    use OrderEvent as E;
    use OrderState as S;
    let staff = matches!(actor, Actor::Staff(_));
    let student = matches!(actor, Actor::Student(_));
    let system = matches!(actor, Actor::System);
    let card = matches!(actor, Actor::CampusCard(_));
    let (to, permitted, allowed) = match (from, event) {
        (S::Placed, E::Pay) => (S::Paid, staff || card, "staff or the campus-card system"),
        (S::Placed, E::Expire) => (S::Expired, system, "the box"),
        (S::Placed | S::Paid, E::Cancel) => {
            (S::Cancelled, staff || student, "staff or the student")
        }
        (S::Paid, E::StartPreparing) => (S::Preparing, staff, "staff"),
        (S::Preparing, E::Cancel) => {
            if student {
                return Err(OrderError::KitchenStarted);
            }
            (S::Cancelled, staff, "staff")
        }
        (S::Preparing, E::MarkReady) => (S::Ready, staff, "staff"),
        (S::Ready, E::PickUp) => (S::PickedUp, staff, "staff"),
        (S::Ready, E::MarkUnclaimed) => (S::Unclaimed, system, "the box"),
        _ => return Err(OrderError::NotAllowed { from, event }),
    };
    if !permitted {
        return Err(OrderError::NotPermitted { event, allowed });
    }
    Ok(to)
}

// ---------------------------------------------------------------------------------
// Placement

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChosenOption {
    pub group: String,
    pub choice: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LineRequest {
    pub item_id: ItemId,
    pub quantity: u32,
    #[serde(default)]
    pub options: Vec<ChosenOption>,
}

/// What a student sends to place an order. Prices are never taken from the client.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub lines: Vec<LineRequest>,
    pub payment_mode: PaymentMode,
    /// One of the canteen's pickup slots, when it offers them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_slot: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PricedOption {
    pub group: String,
    pub choice: String,
    pub name_zh: String,
    pub name_en: String,
    pub price_delta_fen: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct OrderLine {
    pub item_id: ItemId,
    pub name_zh: String,
    pub name_en: String,
    pub quantity: i64,
    pub unit_price_fen: i64,
    pub line_total_fen: i64,
    pub options: Vec<PricedOption>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceOrderError {
    #[error("an order needs 1 to {LINES_MAX} lines")]
    LineCount,
    #[error("quantity must be between 1 and {QUANTITY_MAX} (line {line})")]
    Quantity { line: usize },
    #[error("no menu item {0}")]
    UnknownItem(ItemId),
    #[error("{name} is not available today")]
    Unavailable { item_id: ItemId, name: String },
    #[error("{0}")]
    Options(String),
    #[error("payment mode {0:?} is not offered here")]
    PaymentMode(PaymentMode),
    #[error("there is no pickup slot {0:?}")]
    UnknownSlot(String),
    #[error("the pickup slot {0} is full; choose another")]
    SlotFull(String),
    #[error("this Idempotency-Key was already used for a different order")]
    IdempotencyMismatch,
    #[error("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters")]
    BadIdempotencyKey,
    #[error(transparent)]
    Stock(#[from] StockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl From<rusqlite::Error> for PlaceOrderError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// A request checked against the menu and priced by the server.
#[derive(Debug, Clone)]
pub struct PricedOrder {
    pub lines: Vec<OrderLine>,
    pub total_fen: i64,
    pub payment_mode: PaymentMode,
    pub pickup_slot: Option<crdt::settings::PickupSlot>,
}

/// Validates a request against the menu snapshot and computes every price.
pub fn price(
    menu: &Menu,
    request: &OrderRequest,
    canteen: &Canteen,
) -> Result<PricedOrder, PlaceOrderError> {
    if request.lines.is_empty() || request.lines.len() > LINES_MAX {
        return Err(PlaceOrderError::LineCount);
    }
    if !canteen.payment_modes.contains(&request.payment_mode) {
        return Err(PlaceOrderError::PaymentMode(request.payment_mode));
    }
    let pickup_slot = match &request.pickup_slot {
        None => None,
        Some(id) => Some(
            canteen
                .slot(id)
                .cloned()
                .ok_or_else(|| PlaceOrderError::UnknownSlot(id.clone()))?,
        ),
    };
    let mut lines = Vec::with_capacity(request.lines.len());
    for (n, line) in request.lines.iter().enumerate() {
        if line.quantity == 0 || line.quantity > QUANTITY_MAX {
            return Err(PlaceOrderError::Quantity { line: n + 1 });
        }
        let item = menu
            .get(line.item_id)
            .filter(|it| !it.fields.archived)
            .ok_or(PlaceOrderError::UnknownItem(line.item_id))?;
        if !item.fields.available {
            return Err(PlaceOrderError::Unavailable {
                item_id: item.id,
                name: item.fields.name_en.clone(),
            });
        }
        let name = &item.fields.name_en;
        let mut options = Vec::new();
        for chosen in &line.options {
            let group = item
                .fields
                .option_groups
                .iter()
                .find(|g| g.id == chosen.group)
                .ok_or_else(|| {
                    PlaceOrderError::Options(format!(
                        "{name} has no option group {:?}",
                        chosen.group
                    ))
                })?;
            let choice = group
                .choices
                .iter()
                .find(|c| c.id == chosen.choice)
                .ok_or_else(|| {
                    PlaceOrderError::Options(format!(
                        "{name}: {:?} is not a choice of {:?}",
                        chosen.choice, group.id
                    ))
                })?;
            if options
                .iter()
                .any(|o: &PricedOption| o.group == group.id && o.choice == choice.id)
            {
                return Err(PlaceOrderError::Options(format!(
                    "{name}: {:?} is chosen twice",
                    choice.id
                )));
            }
            options.push(PricedOption {
                group: group.id.clone(),
                choice: choice.id.clone(),
                name_zh: choice.name_zh.clone(),
                name_en: choice.name_en.clone(),
                price_delta_fen: choice.price_delta_fen,
            });
        }
        for group in &item.fields.option_groups {
            let count = options.iter().filter(|o| o.group == group.id).count() as u32;
            if count < group.min_choices || count > group.max_choices {
                return Err(PlaceOrderError::Options(
                    if group.min_choices == group.max_choices {
                        format!(
                            "{name}: choose exactly {} of {:?}",
                            group.min_choices, group.name_en
                        )
                    } else {
                        format!(
                            "{name}: choose {} to {} of {:?}",
                            group.min_choices, group.max_choices, group.name_en
                        )
                    },
                ));
            }
        }
        let unit =
            (item.fields.price_fen + options.iter().map(|o| o.price_delta_fen).sum::<i64>()).max(0);
        lines.push(OrderLine {
            item_id: item.id,
            name_zh: item.fields.name_zh.clone(),
            name_en: item.fields.name_en.clone(),
            quantity: i64::from(line.quantity),
            unit_price_fen: unit,
            line_total_fen: unit * i64::from(line.quantity),
            options,
        });
    }
    let total_fen = lines.iter().map(|l| l.line_total_fen).sum();
    Ok(PricedOrder {
        lines,
        total_fen,
        payment_mode: request.payment_mode,
        pickup_slot,
    })
}

/// A validated `Idempotency-Key` header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<Self, PlaceOrderError> {
        if text.is_empty()
            || text.len() > IDEMPOTENCY_KEY_MAX
            || !text.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(PlaceOrderError::BadIdempotencyKey);
        }
        Ok(Self(text.to_owned()))
    }
}

/// A fingerprint of the request, to tell a retry from a different order under the same key.
pub fn request_hash(request: &OrderRequest) -> String {
    use sha2::Digest;
    let canonical = serde_json::to_vec(request).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&canonical))
}

/// The outcome of a placement: the order, and whether it is a replay of an earlier one.
#[derive(Debug, Clone)]
pub struct Placement {
    pub order: OrderView,
    pub replayed: bool,
}

pub struct PlaceParams {
    pub student: StudentId,
    pub key: Option<IdempotencyKey>,
    pub request_hash: String,
    pub priced: PricedOrder,
    pub day: NaiveDate,
    pub unpaid_timeout: chrono::Duration,
}

/// Places an order inside the writer's transaction: idempotency, stock, pickup code,
/// rows and the outbox event, all or nothing.
pub fn place(
    ctx: &mut WriteCtx<'_>,
    menu: &Menu,
    p: PlaceParams,
) -> Result<Placement, PlaceOrderError> {
    if let Some(key) = &p.key {
        let earlier: Option<(String, String)> = ctx
            .conn
            .prepare_cached(
                "SELECT request_hash, id FROM orders WHERE student_id = ?1 AND service_day = ?2 AND idempotency_key = ?3",
            )?
            .query_row(params![p.student.to_string(), p.day.to_string(), key.0], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((hash, order_id)) = earlier {
            if hash != p.request_hash {
                return Err(PlaceOrderError::IdempotencyMismatch);
            }
            let id: OrderId = order_id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("order id {order_id}")))?;
            let order = load(ctx.conn, id)?
                .ok_or_else(|| StoreError::Corrupt(format!("order {id} is missing")))?;
            return Ok(Placement {
                order,
                replayed: true,
            });
        }
    }

    let id = OrderId::new();
    let now = ctx.now;
    let mut per_item: BTreeMap<ItemId, i64> = BTreeMap::new();
    for line in &p.priced.lines {
        *per_item.entry(line.item_id).or_default() += line.quantity;
    }
    for (item_id, qty) in &per_item {
        let item = menu
            .get(*item_id)
            .ok_or(PlaceOrderError::UnknownItem(*item_id))?;
        stock::reserve(ctx, item, p.day, *qty)?;
    }
    if let Some(slot) = &p.priced.pickup_slot
        && !pickup::take_slot(ctx, p.day, slot)?
    {
        return Err(PlaceOrderError::SlotFull(format!(
            "{}–{}",
            slot.start, slot.end
        )));
    }
    let number = pickup::next_number(ctx, p.day)?;
    let token = pickup::new_token(id);
    let expires_at = now + p.unpaid_timeout;
    let lines_json =
        serde_json::to_string(&p.priced.lines).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    ctx.conn
        .prepare_cached(
            "INSERT INTO orders (id, student_id, service_day, pickup_number, pickup_token, state, version,
                total_fen, payment_mode, lines, pickup_slot, idempotency_key, request_hash, placed_at, expires_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'placed', 1, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?12)",
        )?
        .execute(params![
            id.to_string(),
            p.student.to_string(),
            p.day.to_string(),
            number,
            token,
            p.priced.total_fen,
            p.priced.payment_mode.as_str(),
            lines_json,
            p.priced.pickup_slot.as_ref().map(|s| s.id.as_str()),
            p.key.as_ref().map(|k| k.0.as_str()),
            p.key.as_ref().map(|_| p.request_hash.as_str()),
            ts(now),
            ts(expires_at),
        ])?;
    let order = OrderView {
        id,
        student_id: p.student,
        service_day: p.day,
        pickup_number: number,
        pickup_token: token,
        state: OrderState::Placed,
        version: 1,
        total_fen: p.priced.total_fen,
        payment_mode: p.priced.payment_mode,
        pickup_slot: p.priced.pickup_slot.map(|s| s.id),
        lines: p.priced.lines,
        placed_at: now,
        expires_at,
        updated_at: now,
    };
    outbox::append(
        ctx,
        "order.placed",
        &id.to_string(),
        serde_json::to_value(&order).unwrap_or_default(),
    )?;
    Ok(Placement {
        order,
        replayed: false,
    })
}

// ---------------------------------------------------------------------------------
// Transitions

/// Applies `event` to an order: checks ownership, version and lifecycle, moves stock,
/// records payments and refunds, appends the outbox event.
pub fn apply_event(
    ctx: &mut WriteCtx<'_>,
    id: OrderId,
    event: OrderEvent,
    actor: &Actor,
    expected_version: Option<i64>,
) -> Result<OrderView, OrderError> {
    type Row = (
        String,
        i64,
        String,
        String,
        i64,
        String,
        String,
        Option<String>,
    );
    let row: Option<Row> = ctx
        .conn
        .prepare_cached(
            "SELECT state, version, student_id, service_day, total_fen, payment_mode, lines, pickup_slot
             FROM orders WHERE id = ?1",
        )?
        .query_row([id.to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
        })
        .optional()?;
    let (state, version, student, day, total_fen, mode, lines_json, slot) =
        row.ok_or(OrderError::NotFound)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("order {id}: bad {what}"));
    let from = OrderState::parse(&state).ok_or_else(|| corrupt("state"))?;
    let student: StudentId = student.parse().map_err(|_| corrupt("student"))?;
    let day: NaiveDate = day.parse().map_err(|_| corrupt("day"))?;
    if let Actor::Student(me) = actor
        && *me != student
    {
        return Err(OrderError::NotYours);
    }
    if let Some(seen) = expected_version
        && seen != version
    {
        return Err(OrderError::Stale { current: version });
    }
    let to = next_state(from, event, actor)?;

    let ordered: Vec<OrderLine> =
        serde_json::from_str(&lines_json).map_err(|_| corrupt("lines"))?;
    let mut per_item: BTreeMap<ItemId, i64> = BTreeMap::new();
    for line in &ordered {
        *per_item.entry(line.item_id).or_default() += line.quantity;
    }
    let lines: Vec<(ItemId, i64)> = per_item.into_iter().collect();
    if let (Some(slot), OrderState::Cancelled | OrderState::Expired) = (&slot, to) {
        pickup::release_slot(ctx, day, slot)?;
    }
    let mut payment_json = serde_json::Value::Null;
    match (from, to) {
        (OrderState::Placed, OrderState::Paid) => {
            for (item, qty) in &lines {
                stock::sell(ctx, *item, day, *qty)?;
            }
            let (method, txn, staff) = match actor {
                Actor::CampusCard(txn) => (PaymentMode::CampusCard, Some(txn.as_str()), None),
                Actor::Staff(s) => (PaymentMode::Counter, None, Some(*s)),
                _ => (PaymentMode::Counter, None, None),
            };
            let pid = payment::record(
                ctx,
                id,
                day,
                payment::Kind::Payment,
                method,
                total_fen,
                txn,
                staff,
            )?;
            payment_json = json!({"payment_id": pid, "method": method, "amount_fen": total_fen});
        }
        (OrderState::Placed, OrderState::Cancelled | OrderState::Expired) => {
            for (item, qty) in &lines {
                stock::release(ctx, *item, day, *qty, Held::Reserved)?;
            }
        }
        (OrderState::Paid | OrderState::Preparing, OrderState::Cancelled) => {
            for (item, qty) in &lines {
                stock::release(ctx, *item, day, *qty, Held::Sold)?;
            }
            let method = payment::paid_with(ctx.conn, id)?
                .unwrap_or_else(|| PaymentMode::parse(&mode).unwrap_or(PaymentMode::Counter));
            let staff = match actor {
                Actor::Staff(s) => Some(*s),
                _ => None,
            };
            let pid = payment::record(
                ctx,
                id,
                day,
                payment::Kind::Refund,
                method,
                total_fen,
                None,
                staff,
            )?;
            payment_json = json!({"refund_id": pid, "method": method, "amount_fen": total_fen});
        }
        _ => {}
    }
    ctx.conn
        .prepare_cached(
            "UPDATE orders SET state = ?2, version = version + 1, updated_at = ?3 WHERE id = ?1",
        )?
        .execute(params![id.to_string(), to.as_str(), ts(ctx.now)])?;
    outbox::append(
        ctx,
        &format!("order.{}", to.as_str()),
        &id.to_string(),
        json!({
            "order_id": id,
            "student_id": student,
            "service_day": day,
            "from": from,
            "to": to,
            "event": event,
            "version": version + 1,
            "actor": actor.describe(),
            "payment": payment_json,
        }),
    )?;
    load(ctx.conn, id)?.ok_or(OrderError::NotFound)
}

/// Expires unpaid orders whose time is up, at most `limit` per call. Returns how many.
pub fn expire_due(ctx: &mut WriteCtx<'_>, limit: usize) -> Result<usize, OrderError> {
    let due: Vec<String> = {
        let mut stmt = ctx
            .conn
            // Without statistics the planner would prefer orders_by_state and sort every
            // placed order of the day; the partial index holds exactly the unpaid ones.
            .prepare_cached(
                "SELECT id FROM orders INDEXED BY orders_expiry
                 WHERE state = 'placed' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
            )?;
        let rows = stmt.query_map(params![ts(ctx.now), limit as i64], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for id in &due {
        let id: OrderId = id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("order id {id}")))?;
        apply_event(ctx, id, OrderEvent::Expire, &Actor::System, None)?;
    }
    Ok(due.len())
}

/// Marks ready orders of `through_day` and earlier as unclaimed (closing time has
/// passed for them), at most `limit` per call. Returns how many.
pub fn mark_unclaimed(
    ctx: &mut WriteCtx<'_>,
    through_day: NaiveDate,
    limit: usize,
) -> Result<usize, OrderError> {
    let due: Vec<String> = {
        let mut stmt = ctx.conn.prepare_cached(
            "SELECT id FROM orders WHERE state = 'ready' AND service_day <= ?1 LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![through_day.to_string(), limit as i64], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for id in &due {
        let id: OrderId = id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("order id {id}")))?;
        apply_event(ctx, id, OrderEvent::MarkUnclaimed, &Actor::System, None)?;
    }
    Ok(due.len())
}

// ---------------------------------------------------------------------------------
// Reading

/// An order as students and staff see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct OrderView {
    pub id: OrderId,
    pub student_id: StudentId,
    #[schema(value_type = String, format = Date)]
    pub service_day: NaiveDate,
    /// What the counter calls out; counts from 1 each service day.
    pub pickup_number: i64,
    /// Unguessable; shown as a QR code and checked at hand-over.
    pub pickup_token: String,
    pub state: OrderState,
    /// Increases on every change; staff send the version they saw.
    pub version: i64,
    pub total_fen: i64,
    pub payment_mode: PaymentMode,
    /// The pickup slot chosen, if the canteen offers slots.
    pub pickup_slot: Option<String>,
    pub lines: Vec<OrderLine>,
    pub placed_at: DateTime<Utc>,
    /// When an unpaid order expires.
    pub expires_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const ORDER_COLUMNS: &str = "id, student_id, service_day, pickup_number, pickup_token, state, version, total_fen, payment_mode, lines, placed_at, expires_at, updated_at, pickup_slot";

fn read_orders(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<OrderView>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, String>(8)?,
            r.get::<_, String>(9)?,
            (
                r.get::<_, String>(10)?,
                r.get::<_, String>(11)?,
                r.get::<_, String>(12)?,
            ),
            r.get::<_, Option<String>>(13)?,
        ))
    })?;
    let mut orders = Vec::new();
    for row in rows {
        let (
            id,
            student,
            day,
            number,
            token,
            state,
            version,
            total,
            mode,
            lines,
            (placed, expires, updated),
            pickup_slot,
        ) = row?;
        let corrupt = |what: &str| StoreError::Corrupt(format!("order {id}: bad {what}"));
        let id: OrderId = id.parse().map_err(|_| corrupt("id"))?;
        orders.push(OrderView {
            id,
            student_id: student.parse().map_err(|_| corrupt("student"))?,
            service_day: day.parse().map_err(|_| corrupt("day"))?,
            pickup_number: number,
            pickup_token: token,
            state: OrderState::parse(&state).ok_or_else(|| corrupt("state"))?,
            version,
            total_fen: total,
            payment_mode: PaymentMode::parse(&mode).ok_or_else(|| corrupt("payment mode"))?,
            pickup_slot,
            lines: serde_json::from_str(&lines).map_err(|_| corrupt("lines"))?,
            placed_at: parse_ts(&placed).ok_or_else(|| corrupt("placed_at"))?,
            expires_at: parse_ts(&expires).ok_or_else(|| corrupt("expires_at"))?,
            updated_at: parse_ts(&updated).ok_or_else(|| corrupt("updated_at"))?,
        });
    }
    Ok(orders)
}

pub fn load(conn: &Connection, id: OrderId) -> Result<Option<OrderView>, StoreError> {
    Ok(read_orders(
        conn,
        &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"),
        [id.to_string()],
    )?
    .pop())
}

/// The order a pickup token belongs to (the token starts with the order id).
pub fn find_by_token(conn: &Connection, token: &str) -> Result<Option<OrderView>, StoreError> {
    let Some(id) = token
        .get(..32)
        .and_then(|hex| uuid::Uuid::try_parse(hex).ok())
    else {
        return Ok(None);
    };
    Ok(load(conn, OrderId(id))?
        .filter(|o| constant_time_eq(o.pickup_token.as_bytes(), token.as_bytes())))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn find_by_number(
    conn: &Connection,
    day: NaiveDate,
    number: i64,
) -> Result<Option<OrderView>, StoreError> {
    Ok(read_orders(
        conn,
        &format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE service_day = ?1 AND pickup_number = ?2"
        ),
        params![day.to_string(), number],
    )?
    .pop())
}

/// A student's orders of one service day, newest first.
pub fn for_student(
    conn: &Connection,
    student: StudentId,
    day: NaiveDate,
) -> Result<Vec<OrderView>, StoreError> {
    read_orders(
        conn,
        &format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE student_id = ?1 AND service_day = ?2 ORDER BY placed_at DESC LIMIT 100"
        ),
        params![student.to_string(), day.to_string()],
    )
}

/// The staff queue: orders of a day in the given states, oldest first.
pub fn queue(
    conn: &Connection,
    day: NaiveDate,
    states: &[OrderState],
    limit: usize,
) -> Result<Vec<OrderView>, StoreError> {
    let list = states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(",");
    read_orders(
        conn,
        &format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE service_day = ?1 AND state IN ({list}) ORDER BY placed_at LIMIT ?2"
        ),
        params![day.to_string(), limit as i64],
    )
}

/// How many orders of a day are in each state.
pub fn count_by_state(
    conn: &Connection,
    day: NaiveDate,
) -> Result<BTreeMap<OrderState, i64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT state, COUNT(*) FROM orders WHERE service_day = ?1 GROUP BY state",
    )?;
    let rows = stmt.query_map([day.to_string()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut counts: BTreeMap<OrderState, i64> =
        OrderState::ALL.into_iter().map(|s| (s, 0)).collect();
    for row in rows {
        let (state, n) = row?;
        if let Some(state) = OrderState::parse(&state) {
            counts.insert(state, n);
        }
    }
    Ok(counts)
}

impl PartialOrd for OrderState {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderState {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*other as u8))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ItemCount {
    pub item_id: ItemId,
    pub name_zh: String,
    pub name_en: String,
    pub quantity: i64,
    pub revenue_fen: i64,
}

/// The end-of-day summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DaySummary {
    #[schema(value_type = String, format = Date)]
    pub service_day: NaiveDate,
    /// Every order placed that day, whatever became of it.
    pub orders: i64,
    pub by_state: BTreeMap<String, i64>,
    /// Payments minus refunds.
    pub revenue_fen: i64,
    pub refunds_fen: i64,
    /// Items of orders that were paid and not cancelled.
    pub items: Vec<ItemCount>,
    pub cancelled: i64,
    pub expired: i64,
    pub unclaimed: i64,
}

pub fn summary(conn: &Connection, day: NaiveDate) -> Result<DaySummary, StoreError> {
    let counts = count_by_state(conn, day)?;
    let (paid, refunded): (i64, i64) = conn.query_row(
        "SELECT COALESCE(SUM(CASE WHEN kind = 'payment' THEN amount_fen END), 0),
                COALESCE(SUM(CASE WHEN kind = 'refund' THEN amount_fen END), 0)
         FROM payment WHERE service_day = ?1",
        [day.to_string()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut stmt = conn.prepare_cached(
        "SELECT l.value ->> 'item_id', MAX(l.value ->> 'name_zh'), MAX(l.value ->> 'name_en'),
                SUM(l.value ->> 'quantity'), SUM(l.value ->> 'line_total_fen')
         FROM orders o, json_each(o.lines) l
         WHERE o.service_day = ?1 AND o.state IN ('paid', 'preparing', 'ready', 'picked_up', 'unclaimed')
         GROUP BY 1 ORDER BY 4 DESC, 3",
    )?;
    let rows = stmt.query_map([day.to_string()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut items = Vec::new();
    for row in rows {
        let (id, name_zh, name_en, quantity, revenue_fen) = row?;
        items.push(ItemCount {
            item_id: id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("line item {id}")))?,
            name_zh,
            name_en,
            quantity,
            revenue_fen,
        });
    }
    Ok(DaySummary {
        service_day: day,
        orders: counts.values().sum(),
        by_state: counts
            .iter()
            .map(|(s, n)| (s.as_str().to_owned(), *n))
            .collect(),
        revenue_fen: paid - refunded,
        refunds_fen: refunded,
        items,
        cancelled: counts[&OrderState::Cancelled],
        expired: counts[&OrderState::Expired],
        unclaimed: counts[&OrderState::Unclaimed],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (state, event) pair, with the actor who may cause it: the allowed ones
    /// give the expected state, every other one is refused.
    #[test]
    fn every_state_event_pair() {
        use OrderEvent as E;
        use OrderState as S;
        let staff = Actor::Staff(StaffId::new());
        let student = Actor::Student(StudentId::new());
        let card = Actor::CampusCard("t1".into());
        let system = Actor::System;
        let allowed: &[(S, E, S)] = &[
            (S::Placed, E::Pay, S::Paid),
            (S::Placed, E::Expire, S::Expired),
            (S::Placed, E::Cancel, S::Cancelled),
            (S::Paid, E::Cancel, S::Cancelled),
            (S::Paid, E::StartPreparing, S::Preparing),
            (S::Preparing, E::Cancel, S::Cancelled),
            (S::Preparing, E::MarkReady, S::Ready),
            (S::Ready, E::PickUp, S::PickedUp),
            (S::Ready, E::MarkUnclaimed, S::Unclaimed),
        ];
        let actors = [&staff, &student, &card, &system];
        let mut successes = 0;
        for from in S::ALL {
            for event in E::ALL {
                let expected = allowed
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|t| t.2);
                let mut any_ok = false;
                for actor in actors {
                    match (next_state(from, event, actor), expected) {
                        (Ok(to), Some(want)) => {
                            assert_eq!(to, want, "{from:?} + {event:?}");
                            any_ok = true;
                            successes += 1;
                        }
                        (Ok(to), None) => {
                            panic!("{from:?} + {event:?} by {actor:?} went to {to:?}")
                        }
                        (Err(OrderError::NotAllowed { .. }), None) => {}
                        (Err(e), None) => panic!("{from:?} + {event:?}: wrong refusal {e}"),
                        (
                            Err(OrderError::NotPermitted { .. } | OrderError::KitchenStarted),
                            Some(_),
                        ) => {}
                        (Err(e), Some(_)) => panic!("{from:?} + {event:?}: unexpected {e}"),
                    }
                }
                assert_eq!(any_ok, expected.is_some(), "{from:?} + {event:?}");
            }
        }
        // Who may do what: staff pay/cancel/prepare/ready/pick up; the card system pays;
        // the student cancels before the kitchen starts; the box expires and closes.
        assert_eq!(successes, 2 + 1 + 2 + 2 + 1 + 1 + 1 + 1 + 1);
        assert!(matches!(
            next_state(S::Preparing, E::Cancel, &student),
            Err(OrderError::KitchenStarted)
        ));
        assert!(matches!(
            next_state(S::Placed, E::Expire, &staff),
            Err(OrderError::NotPermitted { .. })
        ));
    }
}
