//! Orders in SQLite: inserting a placed order, loading what the core needs to decide
//! a transition, applying a decided [`Transition`] (stock, slot, money, row, outbox
//! event) in the writer's transaction, and the read models (queue, a student's orders,
//! lookups by pickup code, the day summary).

use super::db::StoreError;
use super::{WriteCtx, outbox, payments, pickup, stock};
use crate::core::clock::{parse_ts, ts};
use crate::core::lifecycle::{self, OrderFacts, Transition};
use canteen_api::events::{EventPayload, MoneyMove, OrderPlaced};
use canteen_api::ids::{OrderId, StudentId};
use canteen_api::order::{DaySummary, ItemCount, OrderLine, OrderState, OrderView, PaymentMode};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;

/// An earlier placement under the same idempotency key: its request fingerprint and id.
pub fn replay_of(
    conn: &Connection,
    student: StudentId,
    day: NaiveDate,
    key: &str,
) -> Result<Option<(String, OrderId)>, StoreError> {
    let earlier: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT request_hash, id FROM orders WHERE student_id = ?1 AND service_day = ?2 AND idempotency_key = ?3",
        )?
        .query_row(params![student.to_string(), day.to_string(), key], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    earlier
        .map(|(hash, id)| {
            let id = id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("order id {id}")))?;
            Ok((hash, id))
        })
        .transpose()
}

/// Whether a student holds at least `max` open unpaid orders of `day` or the day
/// before (older ones have expired: the unpaid timeout is at most a day). Reads the
/// student's own orders of those days through the student index: no extra index to
/// maintain on every placement.
pub fn unpaid_at_least(
    conn: &Connection,
    student: StudentId,
    max: usize,
    day: NaiveDate,
) -> Result<bool, StoreError> {
    let offset = i64::try_from(max.saturating_sub(1)).unwrap_or(i64::MAX);
    let since = day.pred_opt().unwrap_or(day);
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM orders WHERE student_id = ?1 AND service_day >= ?2 AND state = 'placed'
             LIMIT 1 OFFSET ?3",
        )?
        .exists(params![student.to_string(), since.to_string(), offset])?)
}

/// A student's open unpaid orders (state `placed`, any day), oldest first.
pub fn unpaid_open(conn: &Connection, student: StudentId) -> Result<Vec<OrderId>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM orders WHERE student_id = ?1 AND state = 'placed' ORDER BY placed_at",
    )?;
    let ids = stmt
        .query_map([student.to_string()], |r| r.get::<_, String>(0))?
        .map(|id| {
            let id = id?;
            id.parse()
                .map_err(|_| StoreError::Corrupt(format!("order id {id}")))
        })
        .collect::<Result<Vec<OrderId>, StoreError>>()?;
    Ok(ids)
}

/// Inserts a placed order (stock and slot already taken) and appends `order.placed`.
pub fn insert(
    ctx: &mut WriteCtx<'_>,
    order: &OrderView,
    key: Option<&str>,
    request_hash: &str,
) -> Result<(), StoreError> {
    let lines_json =
        serde_json::to_string(&order.lines).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    ctx.conn
        .prepare_cached(
            "INSERT INTO orders (id, student_id, service_day, pickup_number, pickup_token, state, version,
                total_fen, payment_mode, lines, pickup_slot, idempotency_key, request_hash, placed_at, expires_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'placed', 1, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?12)",
        )?
        .execute(params![
            order.id.to_string(),
            order.student_id.to_string(),
            order.service_day.to_string(),
            order.pickup_number,
            order.pickup_token,
            order.total_fen,
            order.payment_mode.as_str(),
            lines_json,
            order.pickup_slot.as_deref(),
            key,
            key.map(|_| request_hash),
            ts(order.placed_at),
            ts(order.expires_at),
        ])?;
    outbox::append(
        ctx,
        EventPayload::OrderPlaced(OrderPlaced::new(order.clone())),
    )?;
    Ok(())
}

/// What the core needs to decide a transition of order `id`.
pub fn facts(conn: &Connection, id: OrderId) -> Result<Option<OrderFacts>, StoreError> {
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
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT state, version, student_id, service_day, total_fen, payment_mode, lines, pickup_slot
             FROM orders WHERE id = ?1",
        )?
        .query_row([id.to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
        })
        .optional()?;
    let Some((state, version, student, day, total_fen, mode, lines_json, slot)) = row else {
        return Ok(None);
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("order {id}: bad {what}"));
    let state = OrderState::parse(&state).ok_or_else(|| corrupt("state"))?;
    let lines: Vec<OrderLine> = serde_json::from_str(&lines_json).map_err(|_| corrupt("lines"))?;
    let paid_with = match state {
        OrderState::Paid | OrderState::Preparing => payments::paid_with(conn, id)?,
        _ => None,
    };
    Ok(Some(OrderFacts {
        id,
        student_id: student.parse().map_err(|_| corrupt("student"))?,
        service_day: day.parse().map_err(|_| corrupt("day"))?,
        state,
        version,
        total_fen,
        payment_mode: PaymentMode::parse(&mode).ok_or_else(|| corrupt("payment mode"))?,
        portions: lifecycle::portions(&lines),
        pickup_slot: slot,
        paid_with,
    }))
}

/// Applies a decided transition: stock moves, slot release, the payment or refund, the
/// row, and the outbox event, all in the caller's transaction.
pub fn apply(ctx: &mut WriteCtx<'_>, t: Transition) -> Result<OrderView, StoreError> {
    let day = t.event.service_day;
    for (item, qty, how) in &t.stock {
        stock::apply_move(ctx, *item, day, *how, *qty)?;
    }
    if let Some(slot) = &t.release_slot {
        pickup::release_slot(ctx, day, slot)?;
    }
    let mut event = t.event;
    if let Some(money) = &t.money {
        let id = payments::record(ctx, t.order, day, money)?;
        event.payment = Some(MoneyMove {
            kind: money.kind,
            id,
            method: money.method,
            amount_fen: money.amount_fen,
        });
    }
    ctx.conn
        .prepare_cached(
            "UPDATE orders SET state = ?2, version = ?3, updated_at = ?4 WHERE id = ?1",
        )?
        .execute(params![
            t.order.to_string(),
            t.to.as_str(),
            t.version,
            ts(ctx.now)
        ])?;
    outbox::append(ctx, EventPayload::OrderMoved(event))?;
    load(ctx.conn, t.order)?
        .ok_or_else(|| StoreError::Corrupt(format!("order {} vanished", t.order)))
}

/// Unpaid orders whose time is up, oldest first, at most `limit`.
pub fn due_to_expire(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<OrderId>, StoreError> {
    // Without statistics the planner would prefer orders_by_state and sort every
    // placed order of the day; the partial index holds exactly the unpaid ones.
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM orders INDEXED BY orders_expiry
         WHERE state = 'placed' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![ts(now), limit as i64], |r| r.get::<_, String>(0))?;
    ids(rows)
}

/// Ready orders of `through_day` and earlier (closing time has passed), at most `limit`.
pub fn due_unclaimed(
    conn: &Connection,
    through_day: NaiveDate,
    limit: usize,
) -> Result<Vec<OrderId>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM orders WHERE state = 'ready' AND service_day <= ?1 LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![through_day.to_string(), limit as i64], |r| {
        r.get::<_, String>(0)
    })?;
    ids(rows)
}

fn ids(rows: impl Iterator<Item = rusqlite::Result<String>>) -> Result<Vec<OrderId>, StoreError> {
    rows.map(|id| {
        let id = id?;
        id.parse()
            .map_err(|_| StoreError::Corrupt(format!("order id {id}")))
    })
    .collect()
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
        orders.push(
            OrderView {
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
                can_cancel: false,
                next_events: Vec::new(),
                ready_promised_at: None,
                ready_estimate: None,
                running_late_min: None,
            }
            .with_facts(),
        );
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
/// The last service day with an order, if any.
pub fn last_service_day(conn: &Connection) -> Result<Option<NaiveDate>, StoreError> {
    let day: Option<String> =
        conn.query_row("SELECT MAX(service_day) FROM orders", [], |r| r.get(0))?;
    Ok(day.and_then(|d| d.parse().ok()))
}

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

/// Payments and refunds of a service day, in fen.
fn money(conn: &Connection, day: NaiveDate) -> Result<(i64, i64), StoreError> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(CASE WHEN kind = 'payment' THEN amount_fen END), 0),
                COALESCE(SUM(CASE WHEN kind = 'refund' THEN amount_fen END), 0)
         FROM payment WHERE service_day = ?1",
        [day.to_string()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// The service days with orders, newest first, at most `max` (each at most once).
pub fn recent_service_days(conn: &Connection, max: usize) -> Result<Vec<NaiveDate>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT service_day FROM orders ORDER BY service_day DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([max as i64], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for day in rows {
        let day = day?;
        out.push(
            day.parse()
                .map_err(|_| StoreError::Corrupt(format!("service day {day}")))?,
        );
    }
    Ok(out)
}

/// A day's totals as the box reports them to the cloud for reconciliation (no dish
/// breakdown: cheap enough to run every status interval).
pub fn day_totals(
    conn: &Connection,
    day: NaiveDate,
    through_seq: u64,
) -> Result<cloud_sync::proto::DayTotals, StoreError> {
    let counts = count_by_state(conn, day)?;
    let (paid, refunded) = money(conn, day)?;
    Ok(cloud_sync::proto::DayTotals {
        day: day.to_string(),
        through_seq,
        orders: counts.values().sum(),
        revenue_fen: paid - refunded,
        refunds_fen: refunded,
        cancelled: counts[&OrderState::Cancelled],
        expired: counts[&OrderState::Expired],
        unclaimed: counts[&OrderState::Unclaimed],
    })
}

/// Where the outbox stands, for the box's status.
pub struct OutboxPosition {
    pub last_seq: u64,
    pub acked_seq: u64,
    /// When the oldest event not acknowledged was written.
    pub oldest_waiting_at: Option<String>,
}

/// The outbox's position and the box's own totals of `today` and its recent days with
/// orders (at most `max` days, newest first), read in one transaction so the totals and
/// the event they run to agree.
pub fn status_snapshot(
    conn: &Connection,
    today: NaiveDate,
    max: usize,
) -> Result<(OutboxPosition, Vec<cloud_sync::proto::DayTotals>), StoreError> {
    let tx = conn.unchecked_transaction()?;
    let last = outbox::last_seq(&tx)?;
    let acked = super::meta::get_u64(&tx, outbox::ACKED_KEY)? as i64;
    let mut days = vec![today];
    days.extend(
        recent_service_days(&tx, max)?
            .into_iter()
            .filter(|d| *d < today),
    );
    days.truncate(max);
    let totals = days
        .into_iter()
        .map(|d| day_totals(&tx, d, last as u64))
        .collect::<Result<_, _>>()?;
    let position = OutboxPosition {
        last_seq: last as u64,
        acked_seq: acked.min(last) as u64,
        oldest_waiting_at: outbox::oldest_after(&tx, acked)?,
    };
    tx.finish()?;
    Ok((position, totals))
}

pub fn summary(conn: &Connection, day: NaiveDate) -> Result<DaySummary, StoreError> {
    let counts = count_by_state(conn, day)?;
    let (paid, refunded) = money(conn, day)?;
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
