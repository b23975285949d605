//! Pickup in SQLite: the short number per service day (what the counter calls out),
//! and pickup-slot usage against capacity, with its in-memory view for the menu.

use super::db::StoreError;
use super::{Effect, WriteCtx};
use chrono::NaiveDate;
use crdt::settings::PickupSlot;
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;
use std::sync::RwLock;

/// The next pickup number of `day`, starting at 1.
pub fn next_number(ctx: &mut WriteCtx<'_>, day: NaiveDate) -> Result<i64, StoreError> {
    Ok(ctx
        .conn
        .prepare_cached(
            "INSERT INTO pickup_counter (service_day, last_number) VALUES (?1, 1)
             ON CONFLICT (service_day) DO UPDATE SET last_number = last_number + 1
             RETURNING last_number",
        )?
        .query_row(params![day.to_string()], |r| r.get(0))?)
}

/// How many orders a pickup slot has taken on a day (published after commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTaken {
    pub day: NaiveDate,
    pub slot: String,
    pub taken: i64,
}

/// Takes one place in `slot` on `day` if fewer than `capacity` are taken; `Ok(false)`
/// when the slot is full.
pub fn take_slot(
    ctx: &mut WriteCtx<'_>,
    day: NaiveDate,
    slot: &PickupSlot,
    capacity: u32,
) -> Result<bool, StoreError> {
    if capacity == 0 {
        return Ok(false);
    }
    let taken: Option<i64> = ctx
        .conn
        .prepare_cached(
            "INSERT INTO slot_usage (service_day, slot_id, taken) VALUES (?1, ?2, 1)
             ON CONFLICT (service_day, slot_id) DO UPDATE SET taken = taken + 1 WHERE taken < ?3
             RETURNING taken",
        )?
        .query_row(
            params![day.to_string(), slot.id, i64::from(capacity)],
            |r| r.get(0),
        )
        .optional()?;
    let Some(taken) = taken else { return Ok(false) };
    ctx.effect(Effect::Slot(SlotTaken {
        day,
        slot: slot.id.clone(),
        taken,
    }));
    Ok(true)
}

/// Gives a place in a slot back (cancellation, expiry).
pub fn release_slot(ctx: &mut WriteCtx<'_>, day: NaiveDate, slot: &str) -> Result<(), StoreError> {
    let taken: Option<i64> = ctx
        .conn
        .prepare_cached(
            "UPDATE slot_usage SET taken = taken - 1 WHERE service_day = ?1 AND slot_id = ?2 AND taken > 0 RETURNING taken",
        )?
        .query_row(params![day.to_string(), slot], |r| r.get(0))
        .optional()?;
    if let Some(taken) = taken {
        ctx.effect(Effect::Slot(SlotTaken {
            day,
            slot: slot.to_owned(),
            taken,
        }));
    }
    Ok(())
}

/// Slot usage of the current day, in memory, for the menu endpoint.
#[derive(Default)]
pub struct SlotUsage {
    taken: RwLock<HashMap<(NaiveDate, String), i64>>,
}

impl SlotUsage {
    pub fn load(conn: &rusqlite::Connection, day: NaiveDate) -> Result<Self, StoreError> {
        let mut stmt =
            conn.prepare("SELECT slot_id, taken FROM slot_usage WHERE service_day = ?1")?;
        let rows = stmt.query_map([day.to_string()], |r| {
            Ok(((day, r.get::<_, String>(0)?), r.get::<_, i64>(1)?))
        })?;
        Ok(Self {
            taken: RwLock::new(rows.collect::<Result<_, _>>()?),
        })
    }

    pub fn get(&self, day: NaiveDate, slot: &str) -> i64 {
        self.taken
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(day, slot.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn apply(&self, t: SlotTaken) {
        let mut map = self.taken.write().unwrap_or_else(|e| e.into_inner());
        if map.keys().any(|(d, _)| *d < t.day) {
            map.retain(|(d, _), _| *d >= t.day);
        }
        map.insert((t.day, t.slot), t.taken);
    }
}
