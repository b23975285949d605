//! Pickup: a short number per service day (what the counter calls out) and an
//! unguessable token (the QR code). Hand-over checks either.

use crate::db::StoreError;
use crate::ids::{OrderId, StaffId};
use crate::order::{self, Actor, OrderError, OrderEvent, OrderState, OrderView};
use crate::writer::WriteCtx;
use chrono::NaiveDate;
use crdt::settings::PickupSlot;
use rand::RngCore;
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

/// Takes one place in `slot` on `day`; `Ok(false)` when the slot is full.
pub fn take_slot(
    ctx: &mut WriteCtx<'_>,
    day: NaiveDate,
    slot: &PickupSlot,
) -> Result<bool, StoreError> {
    let taken: Option<i64> = ctx
        .conn
        .prepare_cached(
            "INSERT INTO slot_usage (service_day, slot_id, taken) VALUES (?1, ?2, 1)
             ON CONFLICT (service_day, slot_id) DO UPDATE SET taken = taken + 1 WHERE taken < ?3
             RETURNING taken",
        )?
        .query_row(
            params![day.to_string(), slot.id, i64::from(slot.capacity)],
            |r| r.get(0),
        )
        .optional()?;
    let Some(taken) = taken else { return Ok(false) };
    ctx.effect(crate::writer::Effect::Slot(SlotTaken {
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
        ctx.effect(crate::writer::Effect::Slot(SlotTaken {
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

/// The order id's 32 hex digits, then 128 random bits as 32 more: unguessable, and
/// found through the order's primary key.
pub fn new_token(order: OrderId) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("{}{}", order.0.simple(), hex::encode(bytes))
}

/// Length of a pickup token in characters.
pub const TOKEN_CHARS: usize = 64;

/// What staff type or scan at hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickupCode {
    Number(i64),
    Token(String),
}

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("not a pickup number or token")]
    BadCode,
    #[error("no order with that pickup code today")]
    NotFound,
    #[error("order {number} was already picked up")]
    AlreadyPickedUp { number: i64 },
    #[error("order {number} is {state}, not ready", state = .state.as_str())]
    NotReady { number: i64, state: OrderState },
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] crate::writer::WriteError),
}

impl PickupCode {
    /// A number of 1 to 6 digits, or a 64-character hex token (a USB scanner types it).
    pub fn parse(text: &str) -> Result<Self, HandoverError> {
        let text = text.trim();
        if !text.is_empty() && text.len() <= 6 && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(Self::Number)
                .map_err(|_| HandoverError::BadCode);
        }
        if text.len() == TOKEN_CHARS && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Self::Token(text.to_ascii_lowercase()));
        }
        Err(HandoverError::BadCode)
    }
}

/// Hands an order over: finds it by code (numbers are today's), checks it is ready,
/// and marks it picked up.
pub fn hand_over(
    ctx: &mut WriteCtx<'_>,
    day: NaiveDate,
    code: &PickupCode,
    staff: StaffId,
) -> Result<OrderView, HandoverError> {
    let found = match code {
        PickupCode::Number(n) => order::find_by_number(ctx.conn, day, *n)?,
        PickupCode::Token(t) => order::find_by_token(ctx.conn, t)?,
    };
    let order = found.ok_or(HandoverError::NotFound)?;
    match order.state {
        OrderState::Ready => {}
        OrderState::PickedUp => {
            return Err(HandoverError::AlreadyPickedUp {
                number: order.pickup_number,
            });
        }
        state => {
            return Err(HandoverError::NotReady {
                number: order.pickup_number,
                state,
            });
        }
    }
    Ok(order::apply_event(
        ctx,
        order.id,
        OrderEvent::PickUp,
        &Actor::Staff(staff),
        None,
    )?)
}
