//! Orders: placing, moving along the lifecycle (staff, students, the campus card, the
//! box's own expiry and closing time) and hand-over.

use crate::app::App;
use crate::core::lifecycle::{self, Actor, Refusal};
use crate::core::menu::Menu;
use crate::core::payment;
use crate::core::pickup::{self, HandoverRefusal, PickupCode};
use crate::core::pricing::{self, IdempotencyKey, PriceError, PricedOrder};
use crate::core::stock::StockRefusal;
use crate::store::{StoreError, WriteCtx, WriteError, orders, payments, stock};
use canteen_api::error::ClosedDetails;
use canteen_api::ids::{OrderId, StaffId, StudentId};
use canteen_api::order::{OrderEvent, OrderRequest, OrderState, OrderView};
use canteen_api::staff::CampusCardPayment;
use chrono::NaiveDate;
use std::sync::Arc;

/// Orders expired or marked unclaimed per housekeeping write.
const HOUSEKEEPING_BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("no such order")]
    NotFound,
    #[error("{message}")]
    Closed {
        message: String,
        hours: ClosedDetails,
    },
    #[error(transparent)]
    Price(#[from] PriceError),
    #[error(transparent)]
    Stock(#[from] StockRefusal),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Handover(#[from] HandoverRefusal),
    #[error("the pickup slot {0} is full; choose another")]
    SlotFull(String),
    #[error(
        "the kitchen cannot have this order ready before {slot} ends (ready around {ready}); choose a later slot"
    )]
    SlotUnreachable { slot: String, ready: String },
    #[error("this Idempotency-Key was already used for a different order")]
    IdempotencyMismatch,
    #[error("transaction_id must be 1 to {} characters", payment::TXN_ID_MAX)]
    BadTransactionId,
    #[error("amount {got} fen does not match the order total {expected} fen")]
    AmountMismatch { expected: i64, got: i64 },
    #[error("transaction {0} was already used for another order")]
    TransactionReused(String),
    #[error("you already have {0} unpaid orders; pay for or cancel one first")]
    TooManyUnpaid(usize),
    #[error("the canteen has stopped this account ordering here: {0}")]
    Blocked(String),
    #[error("no student {0}")]
    UnknownStudent(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// A placement: the order, and whether it is a replay of an earlier one.
#[derive(Debug, Clone)]
pub struct Placement {
    pub order: OrderView,
    pub replayed: bool,
}

/// Places a student's order: refused while the canteen is closed; priced against the
/// menu snapshot (never the client's prices); then, in one write, the idempotency
/// check, stock reservations, the pickup slot and number, the row and its event.
pub async fn place(
    app: &App,
    student: StudentId,
    key: Option<IdempotencyKey>,
    request: &OrderRequest,
) -> Result<Placement, OrderError> {
    let now = app.clock.now();
    let canteen = app.canteen();
    if !canteen.is_open(now) {
        let (open, close, closed_today) = canteen.hours_on(now);
        let hours = ClosedDetails {
            opening_time: open.format("%H:%M").to_string(),
            closing_time: close.format("%H:%M").to_string(),
            closed_today,
            time_zone: canteen.raw.time_zone.clone(),
        };
        let message = if closed_today {
            "the canteen is closed today".to_owned()
        } else {
            format!(
                "the canteen takes orders from {} to {}",
                hours.opening_time, hours.closing_time
            )
        };
        return Err(OrderError::Closed { message, hours });
    }
    let menu = app.menu.snapshot();
    let priced = pricing::price(&menu, request, &canteen, app.config.portions_per_dish)?;
    let day = canteen.service_day(now);
    // The promise: when this order, paid now, would be ready at the stations its
    // dishes come from, behind the queue there and at the rate the kitchen is working.
    let promise = app
        .kitchen
        .promise(&crate::store::kitchen::stations(&menu, &priced.lines), now);
    // A slot is taken only while the kitchen can meet it (checked in the write, after
    // a replay is answered); its capacity follows the kitchen's measured rate (at most
    // the slot's setting).
    let slot = priced.pickup_slot.as_ref().map(|slot| {
        let (capacity, end) = app.slot_capacity(&canteen, slot, day, now);
        SlotTerms {
            capacity,
            end,
            ready: promise
                .with_timezone(&canteen.time_zone)
                .format("%H:%M")
                .to_string(),
        }
    });
    let params = PlaceParams {
        unpaid_max: app.config.unpaid_orders_per_student,
        student,
        key,
        request_hash: pricing::request_hash(request),
        priced,
        day,
        promise,
        slot,
        unpaid_timeout: canteen.unpaid_timeout,
    };
    app.writer
        .write(move |ctx| place_in(ctx, &menu, params))
        .await
}

struct PlaceParams {
    unpaid_max: usize,
    student: StudentId,
    key: Option<IdempotencyKey>,
    request_hash: String,
    priced: PricedOrder,
    day: NaiveDate,
    promise: chrono::DateTime<chrono::Utc>,
    slot: Option<SlotTerms>,
    unpaid_timeout: chrono::Duration,
}

/// What the chosen pickup slot takes now.
struct SlotTerms {
    /// Its capacity from the kitchen's rate.
    capacity: u32,
    end: chrono::DateTime<chrono::Utc>,
    /// The promise, as the canteen's clock shows it (for the refusal).
    ready: String,
}

fn place_in(
    ctx: &mut WriteCtx<'_>,
    menu: &Arc<Menu>,
    p: PlaceParams,
) -> Result<Placement, OrderError> {
    if let Some(key) = &p.key
        && let Some((hash, id)) = orders::replay_of(ctx.conn, p.student, p.day, key.as_str())?
    {
        if hash != p.request_hash {
            return Err(OrderError::IdempotencyMismatch);
        }
        let order = orders::load(ctx.conn, id)?
            .ok_or_else(|| StoreError::Corrupt(format!("order {id} is missing")))?;
        return Ok(Placement {
            order,
            replayed: true,
        });
    }
    // Fair share: unpaid orders hold portions until they expire, so a student may hold
    // only a few at once. Counted inside the write, so parallel requests cannot pass
    // together.
    // Blocked students are refused inside the write, so a block committed just before
    // this placement (even in the same group) is seen.
    if let Some(reason) = crate::store::accounts::blocked_reason(ctx.conn, p.student)? {
        return Err(OrderError::Blocked(reason));
    }
    if p.unpaid_max > 0 && orders::unpaid_at_least(ctx.conn, p.student, p.unpaid_max, p.day)? {
        return Err(OrderError::TooManyUnpaid(p.unpaid_max));
    }
    let id = OrderId::new();
    let now = ctx.now;
    for (item_id, qty) in &p.priced.portions {
        let item = menu
            .get(*item_id)
            .ok_or(PriceError::UnknownItem(*item_id))?;
        stock::reserve(ctx, item, p.day, *qty)??;
    }
    if let (Some(slot), Some(terms)) = (&p.priced.pickup_slot, &p.slot)
        && p.promise > terms.end
    {
        return Err(OrderError::SlotUnreachable {
            slot: format!("{}–{}", slot.start, slot.end),
            ready: terms.ready.clone(),
        });
    }
    if let Some(slot) = &p.priced.pickup_slot
        && !crate::store::pickup::take_slot(
            ctx,
            p.day,
            slot,
            p.slot.as_ref().map_or(slot.capacity, |t| t.capacity),
        )?
    {
        return Err(OrderError::SlotFull(format!("{}–{}", slot.start, slot.end)));
    }
    let number = crate::store::pickup::next_number(ctx, p.day)?;
    let order = OrderView {
        id,
        student_id: p.student,
        service_day: p.day,
        pickup_number: number,
        pickup_token: pickup::new_token(id),
        state: OrderState::Placed,
        version: 1,
        total_fen: p.priced.total_fen,
        payment_mode: p.priced.payment_mode,
        pickup_slot: p.priced.pickup_slot.map(|s| s.id),
        lines: p.priced.lines,
        placed_at: now,
        expires_at: now + p.unpaid_timeout,
        updated_at: now,
        can_cancel: false,
        next_events: Vec::new(),
        ready_promised_at: Some(p.promise),
        ready_estimate: None,
        running_late_min: None,
    }
    .with_facts();
    orders::insert(
        ctx,
        &order,
        p.key.as_ref().map(IdempotencyKey::as_str),
        &p.request_hash,
    )?;
    Ok(Placement {
        order,
        replayed: false,
    })
}

/// Applies `event` to an order by `actor`, inside a write: the core decides, the store
/// applies.
fn transition_in(
    ctx: &mut WriteCtx<'_>,
    id: OrderId,
    event: OrderEvent,
    actor: &Actor,
    expected_version: Option<i64>,
) -> Result<OrderView, OrderError> {
    let facts = orders::facts(ctx.conn, id)?.ok_or(OrderError::NotFound)?;
    let transition = lifecycle::decide(&facts, event, actor, expected_version)?;
    Ok(orders::apply(ctx, transition)?)
}

/// Staff move an order (pay at the counter, start preparing, ready, pick up, cancel),
/// naming the version they saw.
pub async fn staff_transition(
    app: &App,
    staff: StaffId,
    id: OrderId,
    event: OrderEvent,
    version: i64,
) -> Result<OrderView, OrderError> {
    app.writer
        .write(move |ctx| transition_in(ctx, id, event, &Actor::Staff(staff), Some(version)))
        .await
}

/// Staff cancel every unpaid open order of a student at once (the stock comes back),
/// and, when `block` has a reason, block the student from ordering, in one write.
/// Returns the student and the orders cancelled.
pub async fn restrain_student(
    app: &App,
    staff: StaffId,
    student_number: String,
    cancel_unpaid: bool,
    block: Option<String>,
) -> Result<(StudentId, Vec<OrderView>), OrderError> {
    app.writer
        .write(move |ctx| {
            let (student, _) =
                crate::store::accounts::student_by_number(ctx.conn, &student_number)?
                    .ok_or_else(|| OrderError::UnknownStudent(student_number.clone()))?;
            if let Some(reason) = &block {
                crate::store::accounts::set_block(ctx, &student_number, Some(reason), staff)?;
            }
            let mut cancelled = Vec::new();
            if cancel_unpaid {
                for id in orders::unpaid_open(ctx.conn, student)? {
                    cancelled.push(transition_in(
                        ctx,
                        id,
                        OrderEvent::Cancel,
                        &Actor::Staff(staff),
                        None,
                    )?);
                }
            }
            Ok((student, cancelled))
        })
        .await
}

/// Staff let a blocked student order again.
pub async fn unblock_student(
    app: &App,
    staff: StaffId,
    student_number: String,
) -> Result<StudentId, OrderError> {
    app.writer
        .write(move |ctx| {
            crate::store::accounts::set_block(ctx, &student_number, None, staff)?
                .ok_or(OrderError::UnknownStudent(student_number))
        })
        .await
}

/// A student cancels their own order, while the kitchen has not started on it.
pub async fn student_cancel(
    app: &App,
    student: StudentId,
    id: OrderId,
) -> Result<OrderView, OrderError> {
    app.writer
        .write(move |ctx| {
            transition_in(ctx, id, OrderEvent::Cancel, &Actor::Student(student), None)
        })
        .await
}

/// Hands an order over: found by today's pickup number or its token, checked ready,
/// marked picked up.
pub async fn hand_over(app: &App, staff: StaffId, code: &str) -> Result<OrderView, OrderError> {
    let code = PickupCode::parse(code)?;
    let day = app.today();
    app.writer
        .write(move |ctx| {
            let found = match &code {
                PickupCode::Number(n) => orders::find_by_number(ctx.conn, day, *n)?,
                PickupCode::Token(t) => orders::find_by_token(ctx.conn, t)?,
            };
            let order = found.ok_or(HandoverRefusal::NotFound)?;
            pickup::check_hand_over(order.state, order.pickup_number)?;
            transition_in(
                ctx,
                order.id,
                OrderEvent::PickUp,
                &Actor::Staff(staff),
                None,
            )
        })
        .await
}

/// Applies a campus-card payment exactly once per transaction id. A replay of a
/// transaction already applied returns the order as it is now (`true`), changing
/// nothing.
pub async fn campus_card(
    app: &App,
    notice: CampusCardPayment,
) -> Result<(OrderView, bool), OrderError> {
    if !payment::transaction_id_ok(&notice.transaction_id) {
        return Err(OrderError::BadTransactionId);
    }
    app.writer
        .write(move |ctx| {
            if let Some(order_id) =
                payments::order_of_transaction(ctx.conn, &notice.transaction_id)?
            {
                if order_id != notice.order_id {
                    return Err(OrderError::TransactionReused(notice.transaction_id.clone()));
                }
                let order = orders::load(ctx.conn, order_id)?.ok_or(OrderError::NotFound)?;
                return Ok((order, true));
            }
            let facts = orders::facts(ctx.conn, notice.order_id)?.ok_or(OrderError::NotFound)?;
            if facts.total_fen != notice.amount_fen {
                return Err(OrderError::AmountMismatch {
                    expected: facts.total_fen,
                    got: notice.amount_fen,
                });
            }
            let actor = Actor::CampusCard(notice.transaction_id.clone());
            let transition = lifecycle::decide(&facts, OrderEvent::Pay, &actor, None)?;
            Ok((orders::apply(ctx, transition)?, false))
        })
        .await
}

/// One round of housekeeping: expire unpaid orders whose time is up, and mark ready
/// orders unclaimed once their day's closing time has passed. Returns how many of each.
pub async fn housekeeping(app: &App) -> Result<(usize, usize), OrderError> {
    let expired = app
        .writer
        .write(|ctx| {
            let due = orders::due_to_expire(ctx.conn, ctx.now, HOUSEKEEPING_BATCH)?;
            for id in &due {
                transition_in(ctx, *id, OrderEvent::Expire, &Actor::System, None)?;
            }
            Ok::<_, OrderError>(due.len())
        })
        .await?;
    let through = app.canteen().closed_through(app.clock.now());
    let unclaimed = app
        .writer
        .write(move |ctx| {
            let due = orders::due_unclaimed(ctx.conn, through, HOUSEKEEPING_BATCH)?;
            for id in &due {
                transition_in(ctx, *id, OrderEvent::MarkUnclaimed, &Actor::System, None)?;
            }
            Ok::<_, OrderError>(due.len())
        })
        .await?;
    Ok((expired, unclaimed))
}
