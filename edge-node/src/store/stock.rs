//! Stock per item per service day in SQLite. Restocks, staff adjustments, sold-out
//! marks and quota changes are kept as ledger entries; reservations and sales are the
//! orders themselves (their outbox events say when each happened). The arithmetic and
//! every refusal are the core's (`core::stock`); this module reads the row, asks the
//! core, and writes what it decided. The table's CHECK constraint makes "never below
//! zero" hold even against a bug. After each commit the new levels are published into
//! [`StockView`], which the menu endpoint reads.

use super::db::StoreError;
use super::{Effect, WriteCtx, outbox};
use crate::core::lifecycle::StockMove;
use crate::core::menu::MenuItem;
use crate::core::stock::{self as core_stock, StockRefusal};
use canteen_api::events::{EventPayload, QuotaSet, StockAvailability, StockChanged};
use canteen_api::ids::{ItemId, StaffId};
use canteen_api::stock::{StaffStockAction, StockLevel};
use chrono::NaiveDate;
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;
use std::sync::RwLock;

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

/// The item's row for `day`, if the day has started for it.
fn row(
    conn: &rusqlite::Connection,
    item: ItemId,
    day: NaiveDate,
) -> Result<Option<StockLevel>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {LEVEL_COLUMNS} FROM stock_day WHERE item_id = ?1 AND service_day = ?2"
        ))?
        .query_row(params![item.to_string(), day.to_string()], read_level)
        .optional()?)
}

/// The item's row for `day`, created from the menu's daily quota on first touch.
fn ensure_row(
    ctx: &mut WriteCtx<'_>,
    item: &MenuItem,
    day: NaiveDate,
) -> Result<StockLevel, StoreError> {
    if let Some(level) = row(ctx.conn, item.id, day)? {
        return Ok(level);
    }
    let quota = core_stock::day_quota(item);
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
            crate::core::clock::ts(ctx.now),
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
) -> Result<StockLevel, StoreError> {
    let level = ctx
        .conn
        .prepare_cached(&format!(
            "UPDATE stock_day SET {set} WHERE item_id = ?1 AND service_day = ?2 RETURNING {LEVEL_COLUMNS}"
        ))?
        .query_row(params![item.to_string(), day.to_string(), value], read_level)?;
    ctx.effect(Effect::Stock(level.clone()));
    Ok(level)
}

/// Reserves `qty` for an order being placed; `Ok(Err(_))` when the core refuses
/// (sold out, not enough left).
///
/// The common case is one statement: a conditional UPDATE that only succeeds when
/// enough is left. Only when it matches nothing do we look closer (first order of the
/// day for this item, or a refusal to explain).
pub fn reserve(
    ctx: &mut WriteCtx<'_>,
    item: &MenuItem,
    day: NaiveDate,
    qty: i64,
) -> Result<Result<StockLevel, StockRefusal>, StoreError> {
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
        note_availability(ctx, &level, level.remaining() + qty)?;
        return Ok(Ok(level));
    }
    let level = ensure_row(ctx, item, day)?;
    if let Err(refusal) = core_stock::check_reserve(&level, item, qty) {
        return Ok(Err(refusal));
    }
    let level = update(ctx, item.id, day, "reserved = reserved + ?3", qty)?;
    note_availability(ctx, &level, level.remaining() + qty)?;
    Ok(Ok(level))
}

/// Records in the outbox when orders (not staff) took a dish's last portion of the day,
/// or gave portions back to a dish that had none left: `before` is what remained before
/// the change. A dish staff marked sold out stays theirs to call (their own events say
/// it). Only crossings are written, so an order adds an event at most once a day per
/// dish, and only then.
fn note_availability(
    ctx: &mut WriteCtx<'_>,
    level: &StockLevel,
    before: i64,
) -> Result<(), StoreError> {
    let (was_out, is_out) = (before <= 0, level.remaining() <= 0);
    if level.sold_out || was_out == is_out {
        return Ok(());
    }
    outbox::append(
        ctx,
        EventPayload::StockAvailability(StockAvailability {
            v: canteen_api::events::EVENT_VERSION,
            item_id: level.item_id,
            service_day: level.service_day,
            remaining: level.remaining(),
            sold_out: is_out,
        }),
    )?;
    Ok(())
}

/// Applies one of a transition's stock moves.
pub fn apply_move(
    ctx: &mut WriteCtx<'_>,
    item: ItemId,
    day: NaiveDate,
    how: StockMove,
    qty: i64,
) -> Result<StockLevel, StoreError> {
    let set = match how {
        StockMove::Sell => "reserved = reserved - ?3, sold = sold + ?3",
        StockMove::ReleaseReserved => "reserved = reserved - ?3",
        StockMove::ReleaseSold => "sold = sold - ?3",
    };
    let level = update(ctx, item, day, set, qty)?;
    if !matches!(how, StockMove::Sell) {
        note_availability(ctx, &level, level.remaining() - qty)?;
    }
    Ok(level)
}

/// Applies a staff stock action the core allows, with its ledger entry and outbox event.
pub fn staff_action(
    ctx: &mut WriteCtx<'_>,
    item: &MenuItem,
    day: NaiveDate,
    action: &StaffStockAction,
    staff: StaffId,
) -> Result<Result<StockLevel, StockRefusal>, StoreError> {
    let current = ensure_row(ctx, item, day)?;
    let decided = match core_stock::staff_change(&current, item, action) {
        Ok(d) => d,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let (kind, reason) = match action {
        StaffStockAction::Restock { .. } => ("restock", None),
        StaffStockAction::Adjust { reason, .. } => ("adjust", Some(reason.as_str())),
        StaffStockAction::SoldOut {} => ("sold_out", None),
        StaffStockAction::Back {} => ("back", None),
    };
    ledger(ctx, item.id, day, kind, decided.delta, Some(staff), reason)?;
    let level = ctx
        .conn
        .prepare_cached(&format!(
            "UPDATE stock_day SET adjusted = ?3, sold_out = ?4 WHERE item_id = ?1 AND service_day = ?2
             RETURNING {LEVEL_COLUMNS}"
        ))?
        .query_row(
            params![
                item.id.to_string(),
                day.to_string(),
                decided.level.adjusted,
                decided.level.sold_out
            ],
            read_level,
        )?;
    ctx.effect(Effect::Stock(level.clone()));
    outbox::append(
        ctx,
        EventPayload::StockChanged(StockChanged {
            v: canteen_api::events::EVENT_VERSION,
            change: Some(decided.change),
            item_id: item.id,
            service_day: day,
            staff_id: staff,
            remaining: level.remaining(),
            sold_out: level.is_sold_out(),
        }),
    )?;
    Ok(Ok(level))
}

/// Applies an item's new daily quota to `day` if that day has started for it (a day
/// not started takes the menu's quota on its first order). The quota never drops below
/// what is already reserved and sold.
pub fn set_quota(
    ctx: &mut WriteCtx<'_>,
    item: &MenuItem,
    day: NaiveDate,
) -> Result<Option<StockLevel>, StoreError> {
    let Some(current) = row(ctx.conn, item.id, day)? else {
        return Ok(None);
    };
    let quota = core_stock::requota(&current, core_stock::day_quota(item));
    if quota == current.quota {
        return Ok(None);
    }
    ledger(
        ctx,
        item.id,
        day,
        "quota",
        quota - current.quota,
        None,
        None,
    )?;
    let level = update(ctx, item.id, day, "quota = ?3", quota)?;
    outbox::append(
        ctx,
        EventPayload::QuotaSet(QuotaSet {
            v: canteen_api::events::EVENT_VERSION,
            item_id: item.id,
            service_day: day,
            quota: level.quota,
            remaining: level.remaining(),
        }),
    )?;
    Ok(Some(level))
}
