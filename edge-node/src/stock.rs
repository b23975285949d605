//! Stock per item per service day. Restocks, staff adjustments, sold-out marks and
//! quota changes are kept as ledger entries; reservations and sales are the orders
//! themselves (their outbox events say when each happened).
//!
//! remaining = quota + adjusted − reserved − sold. Placing an order reserves; payment
//! turns the reservation into a sale; expiry and cancellation give back. The table's
//! CHECK constraint makes "never below zero" hold even against a bug here. After each
//! commit the new levels are published into [`StockView`], which the menu endpoint reads.

use crate::db::StoreError;
use crate::ids::{ItemId, StaffId};
use crate::menu::MenuItem;
use crate::outbox;
use crate::writer::{Effect, WriteCtx};
use chrono::NaiveDate;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::RwLock;

/// Quota stored for items without a daily quota ("unlimited"): large enough never to
/// run out in a day, small enough that sums cannot overflow.
pub const UNLIMITED_QUOTA: i64 = 1_000_000_000;

/// Restocks and adjustments are capped per call; a bigger number is a typo.
pub const ADJUST_MAX: i64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StockLevel {
    pub item_id: ItemId,
    #[schema(value_type = String, format = Date)]
    pub service_day: NaiveDate,
    pub quota: i64,
    pub adjusted: i64,
    pub reserved: i64,
    pub sold: i64,
    /// Set by staff: sold out regardless of the count.
    pub sold_out: bool,
}

impl StockLevel {
    pub fn remaining(&self) -> i64 {
        self.quota + self.adjusted - self.reserved - self.sold
    }

    pub fn is_unlimited(&self) -> bool {
        self.quota >= UNLIMITED_QUOTA
    }

    pub fn is_sold_out(&self) -> bool {
        self.sold_out || self.remaining() <= 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error("{name} is sold out")]
    SoldOut { item_id: ItemId, name: String },
    #[error("only {remaining} of {name} left")]
    NotEnough {
        item_id: ItemId,
        name: String,
        remaining: i64,
    },
    #[error("that would leave {name} below zero ({remaining} left)")]
    BelowZero { name: String, remaining: i64 },
    #[error("the count must be between 1 and {ADJUST_MAX}")]
    BadCount,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] crate::writer::WriteError),
}

impl From<rusqlite::Error> for StockError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The in-memory view of today's stock, refreshed after every commit.
#[derive(Default)]
pub struct StockView {
    levels: RwLock<HashMap<(NaiveDate, ItemId), StockLevel>>,
}

impl StockView {
    /// Loads every stock row of `day` (the view is filled lazily for later days).
    pub fn load(conn: &rusqlite::Connection, day: NaiveDate) -> Result<Self, StoreError> {
        let mut stmt = conn.prepare(
            "SELECT item_id, service_day, quota, adjusted, reserved, sold, sold_out
             FROM stock_day WHERE service_day = ?1",
        )?;
        let mut levels = HashMap::new();
        for level in stmt.query_map([day.to_string()], read_level)? {
            let level = level?;
            levels.insert((level.service_day, level.item_id), level);
        }
        Ok(Self {
            levels: RwLock::new(levels),
        })
    }

    pub fn get(&self, day: NaiveDate, item: ItemId) -> Option<StockLevel> {
        self.levels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(day, item))
            .cloned()
    }

    /// Publishes a committed level. Days older than the newest one seen are dropped, so
    /// the view holds about one day of items, whatever the uptime.
    pub fn apply(&self, level: StockLevel) {
        let mut levels = self.levels.write().unwrap_or_else(|e| e.into_inner());
        let day = level.service_day;
        if levels.keys().any(|(d, _)| *d < day) {
            levels.retain(|(d, _), _| *d >= day);
        }
        levels.insert((day, level.item_id), level);
    }
}

fn read_level(r: &rusqlite::Row<'_>) -> rusqlite::Result<StockLevel> {
    let parse_err = |i, e: &dyn std::error::Error| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            e.to_string().into(),
        )
    };
    let item: String = r.get(0)?;
    let day: String = r.get(1)?;
    Ok(StockLevel {
        item_id: item.parse().map_err(|e| parse_err(0, &e))?,
        service_day: day.parse().map_err(|e| parse_err(1, &e))?,
        quota: r.get(2)?,
        adjusted: r.get(3)?,
        reserved: r.get(4)?,
        sold: r.get(5)?,
        sold_out: r.get(6)?,
    })
}

const LEVEL_COLUMNS: &str = "item_id, service_day, quota, adjusted, reserved, sold, sold_out";

/// The item's row for `day`, created from the menu's daily quota on first touch.
fn ensure_row(
    ctx: &mut WriteCtx<'_>,
    item: &MenuItem,
    day: NaiveDate,
) -> Result<StockLevel, StockError> {
    let existing = ctx
        .conn
        .prepare_cached(&format!(
            "SELECT {LEVEL_COLUMNS} FROM stock_day WHERE item_id = ?1 AND service_day = ?2"
        ))?
        .query_row(params![item.id.to_string(), day.to_string()], read_level)
        .optional()?;
    if let Some(level) = existing {
        return Ok(level);
    }
    let quota = item.fields.daily_quota.map_or(UNLIMITED_QUOTA, i64::from);
    ctx.conn
        .prepare_cached("INSERT INTO stock_day (item_id, service_day, quota) VALUES (?1, ?2, ?3)")?
        .execute(params![item.id.to_string(), day.to_string(), quota])?;
    ledger(ctx, item.id, day, "quota", quota, None, None)?;
    Ok(StockLevel {
        item_id: item.id,
        service_day: day,
        quota,
        adjusted: 0,
        reserved: 0,
        sold: 0,
        sold_out: false,
    })
}

fn ledger(
    ctx: &mut WriteCtx<'_>,
    item: ItemId,
    day: NaiveDate,
    kind: &str,
    delta: i64,
    staff: Option<StaffId>,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO stock_ledger (item_id, service_day, kind, delta, staff_id, reason, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            item.to_string(),
            day.to_string(),
            kind,
            delta,
            staff.map(|s| s.to_string()),
            reason,
            crate::clock::ts(ctx.now),
        ])?;
    Ok(())
}

/// Applies `set` (an SQL assignment list) to the row and publishes the new level.
fn update(
    ctx: &mut WriteCtx<'_>,
    item: ItemId,
    day: NaiveDate,
    set: &str,
    value: i64,
) -> Result<StockLevel, StockError> {
    let level = ctx
        .conn
        .prepare_cached(&format!(
            "UPDATE stock_day SET {set} WHERE item_id = ?1 AND service_day = ?2 RETURNING {LEVEL_COLUMNS}"
        ))?
        .query_row(params![item.to_string(), day.to_string(), value], read_level)?;
    ctx.effect(Effect::Stock(level.clone()));
    Ok(level)
}

/// Reserves `qty` for an order being placed. Refuses when sold out or short.
///
/// The common case is one statement: a conditional UPDATE that only succeeds when
/// enough is left. Only when it matches nothing do we look closer (first order of the
/// day for this item, or a refusal to explain).
pub fn reserve(
    ctx: &mut WriteCtx<'_>,
    item: &MenuItem,
    day: NaiveDate,
    qty: i64,
) -> Result<StockLevel, StockError> {
    let reserved = ctx
        .conn
        .prepare_cached(&format!(
            "UPDATE stock_day SET reserved = reserved + ?3
             WHERE item_id = ?1 AND service_day = ?2 AND sold_out = 0 AND quota + adjusted - reserved - sold >= ?3
             RETURNING {LEVEL_COLUMNS}"
        ))?
        .query_row(params![item.id.to_string(), day.to_string(), qty], read_level)
        .optional()?;
    if let Some(level) = reserved {
        ctx.effect(Effect::Stock(level.clone()));
        return Ok(level);
    }
    let level = ensure_row(ctx, item, day)?;
    if level.is_sold_out() {
        return Err(StockError::SoldOut {
            item_id: item.id,
            name: item.fields.name_en.clone(),
        });
    }
    if level.remaining() < qty {
        return Err(StockError::NotEnough {
            item_id: item.id,
            name: item.fields.name_en.clone(),
            remaining: level.remaining(),
        });
    }
    update(ctx, item.id, day, "reserved = reserved + ?3", qty)
}

/// Where stock given back comes from: a reservation (unpaid) or a sale (paid).
#[derive(Debug, Clone, Copy)]
pub enum Held {
    Reserved,
    Sold,
}

/// Gives stock back on expiry or cancellation.
pub fn release(
    ctx: &mut WriteCtx<'_>,
    item: ItemId,
    day: NaiveDate,
    qty: i64,
    held: Held,
) -> Result<StockLevel, StockError> {
    let set = match held {
        Held::Reserved => "reserved = reserved - ?3",
        Held::Sold => "sold = sold - ?3",
    };
    update(ctx, item, day, set, qty)
}

/// Turns a reservation into a sale when the order is paid.
pub fn sell(
    ctx: &mut WriteCtx<'_>,
    item: ItemId,
    day: NaiveDate,
    qty: i64,
) -> Result<StockLevel, StockError> {
    update(
        ctx,
        item,
        day,
        "reserved = reserved - ?3, sold = sold + ?3",
        qty,
    )
}

/// What staff can do to stock.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum StaffStockAction {
    /// More portions were made: add `count`.
    Restock { count: i64 },
    /// Correct the count (spilled, miscounted): `delta` may be negative.
    Adjust { delta: i64, reason: String },
    /// Mark sold out now, whatever the count says.
    SoldOut,
    /// Undo a sold-out mark.
    Back,
}

/// Applies a staff stock action and records it in the outbox.
pub fn staff_action(
    ctx: &mut WriteCtx<'_>,
    item: &MenuItem,
    day: NaiveDate,
    action: &StaffStockAction,
    staff: StaffId,
) -> Result<StockLevel, StockError> {
    let current = ensure_row(ctx, item, day)?;
    let (kind, level) = match action {
        StaffStockAction::Restock { count } => {
            if !(1..=ADJUST_MAX).contains(count) {
                return Err(StockError::BadCount);
            }
            ledger(ctx, item.id, day, "restock", *count, Some(staff), None)?;
            (
                "stock.restocked",
                update(ctx, item.id, day, "adjusted = adjusted + ?3", *count)?,
            )
        }
        StaffStockAction::Adjust { delta, reason } => {
            if *delta == 0 || delta.abs() > ADJUST_MAX {
                return Err(StockError::BadCount);
            }
            if current.remaining() + delta < 0 {
                return Err(StockError::BelowZero {
                    name: item.fields.name_en.clone(),
                    remaining: current.remaining(),
                });
            }
            ledger(
                ctx,
                item.id,
                day,
                "adjust",
                *delta,
                Some(staff),
                Some(reason),
            )?;
            (
                "stock.adjusted",
                update(ctx, item.id, day, "adjusted = adjusted + ?3", *delta)?,
            )
        }
        StaffStockAction::SoldOut => {
            ledger(ctx, item.id, day, "sold_out", 0, Some(staff), None)?;
            (
                "stock.sold_out",
                update(ctx, item.id, day, "sold_out = ?3", 1)?,
            )
        }
        StaffStockAction::Back => {
            ledger(ctx, item.id, day, "back", 0, Some(staff), None)?;
            ("stock.back", update(ctx, item.id, day, "sold_out = ?3", 0)?)
        }
    };
    outbox::append(
        ctx,
        kind,
        &item.id.to_string(),
        json!({
            "item_id": item.id,
            "service_day": day,
            "staff_id": staff,
            "remaining": level.remaining(),
            "sold_out": level.is_sold_out(),
        }),
    )?;
    Ok(level)
}

/// Applies a new daily quota to an already-started day. The quota cannot drop below
/// what is already reserved and sold; it is clamped there.
pub fn set_quota(
    ctx: &mut WriteCtx<'_>,
    item: &MenuItem,
    day: NaiveDate,
) -> Result<Option<StockLevel>, StockError> {
    let exists: Option<i64> = ctx
        .conn
        .prepare_cached("SELECT quota FROM stock_day WHERE item_id = ?1 AND service_day = ?2")?
        .query_row(params![item.id.to_string(), day.to_string()], |r| r.get(0))
        .optional()?;
    let Some(old) = exists else { return Ok(None) };
    let quota = item.fields.daily_quota.map_or(UNLIMITED_QUOTA, i64::from);
    if quota == old {
        return Ok(None);
    }
    ledger(ctx, item.id, day, "quota", quota - old, None, None)?;
    let level = update(
        ctx,
        item.id,
        day,
        "quota = MAX(?3, reserved + sold - adjusted)",
        quota,
    )?;
    outbox::append(
        ctx,
        "stock.quota_set",
        &item.id.to_string(),
        json!({"item_id": item.id, "service_day": day, "quota": level.quota, "remaining": level.remaining()}),
    )?;
    Ok(Some(level))
}
